//! The state machine, one table per strategy: each row is a tick (time, analysis, commands) and
//! the phase, step and weight it must leave. Property tests over random plans are in `props`.

use std::time::Duration;

use jiff::Timestamp;

use super::*;
use crate::rollout::UserCommand::{self, Abort, Pause as Hold, Promote, Resume};
use crate::rollout::plan::Shape;
use crate::rollout::spec::*;

mod commands;
mod gates;
mod props;
mod walk;

pub(super) fn at(secs: u64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + secs as i64).unwrap()
}

pub(super) fn outcome(verdict: Verdict) -> AnalysisOutcome {
    AnalysisOutcome {
        verdict,
        reason: format!("error-rate: {verdict:?} in test"),
        evidence: serde_json::json!({ "canaryRequests": 1000, "verdict": format!("{verdict:?}") }),
        hold: None,
    }
}

pub(super) fn rollout(strategy: Strategy) -> Rollout {
    Rollout::test().with_strategy(strategy)
}

pub(super) fn pause(secs: Option<u64>, analysis: bool, promoted: bool) -> crate::rollout::Pause {
    crate::rollout::Pause {
        duration: secs.map(Duration::from_secs),
        until_analysis_passes: analysis,
        until_promoted: promoted,
    }
}

pub(super) fn canary(steps: &[(u32, crate::rollout::Pause)]) -> Strategy {
    Strategy::canary_steps(steps)
}

/// A rollout being ticked, keeping every action.
pub(super) struct Run {
    pub rollout: Rollout,
    pub actions: Vec<Action>,
}

impl Run {
    pub fn new(rollout: Rollout) -> Self {
        Self {
            rollout,
            actions: Vec::new(),
        }
    }

    pub fn tick(&mut self, secs: u64, verdict: Option<Verdict>, commands: &[UserCommand]) {
        let analysis = verdict.map(outcome);
        let (status, actions) = step(&self.rollout, analysis.as_ref(), &[], commands, at(secs));
        self.rollout.status = Some(status);
        self.actions = actions;
    }

    pub fn status(&self) -> &RolloutStatus {
        self.rollout.status.as_ref().unwrap()
    }

    pub fn routing(&self) -> Option<&RoutingIntent> {
        self.actions.iter().find_map(|a| match a {
            Action::SetRouting(r) => Some(r),
            _ => None,
        })
    }

    pub fn events(&self) -> Vec<&'static str> {
        self.actions
            .iter()
            .filter_map(|a| match a {
                Action::Event(e) => Some(e.reason),
                _ => None,
            })
            .collect()
    }
}

/// One row: seconds since start, analysis, commands → phase, step (0-based), canary weight.
pub(super) type Row = (
    u64,
    Option<Verdict>,
    &'static [UserCommand],
    Phase,
    Option<u32>,
    u32,
);

use Phase::*;
use Verdict::{Fail, NotEnoughData as Ned, Pass};

pub(super) fn play(name: &str, mut run: Run, rows: &[Row]) -> Run {
    for (i, (secs, verdict, commands, phase, step, weight)) in rows.iter().enumerate() {
        run.tick(*secs, *verdict, commands);
        let s = run.status();
        assert_eq!(
            (s.phase, s.current_step, s.canary_weight),
            (*phase, *step, *weight),
            "{name}, row {i} (t={secs}s): reason {:?}",
            s.reason
        );
        assert!(!s.reason.is_empty(), "{name}, row {i}: no reason");
        if let Some(r) = run.routing() {
            assert_eq!(r.canary_weight(), s.canary_weight, "{name}, row {i}");
        }
    }
    run
}

pub(super) fn three_steps() -> Strategy {
    canary(&[
        (10, pause(Some(60), false, false)),
        (25, pause(None, true, false)),
        (50, pause(None, false, true)),
    ])
}

