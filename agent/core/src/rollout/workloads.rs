//! The Deployments a Rollout names (`spec.workloads`) and what their replicas should be: the
//! canary scaled up and ready before it gets more traffic, its replicas proportional to its
//! weight when asked (`scaleWithWeight`: the rolling update, total capacity kept), the old
//! stable scaled to zero a delay after a promotion, the canary after a rollback or an abort.
//!
//! Pure: the spec, its checks, the replicas a status calls for ([`targets`]) and what the
//! Deployments' readiness says about ending the current step ([`answer`]). The agent reads and
//! scales the Deployments (`fledge_agent::workloads`); it never scales one not named here.
//!
//! The total (the stable's replicas when the rollout started) is kept in the evidence of every
//! answer (`status.gates[].evidence.totalReplicas`), so an agent that restarts reads it back.

use std::time::Duration;

use jiff::Timestamp;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::gates::{GateKind, GateState};
use super::plan::{End, Plan};
use super::spec::RolloutSpec;
use super::status::{Phase, RolloutStatus};
use super::validate::Problem;

/// The gate's name in `status.gates`.
pub const GATE_NAME: &str = "workloads";
/// How long the old stable keeps its pods after a promotion when `scaleDownDelay` is not given.
pub const DEFAULT_SCALE_DOWN_DELAY: Duration = Duration::from_secs(30);
/// The longest `scaleDownDelay` taken.
pub const MAX_SCALE_DOWN_DELAY: Duration = Duration::from_secs(24 * 3600);

/// The stable and canary Deployments (in the Rollout's namespace) and how fledge scales them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Workloads {
    /// The Deployment serving the stable subset now.
    pub stable: String,
    /// The Deployment of the canary subset.
    pub canary: String,
    /// Keep the canary's replicas proportional to its weight (at least 1) and the stable's at
    /// the rest, so the total stays the stable's replicas at the start: the rolling update.
    /// Off: the canary gets as many replicas as the stable had.
    #[serde(default, skip_serializing_if = "is_false")]
    pub scale_with_weight: bool,
    /// How long after a promotion the old stable is scaled to zero, and after a rollback or an
    /// abort the canary, so requests in flight finish (default 30s).
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(with = "Option<String>")]
    pub scale_down_delay: Option<Duration>,
    /// Scale the canary to zero after a rollback or an abort (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_canary_to_zero: Option<bool>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl Workloads {
    pub fn scale_down_delay(&self) -> Duration {
        self.scale_down_delay.unwrap_or(DEFAULT_SCALE_DOWN_DELAY)
    }

    pub fn scale_canary_to_zero(&self) -> bool {
        self.scale_canary_to_zero.unwrap_or(true)
    }

    /// Problems with field paths from the object's root (`spec.workloads.…`).
    pub fn problems(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        let mut bad = |field: &str, problem: String| {
            out.push(Problem {
                field: format!("spec.workloads.{field}"),
                problem,
            })
        };
        for (field, name) in [("stable", &self.stable), ("canary", &self.canary)] {
            // The namespace is the Rollout's own, checked with it.
            if let Err(e) = crate::key::ObjectKey::new("default", name.as_str()).check() {
                bad(field, format!("{:?} {}", e.value, e.problem));
            }
        }
        if !self.stable.is_empty() && self.stable == self.canary {
            bad(
                "canary",
                format!("{:?} is the same Deployment as stable", self.canary),
            );
        }
        if self.scale_down_delay() > MAX_SCALE_DOWN_DELAY {
            bad(
                "scaleDownDelay",
                format!(
                    "{}s is over {}s",
                    self.scale_down_delay().as_secs(),
                    MAX_SCALE_DOWN_DELAY.as_secs()
                ),
            );
        }
        out
    }
}

/// What is known of one Deployment: the replicas asked for and how many are ready.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Observed {
    /// `spec.replicas`.
    pub replicas: u32,
    /// `metadata.generation`.
    pub generation: i64,
    /// `status.observedGeneration`: below `generation`, the status speaks of an older spec.
    pub observed_generation: i64,
    /// `status.readyReplicas`.
    pub ready_replicas: u32,
    /// `status.availableReplicas`.
    pub available_replicas: u32,
}

