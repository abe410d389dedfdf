//! The fledge agent: merges the filters' telemetry, judges canary against baseline, walks each
//! Rollout through its strategy, and writes routes. Pure modules hold the decisions; `http`,
//! `cli` and the telemetry gRPC server are adapters around them.

pub mod analysis;
pub mod bench;
pub mod cli;
pub mod config;
pub mod http;
pub mod logging;
pub mod metrics;
pub mod rollout;
pub mod routes;
pub mod telemetry;
