//! One rollout's tick, decided: what to judge, and — from the judgment, the people's commands and
//! the time — the new status, the routing to make true, and the events to record, in the order
//! the writes must happen; whether the status is worth persisting now (a change of phase, step,
//! weight or verdict at once, new evidence at most every [`EVIDENCE_EVERY`]). Also which series
//! a rollout's analysis reads ([`measured`]), so nothing else is stored, and how long to wait
//! before retrying a write that failed.
//!
//! Pure: the agent's controller snapshots what it holds, calls [`target`] and [`plan`], and
//! applies the [`TickPlan`] (VirtualService, filters' table, events, status). What it is not: it
//! reads no store, writes nothing and keeps no clock; the state machine (`rollout::machine`)
//! decides the transitions, this module turns them into writes.

use std::time::Duration;

use jiff::Timestamp;

use crate::analysis::Judgment;
use crate::judge::{Arms, outcome};
use crate::rollout::{
    self, Action, AnalysisOutcome, AnalysisRecord, AnalysisWindow, EventKind, GateReport, Plan,
    Rollout, RolloutStatus, RoutingIntent, UserCommand,
};
use crate::windows::SeriesKey;

/// A status whose only change is its evidence (the last analysis's time, numbers and wording, or
/// the reason's) is persisted at most this often, plus its rollout's spread
/// ([`evidence_every`]); any other change is persisted at once.
pub const EVIDENCE_EVERY: Duration = Duration::from_secs(10);

/// How often evidence alone is persisted for `rollout`: [`EVIDENCE_EVERY`] plus 0 – 4 s fixed by
/// its name (FNV-1a), so that Rollouts started on the same tick do not all write their evidence
/// on the same later ticks (1,000 at once took a local tick to seconds).
pub fn evidence_every(rollout: &Rollout) -> Duration {
    let hash = rollout
        .key()
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
    EVIDENCE_EVERY + Duration::from_secs(hash % 5)
}

/// What one tick knows about one rollout.
#[derive(Clone, Copy, Debug)]
pub struct Tick<'a> {
    /// The Rollout with the status the loop holds for it (the persisted one after a restart).
    pub rollout: &'a Rollout,
    /// This tick's look at the current step, if the judge looked.
    pub judgment: Option<&'a Judgment>,
    /// The latest answers of the checks outside the proxy (metrics, webhooks, workloads).
    pub gates: &'a [GateReport],
    /// People's commands since the last tick, in the order they arrived.
    pub commands: &'a [UserCommand],
    /// Whether the routing the status stands for was applied since this agent started.
    pub routing_applied: bool,
    /// The status as last persisted, and when this agent persisted it (None: not since it
    /// started). Without it, the rollout's own status stands for the persisted one.
    pub persisted: Option<(&'a RolloutStatus, Option<Timestamp>)>,
    pub now: Timestamp,
}

/// A decision worth telling a person about, ready for the store's event log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notice {
    pub kind: EventKind,
    /// A short CamelCase token: `Started`, `StepAdvanced`, `RolledBack`, …
    pub reason: &'static str,
    /// The phase the decision moved the rollout to (`Progressing`, `RolledBack`, …).
    pub action: String,
    /// What happened.
    pub message: String,
    /// Why, in the analysis's words, when this tick judged.
    pub evidence: Option<String>,
}

impl Notice {
    /// What happened and why, for a person: the message, with the evidence in parentheses.
    pub fn note(&self) -> String {
        match &self.evidence {
            Some(e) => format!("{} ({e})", self.message),
            None => self.message.clone(),
        }
    }
}

/// What to write for one tick, in order: the status when it changed (it is the intent: a
/// failed status write writes nothing else, and the next tick tries the same transition again),
/// then the routing that status stands for (a failed routing write is retried from the persisted
/// status, as a restarted agent would), then the events.
#[derive(Clone, Debug, PartialEq)]
pub struct TickPlan {
    pub status: RolloutStatus,
    /// The routing to make true in the VirtualService and the filters' table, if any: a new
    /// transition's, or after a restart the one the persisted status stands for.
    pub routing: Option<RoutingIntent>,
    pub notices: Vec<Notice>,
    /// Whether to persist `status`: it differs from the persisted one in phase, step, weight,
    /// verdict or anything but the evidence, or its evidence changed and the persisted one is
    /// [`evidence_every`] old.
    pub status_changed: bool,
    /// The analysis outcome the machine was given, for logs.
    pub outcome: Option<AnalysisOutcome>,
}

