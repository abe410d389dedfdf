//! The webhook gate against a local hook server: gates answer from their tasks (pending first,
//! then what the hook said, asked again until it says yes), notifications go out once per
//! change with the idempotency key, and failures are counted.

use std::time::Duration;

use fledge_core::rollout::{Phase, RolloutStatus};
use fledge_testkit::hooks::HookServer;

use super::*;

const WITHIN: Duration = Duration::from_secs(10);

/// `shop/reviews`, two steps, with `hooks` (YAML list items, indented for `spec.webhooks`).
fn rollout(hooks: &str) -> Rollout {
    let text = format!(
        "apiVersion: fledge.dev/v1alpha1\nkind: Rollout\nmetadata: {{name: reviews, namespace: shop, uid: u-1}}\nspec:\n  host: reviews.shop.svc.cluster.local\n  stable: v1\n  canary: v2\n  virtualService: {{name: reviews}}\n  strategy:\n    canary:\n      steps:\n        - {{weight: 10, pause: {{duration: 1s}}}}\n        - {{weight: 50, pause: {{duration: 1s}}}}\n  webhooks:\n{hooks}"
    );
    let r: Rollout = serde_norway::from_str(&text).expect("a Rollout");
    r.validate().expect("valid");
    r
}

fn at(secs: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + secs).expect("a time")
}

fn status(phase: Phase, step: Option<u32>, weight: u32) -> RolloutStatus {
    RolloutStatus {
        phase,
        reason: "the reason".into(),
        current_step: step,
        total_steps: Some(3),
        canary_weight: weight,
        step_started_at: step.map(|_| at(0)),
        stable_subset: Some("v1".into()),
        canary_subset: Some("v2".into()),
        ..Default::default()
    }
}

fn gate() -> (Webhooks, Arc<Metrics>) {
    let metrics = Arc::new(Metrics::new());
    let client = Outbound::new().expect("a client");
    (Webhooks::new(client, metrics.clone()), metrics)
}

