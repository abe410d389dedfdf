//! The proxy-wasm adapter, and the only module that talks to the host (ABI 0.2.1). It reads the
//! host's buffers, headers and properties, calls the pure core ([`crate::config`],
//! [`crate::identity`], [`crate::routing`], [`crate::outcome`], [`crate::stats`],
//! [`crate::stream`]) and writes back what the core decided. It holds no policy of its own.
//!
//! The root context validates the configuration and resolves the filter's identity (node and
//! side, from `role` and the listener direction) once, owns the agent stream (driven from the
//! tick) and shares the parsed state with per-request contexts through an `Rc`. A request context
//! keeps only what it decided until `on_log`. Nothing here pauses or fails a request: every host
//! call's error is absorbed, and host calls go through `hostcalls` (which return `Result`)
//! rather than the trait helpers (which unwrap), or, for the property and header reads every
//! request makes, through `reads` (the ABI directly, without per-call allocations).

use std::cell::{Cell, RefCell};
use std::hash::{BuildHasher, RandomState};
use std::rc::Rc;
use std::time::{Duration, UNIX_EPOCH};

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{BufferType, ContextType, LogLevel, MetricType};

use crate::config::Config;
use crate::identity::{Direction, Identity, Side};
use crate::routing::{Rng, Table};
use crate::stats::Stats;
use crate::stream::{self, Link, Node, Received, Step};

mod reads;
mod request;

use request::Request;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root::new()) });
}}

// === shared state ===

/// What the root context and every request context of one VM share.
struct Shared {
    config: Config,
    /// The node and the side this root context's requests take, resolved in `on_configure`.
    identity: Identity,
    table: RefCell<Rc<Table>>,
    stats: RefCell<Stats>,
    rng: RefCell<Rng>,
    /// Per-request counts, added to the host's metrics on the next tick rather than with one
    /// host call per request.
    counts: Counts,
}

/// Per-request metric counts not yet handed to the host.
#[derive(Default)]
struct Counts {
    routed: Cell<u64>,
    recorded: Cell<u64>,
}

impl Counts {
    fn flush(&self, metrics: &Metrics) {
        Metrics::add(metrics.routed, self.routed.take());
        Metrics::add(metrics.recorded, self.recorded.take());
    }
}

/// Metric ids, defined once per VM in `on_vm_start`. A host without metrics leaves them `None`.
#[derive(Default)]
struct Metrics {
    routed: Option<u32>,
    recorded: Option<u32>,
    dropped: Option<u32>,
    reports: Option<u32>,
    stream_opens: Option<u32>,
    stream_failures: Option<u32>,
    table_revision: Option<u32>,
    rejected_tables: Option<u32>,
}

impl Metrics {
    fn define() -> Metrics {
        let counter = |name| hostcalls::define_metric(MetricType::Counter, name).ok();
        Metrics {
            routed: counter("fledge_filter_requests_routed"),
            recorded: counter("fledge_filter_requests_recorded"),
            dropped: counter("fledge_filter_samples_dropped"),
            reports: counter("fledge_filter_reports_sent"),
            stream_opens: counter("fledge_filter_stream_opens"),
            stream_failures: counter("fledge_filter_stream_failures"),
            table_revision: hostcalls::define_metric(
                MetricType::Gauge,
                "fledge_filter_table_revision",
            )
            .ok(),
            rejected_tables: counter("fledge_filter_tables_rejected"),
        }
    }

    fn add(id: Option<u32>, n: u64) {
        if let Some(id) = id
            && n > 0
        {
            let _ = hostcalls::increment_metric(id, i64::try_from(n).unwrap_or(i64::MAX));
        }
    }

    fn set(id: Option<u32>, value: u64) {
        if let Some(id) = id {
            let _ = hostcalls::record_metric(id, value);
        }
    }
}

// === host reads ===

fn log(level: LogLevel, message: &str) {
    let _ = hostcalls::log(level, message);
}

fn now_ms() -> u64 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// An integer property: 8 bytes, little endian. `path` is serialized (tokens joined by NUL).
fn property_i64(path: &[u8]) -> Option<i64> {
    let bytes = reads::property(path)?;
    let raw: [u8; 8] = bytes.get(..8)?.try_into().ok()?;
    Some(i64::from_le_bytes(raw))
}

