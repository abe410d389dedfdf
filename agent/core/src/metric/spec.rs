//! One metric gate as a Rollout gives it (`spec.analysis.metrics[]`): its name, the PromQL to
//! run (one template for both arms, or one query per arm), its bounds, how often to look, how
//! long query errors are tolerated, and optionally its own Prometheus address. Plain serde data
//! with defaults, and [`problems`], which names every field that is wrong.

use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::query;

/// Time between looks when `interval` is not given.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);
/// How long query errors are tolerated when `failAfter` is not given.
pub const DEFAULT_FAIL_AFTER: Duration = Duration::from_secs(120);
/// The longest one query may take (a query also never takes longer than the interval).
pub const MAX_QUERY_TIMEOUT: Duration = Duration::from_secs(30);

/// A number from Prometheus that must stay within its bounds while the canary runs. A value past
/// a bound rolls the canary back; an empty answer or NaN holds the step (not enough data); a
/// query error holds it and is retried with backoff, and rolls back only once errors have
/// lasted `failAfter`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MetricGate {
    /// The gate's name in the status and events (`cpu`, `delivery-success`).
    pub name: String,
    /// PromQL run once for the canary and, when a bound is relative to stable, once for the
    /// stable. `{{version}}` is the arm's subset; `{{canary}}`, `{{stable}}` and
    /// `{{namespace}}` are the canary's and the stable's subsets and the Rollout's namespace.
    /// The answer must be a scalar or a vector of at most one series. Give either this or
    /// `canaryQuery`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// The canary's own PromQL (same placeholders), instead of `query`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_query: Option<String>,
    /// The stable's own PromQL, with `canaryQuery`, for bounds relative to stable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_query: Option<String>,
    /// The canary's value must stay at or under this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    /// The canary's value must stay at or over this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    /// The canary's value must stay at or under the stable's times this (e.g. 1.2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ratio_to_stable: Option<f64>,
    /// The canary's value must stay at or over the stable's times this (e.g. 0.98).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_ratio_to_stable: Option<f64>,
    /// The canary's value may exceed the stable's by at most this much.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_above_stable: Option<f64>,
    /// The canary's value may fall short of the stable's by at most this much.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_below_stable: Option<f64>,
    /// Time between looks (default 10s). After a query error the next look comes sooner
    /// (1s, 2s, 4s, … up to this).
    #[serde(default = "default_interval", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub interval: Duration,
    /// How long queries may keep failing before the gate fails (default 2m). Until then a
    /// failing query holds the step and says why.
    #[serde(default = "default_fail_after", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub fail_after: Duration,
    /// The Prometheus server (`http://prometheus.istio-system:9090`); the agent's
    /// `--prometheus-url` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
}

fn default_interval() -> Duration {
    DEFAULT_INTERVAL
}

fn default_fail_after() -> Duration {
    DEFAULT_FAIL_AFTER
}

impl MetricGate {
    /// A gate with the defaults, no query and no bound (for tests and builders).
    pub fn named(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            query: None,
            canary_query: None,
            stable_query: None,
            max: None,
            min: None,
            max_ratio_to_stable: None,
            min_ratio_to_stable: None,
            max_above_stable: None,
            max_below_stable: None,
            interval: DEFAULT_INTERVAL,
            fail_after: DEFAULT_FAIL_AFTER,
            address: None,
        }
    }

    /// Whether a bound needs the stable's value.
    pub fn relative(&self) -> bool {
        self.max_ratio_to_stable.is_some()
            || self.min_ratio_to_stable.is_some()
            || self.max_above_stable.is_some()
            || self.max_below_stable.is_some()
    }

    /// The longest one query may take: the interval, at most [`MAX_QUERY_TIMEOUT`].
    pub fn query_timeout(&self) -> Duration {
        self.interval.min(MAX_QUERY_TIMEOUT)
    }
}

/// Every problem of `metrics`, as (field path under `spec.analysis`, what is wrong).
pub fn problems(metrics: &[MetricGate]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (i, m) in metrics.iter().enumerate() {
        let field = |f: &str| format!("metrics[{i}].{f}");
        let mut bad = |f: &str, p: String| out.push((field(f), p));
        if m.name.is_empty() {
            bad("name", "is empty".into());
        } else if m.name.chars().any(|c| c.is_whitespace() || c.is_control()) {
            bad("name", format!("{:?} contains whitespace", m.name));
        } else if metrics[..i].iter().any(|o| o.name == m.name) {
            bad("name", format!("{:?} is given twice", m.name));
        }
        match (&m.query, &m.canary_query, &m.stable_query) {
            (Some(_), None, None) | (None, Some(_), _) => {}
            (None, None, _) => bad("query", "is missing: give query or canaryQuery".into()),
            (Some(_), Some(_), _) => bad("canaryQuery", "is set beside query; give one".into()),
            (Some(_), None, Some(_)) => bad(
                "stableQuery",
                "is set beside query, which serves both arms; give canaryQuery with it".into(),
            ),
        }
        for (f, q) in [
            ("query", &m.query),
            ("canaryQuery", &m.canary_query),
            ("stableQuery", &m.stable_query),
        ] {
            match q.as_deref().map(query::check) {
                Some(Err(problem)) => bad(f, problem),
                _ if q.as_deref().is_some_and(|q| q.trim().is_empty()) => bad(f, "is empty".into()),
                _ => {}
            }
        }
        let bounds = [
            ("max", m.max, f64::NEG_INFINITY),
            ("min", m.min, f64::NEG_INFINITY),
            ("maxRatioToStable", m.max_ratio_to_stable, 0.0),
            ("minRatioToStable", m.min_ratio_to_stable, 0.0),
            ("maxAboveStable", m.max_above_stable, 0.0),
            ("maxBelowStable", m.max_below_stable, 0.0),
        ];
        if bounds.iter().all(|(_, v, _)| v.is_none()) {
            bad(
                "max",
                "is missing: give at least one of max, min, maxRatioToStable, minRatioToStable, \
                 maxAboveStable, maxBelowStable"
                    .into(),
            );
        }
        for (f, v, floor) in bounds {
            if let Some(v) = v.filter(|v| !(v.is_finite() && *v >= floor)) {
                let what = if floor == 0.0 {
                    "a non-negative number"
                } else {
                    "a finite number"
                };
                bad(f, format!("{v} is not {what}"));
            }
        }
        if let (Some(min), Some(max)) = (m.min, m.max)
            && min > max
        {
            bad("min", format!("{min} is over max {max}"));
        }
        if m.relative() && m.query.is_none() && m.stable_query.is_none() {
            bad(
                "stableQuery",
                "is missing: a bound relative to stable needs the stable's value".into(),
            );
        }
        if m.relative()
            && let Some(q) = &m.query
            && !query::names_version(q)
        {
            bad(
                "query",
                "has no {{version}}: for a bound relative to stable it runs for both arms, and \
                 would ask the same of both; add {{version}}, or give canaryQuery and stableQuery"
                    .into(),
            );
        }
        if m.interval < Duration::from_secs(1) {
            bad("interval", format!("{:?} is under 1s", m.interval));
        }
        if let Some(a) = &m.address
            && !(a.starts_with("http://") || a.starts_with("https://"))
        {
            bad(
                "address",
                format!("{a:?} is not an http:// or https:// URL"),
            );
        }
    }
    out
}
