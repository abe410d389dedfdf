//! The proxy-wasm adapter, and the only module that talks to the host (ABI 0.2.1). It reads the
//! host's buffers, headers and properties, calls the pure core ([`crate::config`],
//! [`crate::identity`], [`crate::routing`], [`crate::outcome`], [`crate::stats`],
//! [`crate::stream`]) and writes back what the core decided. It holds no policy of its own.
//!
//! The root context ([`root`]) validates the configuration and resolves the filter's identity
//! (node and side, from `role` and the listener direction) once, owns the agent stream (driven
//! from the tick) and shares the parsed state with per-request contexts ([`request`]) through an
//! `Rc`. A request context keeps only what it decided until `on_log`. [`contexts`] hands each
//! callback to the context it names.
//!
//! Nothing here pauses or fails a request, and no host answer can panic: every host call goes
//! through [`abi`] (the ABI directly, no SDK), returns the host's status, and is absorbed here.
//! A status that means the host did not do what was asked is counted in
//! `fledge_filter_host_call_failures` (NOT_FOUND from a read is an ordinary answer and is not).

use std::cell::{Cell, RefCell};
use std::hash::{BuildHasher, RandomState};
use std::rc::Rc;

use crate::config::Config;
use crate::identity::Identity;
use crate::routing::{Rng, Table};
use crate::stats::Stats;

mod abi;
mod contexts;
mod request;
mod root;

use abi::{Answer, LogLevel, Status};

// === shared state ===

/// What the root context and every request context of one configuration share.
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
    unmeasured: Cell<u64>,
}

impl Counts {
    fn flush(&self, metrics: &Metrics) {
        Metrics::add(metrics.routed, self.routed.take());
        Metrics::add(metrics.recorded, self.recorded.take());
        Metrics::add(metrics.unmeasured, self.unmeasured.take());
    }
}

/// Metric ids, defined once per root context in `on_vm_start`. A metric the host refuses to
/// define stays `None` and is not counted.
#[derive(Default)]
struct Metrics {
    routed: Option<u32>,
    recorded: Option<u32>,
    unmeasured: Option<u32>,
    dropped: Option<u32>,
    reports: Option<u32>,
    stream_opens: Option<u32>,
    stream_failures: Option<u32>,
    /// Streams an agent replica refused or ended as a standby or while stopping.
    stream_refusals: Option<u32>,
    table_revision: Option<u32>,
    rejected_tables: Option<u32>,
    host_call_failures: Option<u32>,
}

impl Metrics {
    fn define() -> Metrics {
        let define = |kind, name| absorb(abi::define_metric(kind, name));
        let counter = |name| define(abi::COUNTER, name);
        Metrics {
            routed: counter("fledge_filter_requests_routed"),
            recorded: counter("fledge_filter_requests_recorded"),
            unmeasured: counter("fledge_filter_requests_unmeasured"),
            dropped: counter("fledge_filter_samples_dropped"),
            reports: counter("fledge_filter_reports_sent"),
            stream_opens: counter("fledge_filter_stream_opens"),
            stream_failures: counter("fledge_filter_stream_failures"),
            stream_refusals: counter("fledge_filter_stream_refusals"),
            table_revision: define(abi::GAUGE, "fledge_filter_table_revision"),
            rejected_tables: counter("fledge_filter_tables_rejected"),
            host_call_failures: counter("fledge_filter_host_call_failures"),
        }
    }

    /// Adds what the VM counted since the last flush (host call failures included).
    fn flush(&self, counts: &Counts) {
        counts.flush(self);
        Metrics::add(self.host_call_failures, FAILED_CALLS.with(Cell::take));
    }

    /// Adds `n` to a counter. A refused increment is not counted as a failure: there would be
    /// nowhere left to report it.
    fn add(id: Option<u32>, n: u64) {
        if let Some(id) = id
            && n > 0
        {
            let _ = abi::increment_metric(id, i64::try_from(n).unwrap_or(i64::MAX));
        }
    }

    fn set(id: Option<u32>, value: u64) {
        if let Some(id) = id {
            let _ = abi::record_metric(id, value);
        }
    }
}

// === host calls ===

thread_local! {
    /// Host calls answered with a status other than the ones the caller expects, since the last
    /// flush into `fledge_filter_host_call_failures`.
    static FAILED_CALLS: Cell<u64> = const { Cell::new(0) };
}

/// Counts one host call the host did not carry out.
fn failed(_status: Status) {
    FAILED_CALLS.with(|n| n.set(n.get().saturating_add(1)));
}

/// The value of a host call that should succeed; a failure is counted and becomes `None`.
fn absorb<T>(answer: Answer<T>) -> Option<T> {
    answer.map_err(failed).ok()
}

/// The value of a host read, where NOT_FOUND is an ordinary answer (no such value) and any
/// other failure is counted; both become `None`.
fn read<T>(answer: Answer<T>) -> Option<T> {
    match answer {
        Ok(value) => Some(value),
        Err(Status::NOT_FOUND) => None,
        Err(status) => {
            failed(status);
            None
        }
    }
}

fn log(level: LogLevel, message: &str) {
    absorb(abi::log(level, message));
}

/// The host's clock in milliseconds since the epoch; `None` when the host does not answer.
fn now_ms() -> Option<u64> {
    absorb(abi::current_time_ns()).map(|ns| ns / 1_000_000)
}

/// An integer property, as Envoy's 8 bytes or as ASCII decimal ([`crate::property::integer`]).
/// `path` is serialized (tokens joined by NUL).
fn property_integer(path: &[u8]) -> Option<i64> {
    crate::property::integer(&read(abi::property(path))?)
}

fn property_string(path: &[u8]) -> Option<String> {
    String::from_utf8(read(abi::property(path))?)
        .ok()
        .filter(|s| !s.is_empty())
}

/// A random `u64` from the host's entropy (WASI `random_get`, through std's hasher seeding).
fn random_u64() -> u64 {
    RandomState::new().hash_one(now_ms().unwrap_or(0))
}
