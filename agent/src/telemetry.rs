//! Telemetry ingest: the filters' reports, validated and merged into the core's per-second
//! windows (`fledge_core::windows`), and the routing tables sent back. `validate` and `hdr_wire`
//! (the histograms' wire decoding) are pure; `grpc` (tonic) and `hub` (the connected streams and
//! the current table) are the adapter.

pub mod grpc;
pub mod hdr_wire;
pub mod hub;
pub mod validate;

pub use grpc::TelemetryService;
pub use hub::{Hub, StreamInfo};
pub use validate::{Rejection, ValidReport};
