//! End to end: every scenario of the demo as a test, plus the agent's failures (killed and
//! restarted mid-rollout, down while the filters keep serving, a malformed report stream), and a
//! promotion that waits for a webhook's approval.
//! Real `.wasm` in the proxy-wasm host, real gRPC between filters and agent, real HTTP between
//! load, mesh and backends. Stages are shorter than the demo's so the suite stays quick.

mod resilience;
mod scenarios;
mod support;
mod webhooks;
