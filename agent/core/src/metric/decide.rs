//! What one look at a metric gate means: the canary's value (and the stable's, for a relative
//! bound) against every bound, and the run of query errors so far, give a [`GateState`] and
//! the evidence the status shows (the queries as sent, their values, the bounds).
//!
//! - a value past a bound: Fail, naming the bound, the value and the query;
//! - an empty answer, NaN or an infinity: Hold, not enough data (never a failure by itself);
//! - a query error: Hold with the error's words, retried sooner ([`next_look_after`]); Fail
//!   once errors have lasted the gate's `failAfter`;
//! - every bound kept: Pass.

use std::time::Duration;

use jiff::Timestamp;
use serde_json::{Value, json};

use super::query::Queries;
use super::spec::MetricGate;
use crate::rollout::GateState;

/// What one query answered.
#[derive(Clone, Debug, PartialEq)]
pub enum Sample {
    /// A number, NaN and infinities included, as Prometheus gives them.
    Value(f64),
    /// No series matched.
    Empty,
    /// No answer: the error in words (the server's own when it gave some).
    Error(String),
}

/// One look at a gate: the queries as sent and what each answered.
#[derive(Clone, Debug, PartialEq)]
pub struct Look<'a> {
    pub queries: &'a Queries,
    pub canary: Sample,
    /// The stable's answer, when the gate has a stable query.
    pub stable: Option<Sample>,
}

impl Look<'_> {
    /// The first query error of the look, if any.
    pub fn error(&self) -> Option<&str> {
        [Some(&self.canary), self.stable.as_ref()]
            .into_iter()
            .flatten()
            .find_map(|s| match s {
                Sample::Error(e) => Some(e.as_str()),
                _ => None,
            })
    }
}

/// The looks in a row that had a query error, up to the latest.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ErrorRun {
    /// When the first of them was made; None when the latest look had no error.
    pub since: Option<Timestamp>,
    /// How many.
    pub looks: u32,
}

impl ErrorRun {
    /// The run after a look made at `at`: one longer when it had an error, over otherwise.
    pub fn after(self, look: &Look<'_>, at: Timestamp) -> Self {
        match look.error() {
            Some(_) => Self {
                since: Some(self.since.unwrap_or(at)),
                looks: self.looks.saturating_add(1),
            },
            None => Self::default(),
        }
    }
}

/// When to look again: after the interval, or sooner while queries fail (1s, 2s, 4s, … up to
/// the interval), so a passing blip costs little and a dead server is not hammered.
pub fn next_look_after(gate: &MetricGate, run: &ErrorRun) -> Duration {
    if run.looks == 0 {
        return gate.interval;
    }
    let backoff = Duration::from_secs(1u64 << (run.looks - 1).min(16));
    backoff.min(gate.interval)
}

/// The gate's state after `look`, made at `at` with `run` the error run including it, and the
/// evidence behind it.
pub fn decide(
    gate: &MetricGate,
    look: &Look<'_>,
    run: &ErrorRun,
    at: Timestamp,
) -> (GateState, Value) {
    let mut evidence = json!({ "canary": arm(&look.queries.canary, &look.canary) });
    if let (Some(q), Some(s)) = (&look.queries.stable, &look.stable) {
        evidence["stable"] = arm(q, s);
    }
    if let Some(error) = look.error() {
        let since = run.since.unwrap_or(at);
        let lasted = at.duration_since(since).as_secs().max(0);
        evidence["error"] = json!(error);
        evidence["errorsSince"] = json!(since.to_string());
        evidence["failAfter"] = json!(format!("{}s", gate.fail_after.as_secs()));
        let state = if lasted >= gate.fail_after.as_secs() as i64 {
            GateState::Fail(format!(
                "queries have failed for {lasted}s (failAfter {}s): {error}",
                gate.fail_after.as_secs()
            ))
        } else {
            // No running count in the words: a status whose words change is written again.
            GateState::Hold(format!(
                "query failed, retrying (the gate fails once errors last {}s): {error}",
                gate.fail_after.as_secs()
            ))
        };
        return (state, evidence);
    }
    let canary = match usable("canary", &look.queries.canary, &look.canary) {
        Ok(v) => v,
        Err(why) => return (GateState::Hold(why), evidence),
    };
    let stable = match (&look.queries.stable, &look.stable) {
        (Some(q), Some(s)) => match usable("stable", q, s) {
            Ok(v) => Some(v),
            Err(why) => return (GateState::Hold(why), evidence),
        },
        _ => None,
    };
    let limits = limits(gate, stable);
    evidence["bounds"] = limits
        .iter()
        .map(|l| json!({ "bound": l.name, "limit": l.limit, "kept": l.kept(canary) }))
        .collect();
    let broken = limits.iter().find(|l| !l.kept(canary));
    let state = match broken {
        Some(l) => GateState::Fail(format!(
            "canary {} is {} {} {}{}; query: {}",
            num(canary),
            if l.upper { "above" } else { "below" },
            l.name,
            num(l.limit),
            l.from.as_deref().unwrap_or(""),
            look.queries.canary
        )),
        None => GateState::Pass,
    };
    (state, evidence)
}

