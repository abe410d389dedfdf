//! What people's commands do to a rollout: `abort` ends it on stable, `pause` holds the step,
//! `resume` undoes a pause, `promote` passes the current gate, `retry` starts an aborted or
//! rolled-back rollout again from its first step. A command that makes no sense in the phase is
//! ignored with a Warning event. A command recorded on the Rollout (`recorded`) is taken once:
//! its answer goes to `status.lastCommand`, and every event about it names who gave it.
//!
//! Part of the machine's tick; it reads and writes only the tick's status and actions.

use super::{EventKind, Phase, Tick};
use crate::rollout::UserCommand;
use crate::rollout::plan::Plan;
use crate::rollout::recorded::{self, CommandOutcome, CommandRecord, Pending};
use crate::rollout::{Action, Event};

impl Tick<'_> {
    /// Applies `command` given by `by`, or ignores it with an event; returns the answer.
    pub(super) fn given(
        &mut self,
        plan: &Plan,
        command: UserCommand,
        by: &str,
    ) -> (CommandOutcome, String) {
        match self.command(plan, command, by) {
            Ok(()) => (CommandOutcome::Applied, self.status.reason.clone()),
            Err(why) => {
                let message = format!("{command} by {by} ignored: {why}");
                self.warn("CommandIgnored", message.clone());
                (CommandOutcome::Ignored, message)
            }
        }
    }

    /// Takes the command recorded on the Rollout, if it is new, and records its answer.
    pub(super) fn recorded(&mut self, plan: &Plan) {
        let Some(pending) = recorded::pending(self.rollout) else {
            self.status.command_problem = None;
            return;
        };
        let recorded = match pending {
            Pending::Command(c) => c,
            Pending::Unreadable(problem) => {
                if self.status.command_problem.as_ref() != Some(&problem) {
                    self.warn("CommandUnreadable", problem.clone());
                    self.status.command_problem = Some(problem);
                }
                return;
            }
        };
        self.status.command_problem = None;
        let by = if recorded.by.is_empty() {
            "someone unnamed"
        } else {
            recorded.by.as_str()
        };
        let label = format!("{by} (command {})", recorded.id);
        let (outcome, reason) = match recorded.user_command() {
            Ok(command) => self.given(plan, command, &label),
            Err(unknown) => {
                let message = format!("{unknown}; given by {label}");
                self.warn("CommandRefused", message.clone());
                (CommandOutcome::Refused, message)
            }
        };
        self.status.last_command = Some(CommandRecord {
            command: recorded.command,
            id: recorded.id,
            by: recorded.by,
            at: recorded.at,
            outcome,
            reason,
        });
    }

    /// What `command` does in the current phase, or why it does nothing.
    fn command(&mut self, plan: &Plan, command: UserCommand, by: &str) -> Result<(), String> {
        let phase = self.status.phase;
        match (command, phase) {
            (UserCommand::Retry, Phase::Aborted | Phase::RolledBack) => {
                let why = format!("retried by {by} after it was {phase}");
                self.start(plan, "Retried", why);
            }
            (UserCommand::Retry, _) => {
                return Err(format!(
                    "the rollout is {phase}; retry starts again only after Aborted or RolledBack"
                ));
            }
            (_, _) if phase.is_final() => return Err(format!("the rollout is {phase}")),
            (UserCommand::Abort, _) => self.finish(
                Phase::Aborted,
                0,
                EventKind::Warning,
                "Aborted",
                format!(
                    "aborted by {by}: every request goes back to {}",
                    self.stable()
                ),
            ),
            (UserCommand::Pause, Phase::Progressing) => {
                self.status.phase = Phase::Paused;
                self.status.paused_at = Some(self.now);
                self.status.reason = format!(
                    "paused by {by} at step {}; `resume` or `promote` continues",
                    self.step_label()
                );
                let message = self.status.reason.clone();
                self.decide(EventKind::Normal, "Paused", message);
            }
            (UserCommand::Resume, Phase::Paused) => {
                self.resume();
                let message = format!("resumed by {by} at step {}", self.step_label());
                self.decide(EventKind::Normal, "Resumed", message);
            }
            (UserCommand::Promote, Phase::Progressing | Phase::Paused) => {
                if phase == Phase::Paused {
                    self.resume();
                }
                self.advance(plan, &format!("promoted by {by}"));
            }
            _ => return Err(format!("the rollout is {phase}")),
        }
        Ok(())
    }

    fn warn(&mut self, reason: &'static str, message: String) {
        self.actions.push(Action::Event(Event {
            kind: EventKind::Warning,
            reason,
            message,
        }));
    }

    /// Leaves Paused; the time spent paused does not count toward the step's duration.
    fn resume(&mut self) {
        let s = &mut self.status;
        if let (Some(paused), Some(started)) = (s.paused_at.take(), s.step_started_at) {
            let held = self
                .now
                .duration_since(paused)
                .max(jiff::SignedDuration::ZERO);
            s.step_started_at = Some(started.checked_add(held).unwrap_or(started));
        }
        s.phase = Phase::Progressing;
    }
}
