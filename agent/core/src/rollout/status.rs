//! The Rollout's status: where the rollout is (phase with a human reason, step, weight), since
//! when, what the last analysis said with its evidence, and the history of decisions. It is
//! persisted after every tick (Kubernetes status subresource, or the local store's status file),
//! and it is everything the state machine needs to continue after an agent restart.
//!
//! Plain data; the state machine (`machine`) is the only writer.

use jiff::Timestamp;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::gates::GateReport;
use super::recorded::CommandRecord;

/// Decisions kept in `status.history`; older ones are dropped first.
pub const HISTORY_LIMIT: usize = 32;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum Phase {
    /// Not started yet.
    #[default]
    Pending,
    /// Walking through the steps.
    Progressing,
    /// Held by a person; resumes on `resume` or `promote`.
    Paused,
    /// Every request goes to the canary; the hand-over to the new stable follows.
    Promoting,
    /// The canary is the new stable (or the strategy stopped as asked).
    Succeeded,
    /// The analysis failed: every request is back on stable.
    RolledBack,
    /// A person aborted: every request is back on stable.
    Aborted,
    /// The Rollout cannot be carried out as written (see the reason).
    Failed,
}

impl Phase {
    /// Phases a rollout never leaves by itself.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            Self::Succeeded | Self::RolledBack | Self::Aborted | Self::Failed
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "Pending",
            Self::Progressing => "Progressing",
            Self::Paused => "Paused",
            Self::Promoting => "Promoting",
            Self::Succeeded => "Succeeded",
            Self::RolledBack => "RolledBack",
            Self::Aborted => "Aborted",
            Self::Failed => "Failed",
        }
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An analysis verdict as the status records it: the analysis's own type.
pub use crate::analysis::Verdict;

/// What the analysis said at the last tick, with its evidence.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisRecord {
    #[schemars(with = "String")]
    pub at: Timestamp,
    /// The step it judged.
    pub step: u32,
    pub verdict: Verdict,
    pub reason: String,
    #[schemars(schema_with = "any_value")]
    pub evidence: serde_json::Value,
    /// Why the step may not take more traffic yet, in words; absent when it may.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold: Option<String>,
}

/// One decision: what the rollout did, when, and why.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Decision {
    #[schemars(with = "String")]
    pub at: Timestamp,
    pub phase: Phase,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<u32>,
    pub canary_weight: u32,
    pub reason: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutStatus {
    #[serde(default)]
    pub phase: Phase,
    /// Why the rollout is in this phase, for a person.
    #[serde(default)]
    pub reason: String,
    /// Index of the step in effect (0-based), once started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_step: Option<u32>,
    /// Steps of the whole plan (an A/B, shadow or preview phase counts as one step).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_steps: Option<u32>,
    /// The step in effect as a person counts, `2/4` (for `kubectl get rollouts`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// Percent of live requests the canary receives now.
    #[serde(default)]
    pub canary_weight: u32,
    /// When the current step began (moved forward by the time spent paused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub step_started_at: Option<Timestamp>,
    /// When a person paused, while paused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub paused_at: Option<Timestamp>,
    /// The subsets this rollout moves between, fixed when it starts. A spec naming another pair
    /// starts a new rollout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_subset: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_subset: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_analysis: Option<AnalysisRecord>,
    /// The latest decisions, oldest first (at most 32).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<Decision>,
    /// The `metadata.generation` of the spec this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Counts the routing changes this rollout asked for (for people and logs). The filters'
    /// routing table has a revision of its own, one for the whole mesh, kept by the agent.
    #[serde(default)]
    pub routing_revision: u64,
    /// Why the routes this status stands for are not in place: the last routing write's error
    /// (a missing or invalid VirtualService, a refused write), until a write succeeds. The
    /// status is written before the routes, so without this it would claim a weight nobody
    /// routes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routing_error: Option<String>,
    /// The latest command recorded on the Rollout (annotation `fledge.dev/command`) that the
    /// agent took, who gave it and what it did. A command with this id or a lower one is never
    /// applied again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_command: Option<CommandRecord>,
    /// Why the command annotation cannot be read, while it cannot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command_problem: Option<String>,
    /// What the checks outside the proxy (metrics from Prometheus, webhooks, the workloads) last
    /// said about the current step, beside the analysis's own evidence; kept after the rollout
    /// ends, as the evidence of its last step.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gates: Vec<GateReport>,
}

impl RolloutStatus {
    /// Appends a decision, dropping the oldest beyond [`HISTORY_LIMIT`].
    pub(crate) fn record(&mut self, at: Timestamp, reason: String) {
        self.history.push(Decision {
            at,
            phase: self.phase,
            step: self.current_step,
            canary_weight: self.canary_weight,
            reason,
        });
        if self.history.len() > HISTORY_LIMIT {
            let extra = self.history.len() - HISTORY_LIMIT;
            self.history.drain(..extra);
        }
    }
}

/// Any JSON value; Kubernetes keeps it as given.
pub(crate) fn any_value(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({ "x-kubernetes-preserve-unknown-fields": true })
}
