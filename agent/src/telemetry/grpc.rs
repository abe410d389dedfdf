//! The tonic adapter for `fledge.v1.Telemetry/Connect`: one task per filter stream that takes the
//! Hello, validates and merges each Report into the store, and sends routing tables as the hub
//! publishes them. A bad report closes only its own stream, with `invalid_argument` and the
//! reason; it is counted, and no other stream notices.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use fledge_proto::v1::{
    self, AgentMessage, FilterMessage, agent_message, filter_message,
    telemetry_server::{Telemetry, TelemetryServer},
};
use tokio::sync::mpsc;
use tokio_stream::{Stream, wrappers::ReceiverStream};
use tonic::{Request, Response, Status, Streaming};

use super::hub::Hub;
use super::validate::{Rejection, validate};
use crate::metrics::Metrics;
use fledge_core::windows::{Side, Windows};

/// What a filter's stream ends with when the agent stops.
const STOPPING: &str = "the agent is stopping";

/// Reports whose window ends further than this from the agent's clock are refused.
pub const DEFAULT_MAX_SKEW_MS: i64 = 120_000;

#[derive(Clone)]
pub struct TelemetryService {
    store: Arc<Mutex<Windows>>,
    hub: Arc<Hub>,
    metrics: Arc<Metrics>,
    max_skew_ms: i64,
}

impl TelemetryService {
    pub fn new(store: Arc<Mutex<Windows>>, hub: Arc<Hub>, metrics: Arc<Metrics>) -> Self {
        Self {
            store,
            hub,
            metrics,
            max_skew_ms: DEFAULT_MAX_SKEW_MS,
        }
    }

    pub fn into_server(self) -> TelemetryServer<Self> {
        TelemetryServer::new(self)
    }
}

type AgentStream = Pin<Box<dyn Stream<Item = Result<AgentMessage, Status>> + Send>>;

#[tonic::async_trait]
impl Telemetry for TelemetryService {
    type ConnectStream = AgentStream;

    async fn connect(
        &self,
        request: Request<Streaming<FilterMessage>>,
    ) -> Result<Response<AgentStream>, Status> {
        if self.hub.is_closed() {
            return Err(Status::unavailable(STOPPING));
        }
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(self.clone().session(request.into_inner(), tx));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl TelemetryService {
    async fn session(
        self,
        mut inbound: Streaming<FilterMessage>,
        tx: mpsc::Sender<Result<AgentMessage, Status>>,
    ) {
        self.metrics.streams_connected.inc();
        let mut tables = self.hub.subscribe();
        let closed = self.hub.closed();
        tokio::pin!(closed);
        let mut stopping = false;
        let mut id: Option<u64> = None;
        let mut side = Side::Client;
        let mut held = 0u64;
        let closing = loop {
            tokio::select! {
                () = &mut closed => {
                    stopping = true;
                    break None;
                }
                message = inbound.message() => match message {
                    Ok(Some(FilterMessage { msg: Some(filter_message::Msg::Hello(hello)) })) => {
                        if id.is_none() {
                            id = Some(self.hub.register(&hello));
                            // A filter in the server role measures the callee's side.
                            if hello.role == v1::Role::Server as i32 {
                                side = Side::Server;
                            }
                            held = hello.table_revision;
                            tracing::info!(proxy = %hello.proxy_id, worker = hello.worker, revision = held, "filter connected");
                            tables.mark_changed(); // send the current table if it is newer
                        }
                    }
                    Ok(Some(FilterMessage { msg: Some(filter_message::Msg::Report(report)) })) => {
                        let Some(stream) = id else {
                            break Some(Rejection::new("before_hello", format!("report {} came before Hello; send Hello first", report.seq)));
                        };
                        if let Err(rejection) = self.merge(stream, side, &report) {
                            break Some(rejection);
                        }
                    }
                    Ok(Some(FilterMessage { msg: None })) => {
                        break Some(Rejection::new("empty", "message carries neither Hello nor Report"));
                    }
                    Ok(None) => break None,
                    Err(status) => {
                        tracing::debug!(%status, "filter stream ended");
                        break None;
                    }
                },
                changed = tables.changed(), if id.is_some() => {
                    if changed.is_err() {
                        break None;
                    }
                    let table = tables.borrow_and_update().clone();
                    if table.revision > held {
                        held = table.revision;
                        let message = AgentMessage { msg: Some(agent_message::Msg::RoutingTable(v1::RoutingTable::clone(&table))) };
                        if tx.send(Ok(message)).await.is_err() {
                            break None;
                        }
                        if let Some(stream) = id {
                            self.hub.sent(stream, held);
                        }
                    }
                }
            }
        };
        if stopping {
            let _ = tx.send(Err(Status::unavailable(STOPPING))).await;
        }
        if let Some(rejection) = closing {
            self.metrics.rejected(rejection.reason);
            tracing::warn!(stream = ?id, reason = rejection.reason, "rejected a report: {}", rejection.message);
            let _ = tx
                .send(Err(Status::invalid_argument(rejection.message)))
                .await;
        }
        if let Some(stream) = id {
            self.hub.unregister(stream);
        }
        self.metrics.streams_connected.dec();
    }

    fn merge(&self, stream: u64, side: Side, report: &v1::Report) -> Result<(), Rejection> {
        let now = unix_ms();
        let mut valid = validate(report, now, self.max_skew_ms)?;
        for (key, _) in &mut valid.series {
            key.side = side;
        }
        self.hub
            .reported(stream, valid.series.iter().map(|(k, _)| k.host.as_str()));
        let mut store = self.store.lock().unwrap_or_else(|p| p.into_inner());
        store.merge(
            valid.second,
            valid.series,
            valid.dropped,
            now.div_euclid(1000),
        );
        self.metrics.reports_received.inc();
        Ok(())
    }
}