impl TickPlan {
    /// Whether the rollout has ended, so its running analysis can be forgotten.
    pub fn finished(&self) -> bool {
        self.status.phase.is_final()
    }
}

/// What the judge should look at this tick: the current step's window and which series are
/// compared. None when no step runs, or when the stage sends the canary nothing by design (a
/// blue/green preview without a mirror): judging it would only find the canary starved.
pub fn target(rollout: &Rollout) -> Option<(AnalysisWindow, Arms)> {
    if rollout::routing(rollout).is_some_and(|i| i.starves_canary()) {
        return None;
    }
    let window = rollout::analysis_window(rollout)?;
    let spec = &rollout.spec;
    let status = rollout.status.as_ref()?;
    let stable = status.stable_subset.as_deref().unwrap_or(&spec.stable);
    let canary = status.canary_subset.as_deref().unwrap_or(&spec.canary);
    let arms = Arms::new(&spec.host, stable, canary, window.canary_traffic);
    Some((window, arms))
}

/// The status to persist when the plan's routing write failed with `error`: it says why its
/// weight is not routed, until a later tick's routes are written.
pub fn routing_failed(status: &RolloutStatus, error: String) -> RolloutStatus {
    RolloutStatus {
        routing_error: Some(error),
        ..status.clone()
    }
}

/// Decides one tick: runs the state machine and orders its actions into writes.
pub fn plan(tick: Tick<'_>) -> TickPlan {
    let outcome = tick.judgment.map(outcome);
    let (mut status, actions) = rollout::step(
        tick.rollout,
        outcome.as_ref(),
        tick.gates,
        tick.commands,
        tick.now,
    );
    // An earlier routing write's error is over: this tick tries the routes again, or needs none.
    // A persisted error makes the cleared status worth writing.
    status.routing_error = None;
    let mut routing = None;
    let mut notices = Vec::new();
    let evidence = outcome
        .as_ref()
        .map(|o| o.reason.clone())
        .filter(|r| !r.is_empty());
    for action in actions {
        match action {
            Action::SetRouting(intent) => routing = Some(intent),
            Action::Event(event) => notices.push(Notice {
                kind: event.kind,
                reason: event.reason,
                action: status.phase.to_string(),
                message: event.message,
                evidence: evidence.clone(),
            }),
        }
    }
    // A restarted agent re-applies the routing its persisted status stands for.
    if routing.is_none() && !tick.routing_applied {
        routing = rollout::routing(tick.rollout);
    }
    let status_changed = worth_persisting(&tick, &status);
    TickPlan {
        status,
        routing,
        notices,
        status_changed,
        outcome,
    }
}

/// Whether `status` should be written now (see [`TickPlan::status_changed`]).
fn worth_persisting(tick: &Tick<'_>, status: &RolloutStatus) -> bool {
    let (persisted, at) = match tick.persisted {
        Some((persisted, at)) => (Some(persisted), at),
        None => (tick.rollout.status.as_ref(), None),
    };
    let Some(persisted) = persisted else {
        return true;
    };
    if persisted == status {
        return false;
    }
    beyond_evidence(persisted, status)
        || at.is_none_or(|at| {
            tick.now.duration_since(at).unsigned_abs() >= evidence_every(tick.rollout)
        })
}

