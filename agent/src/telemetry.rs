//! Telemetry ingest: the filters' reports, validated and merged into the core's per-second
//! windows (`fledge_core::windows`), and the routing tables sent back.
//!
//! Pure: `session` (one stream's protocol: Hello first, the role's side, reports validated or
//! the stream refused, only newer tables sent), `validate` (one report's checks) and `hdr_wire`
//! (the histograms' wire decoding). Adapters: `grpc` (tonic; does what the session answers) and
//! `hub` (the connected streams and the current table, on a tokio watch channel).

pub mod grpc;
pub mod hdr_wire;
pub mod hub;
pub mod peer;
pub mod session;
pub mod validate;

pub use grpc::TelemetryService;
pub use hub::{Hub, StreamInfo};
pub use session::{DEFAULT_MAX_REQUESTS_PER_SECOND, Session};
pub use validate::{Rejection, ValidReport};
