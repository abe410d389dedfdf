//! The demo's six scenarios as tests: how each rollout ends, why, and which backend answered
//! whom before and after the agent's decisions.

use std::time::{Duration, SystemTime};

use fledge_demo::{Cohort, Scenario};

use crate::support::{answers, answers_after, run};

/// Slices started this long after a decision are wholly under the new routes (the mesh reloads
/// the VirtualService within 50 ms, the filters get the table at once).
const SETTLE: Duration = Duration::from_secs(1);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_canary_is_promoted_and_then_serves_everyone() {
    let outcome = run(Scenario::Healthy).await;
    assert_eq!(outcome.phase, "Succeeded", "{}", outcome.reason);
    assert!(
        outcome.reason.contains("v2 is the new stable"),
        "{}",
        outcome.reason
    );
    assert_eq!(outcome.unanswered(), 0, "every request got an answer");
    // Both versions served during the rollout, and only v2 after the switch.
    let switched = outcome
        .switched_at()
        .expect("a Succeeded decision in the history");
    let before = outcome.answers_between(Cohort::Plain, "v2", SystemTime::UNIX_EPOCH, switched);
    assert!(
        before > 100,
        "the canary served its steps: {before} answers"
    );
    let after = switched + SETTLE;
    assert!(answers_after(&outcome, Cohort::Plain, "v2", after) > 0);
    assert_eq!(answers_after(&outcome, Cohort::Plain, "v1", after), 0);
    // The weight only ever went up: 10, 50, then 100.
    let weights: Vec<u64> = outcome.trajectory().iter().map(|t| t.2).collect();
    assert!(weights.windows(2).all(|w| w[0] <= w[1]), "{weights:?}");
    assert!(
        weights.contains(&10) && weights.contains(&50),
        "{weights:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_with_five_percent_errors_is_rolled_back() {
    let outcome = run(Scenario::Erroring).await;
    assert_eq!(outcome.phase, "RolledBack", "{}", outcome.reason);
    assert!(outcome.reason.contains("error-rate"), "{}", outcome.reason);
    assert!(
        outcome
            .failing_checks
            .iter()
            .any(|c| c.starts_with("error-rate:")),
        "{:?}",
        outcome.failing_checks
    );
    assert_eq!(outcome.unanswered(), 0);
    let rolled_back = outcome.decided_at(&["RolledBack"]).expect("decision");
    assert_eq!(
        answers_after(&outcome, Cohort::Plain, "v2", rolled_back + SETTLE),
        0,
        "no client reaches the canary after the rollback"
    );
    assert!(answers_after(&outcome, Cohort::Plain, "v1", rolled_back + SETTLE) > 0);
    assert!(outcome.canary.errors > 0, "the canary did fail requests");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_fifty_percent_slower_is_rolled_back() {
    let outcome = run(Scenario::Slow).await;
    assert_eq!(outcome.phase, "RolledBack", "{}", outcome.reason);
    assert!(
        outcome
            .failing_checks
            .iter()
            .any(|c| c.starts_with("latency-")),
        "a latency check failed: {:?}",
        outcome.failing_checks
    );
    assert!(
        !outcome
            .failing_checks
            .iter()
            .any(|c| c.starts_with("error-rate")),
        "errors are as stable's: {:?}",
        outcome.failing_checks
    );
    let rolled_back = outcome.decided_at(&["RolledBack"]).expect("decision");
    assert_eq!(
        answers_after(&outcome, Cohort::Plain, "v2", rolled_back + SETTLE),
        0
    );
    assert_eq!(outcome.unanswered(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ab_cohort_alone_reaches_the_canary_which_is_promoted() {
    let outcome = run(Scenario::Ab).await;
    assert_eq!(outcome.phase, "Succeeded", "{}", outcome.reason);
    let began = outcome
        .decided_at(&["Progressing"])
        .expect("the A/B stage began");
    let switched = outcome.switched_at().expect("switch");
    let (from, to) = (began + SETTLE, switched);
    let beta_v2 = outcome.answers_between(Cohort::Beta, "v2", from, to);
    assert!(beta_v2 > 100, "the cohort reached the canary: {beta_v2}");
    assert_eq!(outcome.answers_between(Cohort::Beta, "v1", from, to), 0);
    assert!(outcome.answers_between(Cohort::Plain, "v1", from, to) > 100);
    assert_eq!(
        outcome.answers_between(Cohort::Plain, "v2", from, to),
        0,
        "no one outside the cohort saw the canary before the switch"
    );
    assert!(answers_after(&outcome, Cohort::Plain, "v2", switched + SETTLE) > 0);
    assert_eq!(outcome.unanswered(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shadow_is_judged_on_mirrored_requests_and_promoted_unseen() {
    let outcome = run(Scenario::Shadow).await;
    assert_eq!(outcome.phase, "Succeeded", "{}", outcome.reason);
    let switched = outcome.switched_at().expect("switch");
    assert_eq!(
        outcome.answers_between(Cohort::Plain, "v2", SystemTime::UNIX_EPOCH, switched),
        0,
        "no client saw the canary before the switch"
    );
    assert!(
        outcome.canary.shadow > 300,
        "mirrored: {}",
        outcome.canary.shadow
    );
    // The judgment that promoted it counted the canary's (shadow) requests.
    let traffic = outcome.rollout["status"]["lastAnalysis"]["evidence"]["checks"]
        .as_array()
        .and_then(|checks| checks.iter().find(|c| c["check"] == "traffic"))
        .cloned()
        .expect("a traffic check");
    let judged = traffic["evidence"]["canaryRequests"].as_u64().unwrap_or(0);
    assert!(judged >= 200, "shadow requests judged: {judged}");
    assert!(answers_after(&outcome, Cohort::Plain, "v2", switched + SETTLE) > 0);
    assert_eq!(
        answers(&outcome, Cohort::Beta, "v2"),
        0,
        "no cohort load in this scenario"
    );
    assert_eq!(outcome.unanswered(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_over_its_cpu_gate_is_rolled_back_on_prometheuss_word() {
    let outcome = run(Scenario::CpuGate).await;
    assert_eq!(outcome.phase, "RolledBack", "{}", outcome.reason);
    let query = "demo_cpu_usage_cores{version=\"v2\"}";
    assert!(
        outcome.reason.contains("Metric check cpu failed")
            && outcome
                .reason
                .contains(&format!("canary 0.85 is above max 0.7; query: {query}")),
        "{}",
        outcome.reason
    );
    // The status keeps the gate's answer: the query as sent, the value, the bound.
    let gate = &outcome.rollout["status"]["gates"][0];
    assert_eq!(gate["name"], "cpu");
    assert_eq!(gate["kind"], "Metric");
    assert_eq!(gate["state"], "Fail");
    assert_eq!(gate["evidence"]["canary"]["query"], query);
    assert_eq!(gate["evidence"]["canary"]["value"], 0.85);
    assert_eq!(gate["evidence"]["bounds"][0]["limit"], 0.7);
    // Nothing in the mesh was wrong: the analysis never failed the canary.
    assert!(
        outcome.failing_checks.is_empty(),
        "{:?}",
        outcome.failing_checks
    );
    // The canary served its share while its CPU was under the bound, and none after.
    let rolled_back = outcome.decided_at(&["RolledBack"]).expect("decision");
    assert!(
        outcome.answers_between(Cohort::Plain, "v2", SystemTime::UNIX_EPOCH, rolled_back) > 20,
        "the canary served before its CPU climbed"
    );
    assert_eq!(
        answers_after(&outcome, Cohort::Plain, "v2", rolled_back + SETTLE),
        0,
        "no client reaches the canary after the rollback"
    );
    assert_eq!(outcome.unanswered(), 0);
}
