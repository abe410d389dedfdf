//! The fledge agent: merges the filters' telemetry, judges canary against baseline, walks each
//! Rollout through its strategy, and writes routes. Pure modules hold the decisions; `http`,
//! `cli`, `store` (YAML files or the Kubernetes API) and the telemetry gRPC server are adapters
//! around them; `local` and `cluster` wire them into a running agent (`serve`).

pub mod bench;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod controller;
pub mod http;
pub mod local;
pub mod logging;
pub mod metrics;
pub mod plane;
pub mod serve;
pub mod store;
pub mod telemetry;
