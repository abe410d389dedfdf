//! fledge's sandbox: the real filter in a small mesh on one machine, without Envoy or a cluster.
//! [`mesh`] is an HTTP/1.1 + HTTP/2 proxy that runs the filter and routes per an Istio
//! VirtualService file; [`backend`] serves one version of a service with a latency distribution
//! and error rate that can change while it runs; [`load`] drives requests open loop and
//! summarises what came back; [`bench`] measures a hop's CPU with and without the filter. The demo (crate `fledge-demo`) and the end-to-end tests are built
//! from these three.
//!
//! Not the agent: nothing here knows about rollouts or depends on `fledge-agent`; the filter
//! talks to whatever agent address the config names. Decisions live in pure modules
//! ([`virtual_service`], [`route`], [`latency`], [`config`]); the rest adapts them to sockets
//! and files.

pub mod backend;
pub mod bench;
pub mod config;
mod error;
pub mod filter;
mod forward;
pub mod latency;
pub mod listener;
pub mod load;
pub mod mesh;
mod proxy;
pub mod route;
pub mod virtual_service;
mod wasm;
pub mod watch;

pub use backend::{Backend, BackendConfig, BackendCounts};
pub use config::SandboxConfig;
pub use error::{Error, Result};
pub use filter::Filters;
pub use latency::{Behaviour, Latency};
pub use load::{LoadConfig, LoadReport};
pub use mesh::Mesh;
pub use proxy::ProxyStats;
