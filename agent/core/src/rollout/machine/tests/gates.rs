//! The checks outside the proxy as the machine sees them: a Hold keeps the step until the
//! progress deadline, a Wait keeps it without one, a Fail rolls back and an Abort aborts naming
//! the check, an answer about another step counts for nothing, and the last answers stay in the
//! status as evidence.

use super::*;
use crate::rollout::gates::{GateKind, GateReport, GateState};

/// Ticks `run` at `secs` with a passing analysis and these answers about its current step.
fn tick(run: &mut Run, secs: u64, answers: &[(&str, GateState)]) {
    let status = run.rollout.status.clone().unwrap_or_default();
    let reports: Vec<GateReport> = answers
        .iter()
        .filter_map(|(name, state)| {
            GateReport::about(&status, *name, GateKind::Metric, state.clone(), at(secs))
        })
        .collect();
    let analysis = outcome(Verdict::Pass);
    let (status, actions) = step(&run.rollout, Some(&analysis), &reports, &[], at(secs));
    run.rollout.status = Some(status);
    run.actions = actions;
}

fn two_steps() -> Run {
    let mut run = Run::new(rollout(canary(&[
        (10, pause(Some(10), true, false)),
        (50, pause(Some(10), true, false)),
    ])));
    run.tick(0, None, &[]);
    run
}

fn hold(why: &str) -> GateState {
    GateState::Hold(why.into())
}

#[test]
fn each_answer_does_what_it_says_to_the_step() {
    type Case = (&'static str, GateState, Phase, u32, &'static str);
    let cases: [Case; 5] = [
        ("pass", GateState::Pass, Progressing, 50, "StepAdvanced"),
        ("hold", hold("no data yet"), Progressing, 10, ""),
        (
            "wait",
            GateState::Wait("no answer yet".into()),
            Progressing,
            10,
            "",
        ),
        (
            "fail",
            GateState::Fail("cpu 0.85 above 0.7".into()),
            RolledBack,
            0,
            "RolledBack",
        ),
        (
            "abort",
            GateState::Abort("hook said no".into()),
            Aborted,
            0,
            "Aborted",
        ),
    ];
    for (name, state, phase, weight, event) in cases {
        let mut run = two_steps();
        tick(&mut run, 20, &[("cpu", state.clone())]);
        let s = run.status();
        assert_eq!(
            (s.phase, s.canary_weight),
            (phase, weight),
            "{name}: {}",
            s.reason
        );
        assert_eq!(
            run.events(),
            if event.is_empty() {
                vec![]
            } else {
                vec![event]
            },
            "{name}"
        );
        match &state {
            GateState::Hold(why) | GateState::Wait(why) => {
                assert!(
                    s.reason.contains(&format!("cpu: {why}")),
                    "{name}: {}",
                    s.reason
                )
            }
            GateState::Fail(why) | GateState::Abort(why) => {
                assert!(
                    s.reason.contains("Metric check cpu"),
                    "{name}: {}",
                    s.reason
                );
                assert!(s.reason.contains(why.as_str()), "{name}: {}", s.reason);
            }
            GateState::Pass => {}
        }
        if state == GateState::Pass {
            assert!(
                s.gates.is_empty(),
                "{name}: the answers were about the step before"
            );
        } else {
            assert_eq!(s.gates.len(), 1, "{name}: the answer is kept");
            assert_eq!(s.gates[0].state, state, "{name}");
        }
    }
}

#[test]
fn a_hold_ends_at_the_progress_deadline_and_a_wait_does_not() {
    let deadline = 10 + 600;
    let mut held = two_steps();
    tick(&mut held, 20, &[("cpu", hold("no data yet"))]);
    tick(&mut held, deadline - 1, &[("cpu", hold("no data yet"))]);
    assert_eq!(held.status().phase, Progressing, "{}", held.status().reason);
    tick(&mut held, deadline + 1, &[("cpu", hold("no data yet"))]);
    let s = held.status();
    assert_eq!((s.phase, s.canary_weight), (RolledBack, 0));
    assert!(s.reason.contains("cpu: no data yet"), "{}", s.reason);

    let mut waiting = two_steps();
    let wait = GateState::Wait("the pipeline has not confirmed".into());
    tick(&mut waiting, deadline * 3, &[("confirm", wait.clone())]);
    let s = waiting.status();
    assert_eq!(
        (s.phase, s.canary_weight),
        (Progressing, 10),
        "{}",
        s.reason
    );
    assert!(s.reason.contains("waiting for"), "{}", s.reason);
    tick(
        &mut waiting,
        deadline * 3 + 2,
        &[("confirm", GateState::Pass)],
    );
    assert_eq!(waiting.status().canary_weight, 50);
}

#[test]
fn an_answer_about_another_step_counts_for_nothing() {
    let mut run = two_steps();
    let status = run.status().clone();
    let stale = GateReport::about(
        &RolloutStatus {
            step_started_at: Some(at(1)),
            ..status.clone()
        },
        "cpu",
        GateKind::Metric,
        GateState::Fail("about another start".into()),
        at(20),
    )
    .expect("a step");
    let analysis = outcome(Verdict::Pass);
    let (after, _) = step(&run.rollout, Some(&analysis), &[stale], &[], at(20));
    assert_eq!((after.phase, after.canary_weight), (Progressing, 50));
    assert!(after.gates.is_empty(), "{:?}", after.gates);

    // An answer kept from step 1 is dropped once step 2 begins.
    tick(&mut run, 20, &[("cpu", GateState::Pass)]);
    assert_eq!(run.status().gates.len(), 0, "step 2 began this tick");
    tick(&mut run, 22, &[]);
    assert!(run.status().gates.is_empty());
}

#[test]
fn the_last_answers_stay_in_the_status_after_the_rollout_ends() {
    let mut run = two_steps();
    tick(
        &mut run,
        20,
        &[("cpu", GateState::Fail("cpu 0.85 above 0.7".into()))],
    );
    assert_eq!(run.status().phase, RolledBack);
    tick(&mut run, 22, &[]);
    let s = run.status();
    assert_eq!(s.gates.len(), 1);
    assert_eq!(s.gates[0].name, "cpu");
}
