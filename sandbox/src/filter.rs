//! What the mesh needs from an HTTP filter, in Envoy's callback order: request headers (which
//! may rewrite them and clear the route cache), response headers, then the log with what the
//! request did; and [`Filters`], which filter runs on which listener. The proxy-wasm host
//! implements [`Filter`] for the real `.wasm` (see `wasm.rs`); tests may bring their own. Also
//! the Envoy response-flag bits the mesh reports. Only the contract: no host, no sockets.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// An HTTP filter the mesh runs on every request of a listener.
pub trait Filter: Send + Sync + 'static {
    /// Runs the request-headers callback. `headers` start with the pseudo headers
    /// (`:authority`, `:path`, `:method`, `:scheme`); the filter may change any of them.
    fn on_request_headers(&self, headers: &mut Vec<(String, String)>) -> Box<dyn FilterRequest>;
}

/// The filters a mesh runs: on the outbound proxy, and on inbound listeners by (destination
/// host, subset) as written in the config.
#[derive(Default, Clone)]
pub struct Filters {
    pub outbound: Option<Arc<dyn Filter>>,
    pub inbound: HashMap<(String, String), Arc<dyn Filter>>,
}

/// One request's filter context, from request headers to log.
pub trait FilterRequest: Send {
    /// Whether the filter asked the router to pick its route again (`clear_route_cache`).
    fn route_cache_cleared(&self) -> bool;
    /// Runs the response-headers callback; `headers` start with `:status`.
    fn on_response_headers(&mut self, headers: &mut Vec<(String, String)>);
    /// Runs the log callback and ends the context.
    fn on_log(self: Box<Self>, done: Completion);
}

/// What the proxy knows when a request completes (Envoy's stream info, as the filter reads it
/// through `request.duration`, `response.code`, `response.flags`, `xds.cluster_name`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Completion {
    pub duration: Duration,
    /// `None` when no response was produced.
    pub response_code: Option<u16>,
    pub response_flags: u64,
    pub grpc_status: Option<i32>,
    /// `outbound|port|subset|host` or `inbound|port||`; empty when no route was found.
    pub cluster_name: String,
}

/// Envoy's legacy response-flag bits (`source/common/stream_info` ResponseFlag) the mesh sets.
pub mod flags {
    /// UH: no healthy upstream (here: a subset with no backend address).
    pub const NO_HEALTHY_UPSTREAM: u64 = 0x2;
    /// UT: upstream request timeout (the route's `timeout`).
    pub const UPSTREAM_REQUEST_TIMEOUT: u64 = 0x4;
    /// UR: upstream remote reset.
    pub const UPSTREAM_REMOTE_RESET: u64 = 0x10;
    /// UF: upstream connection failure.
    pub const UPSTREAM_CONNECTION_FAILURE: u64 = 0x20;
    /// NR: no route configured.
    pub const NO_ROUTE_FOUND: u64 = 0x100;
}

/// The name of the gRPC status in a response's headers or trailers.
pub const GRPC_STATUS: &str = "grpc-status";