impl Observed {
    /// Pods ready and available for the spec as it is now; none while the Deployment's
    /// controller has not seen the latest spec.
    pub fn ready(&self) -> u32 {
        if self.observed_generation < self.generation {
            0
        } else {
            self.ready_replicas.min(self.available_replicas)
        }
    }
}

/// The replicas each Deployment should have now; None leaves it as it is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Targets {
    pub canary: Option<u32>,
    pub stable: Option<u32>,
    /// The weight the canary's replicas are sized for (the next stage's, while progressing).
    pub for_weight: u32,
}

/// The canary's replicas for `weight` percent of `total`: ceil(total × weight / 100), at least 1.
pub fn canary_replicas(total: u32, weight: u32) -> u32 {
    (u64::from(total) * u64::from(weight.min(100)))
        .div_ceil(100)
        .max(1)
        .try_into()
        .unwrap_or(u32::MAX)
}

/// The stable's replicas while the canary has `weight` percent: the rest of `total`, at least 1
/// while the stable still gets requests (weight under 100).
pub fn stable_replicas(total: u32, weight: u32) -> u32 {
    if weight >= 100 {
        return 0;
    }
    let canary = (u64::from(total) * u64::from(weight)).div_ceil(100);
    (u64::from(total).saturating_sub(canary))
        .max(1)
        .try_into()
        .unwrap_or(u32::MAX)
}

/// The weight the stage after `at` sends the canary: the next stage's, or 100 when the last one
/// ends in a promotion, or the stage's own when it ends the strategy without one.
pub fn next_weight(plan: &Plan, at: usize) -> u32 {
    match plan.stages.get(at + 1) {
        Some(next) => next.weight,
        None if plan.end == End::Promote => 100,
        None => plan.stages.get(at).map_or(0, |s| s.weight),
    }
}

/// When the rollout reached its final phase: the last decision's time.
fn finished_at(status: &RolloutStatus) -> Option<Timestamp> {
    status
        .history
        .iter()
        .rev()
        .find(|d| d.phase == status.phase)
        .map(|d| d.at)
}

/// The replicas `status` calls for, `total` being the stable's replicas at the start.
pub fn targets(
    spec: &RolloutSpec,
    w: &Workloads,
    status: &RolloutStatus,
    total: u32,
    now: Timestamp,
) -> Targets {
    let delay_over = || delay_over(w, status, now);
    match status.phase {
        Phase::Pending | Phase::Failed => Targets::default(),
        Phase::Progressing | Phase::Paused => {
            let Some(plan) = Plan::of(spec) else {
                return Targets::default();
            };
            let at = status.current_step.unwrap_or(0) as usize;
            let now_weight = plan.stages.get(at).map_or(0, |s| s.weight);
            let next = next_weight(&plan, at);
            if w.scale_with_weight {
                let canary = canary_replicas(total, now_weight).max(canary_replicas(total, next));
                Targets {
                    canary: Some(canary),
                    stable: Some(stable_replicas(total, now_weight)),
                    for_weight: next,
                }
            } else {
                Targets {
                    canary: Some(total.max(1)),
                    stable: Some(total),
                    for_weight: next,
                }
            }
        }
        Phase::Promoting => Targets {
            canary: Some(total.max(1)),
            stable: None,
            for_weight: 100,
        },
        // Promoted: the canary is the new stable; the old one goes once the delay is over.
        Phase::Succeeded if status.canary_weight == 100 => Targets {
            canary: Some(total.max(1)),
            stable: delay_over().then_some(0),
            for_weight: 100,
        },
        // Rolled back, aborted, or a strategy that stops without promoting: the stable takes
        // every request at once, the canary goes once the delay is over (if asked).
        Phase::Succeeded | Phase::RolledBack | Phase::Aborted => Targets {
            canary: (w.scale_canary_to_zero() && delay_over()).then_some(0),
            stable: Some(total),
            for_weight: 0,
        },
    }
}

