//! What a VM's store holds between host calls: the per-request contexts with their header maps,
//! the gRPC streams and their receive-side data, the tick period, captured log lines; and what
//! all VMs of one host share: configuration, metrics and counters.
//!
//! Plain data with small accessors; the meaning of each ABI call lives in `abi.rs` and
//! `properties.rs`, the wasm plumbing in `imports.rs`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use wasmtime::{Memory, TypedFunc};
use wasmtime_wasi::p1::WasiP1Ctx;

use crate::abi::{MetricKind, Status};
use crate::grpc::{Deliver, StreamHandle};
use crate::quirks::{Faults, HostQuirks};
use crate::{HostConfig, LogInfo};

/// Lines kept from a VM's start, so a refused configuration can be reported in the plugin's words.
const CAPTURED_LINES: usize = 64;

/// Everything the VMs of one host share.
pub(crate) struct Shared {
    pub config: HostConfig,
    /// How this host departs from Envoy's answers (none by default).
    pub quirks: HostQuirks,
    /// The PluginConfiguration and VmConfiguration buffers, shared without copying.
    pub plugin_config: Bytes,
    pub vm_config: Bytes,
    pub runtime: tokio::runtime::Handle,
    pub metrics: Mutex<Metrics>,
    pub requests: AtomicU64,
    pub traps: AtomicU64,
    pub vm_restarts: AtomicU64,
    pub unimplemented_calls: AtomicU64,
    pub unimplemented_imports: Mutex<BTreeSet<String>>,
    pub property_misses: AtomicU64,
    /// Host calls answered with a status the quirks chose instead of being carried out.
    pub injected_statuses: AtomicU64,
}

impl Shared {
    pub(crate) fn new(
        config: HostConfig,
        quirks: HostQuirks,
        runtime: tokio::runtime::Handle,
    ) -> Self {
        Self {
            quirks,
            plugin_config: Bytes::from(config.plugin_config.clone().into_bytes()),
            vm_config: Bytes::from(config.vm_config.clone().into_bytes()),
            config,
            runtime,
            metrics: Mutex::default(),
            requests: AtomicU64::new(0),
            traps: AtomicU64::new(0),
            vm_restarts: AtomicU64::new(0),
            unimplemented_calls: AtomicU64::new(0),
            unimplemented_imports: Mutex::default(),
            property_misses: AtomicU64::new(0),
            injected_statuses: AtomicU64::new(0),
        }
    }

    /// Counts a call to an import this host does not implement; logs the name the first time.
    pub(crate) fn unimplemented(&self, name: &str) {
        self.unimplemented_calls.fetch_add(1, Ordering::Relaxed);
        let mut seen = self
            .unimplemented_imports
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if seen.insert(name.to_string()) {
            tracing::warn!(
                import = name,
                "proxy-wasm call not implemented by this host; answered Unimplemented"
            );
        }
    }
}

/// Metrics defined by the plugin, shared by all VMs as Envoy's stats scope is: defining a name
/// twice returns the same id.
#[derive(Default)]
pub(crate) struct Metrics {
    by_name: HashMap<String, u32>,
    entries: Vec<(String, MetricKind, i64)>,
}

impl Metrics {
    pub(crate) fn define(&mut self, kind: MetricKind, name: String) -> u32 {
        if let Some(id) = self.by_name.get(&name) {
            return *id;
        }
        let id = self.entries.len() as u32;
        self.entries.push((name.clone(), kind, 0));
        self.by_name.insert(name, id);
        id
    }

    /// `proxy_increment_metric`, as Envoy: a counter only goes up (a zero or negative offset is
    /// BadArgument), a gauge moves both ways, a histogram cannot be incremented.
    pub(crate) fn increment(&mut self, id: u32, offset: i64) -> Result<(), Status> {
        let (_, kind, value) = self.entries.get_mut(id as usize).ok_or(Status::NotFound)?;
        match kind {
            MetricKind::Counter if offset <= 0 => Err(Status::BadArgument),
            MetricKind::Histogram => Err(Status::BadArgument),
            _ => {
                *value = value.saturating_add(offset);
                Ok(())
            }
        }
    }

    /// `proxy_record_metric`, as Envoy: a counter adds the value, a gauge takes it, a histogram
    /// records it (kept here as its last sample).
    pub(crate) fn record(&mut self, id: u32, sample: u64) -> Result<(), Status> {
        let (_, kind, value) = self.entries.get_mut(id as usize).ok_or(Status::NotFound)?;
        let sample = i64::try_from(sample).unwrap_or(i64::MAX);
        *value = match kind {
            MetricKind::Counter => value.saturating_add(sample),
            MetricKind::Gauge | MetricKind::Histogram => sample,
        };
        Ok(())
    }

    pub(crate) fn get(&self, id: u32) -> Result<i64, Status> {
        match self.entries.get(id as usize) {
            Some((_, MetricKind::Histogram, _)) => Err(Status::BadArgument),
            Some((_, _, value)) => Ok(*value),
            None => Err(Status::NotFound),
        }
    }

    pub(crate) fn snapshot(&self) -> BTreeMap<String, i64> {
        self.entries
            .iter()
            .map(|(n, _, v)| (n.clone(), *v))
            .collect()
    }
}

/// One HTTP request's context inside a VM.
#[derive(Default)]
pub(crate) struct HttpContext {
    pub start_unix_ns: i64,
    pub request_headers: Vec<(String, String)>,
    pub response_headers: Vec<(String, String)>,
    pub log: Option<LogInfo>,
    pub route_cache_cleared: bool,
}

/// The receive side of the gRPC callback being delivered, and the open streams.
#[derive(Default)]
pub(crate) struct GrpcState {
    pub next_token: u32,
    pub open: HashMap<u32, StreamHandle>,
    pub receive_buffer: Bytes,
    pub initial_metadata: Vec<(String, String)>,
    pub trailing_metadata: Vec<(String, String)>,
    /// The last close status (code, message), as `proxy_get_status` reads it; the message is
    /// cleared after the close callback, as Envoy does.
    pub status: (u32, String),
}

/// The data of one VM's wasmtime store.
pub(crate) struct VmState {
    pub wasi: WasiP1Ctx,
    pub shared: std::sync::Arc<Shared>,
    pub vm: usize,
    pub memory: Option<Memory>,
    /// `proxy_on_memory_allocate` (or `malloc`); shared so a host call can call it cheaply.
    pub malloc: Option<std::sync::Arc<TypedFunc<u32, u32>>>,
    pub root_id: u32,
    /// The context whose callback is running (`proxy_set_effective_context` may change it).
    pub current: u32,
    pub contexts: rustc_hash::FxHashMap<u32, HttpContext>,
    pub grpc: GrpcState,
    pub deliver: Deliver,
    pub tick: tokio::sync::watch::Sender<Duration>,
    pub captured: Option<Vec<String>>,
    /// This VM's place in each call's statuses, with [`HostQuirks::every_status`].
    pub faults: Option<Faults>,
    /// Properties answered so far, for [`crate::PropertyForm::Mixed`].
    pub properties_answered: u64,
}

impl VmState {
    pub(crate) fn capture(&mut self, line: &str) {
        if let Some(lines) = self.captured.as_mut()
            && lines.len() < CAPTURED_LINES
        {
            lines.push(line.to_string());
        }
    }

    pub(crate) fn http(&mut self) -> Option<&mut HttpContext> {
        self.contexts.get_mut(&self.current)
    }
}
