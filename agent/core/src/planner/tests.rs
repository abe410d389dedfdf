//! The per-tick planner, one row a tick: what it is given (status held, judgment, commands,
//! whether routing was applied since start) and the writes it orders.

use jiff::Timestamp;

use super::*;
use crate::analysis::{CheckResult, Evidence, Judgment, Verdict};
use crate::rollout::{Pause, Phase, Strategy};
use crate::windows::{Side, Traffic};

fn at(secs: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + secs).unwrap()
}

fn judgment(verdict: Verdict) -> Judgment {
    Judgment {
        verdict,
        elapsed_secs: 12.0,
        checks: Vec::new(),
    }
}

/// Ticks `rollout` once and carries the planned status over, as the controller does when every
/// write succeeds.
fn tick(
    rollout: &mut Rollout,
    secs: i64,
    verdict: Option<Verdict>,
    commands: &[UserCommand],
    routing_applied: bool,
) -> TickPlan {
    let judgment = verdict.map(judgment);
    let plan = plan(Tick {
        rollout,
        judgment: judgment.as_ref(),
        gates: &[],
        commands,
        routing_applied,
        persisted: None,
        now: at(secs),
    });
    rollout.status = Some(plan.status.clone());
    plan
}

/// (secs, verdict, commands, phase, weight, routing weight, event reasons, status changed)
type Row = (
    i64,
    Option<Verdict>,
    &'static [UserCommand],
    Phase,
    u32,
    Option<u32>,
    &'static [&'static str],
    bool,
);

#[test]
fn orders_routing_events_and_status_per_tick() {
    let mut rollout = Rollout::test().with_steps(&[
        (10, Pause::until_analysis_passes()),
        (50, Pause::until_analysis_passes()),
    ]);
    let rows: [Row; 6] = [
        (
            0,
            None,
            &[],
            Phase::Progressing,
            10,
            Some(10),
            &["Started"],
            true,
        ),
        (
            2,
            Some(Verdict::NotEnoughData),
            &[],
            Phase::Progressing,
            10,
            None,
            &[],
            true,
        ),
        (4, None, &[], Phase::Progressing, 10, None, &[], false),
        (
            6,
            Some(Verdict::Pass),
            &[],
            Phase::Progressing,
            50,
            Some(50),
            &["StepAdvanced"],
            true,
        ),
        (
            8,
            None,
            &[UserCommand::Abort],
            Phase::Aborted,
            0,
            Some(0),
            &["Aborted"],
            true,
        ),
        (
            10,
            Some(Verdict::Fail),
            &[],
            Phase::Aborted,
            0,
            None,
            &[],
            false,
        ),
    ];
    for (secs, verdict, commands, phase, weight, routing, reasons, changed) in rows {
        let plan = tick(&mut rollout, secs, verdict, commands, true);
        assert_eq!(plan.status.phase, phase, "at {secs}s: {plan:#?}");
        assert_eq!(plan.status.canary_weight, weight, "at {secs}s");
        assert_eq!(
            plan.routing.as_ref().map(|r| r.canary_weight()),
            routing,
            "at {secs}s"
        );
        let got: Vec<&str> = plan.notices.iter().map(|n| n.reason).collect();
        assert_eq!(got, reasons, "at {secs}s");
        assert_eq!(plan.status_changed, changed, "at {secs}s");
        assert_eq!(plan.finished(), phase.is_final(), "at {secs}s");
    }
}

#[test]
fn a_restarted_agent_reapplies_the_routing_of_the_persisted_status() {
    let mut rollout = Rollout::test().canary(25);
    tick(&mut rollout, 0, None, &[], true);
    // Nothing changes this tick; only whether routing was applied since start differs.
    for (routing_applied, expected) in [(true, None), (false, Some(25))] {
        let mut again = rollout.clone();
        let plan = tick(&mut again, 2, None, &[], routing_applied);
        assert_eq!(
            plan.routing.as_ref().map(|r| r.canary_weight()),
            expected,
            "routing applied since start: {routing_applied}"
        );
        assert!(plan.notices.is_empty());
    }
}

