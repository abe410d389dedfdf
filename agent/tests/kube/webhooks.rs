//! Webhooks through the real controller, in both stores (a folder of YAML files, and the
//! stand-in API server, which checks every call): a failing pre-rollout hook holds the canary at
//! 0 % until it answers 2xx, or aborts when told to; a confirmation hook holds the promotion,
//! past the progress deadline, until it answers 200; one that holds past the deadline rolls back;
//! the chat hook gets its Slack-style message on start, promotion, abort and rollback; the step
//! and rollback hooks get fledge's JSON.
//!
//! Time: the controller ticks in simulated seconds, the hooks answer in real time on their own
//! tasks, so the test waits for a hook's answer before the tick that should see it.

use fledge_agent::gates::Gates;
use fledge_agent::outbound::Outbound;
use fledge_agent::webhooks::Webhooks;
use fledge_core::rollout::GateState;
use fledge_testkit::hooks::HookServer;

use super::*;

const WITHIN: Duration = Duration::from_secs(10);

/// The webhooks example's shape with its hooks on `server` and short pauses: a preparation,
/// 10 % and 50 %, each step held 10 s.
fn rollout(server: &HookServer, pre_on_failure: &str) -> Value {
    let mut r = example("webhooks.yaml");
    r["spec"]["strategy"]["canary"]["steps"] = json!([
        {"weight": 10, "pause": {"duration": "10s"}},
        {"weight": 50, "pause": {"duration": "10s"}},
    ]);
    r["spec"]["analysis"] = example("canary.yaml")["spec"]["analysis"].clone();
    r["spec"]["analysis"]["progressDeadline"] = json!("60s");
    r["spec"]["webhooks"] = json!([
        {"name": "load-test", "type": "preRollout", "url": server.url("pre"),
         "retries": 0, "interval": "100ms", "onFailure": pre_on_failure},
        {"name": "release-approval", "type": "confirmPromotion", "url": server.url("approve"),
         "interval": "100ms"},
        {"name": "pipeline", "type": "step", "url": server.url("steps")},
        {"name": "chat", "type": "notify", "url": server.url("chat")},
        {"name": "undo", "type": "rollback", "url": server.url("undo")},
    ]);
    r
}

fn with_webhooks<S: RolloutStore + 'static>(
    store: S,
    telemetry: &Arc<Mutex<Telemetry>>,
) -> Controller<S> {
    let hooks = Webhooks::new(Outbound::new().unwrap(), Arc::new(Metrics::new()));
    controller(store, telemetry).with_gates(Gates::new(vec![Arc::new(hooks)]))
}

/// One store under test: its controller and how to read the status it persisted.
struct Run<'a, S> {
    agent: Controller<S>,
    telemetry: &'a Mutex<Telemetry>,
    status: Box<dyn Fn() -> Option<RolloutStatus> + 'a>,
    second: i64,
}

impl<S: RolloutStore + 'static> Run<'_, S> {
    /// One simulated tick two seconds on, with healthy traffic on both arms, and a moment of
    /// real time for the hooks' tasks.
    async fn tick(&mut self) -> RolloutStatus {
        self.second += 2;
        feed(self.telemetry, self.second - 2);
        feed(self.telemetry, self.second - 1);
        self.agent.tick(at(self.second)).await;
        tokio::time::sleep(Duration::from_millis(5)).await;
        (self.status)().expect("a status")
    }

    /// Ticks until `done` says so, at most `ticks` times.
    async fn until(
        &mut self,
        ticks: usize,
        done: impl Fn(&RolloutStatus) -> bool,
    ) -> RolloutStatus {
        let mut last = None;
        for _ in 0..ticks {
            let status = self.tick().await;
            if done(&status) {
                return status;
            }
            last = Some(status);
        }
        panic!("not reached within {ticks} ticks: {last:#?}");
    }
}

fn gate<'a>(status: &'a RolloutStatus, name: &str) -> &'a GateState {
    &status
        .gates
        .iter()
        .find(|g| g.name == name)
        .unwrap_or_else(|| panic!("no {name} in {:#?}", status.gates))
        .state
}

