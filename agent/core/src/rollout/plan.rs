//! A strategy compiled into a plan: a list of stages, each with the traffic it sends (canary
//! weight, cohort rules, mirror) and the gate that ends it, and what comes after the last stage
//! (promote or stop). Also the [`RoutingIntent`] a status stands for: what the routes should be
//! now, for the VirtualService and the filters alike.
//!
//! Pure. Every strategy becomes the same shape here, so the state machine walks one plan and
//! knows nothing of canary, A/B, shadow or blue/green.

use std::time::Duration;

use serde::Serialize;

use super::spec::{CanaryStep, CohortRule, RolloutSpec, StrategyKind, Then};
use super::status::{Phase, RolloutStatus};
use crate::windows::Traffic;

/// What a stage is, for people and for the analysis.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum StageKind {
    /// A canary step: a share of live traffic.
    Step,
    /// The A/B phase: only the cohort goes to the canary.
    Cohort,
    /// The shadow phase: mirrored copies only.
    Shadow,
    /// The blue/green preview: no live traffic, optionally mirrored copies.
    Preview,
    /// Before any traffic: the checks outside the proxy that must pass first (pods ready,
    /// pre-rollout hooks) end it; nothing else does.
    Prepare,
}

/// What must hold before a stage ends. All set conditions must hold; a person's `promote` ends
/// any stage at once.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Gate {
    pub at_least: Option<Duration>,
    pub analysis_passes: bool,
    pub promoted: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Stage {
    pub kind: StageKind,
    /// Percent of live requests (outside the cohort) that go to the canary.
    pub weight: u32,
    /// Whether the A/B cohort rules pin their requests to the canary.
    pub cohort: bool,
    /// Percent of requests copied to the canary.
    pub mirror_percent: Option<f64>,
    pub gate: Gate,
}

impl Stage {
    /// Which canary traffic the analysis judges in this stage: mirrored copies when the canary
    /// receives no live share, live requests otherwise.
    pub fn judged_traffic(&self) -> Traffic {
        if self.weight == 0 && !self.cohort && self.mirror_percent.is_some() {
            Traffic::Shadow
        } else {
            Traffic::Live
        }
    }
}

/// What happens after the last stage's gate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum End {
    Promote,
    Stop,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Plan {
    pub stages: Vec<Stage>,
    pub end: End,
    /// The A/B rules (empty for the other strategies).
    pub cohort: Vec<CohortRule>,
}

fn steps(list: &[CanaryStep], cohort: bool) -> impl Iterator<Item = Stage> + '_ {
    list.iter().map(move |s| Stage {
        kind: StageKind::Step,
        weight: s.weight,
        cohort,
        mirror_percent: None,
        gate: Gate {
            at_least: s.pause.duration,
            analysis_passes: s.pause.until_analysis_passes,
            promoted: s.pause.until_promoted,
        },
    })
}

fn first(kind: StageKind, cohort: bool, mirror: Option<f64>, at_least: Duration) -> Stage {
    Stage {
        kind,
        weight: 0,
        cohort,
        mirror_percent: mirror,
        gate: Gate {
            at_least: Some(at_least),
            analysis_passes: true,
            promoted: false,
        },
    }
}

/// The stage before any traffic: the canary gets nothing, and only the checks outside the proxy
/// (which report about it) keep it from ending.
fn prepare() -> Stage {
    Stage {
        kind: StageKind::Prepare,
        weight: 0,
        cohort: false,
        mirror_percent: None,
        gate: Gate::default(),
    }
}

fn then(stages: &mut Vec<Stage>, then: Then, rest: &[CanaryStep], cohort: bool) -> End {
    match then {
        Then::Promote => End::Promote,
        Then::Stop => End::Stop,
        Then::HandOverToCanary => {
            stages.extend(steps(rest, cohort));
            End::Promote
        }
    }
}

