//! A stand-in for the agent's telemetry endpoint: a real `fledge.v1.Telemetry` gRPC server (tonic)
//! that keeps every message filters send and can push a routing table down every open stream.
//! It decides nothing: no Hello-first rule, no validation, no windows. Tests that exercise the
//! agent's own ingest use the agent.
//!
//! ```no_run
//! # async fn example() {
//! use fledge_testkit::telemetry::StandInAgent;
//!
//! let (agent, serving) = StandInAgent::start().await;
//! // … point a filter at `serving.addr`, send traffic …
//! assert_eq!(agent.hellos().len(), 2);
//! serving.stop().await;
//! # }
//! ```

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use fledge_proto::v1::telemetry_server::{Telemetry, TelemetryServer};
use fledge_proto::v1::{
    AgentMessage, FilterMessage, Hello, Report, RoutingTable, Series, Traffic, agent_message,
    filter_message,
};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status, Streaming};

type Pusher = mpsc::Sender<Result<AgentMessage, Status>>;

#[derive(Default)]
struct State {
    messages: Vec<FilterMessage>,
    /// One sender per stream opened since the last stop, to push routing tables.
    pushers: Vec<Pusher>,
    /// Answers for the next streams opened, in order, instead of taking them.
    refusals: VecDeque<Status>,
    /// When each stream was asked for, refused ones included.
    attempts: Vec<Instant>,
}

/// The recording server. Clones share what was recorded; serving it again after a stop (on the
/// same address) keeps everything received before.
#[derive(Clone, Default)]
pub struct StandInAgent {
    state: Arc<Mutex<State>>,
}

/// What filters have sent so far, as one consistent snapshot.
#[derive(Clone, Debug, Default)]
pub struct Seen {
    /// Every message, in the order received (streams interleaved).
    pub messages: Vec<FilterMessage>,
}

/// A serving [`StandInAgent`]; dropping it stops serving too, without ending streams first.
pub struct Serving {
    pub addr: SocketAddr,
    agent: StandInAgent,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

// === impl StandInAgent ===

impl StandInAgent {
    /// A new agent serving on a free local port.
    pub async fn start() -> (StandInAgent, Serving) {
        let agent = StandInAgent::default();
        let serving = agent.serve("127.0.0.1:0".parse().unwrap()).await;
        (agent, serving)
    }

    /// Serves on `addr` (port 0 picks one) until the returned [`Serving`] is stopped or dropped.
    pub async fn serve(&self, addr: SocketAddr) -> Serving {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .unwrap_or_else(|e| panic!("binding the stand-in agent to {addr}: {e}"));
        let addr = listener.local_addr().expect("the stand-in agent's address");
        let (stop, stopped) = oneshot::channel::<()>();
        let service = TelemetryServer::new(self.clone());
        let task = tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                    let _ = stopped.await;
                })
                .await
                .expect("the stand-in agent serves");
        });
        Serving {
            addr,
            agent: self.clone(),
            stop: Some(stop),
            task,
        }
    }

    /// Sends `table` down every open stream; returns how many streams took it.
    pub fn push(&self, table: RoutingTable) -> usize {
        let message = AgentMessage {
            msg: Some(agent_message::Msg::RoutingTable(table)),
        };
        let state = self.lock();
        state
            .pushers
            .iter()
            .filter(|p| p.try_send(Ok(message.clone())).is_ok())
            .count()
    }

    /// Refuses the next streams opened, one per status, in order (e.g. a standby's UNAVAILABLE);
    /// the ones after are taken.
    pub fn refuse(&self, statuses: impl IntoIterator<Item = Status>) {
        self.lock().refusals.extend(statuses);
    }

    /// When each stream was asked for, in order, refused ones included.
    pub fn attempts(&self) -> Vec<Instant> {
        self.lock().attempts.clone()
    }

    /// Streams open now.
    pub fn streams(&self) -> usize {
        let mut state = self.lock();
        state.pushers.retain(|p| !p.is_closed());
        state.pushers.len()
    }

    /// A snapshot of everything received.
    pub fn seen(&self) -> Seen {
        Seen {
            messages: self.lock().messages.clone(),
        }
    }

    /// Every Hello received, in order.
    pub fn hellos(&self) -> Vec<Hello> {
        self.seen().hellos().into_iter().cloned().collect()
    }

    /// Every report received, in order.
    pub fn reports(&self) -> Vec<Report> {
        self.seen().reports().into_iter().cloned().collect()
    }

    /// Every series of every report.
    pub fn series(&self) -> Vec<Series> {
        self.seen().series().into_iter().cloned().collect()
    }

    /// Requests reported for `version` (any host, any traffic), over all reports.
    pub fn requests(&self, version: &str) -> u64 {
        self.seen().requests(version)
    }

    /// Live requests reported for `version`.
    pub fn live_requests(&self, version: &str) -> u64 {
        self.seen().requests_of(version, Traffic::Live)
    }

    /// Shadow (mirrored) requests reported for `version`.
    pub fn shadow_requests(&self, version: &str) -> u64 {
        self.seen().requests_of(version, Traffic::Shadow)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }
}

#[tonic::async_trait]
impl Telemetry for StandInAgent {
    type ConnectStream = ReceiverStream<Result<AgentMessage, Status>>;

    async fn connect(
        &self,
        request: Request<Streaming<FilterMessage>>,
    ) -> Result<Response<Self::ConnectStream>, Status> {
        {
            let mut state = self.lock();
            state.attempts.push(Instant::now());
            if let Some(refusal) = state.refusals.pop_front() {
                return Err(refusal);
            }
        }
        let mut incoming = request.into_inner();
        let (tx, rx) = mpsc::channel(16);
        self.lock().pushers.push(tx);
        let state = Arc::clone(&self.state);
        tokio::spawn(async move {
            while let Some(Ok(message)) = incoming.next().await {
                state.lock().unwrap().messages.push(message);
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

// === impl Seen ===

impl Seen {
    pub fn hellos(&self) -> Vec<&Hello> {
        self.messages
            .iter()
            .filter_map(|m| match &m.msg {
                Some(filter_message::Msg::Hello(h)) => Some(h),
                _ => None,
            })
            .collect()
    }

    pub fn reports(&self) -> Vec<&Report> {
        self.messages
            .iter()
            .filter_map(|m| match &m.msg {
                Some(filter_message::Msg::Report(r)) => Some(r),
                _ => None,
            })
            .collect()
    }

    pub fn series(&self) -> Vec<&Series> {
        self.reports().into_iter().flat_map(|r| &r.series).collect()
    }

    /// Requests reported for `version` (any host, any traffic).
    pub fn requests(&self, version: &str) -> u64 {
        self.series()
            .into_iter()
            .filter(|s| s.version == version)
            .map(|s| s.counts.unwrap_or_default().requests)
            .sum()
    }

    /// Requests reported for `version` as `traffic`.
    pub fn requests_of(&self, version: &str, traffic: Traffic) -> u64 {
        self.series()
            .into_iter()
            .filter(|s| s.version == version && s.traffic == traffic as i32)
            .map(|s| s.counts.unwrap_or_default().requests)
            .sum()
    }
}

// === impl Serving ===

impl Serving {
    /// Stops serving as an agent going away does: every open stream ends with Unavailable, then
    /// the listener closes.
    pub async fn stop(mut self) {
        for pusher in self.agent.lock().pushers.drain(..) {
            let _ = pusher.try_send(Err(Status::unavailable("agent stopping")));
        }
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), &mut self.task).await;
        self.task.abort();
    }
}