/// A pre-rollout hook that fails holds; a confirmation holds the promotion past the progress
/// deadline; both open when their hooks say yes; the chat and the pipeline hear it all.
async fn gated_promotion<S: RolloutStore + 'static>(run: &mut Run<'_, S>, server: &HookServer) {
    server.answer("pre", 503);
    server.answer("approve", 403);
    let status = run.tick().await;
    assert_eq!(
        (status.phase, status.current_step, status.canary_weight),
        (Phase::Progressing, Some(0), 0)
    );
    server.wait_for("pre", 2, WITHIN).await;
    for _ in 0..5 {
        let status = run.tick().await;
        assert_eq!(
            status.canary_weight, 0,
            "no request before the hook said yes"
        );
        assert!(matches!(gate(&status, "load-test"), GateState::Hold(_)));
    }
    let status = (run.status)().unwrap();
    assert!(
        status.reason.contains("load-test: ") && status.reason.contains("answered 503"),
        "{}",
        status.reason
    );
    let started = server.wait_for("chat", 1, WITHIN).await;
    assert_eq!(
        started[0].body["text"],
        "fledge: shop/reviews started rolling out v2 (stable v1): step 1/3: preparing: no request to the canary until its checks pass"
    );

    server.answer("pre", 200);
    let n = server.received("pre").len();
    server.wait_for("pre", n + 1, WITHIN).await;
    let status = run.until(5, |s| s.current_step == Some(1)).await;
    assert_eq!(status.canary_weight, 10);
    let steps = server.wait_for("steps", 1, WITHIN).await;
    assert_eq!(steps[0].body["event"], "step");
    assert_eq!(steps[0].body["weights"]["canary"]["percent"], 10);
    assert_eq!(steps[0].body["step"]["index"], 1);

    // The last step: its pause ends, the analysis passes, and it waits for the approval —
    // 120 s, beyond the 60 s progress deadline, which a confirmation does not have.
    let status = run.until(300, |s| s.current_step == Some(2)).await;
    assert_eq!(status.canary_weight, 50);
    let mut status = status;
    for _ in 0..60 {
        status = run.tick().await;
    }
    assert_eq!(
        (status.phase, status.canary_weight),
        (Phase::Progressing, 50)
    );
    assert!(
        matches!(gate(&status, "release-approval"), GateState::Wait(w) if w.contains("answered 403: not confirmed yet")),
        "{:#?}",
        status.gates
    );
    assert!(
        status.reason.contains("waiting for") && status.reason.contains("release-approval"),
        "{}",
        status.reason
    );
    assert_eq!(server.wait_for("steps", 2, WITHIN).await.len(), 2);

    server.answer("approve", 200);
    let n = server.received("approve").len();
    server.wait_for("approve", n + 1, WITHIN).await;
    let status = run.until(5, |s| s.phase == Phase::Succeeded).await;
    assert_eq!(status.canary_weight, 100);
    let chat = server.wait_for("chat", 2, WITHIN).await;
    assert_eq!(
        chat[1].body["text"],
        "fledge: shop/reviews promoted v2: v2 is the new stable: every request goes to it"
    );
    let approvals = server.received("approve");
    let key = approvals[0].idempotency_key.clone().unwrap();
    assert!(
        approvals
            .iter()
            .all(|a| a.idempotency_key.as_ref() == Some(&key)),
        "one call, asked again with one key"
    );
}

