//! Log setup for the binary: `tracing` with structured fields, JSON when stderr is not a
//! terminal (a pod's log), readable text when it is. `RUST_LOG` filters (default `info`; the
//! benchmarks default to `warn`, so the agent's own logs of what they drive do not flood them).

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Logs at `default` (e.g. "info") unless `RUST_LOG` says otherwise.
pub fn init(default: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if std::io::stderr().is_terminal() {
        builder.try_init()
    } else {
        builder.json().try_init()
    };
}
