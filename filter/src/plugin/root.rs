//! The root context: reads and checks the configuration in `on_configure`, resolves the filter's
//! identity, owns the agent stream ([`crate::stream::Link`]) and drives it from the tick, and
//! applies the routing tables the agent sends. Every host call's failure is absorbed: a stream
//! that cannot be opened or written is retried with backoff, counts that could not be sent are
//! kept for the next report.

use std::cell::RefCell;
use std::rc::Rc;

use crate::config::Config;
use crate::identity::{Direction, Identity, Side};
use crate::routing::Rng;
use crate::stats::Stats;
use crate::stream::{self, Link, Node, Received, Step};

use super::abi::{self, LogLevel};
use super::{Counts, Metrics, Shared, absorb, log, now_ms, property_integer, property_string};

pub(super) struct Root {
    shared: Option<Rc<Shared>>,
    metrics: Metrics,
    link: Link,
    /// `proxy_grpc_stream`'s upstream: the cluster name or a serialized GrpcService, as bytes.
    upstream: Vec<u8>,
    worker: u32,
    /// The host's clock at the last reading, kept for when it does not answer.
    clock_ms: u64,
}

impl Root {
    pub(super) fn new() -> Root {
        Root {
            shared: None,
            metrics: Metrics::default(),
            link: Link::new(1000),
            upstream: Vec::new(),
            worker: u32::try_from(super::random_u64() >> 32).unwrap_or(0),
            clock_ms: 0,
        }
    }

    /// The state this root context's requests share, once configured.
    pub(super) fn shared(&self) -> Option<Rc<Shared>> {
        self.shared.clone()
    }

    /// Whether `token` is this root context's open agent stream.
    pub(super) fn holds(&self, token: u32) -> bool {
        self.link.token() == Some(token)
    }

    fn now(&mut self) -> u64 {
        if let Some(now) = now_ms() {
            self.clock_ms = now;
        }
        self.clock_ms
    }

    pub(super) fn on_vm_start(&mut self) -> bool {
        self.metrics = Metrics::define();
        true
    }

    pub(super) fn on_configure(&mut self, size: usize) -> bool {
        // A host that does not say the size gets asked for everything there is.
        let max = if size == 0 { usize::MAX } else { size };
        let bytes = match abi::buffer(abi::PLUGIN_CONFIGURATION, 0, max) {
            Ok(bytes) => bytes,
            Err(status) => {
                super::failed(status);
                log(
                    LogLevel::Error,
                    &format!(
                        "fledge: the host did not hand over the plugin configuration (host status {}); not starting",
                        status.0
                    ),
                );
                return false;
            }
        };
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
        self.upstream = stream::upstream(&config.agent);
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
            // A stream the host no longer knows is gone anyway.
            let _ = abi::grpc_cancel(token);
        }
        self.link.restart(config.report_interval_ms);
        let period = u32::try_from(config.report_interval_ms).unwrap_or(u32::MAX);
        if absorb(abi::set_tick_period_ms(period)).is_none() {
            log(
                LogLevel::Error,
                "fledge: the host refused a tick period; nothing will be reported to the agent",
            );
        }
        let now = i64::try_from(self.now()).unwrap_or(0);
        // What the previous configuration recorded and has not reported yet carries over.
        let mut stats = Stats::new(config.max_series, now);
        if let Some(old) = &self.shared {
            self.metrics.flush(&old.counts);
            if let Ok(mut old) = old.stats.try_borrow_mut() {
                stats.restore(old.take(now));
            }
        }
        Metrics::set(self.metrics.table_revision, config.table.revision);
        let side = identity.side;
        let cluster = config.agent.cluster.clone();
        self.shared = Some(Rc::new(Shared {
            table: RefCell::new(Rc::new(config.table.clone())),
            stats: RefCell::new(stats),
            rng: RefCell::new(Rng::new(super::random_u64())),
            identity,
            counts: Counts::default(),
            config,
        }));
        log(
            LogLevel::Info,
            &format!("fledge: configured; agent cluster {cluster}, role {side:?}"),
        );
        true
    }

    pub(super) fn on_tick(&mut self) {
        let Some(shared) = self.shared.clone() else {
            return;
        };
        self.metrics.flush(&shared.counts);
        let now = self.now();
        match self.link.poll(now) {
            Step::Connect => self.connect(&shared, now),
            Step::Report(token) => self.report(&shared, token, now),
            Step::Wait => {}
        }
    }

    fn connect(&mut self, shared: &Shared, now: u64) {
        let token = match abi::grpc_stream(&self.upstream, stream::SERVICE, stream::METHOD) {
            Ok(token) => token,
            Err(status) => {
                self.link.failed(now);
                Metrics::add(self.metrics.stream_failures, 1);
                log(
                    LogLevel::Warn,
                    &format!(
                        "fledge: cannot open the agent stream (host status {}); will retry",
                        status.0
                    ),
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
        if abi::grpc_send(token, &hello, false).is_err() {
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
        if abi::grpc_send(token, &message, false).is_ok() {
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

    /// Gives up a stream the host would not write to; the link reconnects after its backoff.
    fn drop_stream(&mut self, token: u32, now: u64) {
        // Whatever the host answers, the filter no longer uses this token.
        let _ = abi::grpc_cancel(token);
        self.link.closed(token, now);
        Metrics::add(self.metrics.stream_failures, 1);
    }

    pub(super) fn on_grpc_heard(&mut self, token: u32) {
        self.link.heard(token);
    }

    pub(super) fn on_grpc_message(&mut self, token: u32, size: usize) {
        self.link.heard(token);
        let Some(shared) = self.shared.clone() else {
            return;
        };
        let Some(bytes) = absorb(abi::buffer(abi::GRPC_RECEIVE_BUFFER, 0, size)) else {
            return;
        };
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

    pub(super) fn on_grpc_close(&mut self, token: u32, status_code: u32) {
        let now = self.now();
        let message = absorb(abi::grpc_status())
            .map(|(_, message)| message)
            .unwrap_or_default();
        // A standby or stopping replica says so; the next tick reaches another one.
        if fledge_proto::is_replica_refusal(status_code, &message) {
            if self.link.refused(token, now) {
                Metrics::add(self.metrics.stream_refusals, 1);
            }
            return;
        }
        if self.link.closed(token, now) {
            let message = String::from_utf8_lossy(&message);
            log(
                LogLevel::Warn,
                &format!(
                    "fledge: agent stream closed (grpc status {status_code} {message}); will reconnect"
                ),
            );
        }
    }
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
    property_integer(b"listener_direction").and_then(Direction::from_envoy)
}
