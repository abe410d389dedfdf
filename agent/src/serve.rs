//! The running agent over any [`RolloutStore`]: binds the telemetry gRPC and HTTP listeners,
//! then runs the telemetry server (tonic), the HTTP API (axum) and the reconcile loop as tasks.
//! `local` runs it over a folder of YAML files, `cluster` over the Kubernetes API. With an
//! elector (`cluster`'s replicas), the agent leads only while it holds the Lease: every write
//! goes through `store::Led`, and the ticks and the filter streams follow `leader::Leadership`.
//!
//! What it is not: it reads no settings and decides nothing; the store, controller and routes do.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::controller::Controller;
use crate::gates::Gates;
use crate::http::{Guard, router};
use crate::leader::{Elector, Leadership};
use crate::metrics::Metrics;
use crate::store::{Led, RolloutStore};
use fledge_core::windows::Windows;

use crate::telemetry::{Hub, TelemetryService};
use crate::webhooks::Webhooks;

/// How long a stopping agent's telemetry server may take to close its connections.
pub const STOP_GRACE: Duration = Duration::from_secs(2);
/// How long after the filter streams ended with their status the telemetry connections are
/// closed (well within [`STOP_GRACE`]).
const STREAMS_END_FIRST: Duration = Duration::from_millis(200);
/// On SIGTERM, how long the tick in progress may take to finish its writes.
pub const SHUTDOWN_WRITES: Duration = Duration::from_secs(10);

/// Seconds of telemetry kept. The analysis reads each second once, as it settles (two seconds
/// after it ends), into its step's running totals; the retention only covers a slow tick and a
/// judge that starts a step afresh. Memory is what the Rollouts' series send in this long.
pub const RETENTION_SECS: i64 = 2 * 60;
/// Series kept when every series is (never in a running agent, which keeps only what the
/// Rollouts read): a bound for the store's own tests.
const MAX_SERIES: usize = 4096;
/// HTTP/2 streams one telemetry connection may open (a filter VM opens one).
pub const MAX_STREAMS_PER_CONNECTION: u32 = 64;
/// HTTP/2 pings on an idle telemetry connection, and how long an answer may take.
pub const KEEPALIVE: Duration = Duration::from_secs(30);
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr} for {what}: {source}")]
pub struct BindError {
    pub addr: SocketAddr,
    pub what: &'static str,
    #[source]
    pub source: std::io::Error,
}

/// Where to listen and how often to reconcile.
#[derive(Clone, Copy, Debug)]
pub struct Listen {
    /// The telemetry gRPC server the filters connect to.
    pub grpc: SocketAddr,
    /// The HTTP API, health, readiness and metrics.
    pub http: SocketAddr,
    /// Time between reconcile ticks.
    pub tick: Duration,
    /// Refuse telemetry streams that carry no mesh identity (see `telemetry::peer`).
    pub require_peer_identity: bool,
    /// Requests one telemetry stream may report per second (see `telemetry::session`).
    pub max_stream_requests_per_second: u64,
    /// Take commands over HTTP (`POST …/promote`); otherwise only on the Rollout object.
    pub http_commands: bool,
    /// Serve the rollout API's reads and `/metrics` to any peer; otherwise only to the pod
    /// itself (see `http::guard`).
    pub http_reads: bool,
}

/// A running agent. Dropping it leaves it running; `stop` ends it.
pub struct Agent {
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub hub: Arc<Hub>,
    pub metrics: Arc<Metrics>,
    /// The telemetry gRPC server.
    grpc: JoinHandle<()>,
    /// The HTTP API and the reconcile loop.
    others: Vec<JoinHandle<()>>,
    /// Tells the reconcile loop to stop after the tick in progress.
    stopping: watch::Sender<bool>,
    /// The Lease this agent takes and renews (none when it runs alone), and its task.
    election: Option<(Elector, JoinHandle<()>)>,
}

