//! Whole rollouts by simulation (fixed seeds, asserted rates): simulated traffic through the
//! analysis, its judgment through the state machine, as the agent runs them, a look every 2 s.
//! What the hold rule promises: a failing canary is not given the next step's traffic, a healthy
//! one is, promptly, and a step without traffic ends by the progress deadline.

use crate::analysis::simulate::{Arm, Seconds};
use crate::analysis::{AnalysisSpec, StepAnalysis};
use crate::judge;

use super::*;

fn arm(rps: f64, error_rate: f64) -> Arm {
    Arm {
        rps,
        error_rate,
        median_ms: 50.0,
        p99_ms: 200.0,
    }
}

/// Two steps, 10 % then 50 %, each held by a 15 s pause; 200 requests/s in all.
fn two_steps() -> Rollout {
    rollout(canary(&[
        (10, pause(Some(15), false, false)),
        (50, pause(Some(15), false, false)),
    ]))
}

/// Where one simulated rollout got to: the second it entered step 2 (if it did) and how it ended
/// within `limit` seconds.
struct Walked {
    second_step_at: Option<u64>,
    phase: Phase,
    reasons: Vec<String>,
}

fn walk(r: Rollout, canary_errors: f64, total_rps: f64, limit: u64, seed: u64) -> Walked {
    let spec = AnalysisSpec::default();
    let share = |weight: u32| weight as f64 / 100.0;
    let arms = |weight: u32| {
        let w = share(weight);
        (
            arm(total_rps * w, canary_errors),
            arm(total_rps * (1.0 - w), 0.005),
        )
    };
    let mut r = r;
    let tick = |r: &mut Rollout, second: u64, outcome: Option<&AnalysisOutcome>| {
        let (status, _) = step(r, outcome, &[], &[], at(second));
        r.status = Some(status);
    };
    tick(&mut r, 0, None);
    let status = |r: &Rollout| r.status.clone().unwrap_or_default();
    let (c, b) = arms(status(&r).canary_weight);
    let mut traffic = Seconds::new(&c, &b, seed);
    let mut analysis = StepAnalysis::new(spec.clone());
    let mut current = 0;
    let mut walked = Walked {
        second_step_at: None,
        phase: Progressing,
        reasons: Vec::new(),
    };
    for second in 1..=limit {
        traffic.feed(&mut analysis);
        let outcome = (second % 2 == 0).then(|| judge::outcome(&analysis.look()));
        tick(&mut r, second, outcome.as_ref());
        let s = status(&r);
        walked.phase = s.phase;
        if walked.reasons.last() != Some(&s.reason) {
            walked.reasons.push(s.reason.clone());
        }
        if s.phase.is_final() {
            break;
        }
        if s.current_step != Some(current) {
            current = s.current_step.unwrap_or(0);
            if current == 1 {
                walked.second_step_at = Some(second);
            }
            let (c, b) = arms(s.canary_weight);
            traffic.set_arms(&c, &b);
            analysis = StepAnalysis::new(spec.clone());
        }
    }
    walked
}

/// Runs `runs` rollouts from `seed` on.
fn walks(canary_errors: f64, total_rps: f64, limit: u64, runs: u64, seed: u64) -> Vec<Walked> {
    (0..runs)
        .map(|i| walk(two_steps(), canary_errors, total_rps, limit, seed + i))
        .collect()
}

/// The case: a canary failing 5 % of requests against stable's 0.5 %, 15 s steps at
/// 20 canary requests/s. A duration pause used to advance it in 17 % of runs.
#[test]
fn a_failing_canary_does_not_reach_the_next_step() {
    let runs = 600;
    let out = walks(0.05, 200.0, 120, runs, 16_000);
    let reached = out.iter().filter(|w| w.second_step_at.is_some()).count();
    let rolled_back = out.iter().filter(|w| w.phase == RolledBack).count();
    assert!(
        reached as f64 <= 0.01 * runs as f64,
        "{reached} of {runs} failing canaries reached 50 %"
    );
    assert!(
        rolled_back as u64 >= runs * 99 / 100,
        "{rolled_back} rolled back"
    );
    // While it holds, the status says so in words.
    let held = out
        .iter()
        .flat_map(|w| &w.reasons)
        .find(|r| r.starts_with("holding at 10%: canary errors"));
    assert!(held.is_some(), "no run said it was holding");
}

/// A healthy canary is not held for long: it reaches the second step within 5 minutes.
#[test]
fn a_healthy_canary_reaches_the_next_step_promptly() {
    let runs = 300;
    let out = walks(0.005, 200.0, 300, runs, 17_000);
    let mut at: Vec<u64> = out.iter().filter_map(|w| w.second_step_at).collect();
    at.sort();
    let rolled_back = out.iter().filter(|w| w.phase == RolledBack).count();
    assert!(
        rolled_back <= 3,
        "{rolled_back} healthy canaries rolled back"
    );
    assert!(
        at.len() as u64 >= runs * 95 / 100,
        "only {} of {runs} reached 50 % within 5 minutes",
        at.len()
    );
    let median = at[at.len() / 2];
    assert!(median <= 60, "median time to the second step {median} s");
}

/// No traffic at all: the step holds, says so, and the progress deadline rolls it back.
#[test]
fn a_step_without_traffic_holds_then_ends_by_the_deadline() {
    let w = walk(two_steps(), 0.005, 0.0, 700, 1);
    assert_eq!(w.second_step_at, None);
    assert_eq!(w.phase, RolledBack);
    assert!(
        w.reasons
            .iter()
            .any(|r| r.starts_with("holding at 10%: no canary requests yet")),
        "{:?}",
        w.reasons
    );
    let last = w.reasons.last().unwrap();
    assert!(
        last.starts_with("step 1/2 held 600s past its pause, beyond the progress deadline of 600s: no canary requests yet"),
        "{last}"
    );
}
