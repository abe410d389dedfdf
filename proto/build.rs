//! Compiles `fledge/v1/telemetry.proto` with the protoc that ships inside the
//! `protoc-bin-vendored` crate, so a fresh machine needs no system protoc. Messages are always
//! generated; tonic's client and server only with the `tonic` feature.

use std::error::Error;

const PROTO: &str = "fledge/v1/telemetry.proto";

fn main() -> Result<(), Box<dyn Error>> {
    println!("cargo:rerun-if-changed={PROTO}");
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc);
    if std::env::var_os("CARGO_FEATURE_TONIC").is_some() {
        tonic_prost_build::configure()
            .build_client(true)
            .build_server(true)
            // The rpc is named `Connect`; tonic's transport helper `connect` would clash with it.
            // Clients build a `Channel` themselves and call `TelemetryClient::new`.
            .build_transport(false)
            .compile_with_config(config, &[PROTO], &["."])?;
    } else {
        config.compile_protos(&[PROTO], &["."])?;
    }
    Ok(())
}
