use std::time::Duration;

use jiff::Timestamp;

use super::*;
use crate::rollout::gates::GateReport;
use crate::rollout::spec::{Pause, Rollout};
use crate::rollout::status::Decision;

fn at(secs: i64) -> Timestamp {
    Timestamp::from_second(1_700_000_000 + secs).expect("a valid time")
}

fn workloads(with_weight: bool) -> Workloads {
    Workloads {
        stable: "reviews-v1".into(),
        canary: "reviews-v2".into(),
        scale_with_weight: with_weight,
        scale_down_delay: None,
        scale_canary_to_zero: None,
    }
}

/// Prepare, then 10 %, 30 %, 60 % of live traffic, then the promotion.
fn rollout(with_weight: bool) -> Rollout {
    let pause = Pause::for_secs(5);
    let mut r =
        Rollout::test().with_steps(&[(10, pause.clone()), (30, pause.clone()), (60, pause)]);
    r.spec.workloads = Some(workloads(with_weight));
    r
}

fn status(phase: Phase, step: u32, weight: u32) -> RolloutStatus {
    RolloutStatus {
        phase,
        current_step: Some(step),
        step_started_at: Some(at(0)),
        canary_weight: weight,
        history: vec![Decision {
            at: at(100),
            phase,
            step: Some(step),
            canary_weight: weight,
            reason: String::new(),
        }],
        ..Default::default()
    }
}

fn seen(replicas: u32, ready: u32) -> Observed {
    Observed {
        replicas,
        generation: 2,
        observed_generation: 2,
        ready_replicas: ready,
        available_replicas: ready,
    }
}

#[test]
fn replicas_follow_the_weight_exactly() {
    // total, weight, canary, stable
    let cases = [
        (10, 0, 1, 10),
        (10, 5, 1, 9),
        (10, 10, 1, 9),
        (10, 11, 2, 8),
        (10, 30, 3, 7),
        (10, 99, 10, 1),
        (10, 100, 10, 0),
        (3, 30, 1, 2),
        (3, 34, 2, 1),
        (3, 60, 2, 1),
        (2, 60, 2, 1),
        (1, 50, 1, 1),
        (0, 50, 1, 1),
        (7, 150, 7, 0),
    ];
    for (total, weight, canary, stable) in cases {
        assert_eq!(
            canary_replicas(total, weight),
            canary,
            "canary, {total} at {weight}%"
        );
        assert_eq!(
            stable_replicas(total, weight),
            stable,
            "stable, {total} at {weight}%"
        );
    }
}

#[test]
fn each_stage_sizes_the_canary_for_the_next_weight() {
    // phase, step, weight now, with weight: (canary, stable, for), without: (canary, stable)
    let cases = [
        (Phase::Progressing, 0, 0, (1, 10, 10), (10, 10)),
        (Phase::Progressing, 1, 10, (3, 9, 30), (10, 10)),
        (Phase::Paused, 2, 30, (6, 7, 60), (10, 10)),
        (Phase::Progressing, 3, 60, (10, 4, 100), (10, 10)),
    ];
    for (phase, step, weight, with, without) in cases {
        let s = status(phase, step, weight);
        let r = rollout(true);
        let t = targets(&r.spec, &workloads(true), &s, 10, at(0));
        assert_eq!(
            (t.canary, t.stable, t.for_weight),
            (Some(with.0), Some(with.1), with.2),
            "scaled with the weight, step {step}"
        );
        let r = rollout(false);
        let t = targets(&r.spec, &workloads(false), &s, 10, at(0));
        assert_eq!(
            (t.canary, t.stable),
            (Some(without.0), Some(without.1)),
            "full canary, step {step}"
        );
    }
}

#[test]
fn the_end_scales_down_only_after_the_delay() {
    let r = rollout(true);
    let mut keep = workloads(true);
    keep.scale_canary_to_zero = Some(false);
    // phase, weight, seconds after the decision, workloads, (canary, stable)
    let cases = [
        (Phase::Promoting, 100, 0, workloads(true), (Some(10), None)),
        (Phase::Succeeded, 100, 29, workloads(true), (Some(10), None)),
        (
            Phase::Succeeded,
            100,
            30,
            workloads(true),
            (Some(10), Some(0)),
        ),
        (Phase::RolledBack, 0, 0, workloads(true), (None, Some(10))),
        (
            Phase::RolledBack,
            0,
            31,
            workloads(true),
            (Some(0), Some(10)),
        ),
        (Phase::Aborted, 0, 31, workloads(true), (Some(0), Some(10))),
        (Phase::Aborted, 0, 31, keep, (None, Some(10))),
        (Phase::Failed, 0, 31, workloads(true), (None, None)),
        (Phase::Pending, 0, 31, workloads(true), (None, None)),
    ];
    for (phase, weight, after, w, expected) in cases {
        let s = status(phase, 3, weight);
        let t = targets(&r.spec, &w, &s, 10, at(100 + after));
        assert_eq!((t.canary, t.stable), expected, "{phase} +{after}s");
    }
}

