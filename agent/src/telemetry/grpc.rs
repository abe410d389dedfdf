//! The tonic adapter for `fledge.v1.Telemetry/Connect`: one task per filter stream that hands
//! each message and each table the hub publishes to the stream's [`Session`], and does what it
//! answers — registers the stream with the hub, merges reports into the windows (holding their
//! lock only for the merge), sends tables, and closes a refused stream with `invalid_argument`
//! and the reason, counted; no other stream notices. When the agent stops, every stream ends
//! with `unavailable`. The protocol itself lives in `session`.

use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use fledge_proto::v1::{
    self, AgentMessage, FilterMessage,
    telemetry_server::{Telemetry, TelemetryServer},
};
use tokio::sync::mpsc;
use tokio_stream::{Stream, wrappers::ReceiverStream};
use tonic::{Request, Response, Status, Streaming};

use super::hub::Hub;
use super::session::{Action, DEFAULT_MAX_SKEW_MS, Merge, Session};
use super::validate::Rejection;
use crate::metrics::Metrics;
use fledge_core::windows::Windows;

/// What a filter's stream ends with when the agent stops.
const STOPPING: &str = "the agent is stopping";

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
        tokio::spawn(self.clone().serve(request.into_inner(), tx));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// How a stream ended.
enum End {
    /// The filter closed it, its transport failed, or the hub is gone.
    Closed,
    /// The agent is stopping.
    Stopping,
    /// The session refused it.
    Refused(Rejection),
}

impl TelemetryService {
    async fn serve(
        self,
        mut inbound: Streaming<FilterMessage>,
        tx: mpsc::Sender<Result<AgentMessage, Status>>,
    ) {
        self.metrics.streams_connected.inc();
        let mut session = Session::new(self.max_skew_ms);
        let mut tables = self.hub.subscribe();
        let closed = self.hub.closed();
        tokio::pin!(closed);
        let mut id: Option<u64> = None;
        let end = loop {
            // The newest table, when something may have made it worth sending.
            let offer: Option<Arc<v1::RoutingTable>> = tokio::select! {
                () = &mut closed => break End::Stopping,
                message = inbound.message() => match message {
                    Ok(Some(message)) => match session.received(message, unix_ms()) {
                        Action::Register(hello) => {
                            id = Some(self.hub.register(&hello));
                            tracing::info!(proxy = %hello.proxy_id, worker = hello.worker, revision = hello.table_revision, "filter connected");
                            Some(tables.borrow_and_update().clone())
                        }
                        Action::Merge(merge) => {
                            self.merge(id, merge);
                            None
                        }
                        Action::Nothing => None,
                        Action::Refuse(rejection) => break End::Refused(rejection),
                    },
                    Ok(None) => break End::Closed,
                    Err(status) => {
                        tracing::debug!(%status, "filter stream ended");
                        break End::Closed;
                    }
                },
                changed = tables.changed() => match changed {
                    Ok(()) => Some(tables.borrow_and_update().clone()),
                    Err(_) => break End::Closed,
                },
            };
            if let Some(table) = offer
                && let Some(message) = session.offer(&table)
            {
                if tx.send(Ok(message)).await.is_err() {
                    break End::Closed;
                }
                if let Some(stream) = id {
                    self.hub.sent(stream, table.revision);
                }
            }
        };
        match end {
            End::Closed => {}
            End::Stopping => {
                let _ = tx.send(Err(Status::unavailable(STOPPING))).await;
            }
            End::Refused(rejection) => {
                self.metrics.rejected(rejection.reason);
                tracing::warn!(stream = ?id, reason = rejection.reason, "rejected a report: {}", rejection.message);
                let _ = tx
                    .send(Err(Status::invalid_argument(rejection.message)))
                    .await;
            }
        }
        if let Some(stream) = id {
            self.hub.unregister(stream);
        }
        self.metrics.streams_connected.dec();
    }

    /// Records and counts a valid report before merging it, so whoever sees its data in the
    /// windows also sees it counted.
    fn merge(&self, stream: Option<u64>, merge: Merge) {
        if let Some(stream) = stream {
            self.hub.reported(stream, merge.hosts());
        }
        self.metrics.reports_received.inc();
        let mut windows = self.store.lock().unwrap_or_else(PoisonError::into_inner);
        merge.into_windows(&mut windows);
    }
}
