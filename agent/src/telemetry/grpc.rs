//! The tonic adapter for `fledge.v1.Telemetry/Connect`: one task per filter stream that hands
//! each message and each table the hub publishes to the stream's [`Session`], and does what it
//! answers — registers the stream with the hub, merges reports into the windows (holding their
//! lock only for the merge, counting per host what was not stored), sends tables, and closes a
//! refused stream with `invalid_argument` and the reason, counted; no other stream notices. A
//! message that does not decode (bad framing, invalid UTF-8) is refused the same way (`decode`),
//! one over [`MAX_MESSAGE_BYTES`] with `resource_exhausted` (`too_large`). A stream that says no
//! Hello within [`HELLO_TIMEOUT`], or nothing for [`IDLE_TIMEOUT`], ends with
//! `deadline_exceeded`, counted. When the agent stops, every stream ends with `unavailable`.
//! The protocol itself lives in `session`.

use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fledge_proto::v1::{
    self, AgentMessage, FilterMessage,
    telemetry_server::{Telemetry, TelemetryServer},
};
use tokio::sync::mpsc;
use tokio_stream::{Stream, wrappers::ReceiverStream};
use tonic::{Code, Request, Response, Status, Streaming};

use super::hub::Hub;
use super::peer::Identity;
use super::session::{Action, DEFAULT_MAX_SKEW_MS, Merge, Peer, Session};
use super::validate::{Rejection, quote};
use crate::metrics::Metrics;
use fledge_core::windows::Windows;

/// The header carrying the client's mesh identity.
const XFCC: &str = "x-forwarded-client-cert";

/// What a filter's stream ends with when the agent stops: the filter keeps its deltas and
/// connects again at its next tick, which the telemetry Service sends to a replica that stays.
const STOPPING: &str = fledge_proto::REFUSED_STOPPING;
/// What a standby answers: the filter keeps its deltas and connects again at its next tick,
/// which the telemetry Service sends to a replica (the leader accepts).
pub const STANDBY: &str = fledge_proto::REFUSED_STANDBY;
/// How long a stream ended for a standby is still read for reports already on their way.
pub const DRAIN: Duration = Duration::from_secs(2);

/// The largest message the agent decodes (tonic's default, said here so it is one bound).
pub const MAX_MESSAGE_BYTES: usize = 4 << 20;
/// A stream must say Hello within this long.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// A stream that sends nothing for this long is ended (filters report every second).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Clone)]
pub struct TelemetryService {
    store: Arc<Mutex<Windows>>,
    hub: Arc<Hub>,
    metrics: Arc<Metrics>,
    max_skew_ms: i64,
    hello_timeout: Duration,
    idle_timeout: Duration,
    /// Refuse streams that carry no mesh identity.
    require_peer: bool,
    /// Requests a stream may report per second.
    stream_rate: u64,
}

impl TelemetryService {
    pub fn new(store: Arc<Mutex<Windows>>, hub: Arc<Hub>, metrics: Arc<Metrics>) -> Self {
        Self {
            store,
            hub,
            metrics,
            max_skew_ms: DEFAULT_MAX_SKEW_MS,
            hello_timeout: HELLO_TIMEOUT,
            idle_timeout: IDLE_TIMEOUT,
            require_peer: false,
            stream_rate: super::session::DEFAULT_MAX_REQUESTS_PER_SECOND,
        }
    }

    /// At most `per_second` requests a second from one stream (see `Session::with_rate`).
    pub fn with_stream_rate(mut self, per_second: u64) -> Self {
        self.stream_rate = per_second;
        self
    }

    /// Refuse every stream without a mesh identity in `x-forwarded-client-cert`.
    pub fn requiring_peer_identity(mut self, required: bool) -> Self {
        self.require_peer = required;
        self
    }