#[test]
fn the_deployments_are_handed_back_once_the_end_s_scale_down_is_due() {
    let w = workloads(true);
    // phase, seconds after the decision, settled
    let cases = [
        (Phase::Pending, 0, true),
        (Phase::Progressing, 1000, false),
        (Phase::Paused, 1000, false),
        (Phase::Promoting, 1000, false),
        (Phase::Succeeded, 29, false),
        (Phase::Succeeded, 30, true),
        (Phase::RolledBack, 0, false),
        (Phase::RolledBack, 31, true),
        (Phase::Aborted, 31, true),
        (Phase::Failed, 0, true),
    ];
    for (phase, after, expected) in cases {
        let s = status(phase, 3, 0);
        assert_eq!(
            settled(&w, &s, at(100 + after)),
            expected,
            "{phase} +{after}s"
        );
    }
    // Settled means the targets no longer change while the status stays.
    let r = rollout(true);
    for phase in [Phase::Succeeded, Phase::RolledBack, Phase::Aborted] {
        let s = status(phase, 3, if phase == Phase::Succeeded { 100 } else { 0 });
        let first = targets(&r.spec, &w, &s, 10, at(130));
        for later in [131, 1000, 100_000] {
            let t = targets(&r.spec, &w, &s, 10, at(later));
            assert_eq!(
                (t.canary, t.stable),
                (first.canary, first.stable),
                "{phase}"
            );
        }
    }
}

#[test]
fn readiness_holds_the_step_until_the_canary_is_ready_for_the_next_weight() {
    let w = workloads(true);
    let t = Targets {
        canary: Some(3),
        stable: Some(9),
        for_weight: 30,
    };
    let stale = Observed {
        observed_generation: 1,
        ..seen(3, 3)
    };
    let unavailable = Observed {
        available_replicas: 2,
        ..seen(3, 3)
    };
    // canary seen, the state expected
    let cases = [
        (
            None,
            GateState::Hold("canary Deployment reviews-v2 not found".into()),
        ),
        (
            Some(seen(1, 1)),
            GateState::Hold("canary reviews-v2 scaling to 3 for 30% (1 ready)".into()),
        ),
        (
            Some(seen(3, 1)),
            GateState::Hold("canary reviews-v2 1/3 ready for 30%".into()),
        ),
        (
            Some(stale),
            GateState::Hold("canary reviews-v2 0/3 ready for 30%".into()),
        ),
        (
            Some(unavailable),
            GateState::Hold("canary reviews-v2 2/3 ready for 30%".into()),
        ),
        (Some(seen(3, 3)), GateState::Pass),
        (Some(seen(3, 4)), GateState::Pass),
    ];
    for (canary, expected) in cases {
        let (state, evidence) = answer(&w, &t, 10, canary.as_ref(), Some(&seen(9, 9)));
        assert_eq!(state, expected, "{canary:?}");
        assert_eq!(evidence["totalReplicas"], 10);
        assert_eq!(evidence["forWeight"], 30);
        assert_eq!(evidence["canary"]["target"], 3);
        assert_eq!(evidence["stable"]["ready"], 9);
    }
}

#[test]
fn the_total_is_read_back_or_inferred_from_the_replicas_given() {
    let r = rollout(true);
    let w = workloads(true);
    let mut s = status(Phase::Progressing, 2, 30);
    assert_eq!(recorded_total(&s), None);
    let (state, evidence) = answer(
        &w,
        &Targets::default(),
        10,
        Some(&seen(1, 1)),
        Some(&seen(10, 10)),
    );
    let report = GateReport::about(&s, GATE_NAME, GateKind::Workload, state, at(1))
        .expect("a step runs")
        .with_evidence(evidence);
    s.gates.push(report);
    assert_eq!(recorded_total(&s), Some(10));

    // step, phase, weight, canary replicas, stable replicas, total
    let cases = [
        (0, Phase::Progressing, 0, 1, 10, 10),
        // step 2 just began: the Deployments still have step 1's targets (3, 9) …
        (2, Phase::Progressing, 30, 3, 9, 10),
        // … or already step 2's (6, 7).
        (2, Phase::Progressing, 30, 6, 7, 10),
        (3, Phase::Paused, 60, 10, 4, 10),
        (3, Phase::Progressing, 60, 8, 3, 8),
        (3, Phase::Succeeded, 100, 10, 4, 10),
        (3, Phase::RolledBack, 0, 6, 7, 13),
    ];
    for (step, phase, weight, canary, stable, total) in cases {
        let s = status(phase, step, weight);
        assert_eq!(
            inferred_total(&r.spec, &w, &s, &seen(canary, 0), &seen(stable, 0)),
            total,
            "step {step} {phase}: canary {canary}, stable {stable}"
        );
    }
}

#[test]
fn workloads_need_a_prepare_stage_and_valid_names() {
    let r = rollout(true);
    assert!(r.spec.prepares());
    assert!(!Rollout::test().spec.prepares());
    let plan = Plan::of(&r.spec).expect("a plan");
    assert_eq!(
        plan.stages[0].kind,
        crate::rollout::plan::StageKind::Prepare
    );
    assert_eq!(next_weight(&plan, 0), 10);
    assert_eq!(next_weight(&plan, 3), 100);

    let mut bad = workloads(true);
    bad.canary = "Reviews_V2".into();
    bad.scale_down_delay = Some(Duration::from_secs(2 * 24 * 3600));
    let mut same = workloads(false);
    same.canary = same.stable.clone();
    let cases = [
        (workloads(true), vec![]),
        (
            bad,
            vec![
                "spec.workloads.canary \"Reviews_V2\" may hold only lower-case letters, digits and '-' (and '.' between parts of a name)",
                "spec.workloads.scaleDownDelay 172800s is over 86400s",
            ],
        ),
        (
            same,
            vec!["spec.workloads.canary \"reviews-v1\" is the same Deployment as stable"],
        ),
    ];
    for (w, expected) in cases {
        let mut r = rollout(true);
        r.spec.workloads = Some(w);
        let got: Vec<String> = match r.validate() {
            Ok(()) => vec![],
            Err(e) => e.problems.iter().map(ToString::to_string).collect(),
        };
        assert_eq!(got, expected);
    }
}