/// Asks `gate` every 20 ms until its one report is in `wanted`'s state with an answer in its
/// evidence; returns it.
async fn until(gate: &Webhooks, r: &Rollout, wanted: &str) -> GateReport {
    let end = std::time::Instant::now() + WITHIN;
    loop {
        let mut reports = gate.reports(r, at(1));
        assert_eq!(reports.len(), 1, "{reports:#?}");
        if reports[0].state.label() == wanted && reports[0].evidence.get("answer").is_some() {
            return reports.remove(0);
        }
        assert!(
            std::time::Instant::now() < end,
            "never {wanted}: {reports:#?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_pre_rollout_gate_holds_until_its_hook_says_yes() {
    let server = HookServer::start().await;
    server.answer("pre", 503);
    let r = rollout(&format!(
        "    - {{name: load-test, type: preRollout, url: \"{}\", retries: 1, interval: 200ms}}\n",
        server.url("pre")
    ))
    .with_status_for_test(status(Phase::Progressing, Some(0), 0));
    let (gate, metrics) = gate();

    let first = gate.reports(&r, at(1));
    assert_eq!(first.len(), 1);
    assert!(
        matches!(&first[0].state, GateState::Hold(why) if why.contains("waiting for")),
        "{first:#?}"
    );
    assert_eq!(first[0].kind, GateKind::Webhook);
    assert_eq!(first[0].name, "load-test");

    let held = until(&gate, &r, "Hold").await;
    let why = held.state.reason().unwrap_or_default().to_owned();
    assert!(
        why.contains("failed after 1 retries: answered 503; asked again in 0.2s"),
        "{why}"
    );
    assert_eq!(held.evidence["answer"], 503);
    assert_eq!(held.evidence["attempts"], 2);

    server.answer("pre", 200);
    let passed = until(&gate, &r, "Pass").await;
    assert_eq!(passed.evidence["answer"], 200);
    let calls = server.received("pre");
    assert!(calls.len() >= 3, "{calls:#?}");
    let key = calls[0].idempotency_key.clone().expect("a key header");
    assert!(
        calls
            .iter()
            .all(|c| c.idempotency_key.as_ref() == Some(&key))
    );
    assert_eq!(calls[0].body["event"], "preRollout");
    assert_eq!(calls[0].body["idempotencyKey"], key.as_str());
    // One task per call: more ticks ask nothing more once it said yes.
    let n = server.received("pre").len();
    for _ in 0..5 {
        gate.reports(&r, at(2));
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(server.received("pre").len(), n);
    let text = metrics.render();
    assert!(
        text.contains(
            "fledge_agent_webhook_calls_total{hook_type=\"preRollout\",result=\"error\"}"
        ),
        "{text}"
    );
    assert!(
        text.contains("fledge_agent_webhook_calls_total{hook_type=\"preRollout\",result=\"ok\"} 1"),
        "{text}"
    );
}

#[tokio::test]
async fn a_confirmation_waits_while_not_confirmed_and_aborts_only_on_failure_if_asked() {
    let server = HookServer::start().await;
    server.answer("approve", 409);
    server.answer("broken", 500);
    let r = rollout(&format!(
        "    - {{name: approve, type: confirmPromotion, url: \"{}\", interval: 100ms, onFailure: abort}}\n    - {{name: broken, type: confirmPromotion, url: \"{}\", retries: 0, onFailure: abort}}\n",
        server.url("approve"),
        server.url("broken")
    ))
    .with_status_for_test(status(Phase::Progressing, Some(1), 50));
    let (gate, _) = gate();
    let end = std::time::Instant::now() + WITHIN;
    let states = loop {
        let reports = gate.reports(&r, at(1));
        let states: Vec<(String, String)> = reports
            .iter()
            .map(|r| (r.name.clone(), r.state.reason().unwrap_or("").to_owned()))
            .collect();
        let labels: Vec<&str> = reports.iter().map(|r| r.state.label()).collect();
        if labels == ["Wait", "Abort"] && states[0].1.contains("409") {
            break states;
        }
        assert!(std::time::Instant::now() < end, "{reports:#?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        states[0].1.contains("answered 409: not confirmed yet"),
        "{states:?}"
    );
    assert!(states[1].1.contains("answered 500"), "{states:?}");
    // Not before the last step: no confirmation is asked during the first.
    let earlier = r
        .clone()
        .with_status_for_test(status(Phase::Progressing, Some(0), 10));
    assert!(gate.reports(&earlier, at(1)).is_empty());

    server.answer("approve", 200);
    let end = std::time::Instant::now() + WITHIN;
    loop {
        let reports = gate.reports(&r, at(1));
        if reports[0].state == GateState::Pass {
            break;
        }
        assert!(std::time::Instant::now() < end, "{reports:#?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn notifications_go_out_once_per_change_and_failures_are_counted() {
    let server = HookServer::start().await;
    server.answer("down", 500);
    let r = rollout(&format!(
        "    - {{name: chat, type: notify, url: \"{}\"}}\n    - {{name: steps, type: step, url: \"{}\"}}\n    - {{name: down, type: notify, url: \"{}\", retries: 1}}\n",
        server.url("chat"),
        server.url("steps"),
        server.url("down"),
    ));
    let (gate, metrics) = gate();
    let before = r
        .clone()
        .with_status_for_test(status(Phase::Pending, None, 0));
    let plan = |s: RolloutStatus| TickPlan {
        status: s,
        routing: None,
        notices: Vec::new(),
        status_changed: true,
        outcome: None,
    };
    gate.applied(&before, &plan(status(Phase::Progressing, Some(0), 10)));
    let chat = server.wait_for("chat", 1, WITHIN).await;
    assert_eq!(
        chat[0].body,
        json!({"text": "fledge: shop/reviews started rolling out v2 (stable v1): the reason"})
    );
    let steps = server.wait_for("steps", 1, WITHIN).await;
    assert_eq!(steps[0].body["event"], "step");
    assert_eq!(steps[0].body["weights"]["canary"]["percent"], 10);
    assert_eq!(
        steps[0].idempotency_key.as_deref(),
        steps[0].body["idempotencyKey"].as_str()
    );
    // The same status again (a tick that changed nothing) sends nothing.
    let running = r
        .clone()
        .with_status_for_test(status(Phase::Progressing, Some(0), 10));
    gate.applied(&running, &plan(status(Phase::Progressing, Some(0), 10)));
    server.wait_for("down", 2, WITHIN).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(server.received("chat").len(), 1);
    assert_eq!(server.received("steps").len(), 1);
    // A step whose plan was not heard of (its routes failed after its status was written) is
    // still told at the next plan heard of.
    let moved_on = r
        .clone()
        .with_status_for_test(status(Phase::Progressing, Some(1), 50));
    gate.applied(&moved_on, &plan(status(Phase::Progressing, Some(1), 50)));
    let steps = server.wait_for("steps", 2, WITHIN).await;
    assert_eq!(steps[1].body["weights"]["canary"]["percent"], 50);
    server.wait_for("down", 2, WITHIN).await;
    let text = metrics.render();
    for needle in [
        "fledge_agent_webhook_calls_total{hook_type=\"notify\",result=\"error\"} 2",
        "fledge_agent_webhook_calls_total{hook_type=\"notify\",result=\"ok\"} 1",
        "fledge_agent_webhook_calls_total{hook_type=\"step\",result=\"ok\"} 2",
    ] {
        assert!(text.contains(needle), "{needle} in {text}");
    }
}

#[tokio::test]
async fn a_rollout_nobody_asks_about_any_more_is_forgotten_and_its_hook_no_longer_asked() {
    let server = HookServer::start().await;
    server.answer("approve", 409);
    let hooks = format!(
        "    - {{name: approve, type: confirmPromotion, url: \"{}\", interval: 50ms}}\n",
        server.url("approve")
    );
    let r = rollout(&hooks).with_status_for_test(status(Phase::Progressing, Some(1), 50));
    let (mut gate, _) = gate();
    gate.forget_after = Duration::from_millis(300);
    let plan = TickPlan {
        status: status(Phase::Progressing, Some(1), 50),
        routing: None,
        notices: Vec::new(),
        status_changed: true,
        outcome: None,
    };
    gate.applied(&r, &plan);
    // Asked about every tick: the hook is asked again and again, and the gate keeps both.
    for _ in 0..20 {
        assert_eq!(gate.reports(&r, at(1)).len(), 1);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let asked = server.received("approve").len();
    assert!(asked >= 3, "asked {asked} times in 400 ms");
    assert_eq!((gate.lock().len(), gate.seen().len()), (1, 1));
    // Deleted: nobody asks. Within the forget bound and one interval the task ends (the
    // margin is for a loaded machine).
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let after = server.received("approve").len();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(server.received("approve").len(), after, "still asked");
    assert!(gate.lock().is_empty());
    // What it kept of the rollout goes at the next plan of another.
    let mut other = r.clone();
    other.metadata.name = Some("ratings".into());
    gate.applied(&other, &plan);
    let seen: Vec<String> = gate.seen().keys().cloned().collect();
    assert_eq!(seen, ["shop/ratings"]);
}

trait WithStatus {
    fn with_status_for_test(self, status: RolloutStatus) -> Self;
}

impl WithStatus for Rollout {
    fn with_status_for_test(mut self, status: RolloutStatus) -> Self {
        self.status = Some(status);
        self
    }
}