/// One arm's query and answer, as the evidence shows them.
fn arm(query: &str, sample: &Sample) -> Value {
    match sample {
        Sample::Value(v) if v.is_finite() => json!({ "query": query, "value": v }),
        Sample::Value(v) => json!({ "query": query, "value": v.to_string() }),
        Sample::Empty => json!({ "query": query, "value": null }),
        Sample::Error(_) => json!({ "query": query, "error": true }),
    }
}

/// The arm's value, or why there is not enough data to judge it.
fn usable(arm: &str, query: &str, sample: &Sample) -> Result<f64, String> {
    match sample {
        Sample::Value(v) if v.is_finite() => Ok(*v),
        Sample::Value(v) => Err(format!(
            "not enough data: the {arm} query answered {v}; query: {query}"
        )),
        Sample::Empty | Sample::Error(_) => Err(format!(
            "not enough data: the {arm} query answered no series; query: {query}"
        )),
    }
}

/// A bound with its limit worked out.
struct Limit {
    name: &'static str,
    limit: f64,
    /// True: the value must stay at or under the limit.
    upper: bool,
    /// How a relative limit was made, in words (`" (1.2 × stable 0.3)"`).
    from: Option<String>,
}

impl Limit {
    fn kept(&self, value: f64) -> bool {
        if self.upper {
            value <= self.limit
        } else {
            value >= self.limit
        }
    }
}

/// Every bound of `gate`, absolute first; relative ones only with the stable's value.
fn limits(gate: &MetricGate, stable: Option<f64>) -> Vec<Limit> {
    let mut out = Vec::new();
    let absolute = [("max", gate.max, true), ("min", gate.min, false)];
    for (name, v, upper) in absolute {
        if let Some(limit) = v {
            out.push(Limit {
                name,
                limit,
                upper,
                from: None,
            });
        }
    }
    let Some(s) = stable else { return out };
    let relative = [
        ("maxRatioToStable", gate.max_ratio_to_stable, true, '×'),
        ("minRatioToStable", gate.min_ratio_to_stable, false, '×'),
        ("maxAboveStable", gate.max_above_stable, true, '+'),
        ("maxBelowStable", gate.max_below_stable, false, '-'),
    ];
    for (name, v, upper, op) in relative {
        if let Some(by) = v {
            let limit = match op {
                '×' => s * by,
                '+' => s + by,
                _ => s - by,
            };
            out.push(Limit {
                name,
                limit,
                upper,
                from: Some(format!(" (stable {} {op} {})", num(s), num(by))),
            });
        }
    }
    out
}

/// A number for people: at most six decimals, no float noise (`0.36`, not `0.36000000000000004`).
fn num(v: f64) -> String {
    let rounded = (v * 1e6).round() / 1e6;
    format!("{rounded}")
}
