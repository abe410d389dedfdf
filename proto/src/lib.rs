//! fledge's wire contract: the prost messages of `fledge.v1` (always) and tonic's client and
//! server for the `Telemetry` service (behind the `tonic` feature, because the proxy-wasm filter
//! cannot link tonic). `fledge/v1/telemetry.proto` is the truth and documents every field.
//!
//! This crate holds no logic beyond generated code and a few constants both sides must agree on.

/// Generated from `fledge/v1/telemetry.proto`.
pub mod v1 {
    #![allow(clippy::all, missing_docs)]
    include!(concat!(env!("OUT_DIR"), "/fledge.v1.rs"));
}

/// The header the filter sets when a route names none.
pub const DEFAULT_VERSION_HEADER: &str = "x-fledge-version";

/// Buckets of the sticky split: a canary share is expressed in basis points of this.
pub const SPLIT_BUCKETS: u32 = 10_000;

/// Latency histograms on the wire: microseconds, 2 significant digits (1 % relative precision).
pub const HISTOGRAM_SIGFIG: u8 = 2;

/// Highest latency a histogram tracks, in microseconds (one hour). Longer requests are clamped.
pub const HISTOGRAM_MAX_US: u64 = 3_600_000_000;

/// The gRPC service path filters open their stream on, for hosts that call it by name.
pub const CONNECT_PATH: &str = "/fledge.v1.Telemetry/Connect";
