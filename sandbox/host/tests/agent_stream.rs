//! The agent stream's target, end to end: the filter's `agent` configuration (cluster,
//! authority, timeout_ms) → the serialized GrpcService it hands to the host as bytes → the host
//! reads cluster, authority and timeout from it → what the agent's server sees on the wire
//! (`:authority`, `grpc-timeout`) and when the stream ends. The values are the ones the SDK's
//! `&str` could not carry: a deadline with a fraction of a second, a cluster and authority over
//! 123 bytes.

mod common;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use common::*;
use fledge_proto::v1::telemetry_server::TelemetryServer;
use fledge_sandbox_host::{FilterHost, HostConfig};
use fledge_testkit::telemetry::StandInAgent;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::body::Body;
use tonic::codegen::Service;
use tonic::server::NamedService;

/// An authority long enough that cluster + authority pass 123 bytes.
const AUTHORITY: &str = "fledge-agent-telemetry-ingest.fledge-system.svc.cluster.local:9090";

/// What the agent's server saw of one stream opening.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Opened {
    authority: Option<String>,
    grpc_timeout: Option<String>,
    path: String,
}

/// The stand-in agent behind a layer that records each stream's `:authority`, `grpc-timeout`
/// and path, and (when `strip_deadline`) removes `grpc-timeout` so the server never enforces
/// it: only the host's own deadline can then end the stream.
#[derive(Clone)]
struct Recording {
    inner: TelemetryServer<StandInAgent>,
    opened: Arc<Mutex<Vec<Opened>>>,
    strip_deadline: bool,
}

impl Service<http::Request<Body>> for Recording {
    type Response = <TelemetryServer<StandInAgent> as Service<http::Request<Body>>>::Response;
    type Error = Infallible;
    type Future = <TelemetryServer<StandInAgent> as Service<http::Request<Body>>>::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Service::<http::Request<Body>>::poll_ready(&mut self.inner, cx)
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        let header = |name: &str| {
            request
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        self.opened.lock().unwrap().push(Opened {
            authority: request.uri().authority().map(|a| a.to_string()),
            grpc_timeout: header("grpc-timeout"),
            path: request.uri().path().to_owned(),
        });
        if self.strip_deadline {
            request.headers_mut().remove("grpc-timeout");
        }
        self.inner.call(request)
    }
}

impl NamedService for Recording {
    const NAME: &'static str = <TelemetryServer<StandInAgent> as NamedService>::NAME;
}