#[test]
fn notices_carry_the_evidence_and_the_phase() {
    let mut rollout = Rollout::test().canary(10);
    tick(&mut rollout, 0, None, &[], true);
    let mut failing = judgment(Verdict::Fail);
    failing.checks.push(CheckResult {
        check: "error-rate",
        verdict: Verdict::Fail,
        summary: "canary 5.00% vs baseline 0.50%".into(),
        evidence: Evidence {
            canary_requests: 400,
            baseline_requests: 3600,
            canary: 0.05,
            baseline: 0.005,
            statistic: 2190.0,
            threshold: 20.0,
        },
    });
    let plan = plan(Tick {
        rollout: &rollout,
        judgment: Some(&failing),
        gates: &[],
        commands: &[],
        routing_applied: true,
        persisted: None,
        now: at(4),
    });
    assert_eq!(plan.status.phase, Phase::RolledBack);
    let notice = &plan.notices[0];
    assert_eq!(notice.reason, "RolledBack");
    assert_eq!(notice.kind, EventKind::Warning);
    assert_eq!(notice.action, "RolledBack");
    assert_eq!(
        notice.evidence.as_deref(),
        Some("error-rate: canary 5.00% vs baseline 0.50%")
    );
    assert_eq!(
        notice.note(),
        format!(
            "{} (error-rate: canary 5.00% vs baseline 0.50%)",
            notice.message
        )
    );
    assert_eq!(
        plan.outcome.as_ref().map(|o| o.verdict),
        Some(Verdict::Fail)
    );
}

#[test]
fn targets_the_current_step_unless_the_stage_starves_the_canary() {
    let mut canary = Rollout::test().canary(10);
    assert_eq!(target(&canary), None, "nothing runs before the first tick");
    tick(&mut canary, 0, None, &[], true);
    let (window, arms) = target(&canary).expect("a running step");
    assert_eq!((window.step, window.since), (0, at(0)));
    assert_eq!(arms.canary.version, "v2");
    assert_eq!(arms.baseline.version, "v1");
    assert_eq!(arms.canary.side, Side::Client);
    assert_eq!(arms.canary.traffic, Traffic::Live);

    // A blue/green preview without a mirror sends the canary nothing: nothing to judge.
    let strategy: Strategy = serde_json::from_value(serde_json::json!({
        "blueGreen": { "duration": "30s" }
    }))
    .unwrap();
    let mut preview = Rollout::test().with_strategy(strategy);
    tick(&mut preview, 0, None, &[], true);
    assert_eq!(preview.status.as_ref().unwrap().phase, Phase::Progressing);
    assert_eq!(target(&preview), None);
}

#[test]
fn retries_back_off_by_what_failed() {
    use WriteFailure::*;
    // (failure, failures in a row, seconds to wait)
    for (failure, failures, secs) in [
        (Conflict, 1, 1),
        (Conflict, 2, 2),
        (Conflict, 5, 4),
        (Unavailable, 1, 2),
        (Unavailable, 2, 4),
        (Unavailable, 4, 16),
        (Unavailable, 5, 30),
        (Unavailable, 40, 30),
        (Forbidden, 1, 5),
        (NotFound, 3, 20),
        (Invalid, 7, 300),
        (Invalid, u32::MAX, 300),
    ] {
        assert_eq!(
            retry_after(failure, failures),
            Duration::from_secs(secs),
            "{failure:?} × {failures}"
        );
    }
}