#[test]
fn canary_walks_its_steps_and_promotes() {
    let run = play(
        "canary",
        Run::new(rollout(three_steps())),
        &[
            (0, None, &[], Progressing, Some(0), 10),
            (30, Some(Pass), &[], Progressing, Some(0), 10),
            (60, Some(Ned), &[], Progressing, Some(1), 25),
            (62, Some(Ned), &[], Progressing, Some(1), 25),
            (64, Some(Pass), &[], Progressing, Some(2), 50),
            (600, Some(Pass), &[], Progressing, Some(2), 50),
            (602, None, &[Promote], Promoting, Some(2), 100),
            (604, None, &[], Succeeded, Some(2), 100),
            (606, Some(Fail), &[], Succeeded, Some(2), 100),
        ],
    );
    let s = run.status();
    assert_eq!(s.total_steps, Some(3));
    assert_eq!(s.stable_subset.as_deref(), Some("v1"));
    // Started, three step changes, promoting, promoted.
    let reasons: Vec<_> = s.history.iter().map(|d| d.phase).collect();
    assert_eq!(
        reasons,
        [Progressing, Progressing, Progressing, Promoting, Succeeded]
    );
    // Routing: every change got a revision; the last one settled on v2 with fledge's routes gone.
    assert_eq!(s.routing_revision, 5);
    let end = routing(&run.rollout).unwrap();
    assert_eq!(
        end.shape,
        Shape::Settled {
            subset: "v2".into()
        }
    );
}

#[test]
fn a_failed_analysis_rolls_back_from_any_step() {
    for fail_at in 0..3u64 {
        let mut rows: Vec<Row> = vec![(0, None, &[], Progressing, Some(0), 10)];
        if fail_at >= 1 {
            rows.push((60, Some(Pass), &[], Progressing, Some(1), 25));
        }
        if fail_at >= 2 {
            rows.push((62, Some(Pass), &[], Progressing, Some(2), 50));
        }
        rows.push((100, Some(Fail), &[], RolledBack, Some(fail_at as u32), 0));
        rows.push((
            200,
            Some(Pass),
            &[Promote],
            RolledBack,
            Some(fail_at as u32),
            0,
        ));
        let run = play("rollback", Run::new(rollout(three_steps())), &rows);
        assert_eq!(run.events(), ["CommandIgnored"]);
        let s = run.status();
        assert!(
            s.reason.starts_with("analysis failed at step"),
            "{}",
            s.reason
        );
        let last = s.last_analysis.as_ref().unwrap();
        assert_eq!(last.verdict, Fail);
        assert_eq!(last.evidence["canaryRequests"], 1000);
        assert_eq!(
            routing(&run.rollout).unwrap().shape,
            Shape::Settled {
                subset: "v1".into()
            }
        );
    }
}

#[test]
fn pause_holds_the_clock_and_resume_continues() {
    play(
        "pause",
        Run::new(rollout(three_steps())),
        &[
            (0, None, &[], Progressing, Some(0), 10),
            (30, None, &[Hold], Paused, Some(0), 10),
            (100, Some(Pass), &[], Paused, Some(0), 10),
            // Resumed at 130 with 30 s of the minute spent: 30 more to go.
            (130, None, &[Resume], Progressing, Some(0), 10),
            (159, None, &[], Progressing, Some(0), 10),
            (160, None, &[], Progressing, Some(1), 25),
            (170, None, &[Hold], Paused, Some(1), 25),
            (171, Some(Fail), &[], RolledBack, Some(1), 0),
        ],
    );
    play(
        "promote while paused",
        Run::new(rollout(three_steps())),
        &[
            (0, None, &[], Progressing, Some(0), 10),
            (1, None, &[Hold], Paused, Some(0), 10),
            (2, None, &[Promote], Progressing, Some(1), 25),
            (3, None, &[Promote, Promote], Promoting, Some(2), 100),
        ],
    );
}

#[test]
fn abort_sends_everything_back_to_stable() {
    let run = play(
        "abort",
        Run::new(rollout(three_steps())),
        &[
            (0, None, &[], Progressing, Some(0), 10),
            // A step advances on evidence only: this one was judged (inconclusive, nothing
            // leaning) before its minute ran out.
            (30, Some(Ned), &[], Progressing, Some(0), 10),
            (60, None, &[], Progressing, Some(1), 25),
            (61, Some(Pass), &[Abort, Resume], Aborted, Some(1), 0),
        ],
    );
    assert_eq!(run.events(), ["Aborted", "CommandIgnored"]);
    assert_eq!(run.routing().unwrap().canary_weight(), 0);
}

