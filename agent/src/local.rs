//! `fledge-agent local --dir DIR`: the whole agent on one machine with no cluster — telemetry
//! gRPC server, reconcile loop over a folder of YAML files, HTTP API. Also used in-process by the
//! demo (`fledge-demo`) and the end-to-end tests, which start, stop and restart it.
//!
//! Only the local store's wiring lives here; the servers and the loop are `serve::Agent`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::gates::Gates;
use crate::metric_gate::MetricGates;
use crate::outbound::OutboundError;
use crate::serve::{Agent, BindError, Listen};
pub use crate::serve::{Agent as LocalAgent, STOP_GRACE};
use crate::store::LocalStore;
use crate::workloads::local::LocalDeployments;
use crate::workloads::{WORKLOADS_EVERY, WorkloadGate};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Bind(#[from] BindError),
    #[error("rollout folder {0} does not exist or is not a folder")]
    NoDir(PathBuf),
    #[error(transparent)]
    Outbound(#[from] OutboundError),
}

/// Where and how to run.
#[derive(Clone, Debug)]
pub struct Options {
    pub dir: PathBuf,
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    /// Time between reconcile ticks.
    pub tick: Duration,
    /// The Prometheus metric gates ask when they name none (`--prometheus-url`).
    pub prometheus: Option<String>,
}

impl Agent {
    /// The agent over the YAML files of `options.dir`.
    pub async fn start(options: Options) -> Result<Self, Error> {
        if !options.dir.is_dir() {
            return Err(Error::NoDir(options.dir));
        }
        let listen = Listen {
            grpc: options.grpc,
            http: options.http,
            tick: options.tick,
            require_peer_identity: false,
            max_stream_requests_per_second: crate::telemetry::DEFAULT_MAX_REQUESTS_PER_SECOND,
            http_commands: true,
            http_reads: true,
        };
        let gates = Gates::new(vec![
            MetricGates::gate(options.prometheus.clone())?,
            WorkloadGate::start(LocalDeployments::new(&options.dir), WORKLOADS_EVERY),
        ]);
        let agent = Self::serve_with(LocalStore::new(&options.dir), listen, gates, None).await?;
        tracing::info!(grpc_addr = %agent.grpc_addr, http_addr = %agent.http_addr, dir = %options.dir.display(), "fledge agent running (local store)");
        Ok(agent)
    }
}