fn property_string(path: &[u8]) -> Option<String> {
    String::from_utf8(reads::property(path)?)
        .ok()
        .filter(|s| !s.is_empty())
}

/// A node property under `xds.node`, falling back to the older top-level `node`.
fn node_property(path: &[&str]) -> Option<String> {
    let serialize = |prefix: &[&str]| {
        prefix
            .iter()
            .chain(path)
            .copied()
            .collect::<Vec<_>>()
            .join("\0")
    };
    property_string(serialize(&["xds", "node"]).as_bytes())
        .or_else(|| property_string(serialize(&["node"]).as_bytes()))
}

/// The direction of the listener this plugin is configured on; `None` when unknown.
fn listener_direction() -> Option<Direction> {
    property_i64(b"listener_direction").and_then(Direction::from_envoy)
}

/// A random `u64` from the host's entropy (WASI `random_get`, through std's hasher seeding).
fn random_u64() -> u64 {
    RandomState::new().hash_one(now_ms())
}

// === root context ===

struct Root {
    shared: Option<Rc<Shared>>,
    metrics: Metrics,
    link: Link,
    upstream: String,
    worker: u32,
}

impl Root {
    fn new() -> Root {
        Root {
            shared: None,
            metrics: Metrics::default(),
            link: Link::new(1000),
            upstream: String::new(),
            worker: u32::try_from(random_u64() >> 32).unwrap_or(0),
        }
    }

    fn connect(&mut self, shared: &Shared, now: u64) {
        let token = match hostcalls::open_grpc_stream(
            &self.upstream,
            stream::SERVICE,
            stream::METHOD,
            vec![],
        ) {
            Ok(token) => token,
            Err(status) => {
                self.link.failed(now);
                Metrics::add(self.metrics.stream_failures, 1);
                log(
                    LogLevel::Warn,
                    &format!("fledge: cannot open the agent stream: {status:?}; will retry"),
                );
                return;
            }
        };
        Metrics::add(self.metrics.stream_opens, 1);
        self.link.opened(token, now);
        let revision = shared.table.borrow().revision;
        let identity = &shared.identity;
        let hello = stream::hello(
            &identity.node,
            identity.side.hello_role(),
            self.worker,
            revision,
        );
        if hostcalls::send_grpc_stream_message(token, Some(&hello), false).is_err() {
            self.drop_stream(token, now);
        }
    }

    fn report(&mut self, shared: &Shared, token: u32, now: u64) {
        let Ok(mut stats) = shared.stats.try_borrow_mut() else {
            return;
        };
        let delta = stats.take(i64::try_from(now).unwrap_or(i64::MAX));
        let seq = self.link.next_seq();
        let dropped = delta.dropped;
        let message = stream::report(delta.to_report(seq));
        if hostcalls::send_grpc_stream_message(token, Some(&message), false).is_ok() {
            self.link.reported(now);
            Metrics::add(self.metrics.reports, 1);
            Metrics::add(self.metrics.dropped, dropped);
        } else {
            // Keep the counts for the next stream; the number goes unused.
            stats.restore(delta);
            self.link.unsent_seq();
            drop(stats);
            self.drop_stream(token, now);
        }
    }

    fn drop_stream(&mut self, token: u32, now: u64) {
        let _ = hostcalls::cancel_grpc_stream(token);
        self.link.closed(token, now);
        Metrics::add(self.metrics.stream_failures, 1);
    }
}

impl Context for Root {
    fn on_grpc_stream_initial_metadata(&mut self, token_id: u32, _num_elements: u32) {
        self.link.heard(token_id);
    }

    fn on_grpc_stream_message(&mut self, token_id: u32, message_size: usize) {
        self.link.heard(token_id);
        let Some(shared) = self.shared.clone() else {
            return;
        };
        let bytes = hostcalls::get_buffer(BufferType::GrpcReceiveBuffer, 0, message_size)
            .ok()
            .flatten()
            .unwrap_or_default();
        let Ok(mut table) = shared.table.try_borrow_mut() else {
            return;
        };
        match stream::receive(&bytes, table.revision, &shared.config.defaults) {
            Ok(Received::Table(new)) => {
                let revision = new.revision;
                *table = Rc::new(new);
                Metrics::set(self.metrics.table_revision, revision);
                log(
                    LogLevel::Info,
                    &format!("fledge: routing table revision {revision} applied"),
                );
            }
            Ok(Received::Stale { .. } | Received::Nothing) => {}
            Err(e) => {
                Metrics::add(self.metrics.rejected_tables, 1);
                log(
                    LogLevel::Warn,
                    &format!("fledge: agent message refused, table unchanged: {e}"),
                );
            }
        }
    }

