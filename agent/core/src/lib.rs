//! fledge's pure core: every decision the agent makes, as values in and values out.
//!
//! - `rollout`: the `Rollout` object (spec, validation, status), its strategy compiled into a
//!   plan, the state machine that walks it, and people's commands;
//! - `analysis`: canary against baseline, sequential tests, verdicts and evidence;
//! - `windows`: the filters' reports merged into per-second windows per series;
//! - `judge`: feeds a step's settled seconds to its analysis and looks at every interval;
//! - `routes`: the VirtualService and the filters' `HostRoute` for a routing intent;
//! - `planner`: one rollout's tick — judgment, commands and time in; status, routing to apply
//!   and events out;
//! - `metric`: metric gates, numbers read from Prometheus held against bounds;
//! - `lease`: leader election over a Kubernetes Lease, as decisions on its fields;
//! - `key`: object names.
//!
//! What it is not: it does no I/O, keeps no clock and holds no lock. Its `Cargo.toml` lists no
//! tokio, tonic, axum, hyper or Kubernetes client, so an adapter's concern cannot creep in; the
//! agent (`fledge-agent`) reads, writes and serves around it.

pub mod analysis;
pub mod judge;
pub mod key;
pub mod lease;
pub mod metric;
pub mod planner;
pub mod rollout;
pub mod routes;
pub mod windows;

pub use key::ObjectKey;