/// A look that changes only the evidence is persisted at most every EVIDENCE_EVERY; a change of
/// verdict, step, weight or phase at once.
#[test]
fn status_is_persisted_on_a_change_and_evidence_at_most_every_few_seconds() {
    let mut rollout = Rollout::test().with_steps(&[
        (10, Pause::until_analysis_passes()),
        (50, Pause::until_analysis_passes()),
    ]);
    let mut persisted: Option<(RolloutStatus, Timestamp)> = None;
    let every = evidence_every(&rollout).as_secs() as i64;
    // (secs, verdict, persisted); with `every` 10: 0, 2, 4, 6, 12, 14, 16, 22, 24, 26.
    let rows = [
        (0, None, true),
        (2, Some(Verdict::NotEnoughData), true),
        (4, Some(Verdict::NotEnoughData), false),
        (6, Some(Verdict::NotEnoughData), false),
        (2 + every, Some(Verdict::NotEnoughData), true),
        (4 + every, Some(Verdict::NotEnoughData), false),
        // Nothing new since, but that evidence was never written: it goes out `every` later.
        (6 + every, None, false),
        (2 + 2 * every, None, true),
        (4 + 2 * every, None, false),
        (6 + 2 * every, Some(Verdict::Pass), true),
    ];
    let mut evidence = 0.0;
    for (secs, verdict, expected) in rows {
        let judgment = verdict.map(|v| {
            evidence += 1.0;
            Judgment {
                elapsed_secs: evidence,
                ..judgment(v)
            }
        });
        let plan = plan(Tick {
            rollout: &rollout,
            judgment: judgment.as_ref(),
            gates: &[],
            commands: &[],
            routing_applied: true,
            persisted: persisted.as_ref().map(|(s, at)| (s, Some(*at))),
            now: at(secs),
        });
        assert_eq!(plan.status_changed, expected, "at {secs}s");
        if plan.status_changed {
            persisted = Some((plan.status.clone(), at(secs)));
        }
        rollout.status = Some(plan.status);
    }
    let status = rollout.status.unwrap();
    assert_eq!(status.canary_weight, 50, "the pass advanced the step");
    assert_eq!(persisted.map(|(s, _)| s), Some(status));
}

/// The spread is fixed by the name and covers 10 – 14 s over many names.
#[test]
fn evidence_intervals_spread_over_rollouts_by_name() {
    let mut seen = std::collections::BTreeMap::new();
    for i in 0..1000 {
        let mut r = Rollout::test();
        r.metadata.name = Some(format!("app-{i}"));
        let every = evidence_every(&r).as_secs();
        assert_eq!(evidence_every(&r).as_secs(), every, "fixed for a name");
        *seen.entry(every).or_insert(0) += 1;
    }
    assert_eq!(
        seen.keys().copied().collect::<Vec<_>>(),
        [10, 11, 12, 13, 14]
    );
    assert!(seen.values().all(|&n| (150..=250).contains(&n)), "{seen:?}");
}

#[test]
fn measures_only_what_the_analysis_reads_until_the_rollout_ends() {
    let host = "reviews.shop.svc.cluster.local";
    let canary = Rollout::test().canary(10);
    let live = Arms::new(host, "v1", "v2", Traffic::Live);
    assert_eq!(
        measured(&canary),
        vec![live.canary.clone(), live.baseline.clone()]
    );

    let strategy: Strategy = serde_json::from_value(serde_json::json!({
        "shadow": { "mirrorPercent": 50, "duration": "30s", "then": "handOverToCanary",
                    "steps": [{ "weight": 20, "pause": { "untilAnalysisPasses": true } }] }
    }))
    .unwrap();
    let shadow = Rollout::test().with_strategy(strategy);
    let mirrored = Arms::new(host, "v1", "v2", Traffic::Shadow);
    assert_eq!(
        measured(&shadow),
        vec![
            mirrored.canary,
            mirrored.baseline,
            live.canary,
            live.baseline
        ]
    );

    let mut ended = Rollout::test().canary(10);
    tick(&mut ended, 0, None, &[UserCommand::Abort], true);
    assert_eq!(ended.status.as_ref().unwrap().phase, Phase::Aborted);
    assert!(measured(&ended).is_empty());
}
