//! The Kubernetes store against a stand-in API server (`kube/apiserver.rs`: real HTTP, every call
//! checked; no real API server can run here). A whole canary is driven through the real
//! controller with synthetic telemetry, side by side with the local store, and must write the
//! same statuses and VirtualServices; a concurrent edit is not overwritten and is retried; a
//! Rollout that does not read is a problem while others proceed; the status survives a restart
//! and an agent killed between the status and the routes (`crash.rs`) moves no weight backward;
//! readiness waits for the Rollout cache; errors name the object and the missing permission;
//! and the ClusterRole in manifests/install/base/agent.yaml grants exactly what the store and the
//! workloads gate used. `workloads`: Deployments scaled with the weight, through both stores.
//! `plugin`: the `kubectl-fledge` binary against the same stand-in, beside the real agent;
//! `leader`: two agents, one Lease — killed and stopped leaders, one writer at a time;
//! `uninstall`: a deleted Rollout leaves no fledge route behind; `local_commands`: a command in a
//! Rollout file of the local store; `webhooks`: hooks that gate and tell a rollout, in both stores.
//! Rollout file of the local store; `metric_gate`: a CPU gate from a real Prometheus rolls a hot
//! canary back and lets a cool one through.

mod apiserver;
mod crash;
mod leader;
mod local_commands;
mod metric_gate;
mod plugin;
mod uninstall;
mod webhooks;
mod workloads;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use apiserver::{Access, ApiServer};
use fledge_agent::controller::Controller;
use fledge_agent::metrics::Metrics;
use fledge_agent::plane::ControlPlane;
use fledge_agent::store::{KubeStore, LocalStore, ObjectKey, RolloutStore, Scope};
use fledge_agent::telemetry::Hub;
use fledge_core::judge::Arms;
use fledge_core::rollout::UserCommand;
use fledge_core::rollout::{Phase, RolloutStatus};
use fledge_core::windows::{SeriesDelta, Traffic, Windows as Telemetry};
use fledge_proto::v1::Counts;
use jiff::Timestamp;
use serde::Deserialize;
use serde_json::{Value, json};

const T0: i64 = 1_800_000_000;

fn manifests() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../manifests")
}

fn yaml_docs(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    serde_norway::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

fn example(name: &str) -> Value {
    yaml_docs(&manifests().join("examples").join(name)).remove(0)
}

fn at(secs: i64) -> Timestamp {
    Timestamp::from_second(T0 + secs).unwrap()
}

/// A stand-in holding the canary example and its VirtualService.
async fn cluster() -> ApiServer {
    let server = ApiServer::start().await;
    server.apply_rollout(example("canary.yaml"));
    server.create_virtual_service(example("virtualservice.yaml"));
    server
}

async fn kube_store(server: &ApiServer) -> KubeStore {
    let store = KubeStore::connect(
        server.client(),
        Scope::AllNamespaces,
        Some("test-pod".into()),
    )
    .await
    .expect("the stand-in serves Rollouts");
    tokio::time::timeout(Duration::from_secs(10), store.synced())
        .await
        .expect("the Rollout cache syncs");
    store
}

fn controller<S: RolloutStore + 'static>(
    store: S,
    telemetry: &Arc<Mutex<Telemetry>>,
) -> Controller<S> {
    Controller::new(
        store,
        telemetry.clone(),
        Hub::new(),
        Arc::new(Metrics::new()),
    )
}

/// One second of healthy traffic on both arms: the same error rate and latency shape.
fn feed(telemetry: &Mutex<Telemetry>, second: i64) {
    let arms = Arms::new("reviews.shop.svc.cluster.local", "v1", "v2", Traffic::Live);
    let window = |requests: u64| SeriesDelta {
        counts: Counts {
            requests,
            failures: requests / 100,
            errors_5xx: requests / 100,
            ..Counts::default()
        },
        latency: vec![
            (8_000, requests * 5 / 10),
            (20_000, requests * 4 / 10),
            (60_000, requests - requests * 9 / 10),
        ],
    };
    telemetry.lock().unwrap().merge(
        T0 + second,
        vec![(arms.canary, window(100)), (arms.baseline, window(300))],
        0,
        T0 + second + 1,
    );
}