    /// Other limits than [`HELLO_TIMEOUT`] and [`IDLE_TIMEOUT`] (for tests).
    pub fn with_timeouts(mut self, hello: Duration, idle: Duration) -> Self {
        self.hello_timeout = hello;
        self.idle_timeout = idle;
        self
    }

    pub fn into_server(self) -> TelemetryServer<Self> {
        TelemetryServer::new(self).max_decoding_message_size(MAX_MESSAGE_BYTES)
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
        if self.hub.is_standby() {
            return Err(Status::unavailable(STANDBY));
        }
        // Set by the agent's own sidecar from the client's certificate (see `peer`).
        let identity = request
            .metadata()
            .get(XFCC)
            .and_then(|v| v.to_str().ok())
            .and_then(Identity::from_xfcc);
        let peer = Peer {
            identity,
            required: self.require_peer,
        };
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(self.clone().serve(request.into_inner(), peer, tx));
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
    /// Another agent leads now.
    StandingBy,
    /// The session refused it, or a message did not decode.
    Refused(Rejection),
    /// It said no Hello in time, or went quiet.
    TimedOut(Rejection),
}

/// The refusal for a message tonic could not decode, or None when the stream merely ended
/// (the filter went away, the connection broke).
pub fn undecodable(status: &Status) -> Option<Rejection> {
    let message = status.message();
    match status.code() {
        Code::OutOfRange if message.contains("message length too large") => Some(Rejection::new(
            "too_large",
            format!("a message is larger than the agent's limit of {MAX_MESSAGE_BYTES} bytes"),
        )),
        Code::Internal
            if message.starts_with("failed to decode")
                || message.starts_with("protocol error: received message") =>
        {
            Some(Rejection::new(
                "decode",
                format!(
                    "a message does not decode as fledge.v1.FilterMessage: {}",
                    quote(message)
                ),
            ))
        }
        _ => None,
    }
}

/// The status a refused stream ends with.
fn refusal(rejection: Rejection) -> Status {
    match rejection.reason {
        "too_large" => Status::resource_exhausted(rejection.message),
        _ => Status::invalid_argument(rejection.message),
    }
}

impl TelemetryService {
    async fn serve(
        self,
        mut inbound: Streaming<FilterMessage>,
        peer: Peer,
        tx: mpsc::Sender<Result<AgentMessage, Status>>,
    ) {
        self.metrics.streams_connected.inc();
        let identity = peer.identity.clone();
        let mut session = Session::with_peer(self.max_skew_ms, peer).with_rate(self.stream_rate);
        let mut tables = self.hub.subscribe();
        let closed = self.hub.closed();
        tokio::pin!(closed);
        let standing_by = self.hub.standing_by();
        tokio::pin!(standing_by);
        let mut id: Option<u64> = None;
        let quiet = tokio::time::sleep(self.hello_timeout);
        tokio::pin!(quiet);
        let end = loop {
            // The newest table, when something may have made it worth sending.
            let offer: Option<Arc<v1::RoutingTable>> = tokio::select! {
                () = &mut closed => break End::Stopping,
                () = &mut standing_by => break End::StandingBy,
                () = &mut quiet => break End::TimedOut(match id {
                    None => Rejection::new("hello_timeout", format!("no Hello within {:?} of opening the stream", self.hello_timeout)),
                    Some(_) => Rejection::new("idle", format!("nothing sent for {:?}; a filter reports every second", self.idle_timeout)),
                }),
                message = inbound.message() => match message {
                    Ok(Some(message)) => match session.received(message, unix_ms()) {
                        Action::Register(hello) => {
                            id = Some(self.hub.register(&hello, identity.as_ref()));
                            quiet.as_mut().reset(tokio::time::Instant::now() + self.idle_timeout);
                            let peer = identity.as_ref().map(ToString::to_string).unwrap_or_default();
                            tracing::info!(proxy = %hello.proxy_id, worker = hello.worker, revision = hello.table_revision, %peer, "filter connected");
                            Some(tables.borrow_and_update().clone())
                        }
                        Action::Merge(merge) => {
                            quiet.as_mut().reset(tokio::time::Instant::now() + self.idle_timeout);
                            self.merge(id, merge);
                            None
                        }
                        Action::Nothing => None,
                        Action::Refuse(rejection) => break End::Refused(rejection),
                    },
                    Ok(None) => break End::Closed,
                    Err(status) => match undecodable(&status) {
                        Some(rejection) => break End::Refused(rejection),
                        None => {
                            tracing::debug!(%status, "filter stream ended");
                            break End::Closed;
                        }
                    },
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
            End::StandingBy => {
                let _ = tx.send(Err(Status::unavailable(STANDBY))).await;
                // What the filter sent before it learnt this is still read and counted: it
                // does not send it again, so a report ignored here would be lost.
                self.drain(&mut inbound, &mut session, id).await;
            }
            End::Refused(rejection) => {
                self.metrics.rejected(rejection.reason);
                tracing::warn!(stream = ?id, reason = rejection.reason, "refused a filter stream: {}", rejection.message);
                let _ = tx.send(Err(refusal(rejection))).await;
            }
            End::TimedOut(rejection) => {
                self.metrics.rejected(rejection.reason);
                tracing::info!(stream = ?id, reason = rejection.reason, "ended a filter stream: {}", rejection.message);
                let _ = tx
                    .send(Err(Status::deadline_exceeded(rejection.message)))
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
    /// Reads a stream the agent has ended until the filter closes its side (or [`DRAIN`]),
    /// merging the reports still on the way.
    async fn drain(
        &self,
        inbound: &mut Streaming<FilterMessage>,
        session: &mut Session,
        id: Option<u64>,
    ) {
        let drained = async {
            while let Ok(Some(message)) = inbound.message().await {
                if let Action::Merge(merge) = session.received(message, unix_ms()) {
                    self.merge(id, merge);
                }
            }
        };
        let _ = tokio::time::timeout(DRAIN, drained).await;
    }

    fn merge(&self, stream: Option<u64>, merge: Merge) {
        if let Some(stream) = stream {
            self.hub.reported(stream, merge.hosts());
        }
        self.metrics.reports_received.inc();
        for (key, delta) in &merge.report.series {
            if delta.counts.unmeasured > 0 {
                let label = crate::metrics::HostLabel {
                    host: key.host.clone(),
                };
                let counter = self.metrics.unmeasured_requests.get_or_create(&label);
                counter.inc_by(delta.counts.unmeasured);
            }
        }
        let dropped = merge.report.dropped;
        let merged = {
            let mut windows = self.store.lock().unwrap_or_else(PoisonError::into_inner);
            merge.into_windows(&mut windows)
        };
        self.metrics.merged(&merged, dropped);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn undecodable_messages_are_told_from_a_stream_that_ended() {
        for (status, reason) in [
            (
                Status::out_of_range(
                    "Error, decoded message length too large: found 5000000 bytes, the limit is: 4194304 bytes",
                ),
                Some("too_large"),
            ),
            (
                Status::internal(
                    "failed to decode Protobuf message: invalid string value: data is not UTF-8 encoded",
                ),
                Some("decode"),
            ),
            (
                Status::internal(
                    "protocol error: received message with invalid compression flag: 7 (valid flags are 0 and 1), while sending request",
                ),
                Some("decode"),
            ),
            (Status::cancelled("h2 protocol error: stream reset"), None),
            (
                Status::unknown("error reading a body from connection"),
                None,
            ),
            (Status::internal("h2 protocol error: internal error"), None),
        ] {
            let got = undecodable(&status);
            assert_eq!(got.as_ref().map(|r| r.reason), reason, "{status:?}");
            if let Some(r) = got {
                let code = refusal(r).code();
                let expected = if reason == Some("too_large") {
                    Code::ResourceExhausted
                } else {
                    Code::InvalidArgument
                };
                assert_eq!(code, expected);
            }
        }
    }
}