impl Plan {
    /// The plan of a spec with exactly one strategy; None otherwise.
    pub fn of(spec: &RolloutSpec) -> Option<Plan> {
        let mut stages = Vec::new();
        if spec.prepares() {
            stages.push(prepare());
        }
        let mut cohort = Vec::new();
        let end = match spec.strategy.kind()? {
            StrategyKind::Canary(s) => {
                stages.extend(steps(&s.steps, false));
                End::Promote
            }
            StrategyKind::AbTest(s) => {
                cohort = s.rules.clone();
                stages.push(first(StageKind::Cohort, true, None, s.duration));
                then(&mut stages, s.then, &s.steps, true)
            }
            StrategyKind::Shadow(s) => {
                let mirror = Some(s.mirror_percent);
                stages.push(first(StageKind::Shadow, false, mirror, s.duration));
                then(&mut stages, s.then, &s.steps, false)
            }
            StrategyKind::BlueGreen(s) => {
                let mut preview = first(
                    StageKind::Preview,
                    false,
                    s.preview_mirror_percent,
                    s.duration,
                );
                preview.gate.promoted = !s.auto_switch;
                stages.push(preview);
                End::Promote
            }
        };
        Some(Plan {
            stages,
            end,
            cohort,
        })
    }

    pub fn total(&self) -> u32 {
        self.stages.len() as u32
    }
}

/// The sticky key the filters hash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum StickyKey {
    Header(String),
    Cookie(String),
}

/// How a host's traffic should be routed now.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RoutingIntent {
    /// The Rollout's name: fledge's VirtualService routes are named `fledge-<owner>-…`.
    pub owner: String,
    pub host: String,
    pub stable: String,
    pub canary: String,
    pub version_header: String,
    pub sticky: Option<StickyKey>,
    pub shape: Shape,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub enum Shape {
    /// fledge's routes are in place above the user's.
    Managed {
        /// Percent of live requests outside the cohort that go to the canary.
        canary_weight: u32,
        /// Requests matching any of these go to the canary.
        cohort: Vec<CohortRule>,
        /// Percent of requests copied to the canary.
        mirror_percent: Option<f64>,
    },
    /// No fledge routes: the user's routes send the host's traffic to `subset` (the new stable
    /// after a promotion, the old one after a rollback).
    Settled { subset: String },
}

impl RoutingIntent {
    /// Whether this routing sends the canary no request at all (no live share, no cohort, no
    /// mirror), as a blue/green preview without a mirror does: there is nothing to judge then.
    pub fn starves_canary(&self) -> bool {
        matches!(&self.shape, Shape::Managed { canary_weight: 0, cohort, mirror_percent: None } if cohort.is_empty())
    }

    /// The canary's share of live requests outside any cohort.
    pub fn canary_weight(&self) -> u32 {
        match &self.shape {
            Shape::Managed { canary_weight, .. } => *canary_weight,
            Shape::Settled { subset } if *subset == self.canary => 100,
            Shape::Settled { .. } => 0,
        }
    }
}

/// The routing a status stands for; None before the rollout started.
pub fn intent(owner: &str, spec: &RolloutSpec, status: &RolloutStatus) -> Option<RoutingIntent> {
    let stable = status.stable_subset.clone()?;
    let canary = status
        .canary_subset
        .clone()
        .unwrap_or_else(|| spec.canary.clone());
    let shape = match status.phase {
        Phase::Pending => return None,
        Phase::Progressing | Phase::Paused => {
            let plan = Plan::of(spec)?;
            let at = status.current_step.unwrap_or(0) as usize;
            let stage = plan.stages.get(at.min(plan.stages.len().checked_sub(1)?))?;
            Shape::Managed {
                canary_weight: stage.weight,
                cohort: if stage.cohort {
                    plan.cohort
                } else {
                    Vec::new()
                },
                mirror_percent: stage.mirror_percent,
            }
        }
        Phase::Promoting => Shape::Managed {
            canary_weight: 100,
            cohort: Vec::new(),
            mirror_percent: None,
        },
        Phase::Succeeded if status.canary_weight == 100 => Shape::Settled {
            subset: canary.clone(),
        },
        Phase::Succeeded | Phase::RolledBack | Phase::Aborted | Phase::Failed => Shape::Settled {
            subset: stable.clone(),
        },
    };
    let sticky = &spec.sticky;
    let sticky = sticky
        .enabled
        .then(|| match (&sticky.header, &sticky.cookie) {
            (_, Some(cookie)) => StickyKey::Cookie(cookie.clone()),
            (Some(header), None) => StickyKey::Header(header.clone()),
            (None, None) => StickyKey::Header(super::spec::DEFAULT_STICKY_HEADER.into()),
        });
    Some(RoutingIntent {
        owner: owner.to_owned(),
        host: spec.host.clone(),
        stable,
        canary,
        version_header: spec.version_header().to_owned(),
        sticky,
        shape,
    })
}