fn status_of(rollout: &Value) -> Option<RolloutStatus> {
    (!rollout["status"].is_null())
        .then(|| serde_json::from_value(rollout["status"].clone()).unwrap())
}

fn kube_status(server: &ApiServer) -> Option<RolloutStatus> {
    status_of(&server.rollout("shop", "reviews").unwrap())
}

/// Ticks every two simulated seconds from `from`, promoting once step 3 has held two minutes,
/// until `done` says so or `until` seconds; returns the last second ticked.
async fn drive(
    kube: &Controller<KubeStore>,
    server: &ApiServer,
    telemetry: &Mutex<Telemetry>,
    from: i64,
    until: i64,
    mut also: impl AsyncFnMut(i64),
) -> i64 {
    let mut promoted = false;
    for s in (from..until).step_by(2) {
        feed(telemetry, s - 2);
        feed(telemetry, s - 1);
        kube.tick(at(s)).await;
        also(s).await;
        let Some(status) = kube_status(server) else {
            continue;
        };
        if status.phase.is_final() {
            return s;
        }
        let held = status
            .step_started_at
            .is_some_and(|t| at(s).as_second() - t.as_second() >= 120);
        if status.current_step == Some(2) && held && !promoted {
            kube.command("shop", "reviews", UserCommand::Promote)
                .unwrap();
            promoted = true;
        }
    }
    until
}

