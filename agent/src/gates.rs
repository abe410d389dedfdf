//! The agent's side of the checks outside the proxy (`fledge_core::rollout::gates`): each kind
//! of check (a metric read from Prometheus, a webhook, the workloads) is a [`Gate`] that the
//! controller asks, every tick and for every Rollout, for its latest answers about the current
//! step, and tells what each tick's plan decided once it is written.
//!
//! A gate never makes a tick wait: it does its I/O on its own tasks and answers from what it
//! last learned (a Hold while it has learned nothing yet, so a step never ends on a check that
//! did not run). What it is not: it decides no transition; the machine reads the answers.

use std::sync::Arc;

use fledge_core::planner::TickPlan;
use fledge_core::rollout::{GateReport, Rollout};
use jiff::Timestamp;

/// One kind of check outside the proxy.
pub trait Gate: Send + Sync + 'static {
    /// The latest answers about `rollout`'s current step, at once (no I/O here).
    fn reports(&self, rollout: &Rollout, now: Timestamp) -> Vec<GateReport>;

    /// `plan` was written for `rollout` (its status persisted, its routes applied): start what
    /// it calls for — a hook to call, replicas to set — without waiting for it. A restarted
    /// agent calls this again for the status it resumes from, so what it starts must be safe
    /// to start twice.
    fn applied(&self, rollout: &Rollout, plan: &TickPlan) {
        let _ = (rollout, plan);
    }
}

/// Every gate the agent runs; none by default.
#[derive(Clone, Default)]
pub struct Gates(Vec<Arc<dyn Gate>>);

impl Gates {
    pub fn new(gates: Vec<Arc<dyn Gate>>) -> Self {
        Self(gates)
    }

    /// These gates and `gate`.
    pub fn and(mut self, gate: Arc<dyn Gate>) -> Self {
        self.0.push(gate);
        self
    }

    /// Every gate's answers about `rollout`, in the order the gates were given.
    pub fn reports(&self, rollout: &Rollout, now: Timestamp) -> Vec<GateReport> {
        self.0
            .iter()
            .flat_map(|g| g.reports(rollout, now))
            .collect()
    }

    pub fn applied(&self, rollout: &Rollout, plan: &TickPlan) {
        for gate in &self.0 {
            gate.applied(rollout, plan);
        }
    }
}