    fn on_grpc_stream_close(&mut self, token_id: u32, status_code: u32) {
        if self.link.closed(token_id, now_ms()) {
            let message = hostcalls::get_grpc_status()
                .ok()
                .and_then(|(_, message)| message)
                .unwrap_or_default();
            log(
                LogLevel::Warn,
                &format!(
                    "fledge: agent stream closed (grpc status {status_code} {message}); will reconnect"
                ),
            );
        }
    }
}

impl RootContext for Root {
    fn on_vm_start(&mut self, _vm_configuration_size: usize) -> bool {
        self.metrics = Metrics::define();
        true
    }

    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let bytes = hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX)
            .ok()
            .flatten()
            .unwrap_or_default();
        let config = match Config::parse(&bytes) {
            Ok(config) => config,
            Err(e) => {
                log(
                    LogLevel::Error,
                    &format!("fledge: invalid plugin configuration: {e}"),
                );
                return false;
            }
        };
        let upstream = stream::upstream(&config.agent);
        self.upstream = String::from_utf8(upstream).unwrap_or_else(|_| {
            log(
                LogLevel::Warn,
                "fledge: agent.authority/timeout_ms cannot be passed to this host; using the cluster name",
            );
            config.agent.cluster.clone()
        });
        let node = Node {
            proxy_id: node_property(&["id"]).unwrap_or_default(),
            workload: node_property(&["metadata", "WORKLOAD_NAME"]).unwrap_or_default(),
            namespace: node_property(&["metadata", "NAMESPACE"]).unwrap_or_default(),
            version_label: node_property(&["metadata", "LABELS", "version"]).unwrap_or_default(),
        };
        let identity = Identity::new(node, config.role, listener_direction());
        if identity.side == Side::ClientByDefault {
            log(
                LogLevel::Warn,
                "fledge: role auto, but the listener direction is unknown; acting as the client (set role to client or server)",
            );
        }
        // A new configuration starts a new stream (the old one may name another agent).
        if let Some(token) = self.link.token() {
            let _ = hostcalls::cancel_grpc_stream(token);
        }
        self.link.restart(config.report_interval_ms);
        let period = Duration::from_millis(config.report_interval_ms);
        let _ = hostcalls::set_tick_period(period);
        let now = i64::try_from(now_ms()).unwrap_or(0);
        // What the previous configuration recorded and has not reported yet carries over.
        let mut stats = Stats::new(config.max_series, now);
        if let Some(old) = &self.shared {
            old.counts.flush(&self.metrics);
            if let Ok(mut old) = old.stats.try_borrow_mut() {
                stats.restore(old.take(now));
            }
        }
        Metrics::set(self.metrics.table_revision, config.table.revision);
        let side = identity.side;
        self.shared = Some(Rc::new(Shared {
            table: RefCell::new(Rc::new(config.table.clone())),
            stats: RefCell::new(stats),
            rng: RefCell::new(Rng::new(random_u64())),
            identity,
            counts: Counts::default(),
            config,
        }));
        log(
            LogLevel::Info,
            &format!(
                "fledge: configured; agent cluster {}, role {:?}",
                self.upstream_name(),
                side
            ),
        );
        true
    }

    fn on_tick(&mut self) {
        let Some(shared) = self.shared.clone() else {
            return;
        };
        shared.counts.flush(&self.metrics);
        let now = now_ms();
        match self.link.poll(now) {
            Step::Connect => self.connect(&shared, now),
            Step::Report(token) => self.report(&shared, token, now),
            Step::Wait => {}
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Request::new(self.shared.clone())))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

impl Root {
    fn upstream_name(&self) -> &str {
        self.shared
            .as_ref()
            .map_or("", |s| s.config.agent.cluster.as_str())
    }
}
