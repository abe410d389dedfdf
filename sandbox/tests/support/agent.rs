//! A real fledge.v1.Telemetry gRPC server standing in for the agent: it keeps every message
//! the filters send and can push a routing table down every open stream.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use fledge_proto::v1::telemetry_server::{Telemetry, TelemetryServer};
use fledge_proto::v1::{
    AgentMessage, FilterMessage, Hello, RoutingTable, Series, Traffic, agent_message,
    filter_message,
};
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status, Streaming};

type Pusher = mpsc::Sender<Result<AgentMessage, Status>>;

#[derive(Clone, Default)]
pub struct Agent {
    messages: Arc<Mutex<Vec<FilterMessage>>>,
    pushers: Arc<Mutex<Vec<Pusher>>>,
}

impl Agent {
    /// Serves on a free local port until the runtime ends.
    pub async fn start() -> (Agent, SocketAddr) {
        let agent = Agent::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind agent");
        let addr = listener.local_addr().expect("agent addr");
        let service = TelemetryServer::new(agent.clone());
        tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(TcpListenerStream::new(listener))
                .await;
        });
        (agent, addr)
    }

    /// Sends `table` down every open stream; returns how many streams got it.
    pub fn push(&self, table: RoutingTable) -> usize {
        let message = AgentMessage {
            msg: Some(agent_message::Msg::RoutingTable(table)),
        };
        let pushers = self.pushers.lock().unwrap();
        pushers
            .iter()
            .filter(|p| p.try_send(Ok(message.clone())).is_ok())
            .count()
    }

    pub fn streams(&self) -> usize {
        self.pushers.lock().unwrap().len()
    }

    pub fn hellos(&self) -> Vec<Hello> {
        let messages = self.messages.lock().unwrap();
        messages
            .iter()
            .filter_map(|m| match &m.msg {
                Some(filter_message::Msg::Hello(h)) => Some(h.clone()),
                _ => None,
            })
            .collect()
    }

    /// Every series reported so far.
    pub fn series(&self) -> Vec<Series> {
        let messages = self.messages.lock().unwrap();
        messages
            .iter()
            .filter_map(|m| match &m.msg {
                Some(filter_message::Msg::Report(r)) => Some(r.series.clone()),
                _ => None,
            })
            .flatten()
            .collect()
    }

    /// Requests reported for (version, traffic), over all reports.
    pub fn requests(&self, version: &str, traffic: Traffic) -> u64 {
        self.series()
            .iter()
            .filter(|s| s.version == version && s.traffic == traffic as i32)
            .map(|s| s.requests)
            .sum()
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
        let messages = Arc::clone(&self.messages);
        tokio::spawn(async move {
            while let Some(Ok(message)) = incoming.next().await {
                messages.lock().unwrap().push(message);
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}
