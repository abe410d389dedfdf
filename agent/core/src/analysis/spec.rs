//! The analysis settings a Rollout carries (`spec.analysis`): which checks run, their tolerances,
//! the false-alarm level and the look interval. Plain serde values with defaults and validation;
//! nothing here measures anything.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How canary is compared with baseline. Every field has a default, so `analysis: {}` is valid.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct AnalysisSpec {
    /// Time between looks at the data (default 2s). Every look may decide.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub interval: Duration,
    /// Probability of rolling back a canary that is within tolerance, over the whole step however
    /// often it is looked at (default 0.01). Split evenly across the enabled checks.
    pub false_alarm: f64,
    /// Canary requests a check needs before it can pass, and a step before it may send the canary
    /// more traffic (default 200). Failing needs no minimum: the sequential tests stay valid at
    /// any sample size.
    pub min_samples: u64,
    /// How long a step may hold after its pause is over (the evidence leans toward failure, too
    /// few canary requests, or the analysis has not passed yet) before the rollout is rolled back
    /// for it (default 10m). Steps that wait for a person are not ended by it.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub progress_deadline: Duration,
    /// A canary that gets no request for this long while the baseline does fails (default 60s).
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub no_traffic_timeout: Duration,
    /// Error-rate comparison.
    pub errors: ErrorCheck,
    /// Latency comparison.
    pub latency: LatencyCheck,
    /// Numbers read from Prometheus (CPU, business KPIs) held against bounds while the canary
    /// runs (`fledge_core::metric`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<crate::metric::MetricGate>,
}

/// A request fails when it gets a 5xx, a gRPC error, a reset or a timeout (`Series.failures`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ErrorCheck {
    pub enabled: bool,
    /// The canary fails when the data show its error rate above baseline × (1 + tolerance)
    /// (default 0.25), and a step holds while its estimate is there ...
    pub tolerance: f64,
    /// ... and above this absolute rate (default 0.001): rates below it never fail, and a canary
    /// shown to stay below it passes.
    pub floor: f64,
    /// The canary passes when the data rule out an error rate above baseline × (1 + passMargin)
    /// (default 1.5, i.e. 2.5×; at least `tolerance`). Between the two it may pass or fail. Ruling
    /// out a smaller regression takes ~1/margin² as many requests: this default lets a healthy
    /// canary at 20 requests/s and 0.5 % errors pass within 5 minutes in ≥ 95 % of runs, and a
    /// 3× worse one almost never (BENCHMARKS.md, "Judgment").
    pub pass_margin: f64,
    /// Optional absolute bound: the canary fails when its error rate is above it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_rate: Option<f64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct LatencyCheck {
    pub enabled: bool,
    /// The quantile whose tail is compared (default 0.99).
    pub quantile: f64,
    /// The canary is too slow when it is slower than baseline × (1 + tolerance) (default 0.2):
    /// in its tail (share beyond baseline's quantile × (1 + tolerance)) or overall (rank test).
    pub tolerance: f64,
    /// Run the rank comparison for a general shift (default true).
    pub rank: bool,
    /// Optional absolute bound: the canary's `quantile` must stay under this many milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_ms: Option<f64>,
}

impl Default for AnalysisSpec {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(2),
            false_alarm: 0.01,
            min_samples: 200,
            progress_deadline: Duration::from_secs(600),
            no_traffic_timeout: Duration::from_secs(60),
            errors: ErrorCheck::default(),
            latency: LatencyCheck::default(),
            metrics: Vec::new(),
        }
    }
}

impl Default for ErrorCheck {
    fn default() -> Self {
        Self {
            enabled: true,
            tolerance: 0.25,
            floor: 0.001,
            pass_margin: 1.5,
            max_rate: None,
        }
    }
}

impl Default for LatencyCheck {
    fn default() -> Self {
        Self {
            enabled: true,
            quantile: 0.99,
            tolerance: 0.2,
            rank: true,
            max_ms: None,
        }
    }
}

/// One invalid setting: the field path under `spec.analysis` and what is wrong with it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("spec.analysis.{field} {problem}")]
pub struct InvalidSetting {
    pub field: &'static str,
    pub problem: String,
}

impl AnalysisSpec {
    /// Checks every setting; the first problem found is returned with its field.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        let bad = |field, problem: String| Err(InvalidSetting { field, problem });
        let in_open_unit = |v: f64| v > 0.0 && v < 1.0;
        if self.interval < Duration::from_millis(100) {
            return bad("interval", format!("{:?} is under 100ms", self.interval));
        }
        if !in_open_unit(self.false_alarm) || self.false_alarm > 0.5 {
            return bad(
                "falseAlarm",
                format!("{} is not in (0, 0.5]", self.false_alarm),
            );
        }
        if self.no_traffic_timeout < self.interval {
            return bad(
                "noTrafficTimeout",
                format!(
                    "{:?} is shorter than the interval {:?}",
                    self.no_traffic_timeout, self.interval
                ),
            );
        }
        if self.progress_deadline < self.interval {
            return bad(
                "progressDeadline",
                format!(
                    "{:?} is shorter than the interval {:?}",
                    self.progress_deadline, self.interval
                ),
            );
        }
        let e = &self.errors;
        if !(e.tolerance.is_finite() && e.tolerance >= 0.0) {
            return bad(
                "errors.tolerance",
                format!("{} is not a non-negative number", e.tolerance),
            );
        }
        if !(e.pass_margin.is_finite() && e.pass_margin >= e.tolerance) {
            return bad(
                "errors.passMargin",
                format!(
                    "{} is not a number at least errors.tolerance ({})",
                    e.pass_margin, e.tolerance
                ),
            );
        }
        if !(e.floor.is_finite() && (0.0..1.0).contains(&e.floor)) {
            return bad("errors.floor", format!("{} is not in [0, 1)", e.floor));
        }
        if let Some(max) = e.max_rate.filter(|m| !in_open_unit(*m)) {
            return bad("errors.maxRate", format!("{max} is not in (0, 1)"));
        }
        let l = &self.latency;
        if !in_open_unit(l.quantile) {
            return bad(
                "latency.quantile",
                format!("{} is not in (0, 1)", l.quantile),
            );
        }
        if !(l.tolerance.is_finite() && l.tolerance >= 0.0) {
            return bad(
                "latency.tolerance",
                format!("{} is not a non-negative number", l.tolerance),
            );
        }
        if let Some(max) = l.max_ms.filter(|m| !(m.is_finite() && *m > 0.0)) {
            return bad(
                "latency.maxMs",
                format!("{max} is not a positive number of milliseconds"),
            );
        }
        if self.checks() == 0 {
            return bad(
                "errors.enabled",
                "and latency.enabled are both false: nothing to judge".into(),
            );
        }
        Ok(())
    }

    /// The number of statistical checks that share the false-alarm level.
    pub fn checks(&self) -> usize {
        let errors =
            usize::from(self.errors.enabled) * (1 + usize::from(self.errors.max_rate.is_some()));
        let latency = if self.latency.enabled {
            1 + usize::from(self.latency.rank) + usize::from(self.latency.max_ms.is_some())
        } else {
            0
        };
        errors + latency
    }

    /// The false-alarm level each check runs at (Bonferroni split of `false_alarm`).
    pub fn alpha_per_check(&self) -> f64 {
        self.false_alarm / self.checks().max(1) as f64
    }
}
