//! The rollout state machine: one tick takes the Rollout (spec, generation, persisted status),
//! this tick's analysis outcome, the people's commands and the time, and returns the new status
//! and the actions to carry out — routing changes and events, nothing else.
//!
//! Pure and deterministic: the same inputs give the same outputs, and the status it returns is
//! all it needs next time, so an agent restarted from a persisted status continues where it was.
//! What it is not: it reads no telemetry, writes no route and keeps no clock; adapters do.

use std::time::Duration;

use jiff::Timestamp;
use serde::Serialize;

use super::gates::GateReport;
use super::plan::{End, Plan, RoutingIntent, Stage, StageKind, intent};
use super::spec::Rollout;
use super::status::{AnalysisRecord, Phase, RolloutStatus, Verdict};
use crate::rollout::UserCommand;
use crate::windows::Traffic;

mod commands;
mod gates;

/// Who gave a command that came without a name (the agent's HTTP API).
const ANONYMOUS: &str = "a person";

/// This tick's analysis of the current step, from the analysis adapter.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AnalysisOutcome {
    pub verdict: Verdict,
    /// One line a person reads (for a Fail: which check failed and why).
    pub reason: String,
    /// The numbers behind the verdict, kept in `status.lastAnalysis`.
    pub evidence: serde_json::Value,
    /// Why the step may not take more traffic yet (an estimate worse than allowed, too few
    /// canary requests), in words; None when it may.
    pub hold: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum EventKind {
    Normal,
    Warning,
}

/// A Kubernetes-style event about the Rollout.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Event {
    pub kind: EventKind,
    /// A short CamelCase token: `Started`, `StepAdvanced`, `RolledBack`, …
    pub reason: &'static str,
    pub message: String,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub enum Action {
    /// Make the VirtualService and the filters' table say this (`status.routingRevision` counts
    /// these changes).
    SetRouting(RoutingIntent),
    Event(Event),
}

/// What the analysis adapter should judge now: the current step's canary traffic since the step
/// began. None when no step is running.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AnalysisWindow {
    pub step: u32,
    pub since: Timestamp,
    pub canary_traffic: Traffic,
}

/// The routing the Rollout's status stands for (None before it starts). An agent that restarts
/// applies this once, since the previous run may have died before applying it.
pub fn routing(rollout: &Rollout) -> Option<RoutingIntent> {
    let status = rollout.status.clone().unwrap_or_default();
    intent(rollout_name(rollout), &rollout.spec, &status)
}

/// Which traffic the analysis should judge for the Rollout now.
pub fn analysis_window(rollout: &Rollout) -> Option<AnalysisWindow> {
    let status = rollout.status.as_ref()?;
    if !matches!(status.phase, Phase::Progressing | Phase::Paused) {
        return None;
    }
    let step = status.current_step?;
    let stage = Plan::of(&rollout.spec)?.stages.get(step as usize)?.clone();
    Some(AnalysisWindow {
        step,
        since: status.step_started_at?,
        canary_traffic: stage.judged_traffic(),
    })
}

fn rollout_name(rollout: &Rollout) -> &str {
    rollout.metadata.name.as_deref().unwrap_or("")
}

/// One tick: the analysis outcome first (a Fail rolls back whatever else happens), then the
/// answers of the checks outside the proxy about the current step (`gates`: a Fail rolls back,
/// an Abort aborts), then the commands in order (`commands`, then the one recorded on the Rollout
/// if not taken yet), then the current step's gate, which the checks' Holds and Waits keep shut.
pub fn step(
    rollout: &Rollout,
    analysis: Option<&AnalysisOutcome>,
    gates: &[GateReport],
    commands: &[UserCommand],
    now: Timestamp,
) -> (RolloutStatus, Vec<Action>) {
    let before = rollout.status.clone().unwrap_or_default();
    let mut tick = Tick {
        rollout,
        status: before.clone(),
        actions: Vec::new(),
        now,
    };
    tick.run(analysis, gates, commands);
    let Tick {
        mut status,
        mut actions,
        ..
    } = tick;
    let name = rollout_name(rollout);
    let old = intent(name, &rollout.spec, &before);
    let new = intent(name, &rollout.spec, &status);
    if let Some(new) = new.filter(|n| Some(n) != old.as_ref()) {
        status.routing_revision += 1;
        actions.insert(0, Action::SetRouting(new));
    }
    status.observed_generation = Some(generation(rollout));
    status.step = status
        .current_step
        .map(|at| format!("{}/{}", at + 1, status.total_steps.unwrap_or(at + 1)));
    (status, actions)
}

fn generation(rollout: &Rollout) -> i64 {
    rollout.metadata.generation.unwrap_or(0)
}

