//! `fledge-agent local --dir DIR`: the whole agent on one machine with no cluster — telemetry
//! gRPC server, reconcile loop over a folder of YAML files, HTTP API. Also used in-process by the
//! sandbox demo and the end-to-end tests, which start, stop and restart it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;

use crate::controller::Controller;
use crate::http::router;
use crate::metrics::Metrics;
use crate::store::LocalStore;
use crate::telemetry::{Hub, Store, TelemetryService};

/// How long a stopping agent's telemetry server may take to close its connections.
pub const STOP_GRACE: Duration = Duration::from_secs(2);

/// Telemetry kept for reading: long enough for the longest step a person would analyse.
const RETENTION_SECS: i64 = 30 * 60;
const MAX_SERIES: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot listen on {addr} for {what}: {source}")]
    Bind {
        addr: SocketAddr,
        what: &'static str,
        source: std::io::Error,
    },
    #[error("rollout folder {0} does not exist or is not a folder")]
    NoDir(PathBuf),
}

/// Where and how to run.
#[derive(Clone, Debug)]
pub struct Options {
    pub dir: PathBuf,
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    /// Time between reconcile ticks.
    pub tick: Duration,
}

/// A running agent. Dropping it leaves it running; `stop` ends it.
pub struct LocalAgent {
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub hub: Arc<Hub>,
    pub metrics: Arc<Metrics>,
    /// The telemetry gRPC server.
    grpc: JoinHandle<()>,
    /// The HTTP API and the reconcile loop.
    others: Vec<JoinHandle<()>>,
}

impl LocalAgent {
    pub async fn start(options: Options) -> Result<Self, Error> {
        if !options.dir.is_dir() {
            return Err(Error::NoDir(options.dir));
        }
        let bind = |addr, what| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| Error::Bind { addr, what, source })
        };
        let grpc = bind(options.grpc, "telemetry (gRPC)").await?;
        let http = bind(options.http, "the HTTP API").await?;
        let (grpc_addr, http_addr) = (
            local_addr(&grpc, options.grpc),
            local_addr(&http, options.http),
        );

        let metrics = Arc::new(Metrics::new());
        let hub = Hub::new();
        let telemetry = Arc::new(Mutex::new(Store::new(RETENTION_SECS, MAX_SERIES)));
        let controller = Controller::new(
            LocalStore::new(&options.dir),
            telemetry.clone(),
            hub.clone(),
            metrics.clone(),
        );
        let service = TelemetryService::new(telemetry, hub.clone(), metrics.clone()).into_server();
        let api = router(Arc::new(controller.clone()), metrics.clone());

        let closed = hub.closed();
        let grpc = tokio::spawn(async move {
            // On stop the hub ends every stream and tonic sends GOAWAY on every connection,
            // so no filter stays attached to a stopped agent.
            let served = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(TcpListenerStream::new(grpc), closed)
                .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "telemetry server stopped");
            }
        });
        let others = vec![
            tokio::spawn(async move {
                if let Err(e) = axum::serve(http, api).await {
                    tracing::error!(error = %e, "HTTP API stopped");
                }
            }),
            tokio::spawn(controller.run(options.tick)),
        ];
        tracing::info!(%grpc_addr, %http_addr, dir = %options.dir.display(), "fledge agent running (local store)");
        Ok(Self {
            grpc_addr,
            http_addr,
            hub,
            metrics,
            grpc,
            others,
        })
    }

    /// Stops serving and reconciling (as a killed process would: nothing is flushed). Filter
    /// streams end with UNAVAILABLE and their connections close; the telemetry server gets
    /// [`STOP_GRACE`] to let them go before it is aborted too.
    pub fn stop(self) {
        self.hub.close();
        for task in self.others {
            task.abort();
        }
        let grpc = self.grpc;
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                let abort = grpc.abort_handle();
                runtime.spawn(async move {
                    if tokio::time::timeout(STOP_GRACE, grpc).await.is_err() {
                        abort.abort();
                    }
                });
            }
            // Outside a runtime there is nothing to wait with: end it now.
            Err(_) => grpc.abort(),
        }
    }

    /// Waits until the telemetry server stops (it runs until the process ends or `stop`).
    pub async fn wait(self) {
        let _ = self.grpc.await;
    }
}

fn local_addr(listener: &TcpListener, asked: SocketAddr) -> SocketAddr {
    listener.local_addr().unwrap_or(asked)
}
