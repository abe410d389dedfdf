//! Metric gates: numbers read from Prometheus (a canary's CPU, a business KPI such as the
//! delivery success rate) held against a bound, as `spec.analysis.metrics[]` asks. The agent runs
//! the queries on its own time; this module says what to ask and what an answer means:
//!
//! - `spec`: the settings of one gate ([`MetricGate`]), their defaults and their validation;
//! - `query`: the PromQL as sent, with `{{canary}}`, `{{stable}}`, `{{namespace}}` and
//!   `{{version}}` filled in, per arm;
//! - `decide`: one look's values, the bound and the run of query errors so far → a
//!   [`GateState`](crate::rollout::GateState) and the evidence the status shows.
//!
//! Pure: values in, values out. What it is not: it speaks no HTTP and keeps no clock; an empty
//! answer or NaN is never a failure by itself, and a query error fails only once errors have
//! lasted `failAfter`.

mod decide;
mod query;
mod spec;

pub use decide::{ErrorRun, Look, Sample, decide, next_look_after};
pub use query::{Names, Queries};
pub use spec::{DEFAULT_FAIL_AFTER, DEFAULT_INTERVAL, MAX_QUERY_TIMEOUT, MetricGate, problems};

#[cfg(test)]
mod tests;
