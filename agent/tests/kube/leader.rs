//! Two agents against one API server, one Lease: only the leader writes; killed mid-step at
//! seeded-random moments, the standby takes over within the lease duration and a tick, resumes
//! from the persisted status and moves nothing backward; stopped gracefully, it gives the Lease
//! back and the standby takes over at once. Telemetry comes from a filter stand-in over real
//! gRPC that behaves as the filter does: it reconnects (to either agent, as the Service would
//! send it) when a stream ends, keeps the deltas a send could not hand over, and a standby
//! refuses it with UNAVAILABLE.
//!
//! The agents run in this process, each with its own client and bearer token (two pods of one
//! ServiceAccount), so the stand-in can say who made every write. A kill is `Agent::stop`:
//! every task aborted where it stands, a write in flight included, nothing flushed.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use fledge_agent::cluster::{Election, Options};
use fledge_agent::serve::Agent;
use fledge_core::lease::Timing;
use fledge_proto::v1::{self, FilterMessage, Hello, Report, telemetry_client::TelemetryClient};
use fledge_testkit::messages::{HelloExt, SeriesExt};
use rand::{Rng, SeedableRng};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::apiserver::{AGENT, Write};
use super::crash::routed_weight;
use super::*;

const HOST: &str = "reviews.shop.svc.cluster.local";
const TICK: Duration = Duration::from_millis(250);

fn timing() -> Timing {
    Timing {
        lease_duration: Duration::from_secs(2),
        renew_deadline: Duration::from_millis(1500),
        retry_period: Duration::from_millis(250),
    }
}

/// A canary in `steps` steps, each held until the analysis passes; errors only, with a floor
/// a clean canary passes within seconds.
fn rollout(steps: u32) -> Value {
    let weights: Vec<Value> = (1..=steps)
        .map(|i| json!({ "weight": i * 90 / steps, "pause": { "untilAnalysisPasses": true } }))
        .collect();
    json!({
        "apiVersion": "fledge.dev/v1alpha1",
        "kind": "Rollout",
        "metadata": { "name": "reviews", "namespace": "shop" },
        "spec": {
            "host": HOST,
            "stable": "v1",
            "canary": "v2",
            "virtualService": { "name": "reviews" },
            "strategy": { "canary": { "steps": weights } },
            "analysis": {
                "interval": "1s",
                "minSamples": 20,
                "errors": { "tolerance": 0.25, "floor": 0.2, "passMargin": 0.5 },
                "latency": { "enabled": false },
            },
        },
    })
}

/// One agent replica: its own token, pod name and listeners.
struct Replica {
    name: String,
    agent: Agent,
}

async fn replica(server: &ApiServer, name: &str) -> Replica {
    server.add_user(name, AGENT);
    let options = Options {
        scope: Scope::AllNamespaces,
        grpc: "127.0.0.1:0".parse().unwrap(),
        http: "127.0.0.1:0".parse().unwrap(),
        tick: TICK,
        instance: Some(name.to_owned()),
        require_peer_identity: false,
        http_commands: false,
        http_reads: false,
        election: Some(Election {
            lease_name: "fledge-agent".into(),
            lease_namespace: None,
            timing: timing(),
        }),
    };
    let agent = fledge_agent::cluster::start_with(server.client_as(name), options)
        .await
        .unwrap();
    Replica {
        name: name.to_owned(),
        agent,
    }
}

fn holder(server: &ApiServer) -> Option<String> {
    server.lease("fledge-system", "fledge-agent")?["spec"]["holderIdentity"]
        .as_str()
        .map(str::to_owned)
}