struct Tick<'a> {
    rollout: &'a Rollout,
    status: RolloutStatus,
    actions: Vec<Action>,
    now: Timestamp,
}

impl Tick<'_> {
    fn run(
        &mut self,
        analysis: Option<&AnalysisOutcome>,
        gates: &[GateReport],
        commands: &[UserCommand],
    ) {
        if let Err(invalid) = self.rollout.validate() {
            let reason = invalid.to_string();
            if self.status.phase != Phase::Failed || self.status.reason != reason {
                self.stable_subset_or_spec_if_started();
                self.finish(Phase::Failed, 0, EventKind::Warning, "Failed", reason);
            }
            return;
        }
        let Some(plan) = Plan::of(&self.rollout.spec) else {
            return;
        };
        if let Some(why) = self.restart_reason() {
            self.start(&plan, "Started", why);
        }
        let was = self.status.phase;
        // The analysis first: a failed canary rolls back even if a person promoted it this tick.
        if let Some(outcome) = analysis {
            self.analysis(outcome);
        }
        self.checks(gates);
        for command in commands {
            self.given(&plan, *command, ANONYMOUS);
        }
        self.recorded(&plan);
        if self.status.phase.is_final() {
            return;
        }
        match self.status.phase {
            // Promoting lasts one tick, so the promoting routes are applied before the hand-over.
            Phase::Promoting if was == Phase::Promoting => self.finish(
                Phase::Succeeded,
                100,
                EventKind::Normal,
                "Promoted",
                format!(
                    "{} is the new stable: every request goes to it",
                    self.canary()
                ),
            ),
            // A step entered this tick waits for the next: this tick's verdict judged the one before.
            Phase::Progressing if self.status.step_started_at != Some(self.now) => {
                let passed = analysis.is_some_and(|a| a.verdict == Verdict::Pass);
                if let Some(stage) = self.stage(&plan) {
                    // A stage that sends the canary nothing has no analysis to wait for.
                    let analysis_hold = (stage.kind != StageKind::Prepare)
                        .then(|| self.hold())
                        .flatten();
                    let hold = joined([analysis_hold, self.checks_holding()]);
                    let waits = self.checks_waiting();
                    if self.gate_open(&stage, passed) && hold.is_none() && waits.is_none() {
                        self.advance(&plan, "its gate is met");
                    } else if let Some(over) =
                        self.past_deadline(&stage).filter(|_| waits.is_none())
                    {
                        self.deadline(&plan, &stage, over, hold);
                    } else {
                        self.status.reason = self.waiting(&plan, &stage, hold, waits);
                    }
                }
            }
            _ => {}
        }
    }

    // === starting and finishing ===

    /// Why this tick (re)starts the rollout from its first step, if it does.
    fn restart_reason(&self) -> Option<String> {
        let spec = &self.rollout.spec;
        let s = &self.status;
        let pair = (s.stable_subset.as_deref(), s.canary_subset.as_deref());
        let new_pair = pair != (Some(spec.stable.as_str()), Some(spec.canary.as_str()));
        let newer_spec = generation(self.rollout) > s.observed_generation.unwrap_or(0);
        match s.phase {
            Phase::Pending => Some("started".into()),
            _ if new_pair => Some(format!(
                "started anew: spec names {} → {} (was {} → {})",
                spec.stable,
                spec.canary,
                pair.0.unwrap_or("-"),
                pair.1.unwrap_or("-")
            )),
            Phase::RolledBack | Phase::Aborted | Phase::Failed if newer_spec => Some(format!(
                "started again: the spec changed after it ended {}",
                s.phase
            )),
            _ => None,
        }
    }

    fn start(&mut self, plan: &Plan, event: &'static str, why: String) {
        let spec = &self.rollout.spec;
        let s = &mut self.status;
        s.phase = Phase::Progressing;
        s.stable_subset = Some(spec.stable.clone());
        s.canary_subset = Some(spec.canary.clone());
        s.total_steps = Some(plan.total());
        s.paused_at = None;
        s.last_analysis = None;
        self.enter(plan, 0, event, why);
    }

    /// Enters step `at` of the plan.
    fn enter(&mut self, plan: &Plan, at: usize, event: &'static str, why: String) {
        let stage = &plan.stages[at];
        let s = &mut self.status;
        s.current_step = Some(at as u32);
        s.total_steps = Some(plan.total());
        s.canary_weight = stage.weight;
        s.step_started_at = Some(self.now);
        // The checks' answers were about the step before.
        s.gates.clear();
        s.reason = describe(plan, at);
        let message = format!("{why}: {}", s.reason);
        self.decide(EventKind::Normal, event, message);
    }

    fn advance(&mut self, plan: &Plan, why: &str) {
        let at = self.status.current_step.unwrap_or(0) as usize;
        if at + 1 < plan.stages.len() {
            let why = format!("step {}/{} done ({why})", at + 1, plan.total());
            self.enter(plan, at + 1, "StepAdvanced", why);
            return;
        }
        match plan.end {
            End::Promote => {
                let reason = format!(
                    "last step done ({why}): every request goes to {}",
                    self.canary()
                );
                let s = &mut self.status;
                s.phase = Phase::Promoting;
                s.canary_weight = 100;
                s.paused_at = None;
                s.reason = reason;
                let message = self.status.reason.clone();
                self.decide(EventKind::Normal, "Promoting", message);
            }
            End::Stop => self.finish(
                Phase::Succeeded,
                0,
                EventKind::Normal,
                "Stopped",
                format!(
                    "last step done ({why}); the strategy stops here, every request stays on {}",
                    self.stable()
                ),
            ),
        }
    }

    /// Enters a final phase at `weight` percent canary.
    fn finish(
        &mut self,
        phase: Phase,
        weight: u32,
        kind: EventKind,
        event: &'static str,
        reason: String,
    ) {
        let s = &mut self.status;
        s.phase = phase;
        s.canary_weight = weight;
        s.paused_at = None;
        s.reason = reason.clone();
        self.decide(kind, event, reason);
    }

    /// A spec that turned invalid mid-rollout sends traffic back to the stable it started from.
    fn stable_subset_or_spec_if_started(&mut self) {
        if self.status.phase != Phase::Pending && self.status.stable_subset.is_none() {
            self.status.stable_subset = Some(self.rollout.spec.stable.clone());
        }
    }

    /// Records a decision in the history and as an event.
    fn decide(&mut self, kind: EventKind, reason: &'static str, message: String) {
        self.status.record(self.now, message.clone());
        self.actions.push(Action::Event(Event {
            kind,
            reason,
            message,
        }));
    }

    // === analysis ===

    fn analysis(&mut self, outcome: &AnalysisOutcome) {
        if !matches!(self.status.phase, Phase::Progressing | Phase::Paused) {
            return;
        }
        let step = self.status.current_step.unwrap_or(0);
        self.status.last_analysis = Some(AnalysisRecord {
            at: self.now,
            step,
            verdict: outcome.verdict,
            reason: outcome.reason.clone(),
            evidence: outcome.evidence.clone(),
            hold: outcome.hold.clone(),
        });
        if outcome.verdict == Verdict::Fail {
            self.finish(
                Phase::RolledBack,
                0,
                EventKind::Warning,
                "RolledBack",
                format!(
                    "analysis failed at step {}: {}; every request goes back to {}",
                    self.step_label(),
                    outcome.reason,
                    self.stable()
                ),
            );
        }
    }

    // === gates ===

    fn stage(&self, plan: &Plan) -> Option<Stage> {
        let at = self.status.current_step.unwrap_or(0) as usize;
        plan.stages
            .get(at.min(plan.stages.len().saturating_sub(1)))
            .cloned()
    }

    fn elapsed(&self) -> Duration {
        let started = self.status.step_started_at.unwrap_or(self.now);
        self.now
            .duration_since(started)
            .try_into()
            .unwrap_or(Duration::ZERO)
    }

    /// Why the analysis keeps the step from taking more traffic, if it does: no judgment of this
    /// step yet, or its last one held (an estimate worse than allowed, or too few canary requests;
    /// the analysis's `advance` check says which in words).
    fn hold(&self) -> Option<String> {
        let step = self.status.current_step.unwrap_or(0);
        let Some(last) = self
            .status
            .last_analysis
            .as_ref()
            .filter(|a| a.step == step)
        else {
            return Some("no analysis of this step yet".into());
        };
        if last.verdict == Verdict::Pass {
            return None;
        }
        last.hold.clone()
    }

    /// How far past its deadline a step is that holds for the analysis (not for a person).
    fn past_deadline(&self, stage: &Stage) -> Option<Duration> {
        if stage.gate.promoted {
            return None;
        }
        let pause = stage.gate.at_least.unwrap_or(Duration::ZERO);
        let deadline = pause + self.rollout.spec.analysis.progress_deadline;
        let elapsed = self.elapsed();
        (elapsed >= deadline).then(|| elapsed - pause)
    }

    /// Ends a step that could neither pass nor fail within the progress deadline.
    fn deadline(&mut self, plan: &Plan, stage: &Stage, held: Duration, hold: Option<String>) {
        let why = match hold {
            Some(hold) => hold,
            None if stage.gate.analysis_passes => {
                let last = self.status.last_analysis.as_ref().map(|a| a.verdict);
                format!(
                    "the analysis did not pass (last: {})",
                    last.map_or("none".to_string(), |v| format!("{v:?}"))
                )
            }
            None => "the step did not complete".into(),
        };
        let at = self.status.current_step.unwrap_or(0) as usize;
        let reason = format!(
            "step {}/{} held {}s past its pause, beyond the progress deadline of {}s: {why}; every request goes back to {}",
            at + 1,
            plan.total(),
            held.as_secs(),
            self.rollout.spec.analysis.progress_deadline.as_secs(),
            self.stable()
        );
        self.finish(
            Phase::RolledBack,
            0,
            EventKind::Warning,
            "ProgressDeadlineExceeded",
            reason,
        );
    }

    fn gate_open(&self, stage: &Stage, passed: bool) -> bool {
        let g = &stage.gate;
        g.at_least.is_none_or(|d| self.elapsed() >= d)
            && (!g.analysis_passes || passed)
            && !g.promoted
    }

    /// The reason while a gate holds: what the step waits for.
    fn waiting(
        &self,
        plan: &Plan,
        stage: &Stage,
        hold: Option<String>,
        waits: Option<String>,
    ) -> String {
        let g = &stage.gate;
        let at = self.status.current_step.unwrap_or(0) as usize;
        let mut wants = Vec::new();
        if let Some(d) = g.at_least {
            let left = d.saturating_sub(self.elapsed());
            if !left.is_zero() {
                wants.push(format!("{}s more", left.as_secs_f64().ceil() as u64));
            }
        }
        if g.analysis_passes {
            let last = self.status.last_analysis.as_ref().map(|a| a.verdict);
            wants.push(match last {
                Some(v) => format!("the analysis to pass (last: {v:?})"),
                None => "the analysis to pass".into(),
            });
        }
        if g.promoted {
            wants.push("a person to promote".into());
        }
        wants.extend(waits);
        let waiting = if wants.is_empty() {
            String::new()
        } else {
            format!("; waiting for {}", wants.join(" and "))
        };
        // While the pause itself runs, the step waits for time, not for the analysis.
        let pausing = g.at_least.is_some_and(|d| self.elapsed() < d);
        match hold.filter(|_| !pausing) {
            Some(hold) => {
                let deadline = if g.promoted {
                    String::new()
                } else {
                    let pause = g.at_least.unwrap_or(Duration::ZERO);
                    let end = pause + self.rollout.spec.analysis.progress_deadline;
                    let left = end.saturating_sub(self.elapsed());
                    format!(
                        " (rolled back in {}s if it cannot pass)",
                        left.as_secs_f64().ceil() as u64
                    )
                };
                format!(
                    "holding at {}%: {hold}{deadline}; {}{waiting}",
                    stage.weight,
                    describe(plan, at)
                )
            }
            None => format!("{}{waiting}", describe(plan, at)),
        }
    }

    // === names ===

    fn stable(&self) -> String {
        let s = self.status.stable_subset.as_deref();
        s.unwrap_or(&self.rollout.spec.stable).to_owned()
    }

    fn canary(&self) -> String {
        let s = self.status.canary_subset.as_deref();
        s.unwrap_or(&self.rollout.spec.canary).to_owned()
    }

    fn step_label(&self) -> String {
        let at = self.status.current_step.unwrap_or(0) + 1;
        format!("{at}/{}", self.status.total_steps.unwrap_or(at))
    }
}

