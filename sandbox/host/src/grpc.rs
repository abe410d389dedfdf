//! gRPC streams opened by a plugin (`proxy_grpc_stream`), bridged to a real gRPC server over
//! HTTP/2 cleartext. tonic's client does the HTTP/2 and the length-prefixed message framing;
//! message bodies pass through untouched as bytes, as Envoy's raw async client passes them.
//!
//! Each stream is one tokio task: it sends what the plugin queues, and hands every event
//! (initial metadata, each message, trailing metadata, the closing status) to a `Deliver`
//! callback that runs the plugin's callback inside its VM. Not here: which VM or context the
//! event goes to (the host decides), and what the messages mean (the plugin decides).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes};
use http::uri::PathAndQuery;
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::metadata::{KeyAndValueRef, MetadataKey, MetadataMap, MetadataValue};
use tonic::transport::Endpoint;

use crate::abi;

/// What a stream reports back to the plugin, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum GrpcEvent {
    InitialMetadata(Vec<(String, String)>),
    Message(Bytes),
    TrailingMetadata(Vec<(String, String)>),
    /// The stream ended: gRPC status code and message (0 and "" when it ended cleanly).
    Close(u32, String),
}

/// Runs the plugin's callback for an event on stream `token`.
pub(crate) type Deliver = Arc<dyn Fn(u32, GrpcEvent) + Send + Sync>;

/// The plugin's side of an open stream.
pub(crate) struct StreamHandle {
    /// The context that opened the stream: callbacks go to it.
    pub context: u32,
    /// `None` once the plugin half-closed (end_stream or `proxy_grpc_close`).
    outgoing: Option<mpsc::UnboundedSender<Bytes>>,
    task: tokio::task::AbortHandle,
}

impl StreamHandle {
    /// Queues a message; `false` when the plugin already half-closed the stream.
    pub(crate) fn send(&mut self, message: Bytes, end_stream: bool) -> bool {
        let Some(outgoing) = self.outgoing.as_ref() else {
            return false;
        };
        // A send error means the task ended; its Close event is already on the way.
        let _ = outgoing.send(message);
        if end_stream {
            self.outgoing = None;
        }
        true
    }

    /// Half-closes: no more messages from the plugin; replies keep coming until the server ends.
    pub(crate) fn close(&mut self) {
        self.outgoing = None;
    }
}

impl Drop for StreamHandle {
    /// A stream dropped with its VM or cancelled is reset: no further callbacks.
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Where a stream goes: the cluster's address, the `:authority` to send (the address when
/// `None`), its deadline (none when `None`) and the `/{service}/{method}` path.
pub(crate) struct Target {
    pub addr: SocketAddr,
    pub authority: Option<String>,
    pub timeout: Option<Duration>,
    pub path: PathAndQuery,
}

/// Opens the stream and returns the plugin's handle to it. Every outcome, a refused connection
/// included, ends in one `Close` event.
pub(crate) fn open(
    runtime: &tokio::runtime::Handle,
    target: Target,
    metadata: Vec<(String, String)>,
    token: u32,
    context: u32,
    deliver: Deliver,
) -> StreamHandle {
    let (tx, rx) = mpsc::unbounded_channel();
    let task = runtime.spawn(async move {
        // As Envoy: the deadline goes to the server as `grpc-timeout`, and the stream ends with
        // DeadlineExceeded when it passes, whatever the server does.
        let (code, message) = match target.timeout {
            Some(timeout) => {
                let stream = run(target, metadata, rx, token, &deliver);
                tokio::time::timeout(timeout, stream)
                    .await
                    .unwrap_or_else(|_| {
                        let code = tonic::Code::DeadlineExceeded as u32;
                        (code, format!("stream deadline of {timeout:?} exceeded"))
                    })
            }
            None => run(target, metadata, rx, token, &deliver).await,
        };
        deliver(token, GrpcEvent::Close(code, message));
    });
    StreamHandle {
        context,
        outgoing: Some(tx),
        task: task.abort_handle(),
    }
}

async fn run(
    target: Target,
    metadata: Vec<(String, String)>,
    rx: mpsc::UnboundedReceiver<Bytes>,
    token: u32,
    deliver: &Deliver,
) -> (u32, String) {
    let Target {
        addr,
        authority,
        timeout,
        path,
    } = target;
    let unavailable = |what: String| (tonic::Code::Unavailable as u32, what);
    let mut endpoint = match Endpoint::from_shared(format!("http://{addr}")) {
        Ok(endpoint) => endpoint,
        Err(e) => return unavailable(format!("bad address {addr}: {e}")),
    };
    if let Some(authority) = authority {
        match format!("http://{authority}").parse() {
            Ok(origin) => endpoint = endpoint.origin(origin),
            Err(e) => return unavailable(format!("bad authority {authority}: {e}")),
        }
    }
    let mut client = tonic::client::Grpc::new(endpoint.connect_lazy());
    if let Err(e) = client.ready().await {
        return unavailable(format!("connecting to {addr}: {e}"));
    }
    let mut request = tonic::Request::new(UnboundedReceiverStream::new(rx));
    *request.metadata_mut() = metadata_map(&metadata);
    if let Some(timeout) = timeout
        && let Ok(value) = MetadataValue::try_from(abi::grpc_timeout_header(timeout))
    {
        request.metadata_mut().insert("grpc-timeout", value);
    }
    let response = match client.streaming(request, path, RawCodec).await {
        Ok(response) => response,
        Err(status) => return closed_with(status, token, deliver),
    };
    deliver(
        token,
        GrpcEvent::InitialMetadata(pairs(response.metadata())),
    );
    let mut incoming = response.into_inner();
    loop {
        match incoming.message().await {
            Ok(Some(message)) => deliver(token, GrpcEvent::Message(message)),
            Ok(None) => break,
            Err(status) => return closed_with(status, token, deliver),
        }
    }
    match incoming.trailers().await {
        Ok(trailers) => {
            let trailers = trailers.map(|t| pairs(&t)).unwrap_or_default();
            deliver(token, GrpcEvent::TrailingMetadata(trailers));
            (0, String::new())
        }
        Err(status) => closed_with(status, token, deliver),
    }
}

fn closed_with(status: tonic::Status, token: u32, deliver: &Deliver) -> (u32, String) {
    let trailers = pairs(status.metadata());
    if !trailers.is_empty() {
        deliver(token, GrpcEvent::TrailingMetadata(trailers));
    }
    (status.code() as u32, status.message().to_string())
}

fn metadata_map(pairs: &[(String, String)]) -> MetadataMap {
    let mut map = MetadataMap::new();
    for (key, value) in pairs {
        match (
            MetadataKey::from_bytes(key.as_bytes()),
            MetadataValue::try_from(value.as_str()),
        ) {
            (Ok(key), Ok(value)) => {
                map.append(key, value);
            }
            _ => tracing::warn!(
                key,
                "gRPC initial metadata entry is not valid ASCII metadata; left out"
            ),
        }
    }
    map
}

fn pairs(map: &MetadataMap) -> Vec<(String, String)> {
    map.iter()
        .filter_map(|entry| match entry {
            KeyAndValueRef::Ascii(key, value) => {
                Some((key.to_string(), value.to_str().ok()?.to_string()))
            }
            KeyAndValueRef::Binary(..) => None,
        })
        .collect()
}

/// Passes message bodies through as bytes; tonic adds and strips the 5-byte gRPC frame header.
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Bytes;
    type Error = tonic::Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Bytes;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, tonic::Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}
