//! fledge's proxy-wasm host: runs any proxy-wasm ABI 0.2.1 module (fledge's filter above all) on
//! wasmtime with WASI preview 1, with Envoy's semantics, so the sandbox mesh and the tests run the
//! real `.wasm` without Envoy.
//!
//! Like Envoy, the module is compiled once and instantiated once per worker (one VM each, behind
//! a mutex); requests go to the VMs round robin. Each VM gets its root context, `on_vm_start`,
//! `on_configure`, its own tick task, and its own gRPC streams bridged to real gRPC servers over
//! HTTP/2. A trap fails open: the request goes on unfiltered and that VM is recreated.
//!
//! This crate is not an HTTP proxy (the sandbox mesh is) and holds no routing policy: it only
//! carries calls between the proxy and the module.

mod abi;
pub mod bench;
mod grpc;
mod host;
mod imports;
mod program;
mod properties;
mod quirks;
mod state;
mod vm;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use host::{FilterHost, RequestHandle};
pub use quirks::{HostQuirks, PropertyForm};

/// Everything a host needs to run one plugin.
#[derive(Debug, Clone)]
pub struct HostConfig {
    /// The `.wasm` module.
    pub module: PathBuf,
    /// Bytes of the PluginConfiguration buffer (read by `on_configure`).
    pub plugin_config: String,
    /// Bytes of the VmConfiguration buffer (read by `on_vm_start`); may be empty.
    pub vm_config: String,
    /// One VM per worker, as Envoy runs one per worker thread.
    pub workers: usize,
    /// The proxy's identity, answered under `xds.node.*` and `node.*`.
    pub node: NodeInfo,
    /// Answered as `listener_direction`.
    pub direction: ListenerDirection,
    /// gRPC upstreams by Envoy cluster name (the `upstream` of `proxy_grpc_stream`), over h2c.
    pub clusters: HashMap<String, SocketAddr>,
}

impl HostConfig {
    /// A config for `module` with two workers, an empty node and the outbound direction.
    pub fn new(module: impl Into<PathBuf>, plugin_config: impl Into<String>) -> Self {
        Self {
            module: module.into(),
            plugin_config: plugin_config.into(),
            vm_config: String::new(),
            workers: 2,
            node: NodeInfo::default(),
            direction: ListenerDirection::Outbound,
            clusters: HashMap::new(),
        }
    }
}

/// The Envoy node the plugin believes it runs in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeInfo {
    /// `xds.node.id`, e.g. `sidecar~10.0.0.7~reviews-v1-7d9c.shop~shop.svc.cluster.local`.
    pub id: String,
    /// `xds.node.metadata.WORKLOAD_NAME`.
    pub workload: String,
    /// `xds.node.metadata.NAMESPACE`.
    pub namespace: String,
    /// `xds.node.metadata.LABELS.<name>`.
    pub labels: BTreeMap<String, String>,
}

/// Which listener the filter runs on (property `listener_direction`: 1 inbound, 2 outbound).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ListenerDirection {
    Inbound,
    #[default]
    Outbound,
}

impl ListenerDirection {
    fn envoy_code(self) -> i64 {
        match self {
            Self::Inbound => 1,
            Self::Outbound => 2,
        }
    }
}

/// What the proxy knows when a request completes; read by the filter in `on_log`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogInfo {
    /// `request.duration`.
    pub duration: Duration,
    /// `response.code`; `None` when no response came (reset, connection failure).
    pub response_code: Option<u16>,
    /// `response.flags`: Envoy's legacy ResponseFlag bits (0x4 UT, 0x20 UF, 0x10 UR, ...).
    pub response_flags: u64,
    /// The `grpc-status` the response carried (trailers, else headers); `None` when it had none.
    /// `response.grpc_status` answers this, else (as Envoy) a status inferred from the HTTP code.
    pub grpc_status: Option<i32>,
    /// `xds.cluster_name`: `outbound|port|subset|host` or `inbound|port||`.
    pub cluster_name: String,
}

/// Counters of one host since `start`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostStats {
    /// Requests given to `on_request_headers`.
    pub requests: u64,
    /// Callbacks that trapped (each failed open).
    pub traps: u64,
    /// VMs recreated after a trap.
    pub vm_restarts: u64,
    /// Calls to imports this host does not implement (each answered Unimplemented).
    pub unimplemented_calls: u64,
    /// Names of those imports, each logged once.
    pub unimplemented_imports: Vec<String>,
    /// `proxy_get_property` calls answered NotFound (a path this host does not have, or a value
    /// the request does not have, such as `response.code` of a reset).
    pub property_misses: u64,
    /// Host calls answered with a status [`HostQuirks::every_status`] chose instead of being
    /// carried out.
    pub injected_statuses: u64,
    /// VMs whose plugin set a tick period (and so gets `proxy_on_tick`).
    pub ticking: usize,
    /// HTTP contexts alive in the VMs: requests handed out and not yet logged or dropped.
    pub open_contexts: usize,
    /// Current values of the metrics the plugin defined, by name.
    pub metrics: BTreeMap<String, i64>,
}

/// Why a host could not start.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("reading wasm module {path}: {source}")]
    ReadModule {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("compiling wasm module {path}: {message}")]
    Compile { path: PathBuf, message: String },
    #[error("linking wasm module {path}: {message}")]
    Link { path: PathBuf, message: String },
    #[error(
        "wasm module {path} does not export `{export}` as proxy-wasm ABI 0.2.1 needs: {message}"
    )]
    Export {
        path: PathBuf,
        export: &'static str,
        message: String,
    },
    #[error("VM {vm}: {phase} trapped: {message}")]
    Trap {
        vm: usize,
        phase: &'static str,
        message: String,
    },
    #[error("VM {vm}: the plugin refused its {what} ({callback} returned false); its log: {log}")]
    Refused {
        vm: usize,
        what: &'static str,
        callback: &'static str,
        log: String,
    },
    #[error("HostConfig.workers must be at least 1")]
    NoWorkers,
    #[error("wasm module {path} not found (set {env}, or run `./dev wasm` to build it)")]
    ModuleMissing { path: PathBuf, env: &'static str },
}

/// Results of this crate.
pub type Result<T, E = HostError> = std::result::Result<T, E>;
