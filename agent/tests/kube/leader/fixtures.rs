//! What the leader tests share: short Lease timing, a canary of many steps, an agent replica
//! with its own token, the Lease's holder, a filter stand-in over real gRPC that reconnects as
//! the filter does, and the checks on the writes the stand-in API server recorded.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use fledge_agent::cluster::{Election, Options};
use fledge_agent::serve::Agent;
use fledge_core::lease::Timing;
use fledge_proto::v1::{self, FilterMessage, Hello, Report, telemetry_client::TelemetryClient};
use fledge_testkit::messages::{HelloExt, SeriesExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::super::apiserver::{AGENT, ApiServer, Write};
use super::super::crash::routed_weight;
use super::super::*;

pub(super) const HOST: &str = "reviews.shop.svc.cluster.local";
pub(super) const TICK: Duration = Duration::from_millis(250);

pub(super) fn timing() -> Timing {
    Timing {
        lease_duration: Duration::from_secs(2),
        renew_deadline: Duration::from_millis(1500),
        retry_period: Duration::from_millis(250),
    }
}

/// A canary in `steps` steps, each held until the analysis passes; errors only, with a floor
/// a clean canary passes within seconds.
pub(super) fn rollout(steps: u32) -> Value {
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
pub(super) struct Replica {
    pub(super) name: String,
    pub(super) agent: Agent,
}

pub(super) async fn replica(server: &ApiServer, name: &str) -> Replica {
    server.add_user(name, AGENT);
    let options = Options {
        scope: Scope::AllNamespaces,
        grpc: "127.0.0.1:0".parse().unwrap(),
        http: "127.0.0.1:0".parse().unwrap(),
        tick: TICK,
        instance: Some(name.to_owned()),
        require_peer_identity: false,
        max_stream_requests_per_second: fledge_agent::telemetry::DEFAULT_MAX_REQUESTS_PER_SECOND,
        prometheus: None,
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

pub(super) fn holder(server: &ApiServer) -> Option<String> {
    server.lease("fledge-system", "fledge-agent")?["spec"]["holderIdentity"]
        .as_str()
        .map(str::to_owned)
}

/// Waits until `name` holds the Lease; returns how long that took.
pub(super) async fn until_held_by(server: &ApiServer, name: &str, within: Duration) -> Duration {
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
pub(super) struct Sent {
    pub(super) reports: AtomicU64,
    pub(super) requests: AtomicU64,
    /// Streams a standby refused.
    pub(super) refused: AtomicU64,
}

/// A filter: one stream at a time to one of `addrs` in turn, Hello first, then one report a
/// second with the requests of that second (canary 100, baseline 300, no errors) plus any a
/// failed send left over.
pub(super) async fn filter(
    addrs: Arc<Mutex<Vec<SocketAddr>>>,
    sent: Arc<Sent>,
    stop: Arc<AtomicBool>,
) {
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
                // A standby refuses; so does an agent in the last moments of stopping. Both
                // in the words the real filter takes as "try another replica at once".
                assert!(
                    fledge_proto::is_replica_refusal(
                        status.code() as u32,
                        status.message().as_bytes()
                    ),
                    "{status:?}"
                );
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
pub(super) fn history(writes: &[Write]) -> (Vec<(u32, u32, String)>, Vec<u32>) {
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

/// Every write but the Lease's came within the renew deadline of its writer's last renewal,
/// as the stand-in saw them (a write already on its way at the deadline may land just after).
pub(super) fn assert_written_while_leading(writes: &[Write]) {
    let deadline = timing().renew_deadline + Duration::from_millis(200);
    for (i, w) in writes.iter().enumerate() {
        if w.what.starts_with("lease") {
            continue;
        }
        let renewed = writes[..i]
            .iter()
            .rev()
            .find(|l| l.what.starts_with("lease") && l.token == w.token)
            .map(|l| l.at);
        let Some(renewed) = renewed else {
            panic!(
                "{:?} wrote {} without ever holding the Lease",
                w.token, w.what
            );
        };
        assert!(
            w.at.duration_since(renewed) <= deadline,
            "{:?} wrote {} {:?} after its last renewal",
            w.token,
            w.what,
            w.at.duration_since(renewed)
        );
    }
}

/// Weights only go up; steps only go up, one at a time (no decision skipped or undone).
pub(super) fn assert_forward(statuses: &[(u32, u32, String)], routes: &[u32]) {
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

/// A real `fledge-agent kube` process against the stand-in, as one pod of the Deployment: its
/// own token, the leader tests' Lease timing, listeners on ports picked for it.
pub(super) struct Process {
    pub(super) name: String,
    pub(super) child: tokio::process::Child,
    pub(super) grpc: SocketAddr,
}

/// A free local port (bound, then let go for the process to take).
fn free_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

/// A kubeconfig (written in `home`) for the stand-in with `name` as the bearer token, and the
/// stand-in told that token is the agent's ServiceAccount: one pod of the Deployment.
pub(super) fn kubeconfig(server: &ApiServer, home: &std::path::Path, name: &str) -> PathBuf {
    server.add_user(name, AGENT);
    let kubeconfig = home.join(format!("{name}.kubeconfig"));
    let text = format!(
        "apiVersion: v1\nkind: Config\n\
         clusters:\n- name: stand-in\n  cluster:\n    server: {url}\n\
         users:\n- name: agent\n  user:\n    token: {name}\n\
         contexts:\n- name: agent\n  context:\n    cluster: stand-in\n    user: agent\n    namespace: fledge-system\n\
         current-context: agent\n",
        url = server.url
    );
    std::fs::write(&kubeconfig, text).unwrap();
    kubeconfig
}

/// Starts `name` as a process with the leader tests' timing (see [`process_with`]).
pub(super) fn process(server: &ApiServer, home: &std::path::Path, name: &str) -> Process {
    process_with(server, home, name, timing())
}

/// Starts `name` as a process with a kubeconfig (in `home`) whose token is its name, electing
/// with timing `t`.
pub(super) fn process_with(
    server: &ApiServer,
    home: &std::path::Path,
    name: &str,
    t: Timing,
) -> Process {
    let kubeconfig = kubeconfig(server, home, name);
    let (grpc, http) = (free_port(), free_port());
    let log = std::fs::File::create(home.join(format!("{name}.log"))).unwrap();
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_fledge-agent"))
        .args([
            "kube",
            "--grpc",
            &grpc.to_string(),
            "--http",
            &http.to_string(),
        ])
        .args([
            "--lease-duration",
            &format!("{}s", t.lease_duration.as_secs()),
        ])
        .args([
            "--renew-deadline",
            &format!("{}ms", t.renew_deadline.as_millis()),
        ])
        .args([
            "--retry-period",
            &format!("{}ms", t.retry_period.as_millis()),
        ])
        .env("KUBECONFIG", &kubeconfig)
        .env("HOME", home)
        .env("POD_NAME", name)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    Process {
        name: name.to_owned(),
        child,
        grpc,
    }
}

/// Waits (up to 90 s) for the rollout to succeed, then stops the filter stand-in.
pub(super) async fn until_succeeded(
    server: &ApiServer,
    stop: &AtomicBool,
    feeding: tokio::task::JoinHandle<()>,
) {
    let finished = tokio::time::timeout(Duration::from_secs(90), async {
        while kube_status(server).is_none_or(|s| s.phase != Phase::Succeeded) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    feeding.abort();
    assert!(finished.is_ok(), "not finished: {:#?}", kube_status(server));
}

/// What must hold of a rollout of `steps` steps led to its end by agents that took turns:
/// nothing moved backward, every step was decided and persisted, every write came within its
/// writer's renew deadline, only leaders wrote — checked as no two agents' writes
/// interleaving within one term, and at least `writers` agents having written — every
/// VirtualService replace was at the resourceVersion read (a stale one gets 409), and the
/// stand-in refused no call. Returns the status writes.
pub(super) fn assert_led_in_turns(server: &ApiServer, steps: u32, writers: usize) -> usize {
    let writes = server.writes();
    let (statuses, routes) = history(&writes);
    assert_forward(&statuses, &routes);
    assert_written_while_leading(&writes);
    let decided: BTreeSet<u32> = statuses.iter().map(|s| s.0).collect();
    assert_eq!(
        decided,
        (0..steps).collect(),
        "every step decided and persisted"
    );
    assert!(writes.iter().all(|w| w.user == AGENT), "one ServiceAccount");
    let mut terms: Vec<&str> = writes
        .iter()
        .filter(|w| !w.what.starts_with("lease"))
        .map(|w| w.token.as_deref().unwrap())
        .collect();
    terms.dedup();
    let distinct: BTreeSet<&str> = terms.iter().copied().collect();
    assert_eq!(
        terms.len(),
        distinct.len(),
        "an agent wrote again after another had: two leaders at once? {terms:?}"
    );
    assert!(
        distinct.len() >= writers,
        "the rollout was moved by fewer than {writers} agents: {terms:?}"
    );
    assert_eq!(
        server.conflicts().0,
        0,
        "a VirtualService write at a stale resourceVersion"
    );
    assert!(server.violations().is_empty(), "{:#?}", server.violations());
    statuses.len()
}
