//! What the checks outside the proxy do to a rollout: their answers about the current step are
//! kept in `status.gates`; a Fail rolls back and an Abort aborts, like the analysis's Fail and a
//! person's abort; Holds and Waits keep the step's gate shut, Holds until the progress deadline,
//! Waits until they change.
//!
//! Part of the machine's tick; it reads and writes only the tick's status and actions.

use super::{EventKind, Phase, Tick};
use crate::rollout::gates::{GateReport, GateState};

impl Tick<'_> {
    /// Takes this tick's answers: the current step's are kept (answers about an earlier step are
    /// dropped), and the first Fail or Abort ends the rollout on stable.
    pub(super) fn checks(&mut self, reports: &[GateReport]) {
        if !matches!(self.status.phase, Phase::Progressing | Phase::Paused) {
            return;
        }
        let current: Vec<GateReport> = reports
            .iter()
            .filter(|r| r.is_current(&self.status))
            .cloned()
            .collect();
        let status = &self.status;
        let mut kept: Vec<GateReport> = status
            .gates
            .iter()
            .filter(|old| old.is_current(status))
            .filter(|old| {
                !current
                    .iter()
                    .any(|new| new.name == old.name && new.kind == old.kind)
            })
            .cloned()
            .collect();
        kept.extend(current);
        kept.sort_by(|a, b| (a.kind as u8, &a.name).cmp(&(b.kind as u8, &b.name)));
        self.status.gates = kept;
        let ending = self.status.gates.iter().find_map(|r| match &r.state {
            GateState::Fail(why) => Some((Phase::RolledBack, "RolledBack", "failed", r, why)),
            GateState::Abort(why) => Some((Phase::Aborted, "Aborted", "aborted", r, why)),
            _ => None,
        });
        if let Some((phase, event, verb, report, why)) = ending {
            let reason = format!(
                "{:?} check {} {verb} at step {}: {why}; every request goes back to {}",
                report.kind,
                report.name,
                self.step_label(),
                self.stable()
            );
            self.finish(phase, 0, EventKind::Warning, event, reason);
        }
    }

    /// The current step's Holds, in words, if any.
    pub(super) fn checks_holding(&self) -> Option<String> {
        self.reasons(|s| matches!(s, GateState::Hold(_)))
    }

    /// The current step's Waits, in words, if any.
    pub(super) fn checks_waiting(&self) -> Option<String> {
        self.reasons(|s| matches!(s, GateState::Wait(_)))
    }

    fn reasons(&self, which: impl Fn(&GateState) -> bool) -> Option<String> {
        let words: Vec<String> = self
            .status
            .gates
            .iter()
            .filter(|r| r.is_current(&self.status) && which(&r.state))
            .map(|r| format!("{}: {}", r.name, r.state.reason().unwrap_or_default()))
            .collect();
        (!words.is_empty()).then(|| words.join("; "))
    }
}