fn ab_test(then: Then, steps: Vec<CanaryStep>) -> Strategy {
    Strategy {
        ab_test: Some(AbTestStrategy {
            rules: vec![CohortRule {
                header: Some(HeaderRule {
                    name: "x-beta".into(),
                    exact: Some("true".into()),
                    ..Default::default()
                }),
                cookie: None,
            }],
            duration: Duration::from_secs(300),
            then,
            steps,
        }),
        ..Default::default()
    }
}

#[test]
fn ab_test_judges_the_cohort_then_hands_over_to_steps() {
    let steps = vec![CanaryStep {
        weight: 20,
        pause: pause(None, true, false),
    }];
    let mut run = Run::new(rollout(ab_test(Then::HandOverToCanary, steps)));
    run.tick(0, None, &[]);
    let Shape::Managed { cohort, .. } = &run.routing().unwrap().shape else {
        panic!("not managed")
    };
    assert_eq!(cohort.len(), 1);
    let window = analysis_window(&run.rollout).unwrap();
    assert_eq!((window.step, window.canary_traffic), (0, Traffic::Live));
    let run = play(
        "abTest",
        run,
        &[
            (100, Some(Pass), &[], Progressing, Some(0), 0),
            (300, Some(Ned), &[], Progressing, Some(0), 0),
            (302, Some(Pass), &[], Progressing, Some(1), 20),
            (304, Some(Pass), &[], Promoting, Some(1), 100),
            (306, None, &[], Succeeded, Some(1), 100),
        ],
    );
    assert_eq!(run.routing().unwrap().canary_weight(), 100);
    play(
        "abTest then promote",
        Run::new(rollout(ab_test(Then::Promote, vec![]))),
        &[
            (0, None, &[], Progressing, Some(0), 0),
            (300, Some(Pass), &[], Promoting, Some(0), 100),
            (302, Some(Fail), &[], Succeeded, Some(0), 100),
        ],
    );
}

fn shadow(then: Then) -> Strategy {
    Strategy {
        shadow: Some(ShadowStrategy {
            mirror_percent: 25.0,
            duration: Duration::from_secs(180),
            then,
            steps: vec![],
        }),
        ..Default::default()
    }
}

#[test]
fn shadow_mirrors_judges_the_copies_then_promotes_or_stops() {
    let mut run = Run::new(rollout(shadow(Then::Promote)));
    run.tick(0, None, &[]);
    let Shape::Managed {
        mirror_percent,
        canary_weight,
        ..
    } = run.routing().unwrap().shape
    else {
        panic!("not managed")
    };
    assert_eq!((mirror_percent, canary_weight), (Some(25.0), 0));
    assert_eq!(
        analysis_window(&run.rollout).unwrap().canary_traffic,
        Traffic::Shadow
    );
    play(
        "shadow promote",
        run,
        &[
            (179, Some(Pass), &[], Progressing, Some(0), 0),
            (180, Some(Pass), &[], Promoting, Some(0), 100),
            (182, None, &[], Succeeded, Some(0), 100),
        ],
    );
    let run = play(
        "shadow stop",
        Run::new(rollout(shadow(Then::Stop))),
        &[
            (0, None, &[], Progressing, Some(0), 0),
            (180, Some(Pass), &[], Succeeded, Some(0), 0),
        ],
    );
    assert_eq!(
        run.routing().unwrap().shape,
        Shape::Settled {
            subset: "v1".into()
        }
    );
    play(
        "shadow fails",
        Run::new(rollout(shadow(Then::Promote))),
        &[
            (0, None, &[], Progressing, Some(0), 0),
            (20, Some(Fail), &[], RolledBack, Some(0), 0),
        ],
    );
}