/// Waits until `name` holds the Lease; returns how long that took.
async fn until_held_by(server: &ApiServer, name: &str, within: Duration) -> Duration {
    let started = Instant::now();
    while holder(server).as_deref() != Some(name) {
        assert!(
            started.elapsed() < within,
            "{name} did not take the Lease within {within:?}; held by {:?}",
            holder(server)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    started.elapsed()
}

/// What the filter stand-in did: reports handed to a stream, requests in them.
#[derive(Default)]
struct Sent {
    reports: AtomicU64,
    requests: AtomicU64,
    /// Streams a standby refused.
    refused: AtomicU64,
}

/// A filter: one stream at a time to one of `addrs` in turn, Hello first, then one report a
/// second with the requests of that second (canary 100, baseline 300, no errors) plus any a
/// failed send left over.
async fn filter(addrs: Arc<Mutex<Vec<SocketAddr>>>, sent: Arc<Sent>, stop: Arc<AtomicBool>) {
    let mut turn = 0usize;
    let mut pending = 0u64;
    let mut seq = 0u64;
    let mut last = fledge_testkit::messages::now_unix_ms();
    while !stop.load(Ordering::SeqCst) {
        let addr = {
            let addrs = addrs.lock().unwrap();
            turn += 1;
            addrs[turn % addrs.len()]
        };
        let Ok(channel) = tonic::transport::Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
        else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let (tx, rx) = mpsc::channel::<FilterMessage>(1);
        tx.send(Hello::test().role(v1::Role::Client).message())
            .await
            .unwrap();
        let replies = TelemetryClient::new(channel)
            .connect(ReceiverStream::new(rx))
            .await;
        let mut replies = match replies {
            Ok(r) => r.into_inner(),
            Err(status) => {
                assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
                assert!(status.message().contains("standby"), "{status:?}");
                sent.refused.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let mut every = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = every.tick() => {}
                reply = replies.message() => match reply {
                    Ok(Some(_)) => continue,
                    _ => break,
                },
            }
            if stop.load(Ordering::SeqCst) {
                return;
            }
            let now = fledge_testkit::messages::now_unix_ms();
            let series = |version: &str, requests: u64| {
                v1::Series::test()
                    .host(HOST)
                    .version(version)
                    .requests(requests)
            };
            // The canary's share of this second's 400 requests, plus what is left over.
            let fresh = 400;
            pending += fresh;
            let canary = pending / 4;
            seq += 1;
            let report = Report {
                seq,
                window_start_unix_ms: last,
                window_end_unix_ms: now,
                series: vec![series("v2", canary), series("v1", pending - canary)],
                dropped: 0,
            };
            last = now;
            let message = FilterMessage {
                msg: Some(v1::filter_message::Msg::Report(report)),
            };
            if tx.send(message).await.is_err() {
                // Not handed over: kept for the next report, as the filter keeps its deltas.
                break;
            }
            sent.reports.fetch_add(1, Ordering::SeqCst);
            sent.requests.fetch_add(pending, Ordering::SeqCst);
            pending = 0;
        }
    }
}

/// The status writes' (step, weight, phase) and the VirtualService writes' weight, in order.
fn history(writes: &[Write]) -> (Vec<(u32, u32, String)>, Vec<u32>) {
    let statuses = writes
        .iter()
        .filter(|w| w.what == "status shop/reviews")
        .map(|w| {
            let s = &w.body["status"];
            (
                s["currentStep"].as_u64().unwrap_or(0) as u32,
                s["canaryWeight"].as_u64().unwrap_or(0) as u32,
                s["phase"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    let routes = writes
        .iter()
        .filter(|w| w.what == "virtualservice shop/reviews")
        .map(|w| routed_weight(&w.body))
        .collect();
    (statuses, routes)
}

/// Weights only go up; steps only go up, one at a time (no decision skipped or undone).
fn assert_forward(statuses: &[(u32, u32, String)], routes: &[u32]) {
    for pair in statuses.windows(2) {
        let ((s0, w0, _), (s1, w1, _)) = (&pair[0], &pair[1]);
        assert!(
            w1 >= w0,
            "status weight went back: {pair:?} in {statuses:?}"
        );
        assert!(
            s1 >= s0 && s1 - s0 <= 1,
            "step jumped or went back: {pair:?} in {statuses:?}"
        );
    }
    for pair in routes.windows(2) {
        assert!(
            pair[1] >= pair[0],
            "routed weight went back: {pair:?} in {routes:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_leaders_are_replaced_within_the_lease_and_nothing_moves_backward() {
    let server = ApiServer::start().await;
    server.apply_rollout(rollout(12));
    server.create_virtual_service(example("virtualservice.yaml"));
    let timing = timing();
    let bound = timing.lease_duration + timing.retry_period + TICK;

    let mut replicas = vec![
        replica(&server, "agent-0").await,
        replica(&server, "agent-1").await,
    ];
    let addrs = Arc::new(Mutex::new(
        replicas
            .iter()
            .map(|r| r.agent.grpc_addr)
            .collect::<Vec<_>>(),
    ));
    let sent = Arc::new(Sent::default());
    let stop = Arc::new(AtomicBool::new(false));
    let feeding = tokio::spawn(filter(addrs.clone(), sent.clone(), stop.clone()));

    let first = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Some(h) = holder(&server) {
                return h;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("one agent takes the Lease");

    let mut rng = rand::rngs::StdRng::seed_from_u64(12);
    let mut leader = first;
    let mut takeovers = Vec::new();
    let mut received_by_dead = 0;
    for kill in 0..20 {
        // A seeded-random moment in the leader's term: mid-step, mid-write, or just after.
        tokio::time::sleep(Duration::from_millis(rng.random_range(200..3000))).await;
        let at = replicas.iter().position(|r| r.name == leader).unwrap();
        let dead = replicas.remove(at);
        // Only the leader answers readiness for leadership; the standby does not.
        assert_eq!(http_status(dead.agent.http_addr, "/leaderz").await, 200);
        assert_eq!(
            http_status(replicas[0].agent.http_addr, "/leaderz").await,
            503
        );
        received_by_dead += dead.agent.metrics.reports_received.get();
        let killed = Instant::now();
        dead.agent.stop();
        let survivor = replicas[0].name.clone();
        until_held_by(&server, &survivor, bound + Duration::from_secs(1)).await;
        let took = killed.elapsed();
        // The killed pod comes back as the new standby; the Service sends filters to both.
        let fresh = replica(&server, &format!("agent-{}", kill + 2)).await;
        replicas.push(fresh);
        *addrs.lock().unwrap() = replicas.iter().map(|r| r.agent.grpc_addr).collect();
        takeovers.push(took);
        assert!(
            took <= bound + Duration::from_millis(100),
            "kill {kill}: {survivor} took over after {took:?}, more than {bound:?}"
        );
        leader = survivor;
    }

    // Let the last leader finish the rollout.
    let finished = tokio::time::timeout(Duration::from_secs(90), async {
        loop {
            if kube_status(&server).is_some_and(|s| s.phase == Phase::Succeeded) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    feeding.abort();
    assert!(
        finished.is_ok(),
        "not finished: {:#?}",
        kube_status(&server)
    );

    let writes = server.writes();
    let (statuses, routes) = history(&writes);
    assert_forward(&statuses, &routes);
    let steps: BTreeSet<u32> = statuses.iter().map(|s| s.0).collect();
    assert_eq!(steps, (0..12).collect(), "every step decided and persisted");

    // Only leaders wrote: every write of Rollout objects came from whoever held the Lease then
    // — checked as no two agents' writes interleaving within one term, and more than one
    // agent having written over the run.
    assert!(writes.iter().all(|w| w.user == AGENT), "one ServiceAccount");
    let writers: Vec<&str> = writes
        .iter()
        .filter(|w| !w.what.starts_with("lease"))
        .map(|w| w.token.as_deref().unwrap())
        .collect();
    let mut terms: Vec<&str> = writers.clone();
    terms.dedup();
    let distinct: BTreeSet<&str> = terms.iter().copied().collect();
    assert_eq!(
        terms.len(),
        distinct.len(),
        "an agent wrote again after another had: two leaders at once? {terms:?}"
    );
    assert!(
        distinct.len() >= 3,
        "the rollout was moved by one agent only: {terms:?}"
    );
    // Every VirtualService replace was at the resourceVersion read (a stale one gets 409).
    assert_eq!(
        server.conflicts().0,
        0,
        "a VirtualService write at a stale resourceVersion"
    );
    assert!(server.violations().is_empty(), "{:#?}", server.violations());

    // Telemetry: no report counted twice; a killed agent loses at most what was on its
    // way to it when it died (one report per kill at most).
    let received = received_by_dead
        + replicas
            .iter()
            .map(|r| r.agent.metrics.reports_received.get())
            .sum::<u64>();
    let handed = sent.reports.load(Ordering::SeqCst);
    assert!(
        received <= handed,
        "received {received} of {handed} reports sent"
    );
    assert!(
        handed - received <= 20,
        "lost {} reports over 20 kills",
        handed - received
    );
    assert!(
        sent.refused.load(Ordering::SeqCst) > 0,
        "standbys refused streams"
    );
    let slowest = takeovers.iter().max().unwrap();
    println!(
        "20 kills: takeover slowest {slowest:?} (bound {bound:?}); {} status writes, {} VirtualService writes; reports sent {handed}, received {received}",
        statuses.len(),
        routes.len()
    );
    for r in replicas {
        r.agent.stop();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_shut_down_gives_the_lease_back_and_the_standby_takes_over_at_once() {
    let server = ApiServer::start().await;
    server.apply_rollout(rollout(4));
    server.create_virtual_service(example("virtualservice.yaml"));
    let a = replica(&server, "agent-a").await;
    until_held_by(&server, "agent-a", Duration::from_secs(5)).await;
    let b = replica(&server, "agent-b").await;
    let addrs = Arc::new(Mutex::new(vec![a.agent.grpc_addr, b.agent.grpc_addr]));
    let sent = Arc::new(Sent::default());
    let stop = Arc::new(AtomicBool::new(false));
    let feeding = tokio::spawn(filter(addrs.clone(), sent.clone(), stop.clone()));

    // The leader moves the rollout; the standby writes nothing and takes no stream.
    tokio::time::timeout(Duration::from_secs(30), async {
        while kube_status(&server).is_none_or(|s| s.current_step != Some(1)) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the leader advances a step");
    assert_eq!(http_status(a.agent.http_addr, "/leaderz").await, 200);
    assert_eq!(http_status(b.agent.http_addr, "/leaderz").await, 503);
    // Both are ready (the standby could take over), so a rolling update of the agents proceeds.
    assert_eq!(
        http_status(b.agent.http_addr, "/readyz").await,
        200,
        "a standby is ready"
    );
    assert!(
        server
            .writes()
            .iter()
            .all(|w| w.token.as_deref() == Some("agent-a")),
        "only the leader wrote"
    );

    let a_metrics = a.agent.metrics.clone();
    let stopped = Instant::now();
    a.agent.shut_down().await;
    let took = until_held_by(&server, "agent-b", Duration::from_secs(5)).await + stopped.elapsed();
    assert!(
        took < timing().lease_duration,
        "the standby took over after {took:?}: the Lease was not given back"
    );
    let lease = server.lease("fledge-system", "fledge-agent").unwrap();
    assert_eq!(lease["spec"]["leaseTransitions"], 1, "{lease:#}");

    // The new leader finishes what the old one started.
    tokio::time::timeout(Duration::from_secs(60), async {
        while !kube_status(&server).is_some_and(|s| s.phase == Phase::Succeeded) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the new leader finishes the rollout");
    stop.store(true, Ordering::SeqCst);
    // Let the report of this second arrive before counting.
    tokio::time::sleep(Duration::from_millis(300)).await;
    feeding.abort();

    let (statuses, routes) = history(&server.writes());
    assert_forward(&statuses, &routes);
    // Each leader's first tick read the Rollouts from the API server (a list, a quorum read),
    // not only from its watch cache, which may lag behind the last status written: two lists
    // beyond the two that start the agents' watches.
    let lists = server
        .calls()
        .iter()
        .filter(|c| *c == "GET /apis/fledge.dev/v1alpha1/rollouts?&limit=500")
        .count();
    assert_eq!(lists, 2 + 2, "{:#?}", server.calls());
    // Graceful: every report handed to a stream was counted once, by one agent or the other.
    let received = a_metrics.reports_received.get() + b.agent.metrics.reports_received.get();
    assert_eq!(
        received,
        sent.reports.load(Ordering::SeqCst),
        "reports counted across a graceful handover"
    );
    assert!(server.violations().is_empty(), "{:#?}", server.violations());
    b.agent.stop();

    // The Role in the install grants exactly the Lease calls made (create, get, update), in the
    // namespace they were made in; the rest of what the agents did is the ClusterRole's.
    let docs = yaml_docs(&manifests().join("install/base/agent.yaml"));
    let role = docs.iter().find(|d| d["kind"] == "Role").unwrap();
    assert_eq!(role["metadata"]["namespace"], "fledge-system");
    let cluster_role = docs.iter().find(|d| d["kind"] == "ClusterRole").unwrap();
    let used = server.accesses();
    let (leases, rest): (BTreeSet<Access>, BTreeSet<Access>) = used
        .into_iter()
        .partition(|a| a.group == "coordination.k8s.io");
    assert_eq!(leases, granted(role), "the Lease calls and the Role");
    let cluster_granted = granted(cluster_role);
    let missing: Vec<_> = rest.difference(&cluster_granted).collect();
    assert!(missing.is_empty(), "used but not granted: {missing:#?}");
}

/// The real `fledge-agent kube` binary as leader, stopped with SIGTERM: it gives the Lease back
/// and exits 0, and the standby takes over at once, long before the lease would have expired.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_to_the_leading_binary_hands_the_lease_over_at_once() {
    let server = ApiServer::start().await;
    server.apply_rollout(rollout(4));
    server.create_virtual_service(example("virtualservice.yaml"));
    server.add_user("agent-bin", AGENT);
    let home = tempfile::tempdir().unwrap();
    let kubeconfig = home.path().join("agent.kubeconfig");
    let text = format!(
        "apiVersion: v1\nkind: Config\n\
         clusters:\n- name: stand-in\n  cluster:\n    server: {url}\n\
         users:\n- name: agent\n  user:\n    token: agent-bin\n\
         contexts:\n- name: agent\n  context:\n    cluster: stand-in\n    user: agent\n    namespace: fledge-system\n\
         current-context: agent\n",
        url = server.url
    );
    std::fs::write(&kubeconfig, text).unwrap();
    // A lease long enough that a takeover by expiry could not pass for a release.
    let mut binary = tokio::process::Command::new(env!("CARGO_BIN_EXE_fledge-agent"))
        .args(["kube", "--grpc", "127.0.0.1:0", "--http", "127.0.0.1:0"])
        .args([
            "--lease-duration",
            "20s",
            "--renew-deadline",
            "10s",
            "--retry-period",
            "250ms",
        ])
        .env("KUBECONFIG", &kubeconfig)
        .env("HOME", home.path())
        .env("POD_NAME", "agent-bin")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    until_held_by(&server, "agent-bin", Duration::from_secs(20)).await;
    let standby = replica(&server, "agent-b").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        holder(&server).as_deref(),
        Some("agent-bin"),
        "the standby waits"
    );

    let pid = binary.id().unwrap().to_string();
    let signalled = Instant::now();
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(kill.success());
    let exit = tokio::time::timeout(Duration::from_secs(15), binary.wait())
        .await
        .expect("the binary stops")
        .unwrap();
    assert!(exit.success(), "{exit:?}");
    until_held_by(&server, "agent-b", Duration::from_secs(5)).await;
    let took = signalled.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "the standby took over {took:?} after SIGTERM: the Lease was not given back"
    );
    // The binary wrote the Lease back without a holder before the standby took it.
    let writes = server.writes();
    let released = writes.iter().any(|w| {
        w.token.as_deref() == Some("agent-bin")
            && w.what == "lease fledge-system/fledge-agent"
            && w.body["spec"]["holderIdentity"].is_null()
    });
    assert!(released, "no release among {writes:#?}");
    assert!(server.violations().is_empty(), "{:#?}", server.violations());
    standby.agent.stop();
}
