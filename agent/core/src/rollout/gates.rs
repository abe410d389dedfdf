//! Checks from outside the proxy: what a metric read from Prometheus, a webhook or the
//! workloads' readiness says about the step a rollout is in. Adapters in the agent ask them (on
//! their own time, so no tick waits for a slow server) and hand the machine their latest
//! answers as [`GateReport`]s; the machine treats every kind alike: a Fail rolls back (an Abort
//! aborts), a Hold keeps the step from ending until the progress deadline, a Wait keeps it
//! without a deadline (as a person's promotion does), a Pass says nothing against ending it.
//!
//! Plain data. A report names the step it was made for (its index and start), so an answer
//! about a step that is over is never applied to the next one.

use jiff::Timestamp;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::status::RolloutStatus;

/// Which kind of check made a report.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum GateKind {
    /// A query to Prometheus (`spec.analysis.metrics`).
    Metric,
    /// An HTTP call to the user's pipeline (`spec.webhooks`).
    Webhook,
    /// The Deployments the Rollout names (`spec.workloads`).
    Workload,
}

/// What a check says about ending the current step. In the status: `state` (the variant's
/// name) and `reason` (its words, absent for Pass).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", content = "reason")]
pub enum GateState {
    /// Nothing against ending the step.
    Pass,
    /// Not yet, and the progress deadline applies (too little data, pods not ready).
    Hold(String),
    /// Not yet, with no deadline: a person or a pipeline decides (a confirmation hook).
    Wait(String),
    /// Roll back now: the canary is worse than the check allows.
    Fail(String),
    /// Abort now, as a person's abort would.
    Abort(String),
}

/// One object schema for every variant, as a Kubernetes structural schema needs.
impl JsonSchema for GateState {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "GateState".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "object",
            "required": ["state"],
            "properties": {
                "state": {
                    "description": "Pass, Hold (not yet, until the progress deadline), Wait (not yet, no deadline), Fail (roll back) or Abort.",
                    "type": "string",
                    "enum": ["Pass", "Hold", "Wait", "Fail", "Abort"]
                },
                "reason": {
                    "description": "Why, in words (absent for Pass).",
                    "type": "string"
                }
            }
        })
    }
}

impl GateState {
    /// The state's name, as the status shows it.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Pass => "Pass",
            Self::Hold(_) => "Hold",
            Self::Wait(_) => "Wait",
            Self::Fail(_) => "Fail",
            Self::Abort(_) => "Abort",
        }
    }

    /// The words behind a state other than Pass.
    pub fn reason(&self) -> Option<&str> {
        match self {
            Self::Pass => None,
            Self::Hold(r) | Self::Wait(r) | Self::Fail(r) | Self::Abort(r) => Some(r),
        }
    }
}

/// One check's latest answer about one step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GateReport {
    /// The check's name as the spec gives it (`cpu`, `load-test`, `canary-replicas`).
    pub name: String,
    pub kind: GateKind,
    /// The step the answer is about, by index and start: another step's answer is ignored.
    pub step: u32,
    #[schemars(with = "String")]
    pub step_started_at: Timestamp,
    #[serde(flatten)]
    pub state: GateState,
    /// The numbers behind the answer (a query and its values, a hook's status code).
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    #[schemars(schema_with = "super::status::any_value")]
    pub evidence: serde_json::Value,
    /// When the check answered.
    #[schemars(with = "String")]
    pub at: Timestamp,
}

impl GateReport {
    /// A report about the step `status` is in now (None when no step runs).
    pub fn about(
        status: &RolloutStatus,
        name: impl Into<String>,
        kind: GateKind,
        state: GateState,
        at: Timestamp,
    ) -> Option<Self> {
        Some(Self {
            name: name.into(),
            kind,
            step: status.current_step?,
            step_started_at: status.step_started_at?,
            state,
            evidence: serde_json::Value::Null,
            at,
        })
    }

    pub fn with_evidence(mut self, evidence: serde_json::Value) -> Self {
        self.evidence = evidence;
        self
    }

    /// Whether this answer is about the step `status` is in now.
    pub fn is_current(&self, status: &RolloutStatus) -> bool {
        status.current_step == Some(self.step)
            && status.step_started_at == Some(self.step_started_at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + secs).expect("a valid time")
    }

    #[test]
    fn a_report_is_current_only_for_the_step_and_start_it_names() {
        let status = RolloutStatus {
            current_step: Some(1),
            step_started_at: Some(at(10)),
            ..Default::default()
        };
        let report = GateReport::about(&status, "cpu", GateKind::Metric, GateState::Pass, at(12))
            .expect("a step runs");
        let cases = [
            (Some(1), Some(at(10)), true),
            (Some(2), Some(at(10)), false),
            (Some(1), Some(at(11)), false),
            (None, None, false),
        ];
        for (step, started, current) in cases {
            let s = RolloutStatus {
                current_step: step,
                step_started_at: started,
                ..Default::default()
            };
            assert_eq!(report.is_current(&s), current, "{step:?} {started:?}");
        }
        assert_eq!(
            GateReport::about(
                &RolloutStatus::default(),
                "cpu",
                GateKind::Metric,
                GateState::Pass,
                at(0)
            ),
            None
        );
    }

    #[test]
    fn a_report_serializes_with_its_state_beside_its_name() {
        let status = RolloutStatus {
            current_step: Some(0),
            step_started_at: Some(at(0)),
            ..Default::default()
        };
        let report = GateReport::about(
            &status,
            "cpu",
            GateKind::Metric,
            GateState::Fail("cpu 0.85 above 0.7".into()),
            at(2),
        )
        .expect("a step runs")
        .with_evidence(serde_json::json!({"value": 0.85}));
        let json = serde_json::to_value(&report).expect("serializes");
        assert_eq!(json["state"], "Fail");
        assert_eq!(json["reason"], "cpu 0.85 above 0.7");
        assert_eq!(json["kind"], "Metric");
        assert_eq!(json["evidence"]["value"], 0.85);
        let back: GateReport = serde_json::from_value(json).expect("reads back");
        assert_eq!(back, report);
    }
}