fn without_server_fields(mut vs: Value) -> Value {
    let meta = vs["metadata"].as_object_mut().unwrap();
    for field in [
        "uid",
        "resourceVersion",
        "generation",
        "creationTimestamp",
        "managedFields",
    ] {
        meta.remove(field);
    }
    vs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_runs_to_success_through_the_api_server_as_through_the_local_store() {
    let server = cluster().await;
    let dir = fledge_testkit::examples::folder(&["canary.yaml", "virtualservice.yaml"]);
    let telemetry = Arc::new(Mutex::new(Telemetry::new(3600, 64)));
    let kube = controller(kube_store(&server).await, &telemetry);
    let local = controller(LocalStore::new(dir.path()), &telemetry);
    let reader = LocalStore::new(dir.path());
    let key = ObjectKey::new("shop", "reviews");
    let mut weights = Vec::new();
    let mut promoted = false;
    let end = drive(&kube, &server, &telemetry, 2, 1200, async |s| {
        local.tick(at(s)).await;
        let local_rollout = reader.read_rollouts().unwrap().rollouts.remove(0);
        // The person promotes both at the same moment `drive` promotes the Kubernetes one.
        if let Some(st) = &local_rollout.status
            && st.current_step == Some(2)
            && st
                .step_started_at
                .is_some_and(|t| at(s).as_second() - t.as_second() >= 120)
            && !promoted
        {
            local
                .command("shop", "reviews", UserCommand::Promote)
                .unwrap();
            promoted = true;
        }
        assert_eq!(kube_status(&server), local_rollout.status, "status at {s}s");
        let kube_vs = without_server_fields(server.virtual_service("shop", "reviews").unwrap());
        assert_eq!(
            kube_vs,
            reader.read_virtual_service(&key).unwrap(),
            "VirtualService at {s}s"
        );
        let w = local_rollout
            .status
            .map(|st| st.canary_weight)
            .unwrap_or_default();
        if weights.last() != Some(&w) {
            weights.push(w);
        }
    })
    .await;
    let status = kube_status(&server).unwrap();
    assert_eq!(status.phase, Phase::Succeeded, "{status:#?} after {end}s");
    assert_eq!(weights, [10, 25, 50, 100], "weights as the rollout moved");

    // The VirtualService is the user's own again, on the new stable.
    let mut expected = example("virtualservice.yaml");
    expected["spec"]["http"][0]["route"][0]["destination"]["subset"] = json!("v2");
    let vs = server.virtual_service("shop", "reviews").unwrap();
    assert_eq!(vs["spec"], expected["spec"]);
    assert_eq!(
        vs["metadata"]["generation"], 6,
        "one spec change per routing change"
    );
    // The spec was never written; its generation is the API server's own.
    let rollout = server.rollout("shop", "reviews").unwrap();
    assert_eq!(rollout["spec"], example("canary.yaml")["spec"]);
    assert_eq!(rollout["metadata"]["generation"], 1);
    assert_eq!(status.observed_generation, Some(1));

    // Every decision became an Event on the Rollout, as the local store logged it.
    let events = server.events();
    let logged: Vec<Value> =
        std::fs::read_to_string(dir.path().join("status/shop_reviews.events.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
    let reasons = |events: &[Value]| -> BTreeSet<String> {
        events
            .iter()
            .map(|e| e["reason"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(reasons(&events), reasons(&logged));
    for reason in ["Started", "StepAdvanced", "Promoted"] {
        assert!(reasons(&events).contains(reason), "{reason} in {events:#?}");
    }
    let advanced = events
        .iter()
        .find(|e| e["reason"] == "StepAdvanced")
        .unwrap();
    assert_eq!(
        advanced["series"]["count"], 2,
        "a repeated decision is counted: {advanced:#}"
    );
    assert_eq!(advanced["regarding"]["uid"], rollout["metadata"]["uid"]);
    assert_eq!(advanced["reportingInstance"], "test-pod");
    assert!(server.violations().is_empty(), "{:#?}", server.violations());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_concurrent_edit_is_not_overwritten_and_is_retried() {
    let server = cluster().await;
    let telemetry = Arc::new(Mutex::new(Telemetry::new(3600, 64)));
    let store = kube_store(&server).await;

    // The store alone: a replace at a stale resourceVersion is refused and says why.
    let key = ObjectKey::new("shop", "reviews");
    let read = store.virtual_service(&key).await.unwrap();
    let mut edited = read.clone();
    edited["spec"]["http"][0]["timeout"] = json!("5s");
    store.write_virtual_service(&edited).await.unwrap();
    let err = store
        .write_virtual_service(&read)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("cannot replace VirtualService shop/reviews: it was changed by someone else since it was read (409 Conflict), so it was not overwritten"),
        "{err}"
    );
    let mut stale = read.clone();
    stale["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("resourceVersion");
    let err = store
        .write_virtual_service(&stale)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("metadata.resourceVersion"), "{err}");

    // Through the loop: a person edits the VirtualService between the agent's read and write.
    server.edit_after_next_read("shop", "reviews", |vs| {
        vs["spec"]["http"][0]["retries"]["attempts"] = json!(5);
    });
    let kube = controller(store, &telemetry);
    kube.tick(at(0)).await;
    let vs = server.virtual_service("shop", "reviews").unwrap();
    assert_eq!(
        vs["spec"]["http"][0]["retries"]["attempts"], 5,
        "the person's edit stands"
    );
    assert_eq!(
        vs["spec"]["http"].as_array().unwrap().len(),
        1,
        "no fledge routes yet: {vs:#}"
    );
    let status = kube_status(&server).expect("the status, the intent, is written first");
    assert_eq!(
        status.canary_weight, 10,
        "the routes follow the status when their write succeeds"
    );

    // The next attempt, after the backoff, reads the edited object and writes on top of it.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    kube.tick(at(2)).await;
    let vs = server.virtual_service("shop", "reviews").unwrap();
    let routes = vs["spec"]["http"].as_array().unwrap();
    assert_eq!(routes.last().unwrap()["retries"]["attempts"], 5, "{vs:#}");
    assert!(
        routes.iter().any(|r| r["name"] == "fledge-reviews-split"),
        "{vs:#}"
    );
    assert_eq!(kube_status(&server).unwrap().canary_weight, 10);
    let puts = server
        .calls()
        .iter()
        .filter(|c| c.starts_with("PUT "))
        .count();
    assert_eq!(
        puts,
        4,
        "two by hand, one refused, one retried: {:#?}",
        server.calls()
    );
    assert!(server.violations().is_empty(), "{:#?}", server.violations());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_that_does_not_read_is_a_problem_while_others_proceed() {
    let server = cluster().await;
    let mut typo = example("canary.yaml");
    typo["metadata"]["name"] = json!("typo");
    typo["spec"]["strategy"]["canary"]["steps"][0]["pause"]["duration"] = json!("a while");
    server.apply_rollout(typo);
    let store = kube_store(&server).await;
    let listing = store.rollouts().await.unwrap();
    let keys: Vec<String> = listing.rollouts.iter().map(|r| r.key()).collect();
    assert_eq!(keys, ["shop/reviews"]);
    let problems: Vec<String> = listing.problems.iter().map(ToString::to_string).collect();
    assert_eq!(problems.len(), 1, "{problems:#?}");
    assert!(
        problems[0].starts_with("Rollout shop/typo in /apis/fledge.dev/v1alpha1/namespaces/shop/rollouts/typo: spec.strategy.canary.steps[0].pause.duration: "),
        "{problems:#?}"
    );
    assert_eq!(listing.rollouts[0].metadata.generation, Some(1));

    let telemetry = Arc::new(Mutex::new(Telemetry::new(3600, 64)));
    let kube = controller(store, &telemetry);
    kube.tick(at(0)).await;
    assert_eq!(kube_status(&server).unwrap().phase, Phase::Progressing);
    assert!(
        server.rollout("shop", "typo").unwrap()["status"].is_null(),
        "left alone"
    );
    assert_eq!(
        kube.problems(),
        problems,
        "the API shows what cannot be read"
    );
    assert!(server.violations().is_empty(), "{:#?}", server.violations());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_virtual_service_is_named_in_the_status_until_routes_are_written() {
    let server = ApiServer::start().await;
    server.apply_rollout(example("canary.yaml"));
    let telemetry = Arc::new(Mutex::new(Telemetry::new(3600, 64)));
    let kube = controller(kube_store(&server).await, &telemetry);
    kube.tick(at(0)).await;
    let status = kube_status(&server).expect("the status says what is wrong");
    assert_eq!(
        (status.phase, status.canary_weight),
        (Phase::Progressing, 10)
    );
    let error = status.routing_error.expect("the routes are not in place");
    assert!(
        error.contains("VirtualService shop/reviews") && error.contains("not found"),
        "{error}"
    );

    // Once the VirtualService exists, the next attempt (after the backoff) routes and clears it.
    server.create_virtual_service(example("virtualservice.yaml"));
    tokio::time::sleep(Duration::from_millis(5100)).await;
    kube.tick(at(2)).await;
    let status = kube_status(&server).unwrap();
    assert_eq!(status.routing_error, None, "{status:#?}");
    let vs = server.virtual_service("shop", "reviews").unwrap();
    assert!(
        vs["spec"]["http"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["name"] == "fledge-reviews-split"),
        "{vs:#}"
    );
    assert!(server.violations().is_empty(), "{:#?}", server.violations());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_survives_an_agent_restart_and_spec_edits_bump_the_generation() {
    let server = cluster().await;
    let telemetry = Arc::new(Mutex::new(Telemetry::new(3600, 64)));
    let first = controller(kube_store(&server).await, &telemetry);
    drive(&first, &server, &telemetry, 2, 64, async |_| {}).await;
    let before = kube_status(&server).unwrap();
    assert_eq!(
        (before.current_step, before.canary_weight),
        (Some(1), 25),
        "{before:#?}"
    );
    drop(first);

    // A new agent: a new store and loop over the same API server.
    let store = kube_store(&server).await;
    let listing = store.rollouts().await.unwrap();
    assert_eq!(listing.rollouts[0].status.as_ref(), Some(&before));
    let calls = server.calls().len();
    let again = controller(store, &telemetry);
    again.tick(at(64)).await;
    let after = kube_status(&server).unwrap();
    assert_eq!((after.current_step, after.canary_weight), (Some(1), 25));
    assert_eq!(
        after.history.first(),
        before.history.first(),
        "the same rollout, resumed"
    );
    let writes: Vec<String> = server.calls()[calls..]
        .iter()
        .filter(|c| c.starts_with("PUT "))
        .cloned()
        .collect();
    assert!(
        writes.is_empty(),
        "the routes in force were already right: {writes:?}"
    );

    // A person edits the spec: the API server bumps the generation, the status stays.
    let mut edited = example("canary.yaml");
    edited["spec"]["strategy"]["canary"]["steps"][2]["weight"] = json!(60);
    server.apply_rollout(edited);
    let rollout = server.rollout("shop", "reviews").unwrap();
    assert_eq!(rollout["metadata"]["generation"], 2);
    assert!(status_of(&rollout).is_some());
    assert!(server.violations().is_empty(), "{:#?}", server.violations());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_name_the_object_and_the_missing_permission() {
    let server = cluster().await;
    let store = kube_store(&server).await;
    let missing = store
        .virtual_service(&ObjectKey::new("shop", "ratings"))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        missing.starts_with("VirtualService shop/ratings not found in the cluster"),
        "{missing}"
    );
    server.forbid(Access::new(
        "update",
        "networking.istio.io",
        "virtualservices",
    ));
    let vs = store
        .virtual_service(&ObjectKey::new("shop", "reviews"))
        .await
        .unwrap();
    let forbidden = store
        .write_virtual_service(&vs)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        forbidden.starts_with("cannot replace VirtualService shop/reviews: forbidden: the agent's ServiceAccount needs RBAC verb `update` on `virtualservices.networking.istio.io`"),
        "{forbidden}"
    );

    let empty = ApiServer::start().await;
    empty.uninstall_crd();
    let err = KubeStore::connect(empty.client(), Scope::Namespace("shop".into()), None)
        .await
        .err()
        .expect("no CRD, no store")
        .to_string();
    assert!(
        err.starts_with("cannot list Rollouts in namespace shop: the Rollout CustomResourceDefinition (rollouts.fledge.dev, version v1alpha1) is not installed: kubectl apply -f manifests/install/base/crd.yaml"),
        "{err}"
    );
    assert!(server.violations().is_empty(), "{:#?}", server.violations());
}

/// The (verb, group, resource) triples a ClusterRole grants.
fn granted(role: &Value) -> BTreeSet<Access> {
    let mut out = BTreeSet::new();
    let list = |v: &Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_owned())
            .collect()
    };
    for rule in role["rules"].as_array().unwrap() {
        for group in list(&rule["apiGroups"]) {
            for resource in list(&rule["resources"]) {
                for verb in list(&rule["verbs"]) {
                    out.insert(Access::new(&verb, &group, &resource));
                }
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_role_grants_exactly_what_the_store_uses() {
    let role = yaml_docs(&manifests().join("install/base/agent.yaml"))
        .into_iter()
        .find(|d| d["kind"] == "ClusterRole")
        .expect("a ClusterRole in manifests/install/base/agent.yaml");
    let granted = granted(&role);

    let server = cluster().await;
    let telemetry = Arc::new(Mutex::new(Telemetry::new(3600, 64)));
    let kube = controller(kube_store(&server).await, &telemetry);
    drive(&kube, &server, &telemetry, 2, 1200, async |_| {}).await;
    assert_eq!(kube_status(&server).unwrap().phase, Phase::Succeeded);
    let mut used = server.accesses();

    // A Rollout naming its workloads: read, then the canary scaled up before any traffic.
    let rolling = workloads::rolling_cluster().await;
    let kube =
        controller(kube_store(&rolling).await, &telemetry).with_gates(workloads::gates(&rolling));
    for s in (2..40).step_by(2) {
        kube.tick(at(s)).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        if rolling.deployment("shop", "reviews-v2").unwrap()["spec"]["replicas"] == 1 {
            break;
        }
    }
    assert_eq!(
        rolling.deployment("shop", "reviews-v2").unwrap()["spec"]["replicas"],
        1
    );
    assert!(
        rolling.violations().is_empty(),
        "{:#?}",
        rolling.violations()
    );
    used.extend(rolling.accesses());

    let missing: Vec<_> = used.difference(&granted).collect();
    assert!(missing.is_empty(), "used but not granted: {missing:#?}");
    let unused: Vec<_> = granted.difference(&used).collect();
    assert!(unused.is_empty(), "granted but never used: {unused:#?}");
    assert!(server.violations().is_empty(), "{:#?}", server.violations());
}

/// The status line of `GET path` on the agent's HTTP address.
async fn http_status(addr: std::net::SocketAddr, path: &str) -> u16 {
    let request = format!("GET {path} HTTP/1.1\r\nHost: agent\r\nConnection: close\r\n\r\n");
    http_exchange(addr, &request).await.0
}

/// Sends `request` as is; the status and the whole answer.
async fn http_exchange(addr: std::net::SocketAddr, request: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    (answer.split(' ').nth(1).unwrap().parse().unwrap(), answer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_is_ready_only_once_the_rollout_cache_has_synced() {
    let server = cluster().await;
    server.open_lists(false);
    let options = fledge_agent::cluster::Options {
        scope: Scope::AllNamespaces,
        grpc: "127.0.0.1:0".parse().unwrap(),
        http: "127.0.0.1:0".parse().unwrap(),
        tick: Duration::from_millis(100),
        instance: None,
        require_peer_identity: false,
        max_stream_requests_per_second: fledge_agent::telemetry::DEFAULT_MAX_REQUESTS_PER_SECOND,
        http_commands: false,
        prometheus: None,
        http_reads: false,
        election: None,
    };
    let agent = fledge_agent::cluster::start_with(server.client(), options)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(http_status(agent.http_addr, "/healthz").await, 200);
    assert_eq!(
        http_status(agent.http_addr, "/readyz").await,
        503,
        "not synced yet"
    );

    server.open_lists(true);
    let ready = tokio::time::timeout(Duration::from_secs(10), async {
        while http_status(agent.http_addr, "/readyz").await != 200 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(ready.is_ok(), "never ready after the list");
    assert_eq!(
        http_status(agent.http_addr, "/api/v1/rollouts/shop/reviews").await,
        200
    );
    // In a cluster commands go on the Rollout, under RBAC: none over HTTP.
    let promote = "POST /api/v1/rollouts/shop/reviews/promote HTTP/1.1\r\nHost: agent\r\n\
                   Content-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}";
    let (status, answer) = http_exchange(agent.http_addr, promote).await;
    assert_eq!(status, 403, "{answer}");
    assert!(
        answer.contains("this agent takes no commands over HTTP"),
        "{answer}"
    );
    agent.stop();
    assert!(server.violations().is_empty(), "{:#?}", server.violations());
}

#[test]
fn the_kube_subcommand_says_when_no_cluster_is_configured() {
    let home = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_fledge-agent"))
        .args(["kube", "--grpc", "127.0.0.1:0", "--http", "127.0.0.1:0"])
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("KUBERNETES_SERVICE_PORT")
        .env("KUBECONFIG", home.path().join("no-such-kubeconfig"))
        .env("HOME", home.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("fledge-agent: no Kubernetes configuration found: "),
        "{stderr}"
    );
}