/// Serves a recording stand-in agent on a free port until the test ends.
async fn serve(strip_deadline: bool) -> (StandInAgent, Arc<Mutex<Vec<Opened>>>, SocketAddr) {
    let agent = StandInAgent::default();
    let opened = Arc::new(Mutex::new(Vec::new()));
    let service = Recording {
        inner: TelemetryServer::new(agent.clone()),
        opened: Arc::clone(&opened),
        strip_deadline,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    (agent, opened, addr)
}

fn config(addr: SocketAddr, timeout_ms: u64) -> HostConfig {
    let plugin = format!(
        r#"{{
  "agent": {{"cluster": "{AGENT_CLUSTER}", "authority": "{AUTHORITY}", "timeout_ms": {timeout_ms}}},
  "role": "client",
  "report_interval_ms": 100,
  "routes": [{{"host": "{REVIEWS}", "split": {{"stable": "v1", "canary": "v2", "canary_basis_points": 0}}}}]
}}"#
    );
    assert!(AGENT_CLUSTER.len() + AUTHORITY.len() > 123);
    HostConfig {
        clusters: HashMap::from([(AGENT_CLUSTER.to_string(), addr)]),
        ..HostConfig::new(filter_wasm(), plugin)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_of_90_5_seconds_and_a_long_authority_reach_the_agent() {
    let (agent, opened, addr) = serve(false).await;
    let host = FilterHost::start(config(addr, 90_500)).await.unwrap();
    // One stream per VM, each with Hello; then a report of the requests sent.
    assert!(
        eventually(Duration::from_secs(10), || agent.hellos().len() >= 2).await,
        "no Hello"
    );
    for i in 0..20 {
        let user = format!("user-{i}");
        let (version, handle) = route(&host, &[("x-user-id", &user)]);
        assert_eq!(version.as_deref(), Some("v1"));
        complete(handle, "v1", Duration::from_millis(3), 200);
    }
    assert!(
        eventually(Duration::from_secs(10), || agent.requests("v1") == 20).await,
        "reports did not arrive"
    );
    let opened = opened.lock().unwrap().clone();
    assert_eq!(opened.len(), 2, "{opened:?}");
    for stream in opened {
        assert_eq!(
            stream,
            Opened {
                authority: Some(AUTHORITY.to_owned()),
                grpc_timeout: Some("90500m".to_owned()),
                path: "/fledge.v1.Telemetry/Connect".to_owned(),
            }
        );
    }
    let stats = host.stats();
    assert_eq!(stats.traps, 0);
    assert_eq!(
        stats.metrics.get("fledge_filter_stream_opens"),
        Some(&2),
        "{:?}",
        stats.metrics
    );
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_host_ends_a_stream_at_its_deadline_and_the_filter_opens_another() {
    // The server never sees the deadline: only the host's own can end the stream.
    let (agent, opened, addr) = serve(true).await;
    let host = FilterHost::start(config(addr, 1_500)).await.unwrap();
    // Each VM's stream ends after 1.5 s and, having been heard, is opened again at once.
    let reopened = eventually(Duration::from_secs(10), || agent.hellos().len() >= 6).await;
    assert!(reopened, "{} Hellos", agent.hellos().len());
    let opened = opened.lock().unwrap().clone();
    assert!(
        opened
            .iter()
            .all(|s| s.grpc_timeout.as_deref() == Some("1500m")),
        "{opened:?}"
    );
    assert_eq!(host.stats().traps, 0);
    host.shutdown().await;
}

/// Two replicas behind one Service: a standby, or a replica that is stopping, refuses the
/// stream, and the filter connects again at its next tick (every 100 ms here) rather than after
/// its backoff (1 s, 2 s, 4 s, … for failures in a row): six refusals shared by two VMs leave
/// one VM with at least three, which the backoff would stretch to at least 7 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_s_refusal_is_retried_at_the_next_tick_not_after_a_backoff() {
    let standby = || tonic::Status::unavailable(fledge_proto::REFUSED_STANDBY);
    let stopping = tonic::Status::unavailable(fledge_proto::REFUSED_STOPPING);
    let (attempts, stats) = refused_then_connected([
        standby(),
        standby(),
        stopping,
        standby(),
        standby(),
        standby(),
    ])
    .await;
    assert_eq!(attempts.len(), 8, "6 refused, then one stream per VM");
    let took = attempts[7] - attempts[0];
    assert!(
        took < Duration::from_secs(3),
        "{took:?} from the first refusal to the last stream"
    );
    assert_eq!(stats.traps, 0);
    assert_eq!(stats.metrics.get("fledge_filter_stream_refusals"), Some(&6));
    assert_eq!(stats.metrics.get("fledge_filter_stream_failures"), Some(&0));
}

/// Any other UNAVAILABLE (here the proxy's own "no healthy upstream") is a failure: the VM
/// that met it waits its backoff, 1 s, before trying again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_other_unavailable_still_backs_off() {
    let (attempts, stats) =
        refused_then_connected([tonic::Status::unavailable("no healthy upstream")]).await;
    assert_eq!(attempts.len(), 3, "one refused, then one stream per VM");
    let retry = attempts[2] - attempts[0];
    assert!(
        retry >= Duration::from_millis(950),
        "retried after {retry:?}"
    );
    assert_eq!(stats.traps, 0);
    assert_eq!(stats.metrics.get("fledge_filter_stream_refusals"), Some(&0));
}

/// The filter (two VMs) against a stand-in agent that refuses the first streams with
/// `refusals`, until each VM said Hello on a stream it took: when each stream was asked for,
/// and the host's stats then.
async fn refused_then_connected(
    refusals: impl IntoIterator<Item = tonic::Status>,
) -> (Vec<std::time::Instant>, fledge_sandbox_host::HostStats) {
    let (agent, serving) = StandInAgent::start().await;
    agent.refuse(refusals);
    let host = FilterHost::start(config(serving.addr, 90_500))
        .await
        .unwrap();
    assert!(
        eventually(Duration::from_secs(10), || agent.hellos().len() >= 2).await,
        "no Hello"
    );
    let stats = host.stats();
    host.shutdown().await;
    serving.stop().await;
    (agent.attempts(), stats)
}