fn blue_green(auto_switch: bool, mirror: Option<f64>) -> Strategy {
    Strategy {
        blue_green: Some(BlueGreenStrategy {
            preview_mirror_percent: mirror,
            duration: Duration::from_secs(120),
            auto_switch,
        }),
        ..Default::default()
    }
}

#[test]
fn blue_green_previews_then_switches_at_once() {
    let mut run = Run::new(rollout(blue_green(false, None)));
    run.tick(0, None, &[]);
    assert_eq!(
        analysis_window(&run.rollout).unwrap().canary_traffic,
        Traffic::Live
    );
    play(
        "blueGreen manual",
        run,
        &[
            (120, Some(Pass), &[], Progressing, Some(0), 0),
            (500, Some(Pass), &[], Progressing, Some(0), 0),
            (502, None, &[Promote], Promoting, Some(0), 100),
            (504, None, &[], Succeeded, Some(0), 100),
        ],
    );
    play(
        "blueGreen auto with mirror",
        Run::new(rollout(blue_green(true, Some(10.0)))),
        &[
            (0, None, &[], Progressing, Some(0), 0),
            (119, Some(Pass), &[], Progressing, Some(0), 0),
            (120, Some(Pass), &[], Promoting, Some(0), 100),
            (122, None, &[], Succeeded, Some(0), 100),
        ],
    );
    play(
        "blueGreen fails: instant rollback",
        Run::new(rollout(blue_green(true, Some(10.0)))),
        &[
            (0, None, &[], Progressing, Some(0), 0),
            (5, Some(Fail), &[], RolledBack, Some(0), 0),
        ],
    );
}

#[test]
fn an_invalid_spec_fails_without_touching_routes() {
    let mut r = rollout(canary(&[(120, pause(Some(1), false, false))]));
    r.spec.canary = "v1".into();
    let mut run = Run::new(r);
    run.tick(0, None, &[]);
    let s = run.status();
    assert_eq!(s.phase, Failed);
    assert_eq!(
        s.reason,
        "Rollout shop/reviews: spec.canary \"v1\" is the same subset as spec.stable; \
         spec.strategy.canary.steps[0].weight 120 is over 100"
    );
    assert!(run.routing().is_none());
    assert_eq!(run.events(), ["Failed"]);
    // Ticking again changes nothing and says nothing more.
    run.tick(2, None, &[]);
    assert!(run.actions.is_empty());
    // A fixed spec with a new generation starts.
    run.rollout.spec.canary = "v2".into();
    run.rollout.spec.strategy = three_steps();
    run.rollout.metadata.generation = Some(2);
    run.tick(4, None, &[]);
    assert_eq!(run.status().phase, Progressing);
    assert_eq!(run.status().observed_generation, Some(2));
}

#[test]
fn ended_rollouts_restart_only_for_a_new_spec() {
    let mut run = Run::new(rollout(three_steps()));
    run.tick(0, None, &[]);
    run.tick(1, Some(Fail), &[]);
    assert_eq!(run.status().phase, RolledBack);
    run.tick(2, Some(Pass), &[]);
    assert_eq!(
        run.status().phase,
        RolledBack,
        "same generation stays ended"
    );
    run.rollout.metadata.generation = Some(2);
    run.tick(3, None, &[]);
    assert_eq!(run.status().phase, Progressing, "{}", run.status().reason);
    assert_eq!(run.status().current_step, Some(0));

    // After a promotion the same pair never restarts (v2 is stable now) ...
    run.tick(4, None, &[Promote, Promote, Promote]);
    run.tick(5, None, &[]);
    assert_eq!(run.status().phase, Succeeded);
    run.rollout.metadata.generation = Some(3);
    run.tick(6, None, &[]);
    assert_eq!(run.status().phase, Succeeded);
    // ... a new pair does.
    run.rollout.spec.stable = "v2".into();
    run.rollout.spec.canary = "v3".into();
    run.tick(7, None, &[]);
    let s = run.status();
    assert_eq!(
        (s.phase, s.current_step, s.canary_weight),
        (Progressing, Some(0), 10)
    );
    assert_eq!(run.routing().unwrap().stable, "v2");
}