/// A pre-rollout hook that keeps failing with `onFailure: abort` aborts: no request ever went
/// to the canary, and the chat hears it.
async fn aborted<S: RolloutStore + 'static>(run: &mut Run<'_, S>, server: &HookServer) {
    server.answer("pre", 404);
    let status = run.until(50, |s| s.phase.is_final()).await;
    assert_eq!(status.phase, Phase::Aborted, "{}", status.reason);
    assert!(
        status
            .reason
            .contains("Webhook check load-test aborted at step 1/3")
            && status.reason.contains("answered 404"),
        "{}",
        status.reason
    );
    assert!(status.history.iter().all(|d| d.canary_weight == 0));
    let chat = server.wait_for("chat", 2, WITHIN).await;
    let text = chat[1].body["text"].as_str().unwrap();
    assert!(
        text.starts_with("fledge: shop/reviews aborted v2, back on v1: Webhook check load-test"),
        "{text}"
    );
    assert!(server.received("steps").is_empty(), "no step began");
}

/// A pre-rollout hook that holds past the progress deadline rolls back, and the rollback hook
/// and the chat hear it.
async fn rolled_back<S: RolloutStore + 'static>(run: &mut Run<'_, S>, server: &HookServer) {
    server.answer("pre", 503);
    let status = run.until(50, |s| s.phase.is_final()).await;
    assert_eq!(status.phase, Phase::RolledBack, "{}", status.reason);
    assert!(
        status
            .reason
            .contains("beyond the progress deadline of 60s: load-test: "),
        "{}",
        status.reason
    );
    let undo = server.wait_for("undo", 1, WITHIN).await;
    assert_eq!(undo[0].body["event"], "rolledBack");
    assert_eq!(undo[0].body["phase"], "RolledBack");
    assert_eq!(undo[0].body["weights"]["canary"]["percent"], 0);
    assert_eq!(
        undo[0].body["evidence"]["gates"][0]["name"], "load-test",
        "the evidence names the check: {}",
        undo[0].body
    );
    let chat = server.wait_for("chat", 2, WITHIN).await;
    let text = chat[1].body["text"].as_str().unwrap();
    assert!(
        text.starts_with("fledge: shop/reviews rolled back v2 to v1: step 1/3 held"),
        "{text}"
    );
}

fn folder(rollout: &Value) -> tempfile::TempDir {
    let dir = fledge_testkit::examples::folder(&["virtualservice.yaml"]);
    let text = serde_norway::to_string(rollout).unwrap();
    std::fs::write(dir.path().join("rollout.yaml"), text).unwrap();
    dir
}

fn local_status(dir: &Path) -> Option<RolloutStatus> {
    LocalStore::new(dir)
        .read_rollouts()
        .unwrap()
        .rollouts
        .remove(0)
        .status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_gate_and_tell_a_rollout_through_the_local_store() {
    for (on_failure, scenario) in [("hold", 0), ("abort", 1), ("hold", 2)] {
        let server = HookServer::start().await;
        let dir = folder(&rollout(&server, on_failure));
        let telemetry = Arc::new(Mutex::new(Telemetry::new(3600, 64)));
        let path = dir.path().to_owned();
        let mut run = Run {
            agent: with_webhooks(LocalStore::new(dir.path()), &telemetry),
            telemetry: &telemetry,
            status: Box::new(move || local_status(&path)),
            second: 0,
        };
        match scenario {
            0 => gated_promotion(&mut run, &server).await,
            1 => aborted(&mut run, &server).await,
            _ => rolled_back(&mut run, &server).await,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_gate_and_tell_a_rollout_through_the_api_server() {
    for (on_failure, scenario) in [("hold", 0), ("abort", 1), ("hold", 2)] {
        let hooks = HookServer::start().await;
        let server = ApiServer::start().await;
        server.apply_rollout(rollout(&hooks, on_failure));
        server.create_virtual_service(example("virtualservice.yaml"));
        let telemetry = Arc::new(Mutex::new(Telemetry::new(3600, 64)));
        let mut run = Run {
            agent: with_webhooks(kube_store(&server).await, &telemetry),
            telemetry: &telemetry,
            status: Box::new(|| kube_status(&server)),
            second: 0,
        };
        match scenario {
            0 => gated_promotion(&mut run, &hooks).await,
            1 => aborted(&mut run, &hooks).await,
            _ => rolled_back(&mut run, &hooks).await,
        }
        assert!(server.violations().is_empty(), "{:#?}", server.violations());
    }
}