impl Agent {
    /// Binds both listeners (port 0 picks a free one) and starts serving `store`, alone.
    pub async fn serve<S: RolloutStore + 'static>(
        store: S,
        listen: Listen,
    ) -> Result<Self, BindError> {
        Self::serve_with(store, listen, Gates::default(), None).await
    }

    /// As [`serve`](Self::serve), the loop asking `gates` (the checks outside the proxy) every
    /// tick, and `elector` (if any) deciding when this agent leads: while it stands by it writes
    /// nothing, skips its ticks and refuses filter streams.
    pub async fn serve_with<S: RolloutStore + 'static>(
        store: S,
        listen: Listen,
        gates: Gates,
        elector: Option<Elector>,
    ) -> Result<Self, BindError> {
        let leadership = elector
            .as_ref()
            .map_or_else(Leadership::alone, Elector::leadership);
        let bind = |addr, what| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| BindError { addr, what, source })
        };
        let grpc = bind(listen.grpc, "telemetry (gRPC)").await?;
        let http = bind(listen.http, "the HTTP API").await?;
        let (grpc_addr, http_addr) = (
            local_addr(&grpc, listen.grpc),
            local_addr(&http, listen.http),
        );

        let metrics = Arc::new(Metrics::new());
        let hub = Hub::new();
        // Nothing is stored until the controller names the series its Rollouts read.
        let mut windows = Windows::new(RETENTION_SECS, MAX_SERIES);
        windows.keep_only(Default::default());
        let telemetry = Arc::new(Mutex::new(windows));
        // Webhooks count their calls in the agent's metrics, so they start here.
        let gates = gates.and(Arc::new(Webhooks::start(metrics.clone())));
        let store = Led::new(store, leadership.clone());
        let controller = Controller::new(store, telemetry.clone(), hub.clone(), metrics.clone())
            .with_gates(gates)
            .led_by(leadership.clone());
        let service = TelemetryService::new(telemetry, hub.clone(), metrics.clone())
            .requiring_peer_identity(listen.require_peer_identity)
            .with_stream_rate(listen.max_stream_requests_per_second)
            .into_server();
        let guard = Guard {
            loopback: http_addr.ip().is_loopback(),
            commands: listen.http_commands,
            reads: listen.http_reads,
        };
        let api = router(Arc::new(controller.clone()), metrics.clone(), guard);

        let closed = hub.closed();
        let (stopping, stopped) = watch::channel(false);
        let mut leading = leadership.watch();
        let standby_hub = hub.clone();
        // Before the first stream can arrive: a standby refuses from its first moment.
        hub.set_standby(!*leading.borrow_and_update());
        let grpc = tokio::spawn(async move {
            // On stop the hub ends every stream and tonic sends GOAWAY on every connection,
            // so no filter stays attached to a stopped agent.
            let served = tonic::transport::Server::builder()
                .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
                .http2_keepalive_interval(Some(KEEPALIVE))
                .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
                .tcp_keepalive(Some(KEEPALIVE))
                .add_service(service)
                .serve_with_incoming_shutdown(accepted(grpc), async move {
                    // The streams end first, with their status; the connections' GOAWAY follows,
                    // so a client reads the status before its connection closes under it.
                    closed.await;
                    tokio::time::sleep(STREAMS_END_FIRST).await;
                })
                .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "telemetry server stopped");
            }
        });
        let others = vec![
            tokio::spawn(async move {
                let api = api.into_make_service_with_connect_info::<SocketAddr>();
                if let Err(e) = axum::serve(http, api).await {
                    tracing::error!(error = %e, "HTTP API stopped");
                }
            }),
            // Filter streams follow leadership: a standby ends them and refuses new ones.
            tokio::spawn(async move {
                loop {
                    standby_hub.set_standby(!*leading.borrow_and_update());
                    if leading.changed().await.is_err() {
                        return;
                    }
                }
            }),
            // Last: `serve_until_terminated` waits for it.
            tokio::spawn(controller.run(listen.tick, stopped)),
        ];
        let election = elector.map(|e| {
            let task = tokio::spawn(e.clone().run());
            (e, task)
        });
        Ok(Self {
            grpc_addr,
            http_addr,
            hub,
            metrics,
            grpc,
            others,
            stopping,
            election,
        })
    }

    /// Stops serving and reconciling (as a killed process would: nothing is flushed). Filter
    /// streams end with UNAVAILABLE and their connections close; the telemetry server gets
    /// [`STOP_GRACE`] to let them go before it is aborted too.
    pub fn stop(self) {
        if let Some((_, task)) = &self.election {
            task.abort();
        }
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

    /// Runs until SIGTERM or Ctrl-C, then stops gracefully ([`shut_down`](Self::shut_down)).
    pub async fn serve_until_terminated(mut self) {
        tokio::select! {
            _ = &mut self.grpc => return,
            () = terminated() => {}
        }
        self.shut_down().await;
    }

    /// Stops gracefully: the tick in progress finishes its writes (the status and the routes
    /// of a step go together) and no other starts; a leader then gives its Lease back, so a
    /// standby takes over at once rather than after the lease duration; then every filter
    /// stream ends with UNAVAILABLE, so the filters reconnect at once (to the next agent)
    /// rather than after a timeout.
    pub async fn shut_down(mut self) {
        tracing::info!("stopping: finishing the writes in flight, then closing filter streams");
        let _ = self.stopping.send(true);
        // `others` ends with the reconcile loop (see `serve`).
        let loop_ended = self
            .others
            .pop()
            .map(|controller| tokio::time::timeout(SHUTDOWN_WRITES, controller));
        if let Some(ended) = loop_ended
            && ended.await.is_err()
        {
            tracing::warn!(after = ?SHUTDOWN_WRITES, "the reconcile loop did not end in time");
        }
        // Nothing more is written: the Lease goes back, so a standby takes over at once.
        if let Some((elector, task)) = self.election.take() {
            task.abort();
            elector.release().await;
        }
        // Streams end with UNAVAILABLE and connections get GOAWAY; the process exits only after
        // they went out (or STOP_GRACE), so the filters learn it now, not by a broken pipe.
        self.hub.close();
        for task in &self.others {
            task.abort();
        }
        if tokio::time::timeout(STOP_GRACE, &mut self.grpc)
            .await
            .is_err()
        {
            self.grpc.abort();
        }
        tracing::info!("stopped");
    }
}

/// SIGTERM (how Kubernetes stops a pod) or Ctrl-C.
async fn terminated() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
                return;
            }
            Err(e) => tracing::warn!(error = %e, "cannot watch for SIGTERM; Ctrl-C only"),
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// The listener's connections. An accept that fails (out of file descriptors, most likely) is
/// logged and retried after a pause, rather than at once in a loop that would take a core.
fn accepted(
    listener: TcpListener,
) -> impl futures::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    futures::stream::unfold(listener, |listener| async move {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => return Some((Ok(stream), listener)),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot accept a telemetry connection; pausing 100 ms");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    })
}

fn local_addr(listener: &TcpListener, asked: SocketAddr) -> SocketAddr {
    listener.local_addr().unwrap_or(asked)
}