/// The parts that are there, joined by `; `; None when none is.
fn joined<const N: usize>(parts: [Option<String>; N]) -> Option<String> {
    let parts: Vec<String> = parts.into_iter().flatten().collect();
    (!parts.is_empty()).then(|| parts.join("; "))
}

/// What step `at` does, for a person: `step 2/4: 25% of requests to v2`.
fn describe(plan: &Plan, at: usize) -> String {
    let stage = &plan.stages[at];
    let what = match stage.kind {
        StageKind::Step if stage.cohort => {
            format!(
                "the cohort and {}% of other requests to the canary",
                stage.weight
            )
        }
        StageKind::Step => format!("{}% of requests to the canary", stage.weight),
        StageKind::Cohort => "the A/B cohort to the canary, everyone else to stable".into(),
        StageKind::Shadow => format!(
            "{}% of requests mirrored to the canary, every response from stable",
            stage.mirror_percent.unwrap_or(0.0)
        ),
        StageKind::Prepare => "preparing: no request to the canary until its checks pass".into(),
        StageKind::Preview => match stage.mirror_percent {
            Some(p) => format!("preview: {p}% of requests mirrored, every response from stable"),
            None => "preview: no live traffic on the canary".into(),
        },
    };
    format!("step {}/{}: {what}", at + 1, plan.total())
}

#[cfg(test)]
mod tests;
