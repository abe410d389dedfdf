//! The fledge agent: the adapters around `fledge-core`, which holds every decision. `telemetry`
//! takes the filters' reports over gRPC (a sans-IO session behind tonic) into the core's
//! windows; `controller` runs the core's planner every tick and applies what it plans; `store`
//! keeps Rollouts, VirtualServices and events (YAML files or the Kubernetes API); `http`, `cli`,
//! `kubectl` (the kubectl plugin's calls) and `metrics` are the surfaces people use; `gates` asks
//! the checks outside the proxy (`metric_gate`: Prometheus through `prometheus` and
//! `outbound`); `local` and `cluster` wire them into a running agent (`serve`). What it is
//! not: a place for policy — a decision found here belongs in the core.

pub mod bench;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod controller;
pub mod gates;
pub mod http;
pub mod kubectl;
pub mod leader;
pub mod local;
pub mod logging;
pub mod metric_gate;
pub mod metrics;
pub mod outbound;
pub mod plane;
pub mod prometheus;
pub mod serve;
pub mod store;
pub mod telemetry;
pub mod webhooks;
pub mod workloads;
