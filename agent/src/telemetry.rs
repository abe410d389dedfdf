//! Telemetry ingest: the filters' reports, validated, merged into per-second windows, and the
//! routing tables sent back. `store`, `validate` and `hdr_wire` (the histograms' wire decoding) are
//! pure; `grpc` (tonic) and `hub` (the connected streams and the current table) are the adapter.

pub mod grpc;
pub mod hdr_wire;
pub mod hub;
pub mod store;
pub mod validate;

pub use grpc::TelemetryService;
pub use hub::{Hub, StreamInfo};
pub use store::{SeriesDelta, SeriesKey, Side, Store, Traffic, Window};
pub use validate::{Rejection, ValidReport};