/// Whether two statuses differ in more than their evidence: the reason's wording and the last
/// analysis's time, reason and numbers. Listing every field makes a new one a compile error here.
fn beyond_evidence(a: &RolloutStatus, b: &RolloutStatus) -> bool {
    let RolloutStatus {
        phase,
        reason: _,
        current_step,
        total_steps,
        step,
        canary_weight,
        step_started_at,
        paused_at,
        stable_subset,
        canary_subset,
        last_analysis,
        history,
        observed_generation,
        routing_revision,
        routing_error,
        last_command,
        command_problem,
        gates,
    } = a;
    let verdict = |r: &Option<AnalysisRecord>| r.as_ref().map(|r| (r.step, r.verdict));
    // A check's numbers are evidence; what it says (its state and words) is not.
    let said = |g: &[GateReport]| -> Vec<_> {
        g.iter()
            .map(|r| (r.name.clone(), r.kind, r.step, r.state.clone()))
            .collect()
    };
    *phase != b.phase
        || *current_step != b.current_step
        || *total_steps != b.total_steps
        || *step != b.step
        || *canary_weight != b.canary_weight
        || *step_started_at != b.step_started_at
        || *paused_at != b.paused_at
        || *stable_subset != b.stable_subset
        || *canary_subset != b.canary_subset
        || verdict(last_analysis) != verdict(&b.last_analysis)
        || *history != b.history
        || *observed_generation != b.observed_generation
        || *routing_revision != b.routing_revision
        || *routing_error != b.routing_error
        || *last_command != b.last_command
        || *command_problem != b.command_problem
        || said(gates) != said(&b.gates)
}

/// The series a rollout's analysis may read, at any of its stages, until it ends: its host's
/// canary and stable subsets, live or mirrored, on the side each stage judges. The agent stores
/// only these; a rollout that has ended needs none.
pub fn measured(rollout: &Rollout) -> Vec<SeriesKey> {
    let status = rollout.status.as_ref();
    if status.is_some_and(|s| s.phase.is_final()) {
        return Vec::new();
    }
    let Some(plan) = Plan::of(&rollout.spec) else {
        return Vec::new();
    };
    let spec = &rollout.spec;
    let stable = status
        .and_then(|s| s.stable_subset.as_deref())
        .unwrap_or(&spec.stable);
    let canary = status
        .and_then(|s| s.canary_subset.as_deref())
        .unwrap_or(&spec.canary);
    let mut keys = Vec::new();
    for stage in &plan.stages {
        let arms = Arms::new(&spec.host, stable, canary, stage.judged_traffic());
        for key in [arms.canary, arms.baseline] {
            if !keys.contains(&key) {
                keys.push(key);
            }
        }
    }
    keys
}

/// Why a write failed, as far as what to do next is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WriteFailure {
    /// Someone else changed the object since it was read: read again and retry soon.
    Conflict,
    /// The agent may not make the call (RBAC): a person must grant it.
    Forbidden,
    /// The object is not there (a VirtualService not created yet, a CRD not installed).
    NotFound,
    /// The object cannot be worked with as it is (a VirtualService fledge cannot read, a refusal
    /// by admission): a person must change it.
    Invalid,
    /// The store could not be reached or failed for its own reasons (I/O, network, 5xx).
    Unavailable,
}

impl WriteFailure {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Conflict => "conflict",
            Self::Forbidden => "forbidden",
            Self::NotFound => "not_found",
            Self::Invalid => "invalid",
            Self::Unavailable => "unavailable",
        }
    }
}

/// How long to wait before retrying after the `failures`-th failure in a row (1 for the first).
/// A conflict is retried soon: the next read sees the other writer's change. Failures a person
/// must mend back off further (5 s doubling to 5 min) than passing ones (2 s doubling to 30 s),
/// so a missing permission does not flood the API server.
pub fn retry_after(failure: WriteFailure, failures: u32) -> Duration {
    let doubling = |first: u64, cap: u64| {
        let shift = failures.saturating_sub(1).min(16);
        Duration::from_secs(first.saturating_mul(1 << shift).min(cap))
    };
    match failure {
        WriteFailure::Conflict => doubling(1, 4),
        WriteFailure::Unavailable => doubling(2, 30),
        WriteFailure::Forbidden | WriteFailure::NotFound | WriteFailure::Invalid => {
            doubling(5, 300)
        }
    }
}

#[cfg(test)]
mod tests;
