//! fledge's proxy-wasm filter. In every sidecar and gateway it picks a version for each request
//! (header/cookie rules, then a sticky split), records what every request did per
//! (host, version, traffic) in exact HDR histograms, and streams those deltas to the fledge agent
//! over one gRPC stream per VM, taking new routing tables back on the same stream.
//!
//! Every decision lives in plain-Rust modules that build and test natively: [`config`] (the
//! plugin's JSON), [`identity`] (the node and the side the filter takes, resolved once),
//! [`routing`] (which version a request goes to), [`outcome`] (what a finished request did,
//! from numbers [`property`] reads in Envoy's binary form or as text), [`stats`] (the per-series counts and histograms, and the Report delta) and [`stream`] (the
//! connection to the agent as a state machine). `plugin` is the only module that talks to the
//! proxy-wasm host; it exists only for `wasm32` and holds no policy.

#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

pub mod config;
pub mod identity;
pub mod outcome;
pub mod property;
pub mod routing;
pub mod stats;
pub mod stream;

#[cfg(target_arch = "wasm32")]
mod plugin;

/// What went wrong at the filter's boundaries: its configuration and the agent's messages.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The plugin configuration is not valid JSON, names an unknown field, or holds a bad value.
    /// `field` is a path such as `routes[1].split.canary_basis_points`.
    #[error("{field}: {reason}")]
    Config { field: String, reason: String },
    /// The agent sent bytes that are not a `fledge.v1.AgentMessage`.
    #[error("agent message: {0}")]
    Decode(String),
    /// The agent sent a routing table the filter refuses (it keeps the one it has).
    #[error("routing table revision {revision}: {field}: {reason}")]
    Table {
        revision: u64,
        field: String,
        reason: String,
    },
}

/// `Result` with the filter's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The filter's build as sent in Hello: crate name and version.
pub const FILTER_BUILD: &str = concat!(env!("CARGO_PKG_NAME"), "/", env!("CARGO_PKG_VERSION"));
