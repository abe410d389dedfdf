//! What the host's integration tests share: the real modules (a missing one fails the test with
//! how to build it), plugin configurations, request helpers, and a real fledge.v1.Telemetry gRPC
//! server that records what the filter sends and can push routing tables back.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fledge_proto::v1::telemetry_server::{Telemetry, TelemetryServer};
use fledge_proto::v1::{AgentMessage, FilterMessage, RoutingTable, agent_message, filter_message};
use fledge_sandbox_host::{FilterHost, LogInfo, RequestHandle, bench};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status, Streaming};

pub const AGENT_CLUSTER: &str = "outbound|9090||fledge-agent.fledge-system.svc.cluster.local";
pub const REVIEWS: &str = "reviews.shop.svc.cluster.local";

pub fn filter_wasm() -> PathBuf {
    bench::filter_module().unwrap_or_else(|e| panic!("{e}"))
}

pub fn minimal_wasm() -> PathBuf {
    bench::minimal_module().unwrap_or_else(|e| panic!("{e}"))
}

/// A client-role configuration with an initial table for `reviews`: `x-beta: 1` → v2, else a
/// sticky split on `x-user-id` with `canary_basis_points` to v2.
pub fn client_config(canary_basis_points: u32, report_interval_ms: u64) -> String {
    format!(
        r#"{{
  "agent": {{"cluster": "{AGENT_CLUSTER}"}},
  "role": "client",
  "report_interval_ms": {report_interval_ms},
  "routes": [{{
    "host": "{REVIEWS}",
    "rules": [{{"header": {{"name": "x-beta", "exact": "1"}}, "version": "v2"}}],
    "split": {{"stable": "v1", "canary": "v2", "canary_basis_points": {canary_basis_points}}},
    "sticky_key": {{"header": "x-user-id"}}
  }}]
}}"#
    )
}

pub fn request_headers(extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut headers = vec![
        (":authority".to_string(), format!("{REVIEWS}:9080")),
        (":path".to_string(), "/reviews/1".to_string()),
        (":method".to_string(), "GET".to_string()),
        (":scheme".to_string(), "http".to_string()),
    ];
    headers.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    headers
}

pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// Runs one request through `host` and returns the version the filter wrote and its handle.
pub fn route(host: &FilterHost, extra: &[(&str, &str)]) -> (Option<String>, RequestHandle) {
    let mut headers = request_headers(extra);
    let handle = host.on_request_headers(&mut headers);
    (
        header(&headers, "x-fledge-version").map(str::to_string),
        handle,
    )
}

/// Completes a request as the mesh would after the backend of `version` answered.
pub fn complete(mut handle: RequestHandle, version: &str, latency: Duration, status: u16) {
    let mut response = vec![(":status".to_string(), status.to_string())];
    handle.on_response_headers(&mut response);
    handle.on_log(LogInfo {
        duration: latency,
        response_code: Some(status),
        response_flags: 0,
        grpc_status: None,
        cluster_name: format!("outbound|9080|{version}|{REVIEWS}"),
    });
}

/// What the telemetry server saw.
#[derive(Default)]
pub struct Seen {
    pub messages: Vec<FilterMessage>,
    pub streams: usize,
}

impl Seen {
    pub fn hellos(&self) -> usize {
        self.messages
            .iter()
            .filter(|m| matches!(m.msg, Some(filter_message::Msg::Hello(_))))
            .count()
    }

    pub fn reports(&self) -> Vec<&fledge_proto::v1::Report> {
        self.messages
            .iter()
            .filter_map(|m| match &m.msg {
                Some(filter_message::Msg::Report(r)) => Some(r),
                _ => None,
            })
            .collect()
    }

    /// Requests reported for (host, version) over all reports.
    pub fn requests(&self, version: &str) -> u64 {
        self.reports()
            .iter()
            .flat_map(|r| &r.series)
            .filter(|s| s.version == version)
            .map(|s| s.requests)
            .sum()
    }
}

type Pusher = mpsc::Sender<Result<AgentMessage, Status>>;

#[derive(Clone, Default)]
pub struct Agent {
    pub seen: Arc<Mutex<Seen>>,
    /// Senders to every open stream, to push routing tables.
    pub pushers: Arc<Mutex<Vec<Pusher>>>,
}

impl Agent {
    pub fn push(&self, table: RoutingTable) {
        let message = AgentMessage {
            msg: Some(agent_message::Msg::RoutingTable(table)),
        };
        for pusher in self.pushers.lock().unwrap().iter() {
            let _ = pusher.try_send(Ok(message.clone()));
        }
    }
}

#[tonic::async_trait]
impl Telemetry for Agent {
    type ConnectStream = ReceiverStream<Result<AgentMessage, Status>>;

    async fn connect(
        &self,
        request: Request<Streaming<FilterMessage>>,
    ) -> Result<Response<Self::ConnectStream>, Status> {
        let mut incoming = request.into_inner();
        let (tx, rx) = mpsc::channel(16);
        self.pushers.lock().unwrap().push(tx);
        self.seen.lock().unwrap().streams += 1;
        let seen = Arc::clone(&self.seen);
        tokio::spawn(async move {
            while let Some(Ok(message)) = incoming.next().await {
                seen.lock().unwrap().messages.push(message);
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// A running telemetry server; dropping `stop` shuts it down.
pub struct Server {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    /// Serves `agent` on `addr` (port 0 picks one).
    pub async fn start(agent: Agent, addr: SocketAddr) -> Server {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .expect("bind telemetry server");
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(TelemetryServer::new(agent))
                .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                    let _ = stopped.await;
                })
                .await
                .expect("telemetry server");
        });
        Server {
            addr,
            stop: Some(stop),
            task,
        }
    }

    /// Stops serving: every stream ends with Unavailable, then the listener closes.
    pub async fn stop(mut self, agent: &Agent) {
        for pusher in agent.pushers.lock().unwrap().drain(..) {
            let _ = pusher.try_send(Err(Status::unavailable("agent stopping")));
        }
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), &mut self.task).await;
        self.task.abort();
    }
}

/// Polls `check` every 20 ms until it holds or `within` passes; returns whether it held.
pub async fn eventually(within: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if check() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
