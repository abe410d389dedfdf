//! The one error type of fledge-sandbox: what went wrong, naming the file, object and field.

use std::net::SocketAddr;
use std::path::PathBuf;

/// Why a sandbox part could not start or load.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("VirtualService {object} in {file}: {field}: {message}")]
    VirtualService {
        file: String,
        object: String,
        field: String,
        message: String,
    },
    #[error("sandbox config {file}: {field}: {message}")]
    Config {
        file: String,
        field: String,
        message: String,
    },
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("listening on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("starting the filter ({what}): {message}")]
    Filter { what: String, message: String },
    #[error("load: {0}")]
    Load(String),
}

/// Results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
