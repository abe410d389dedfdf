//! The fledge agent: merges the filters' telemetry, judges canary against baseline, walks each
//! Rollout through its strategy, and writes routes. Pure modules hold the decisions; `http`,
//! `cli` and the telemetry gRPC server are adapters around them.

pub mod analysis;
pub mod cli;
pub mod http;
pub mod metrics;
pub mod telemetry;