/// Whether the rollout has handed its Deployments back: it has not started (Pending) or has
/// ended, and any scale-down its end calls for is due (the delay is over), so its [`targets`]
/// stay what they are for as long as the status does. Once the Deployments are at them, the
/// agent stops reading and scaling them: an autoscaler or a person may scale them from then on.
pub fn settled(w: &Workloads, status: &RolloutStatus, now: Timestamp) -> bool {
    match status.phase {
        Phase::Pending | Phase::Failed => true,
        Phase::Progressing | Phase::Paused | Phase::Promoting => false,
        Phase::Succeeded | Phase::RolledBack | Phase::Aborted => delay_over(w, status, now),
    }
}

/// Whether `scaleDownDelay` has passed since the rollout reached its final phase.
fn delay_over(w: &Workloads, status: &RolloutStatus, now: Timestamp) -> bool {
    finished_at(status)
        .is_none_or(|at| now.duration_since(at).as_secs_f64() >= w.scale_down_delay().as_secs_f64())
}

/// What the Deployments say about ending the current step, with the numbers behind it.
pub fn answer(
    w: &Workloads,
    targets: &Targets,
    total: u32,
    canary: Option<&Observed>,
    stable: Option<&Observed>,
) -> (GateState, serde_json::Value) {
    let side = |name: &str, target: Option<u32>, seen: Option<&Observed>| {
        json!({
            "deployment": name,
            "target": target,
            "replicas": seen.map(|o| o.replicas),
            "ready": seen.map(Observed::ready),
        })
    };
    let evidence = json!({
        "totalReplicas": total,
        "forWeight": targets.for_weight,
        "canary": side(&w.canary, targets.canary, canary),
        "stable": side(&w.stable, targets.stable, stable),
    });
    let state = match (targets.canary, canary) {
        (_, None) => GateState::Hold(format!("canary Deployment {} not found", w.canary)),
        (None, Some(_)) => GateState::Pass,
        (Some(want), Some(seen)) if seen.replicas != want => GateState::Hold(format!(
            "canary {} scaling to {want} for {}% ({} ready)",
            w.canary,
            targets.for_weight,
            seen.ready()
        )),
        (Some(want), Some(seen)) if seen.ready() < want => GateState::Hold(format!(
            "canary {} {}/{want} ready for {}%",
            w.canary,
            seen.ready(),
            targets.for_weight
        )),
        (Some(_), Some(_)) => GateState::Pass,
    };
    (state, evidence)
}

/// The total recorded in the status by an earlier answer, if any.
pub fn recorded_total(status: &RolloutStatus) -> Option<u32> {
    status
        .gates
        .iter()
        .find(|g| g.kind == GateKind::Workload && g.name == GATE_NAME)
        .and_then(|g| g.evidence["totalReplicas"].as_u64())
        .and_then(|t| u32::try_from(t).ok())
}

/// The total when no answer recorded it. At the first stage the stable still has all of it;
/// at a later one (an agent restarted right after the step began, before any answer) the
/// smallest total whose targets for this stage or the one before are the replicas the
/// Deployments were given; after a promotion the canary's replicas; after a rollback or an
/// abort the two Deployments' together.
pub fn inferred_total(
    spec: &RolloutSpec,
    w: &Workloads,
    status: &RolloutStatus,
    canary: &Observed,
    stable: &Observed,
) -> u32 {
    let both = canary.replicas.saturating_add(stable.replicas);
    let at = status.current_step.unwrap_or(0);
    match status.phase {
        Phase::Progressing | Phase::Paused if at > 0 => [at, at - 1]
            .into_iter()
            .find_map(|step| {
                let s = RolloutStatus {
                    current_step: Some(step),
                    ..status.clone()
                };
                (1..=both).find(|&total| {
                    let t = targets(spec, w, &s, total, Timestamp::UNIX_EPOCH);
                    t.canary == Some(canary.replicas) && t.stable == Some(stable.replicas)
                })
            })
            .unwrap_or(both),
        Phase::Pending | Phase::Progressing | Phase::Paused => stable.replicas,
        Phase::Promoting | Phase::Succeeded if status.canary_weight == 100 => canary.replicas,
        _ => both,
    }
}

#[cfg(test)]
mod tests;
