//! `fledge-agent kube`: the agent inside a Kubernetes cluster with Istio — the same telemetry
//! server, reconcile loop and HTTP API as `local`, over the Kubernetes store. The client comes
//! from the pod's ServiceAccount when in a cluster, else from KUBECONFIG / ~/.kube/config.
//!
//! Only wiring: settings come from `config`, the store is `store::KubeStore`, the servers are
//! `serve::Agent`. `/readyz` answers 200 only once the Rollout cache has synced and the loop has
//! read it. With an election (the install's two replicas), the agent leads only while it holds
//! the Lease (`leader`); `/leaderz` says whether it does.

use std::net::SocketAddr;
use std::time::Duration;

use crate::gates::Gates;
use crate::leader::{Elector, Leadership, LeaseOptions};
use crate::metric_gate::MetricGates;
use crate::outbound::OutboundError;
use crate::serve::{Agent, BindError, Listen};
use crate::store::{self, KubeStore, Scope};
use crate::workloads::kube::KubeDeployments;
use crate::workloads::{WORKLOADS_EVERY, WorkloadGate};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "no Kubernetes configuration found: {0} (in a pod, the ServiceAccount token is mounted \
         unless automountServiceAccountToken is false; elsewhere set KUBECONFIG or write \
         ~/.kube/config)"
    )]
    NoConfig(String),
    #[error(transparent)]
    Store(#[from] store::Error),
    #[error(transparent)]
    Bind(#[from] BindError),
    #[error(transparent)]
    Outbound(#[from] OutboundError),
    #[error("leader election: {0}")]
    Timing(#[from] fledge_core::lease::TimingError),
    #[error(
        "leader election: no name for this agent in the Lease: set POD_NAME (the install sets \
         it from the pod's name) or --pod-name"
    )]
    NoIdentity,
}

/// The Lease the replicas elect a leader with.
#[derive(Clone, Debug)]
pub struct Election {
    pub lease_name: String,
    /// None: the client's default namespace (the ServiceAccount's, in a pod).
    pub lease_namespace: Option<String>,
    pub timing: fledge_core::lease::Timing,
}

/// Where and how to run.
#[derive(Clone, Debug)]
pub struct Options {
    pub scope: Scope,
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    /// Time between reconcile ticks.
    pub tick: Duration,
    /// This agent's name in the Events it records (its pod's name).
    pub instance: Option<String>,
    /// Refuse telemetry streams without a mesh identity (the agent runs behind a sidecar).
    pub require_peer_identity: bool,
    /// Requests one telemetry stream may report per second (see `telemetry::session`).
    pub max_stream_requests_per_second: u64,
    /// Take commands over the HTTP API too (off: only on the Rollout object, under RBAC).
    pub http_commands: bool,
    /// The Prometheus metric gates ask when they name none (`--prometheus-url`).
    pub prometheus: Option<String>,
    /// Serve the rollout API's reads and metrics to the cluster (off: to the pod itself only).
    pub http_reads: bool,
    /// Lead only while holding this Lease (None: lead alone, as a single replica may).
    pub election: Option<Election>,
}

/// The agent with the client the environment gives: in-cluster, else the kubeconfig.
pub async fn start(options: Options) -> Result<Agent, Error> {
    let client = ::kube::Client::try_default()
        .await
        .map_err(|e| Error::NoConfig(crate::cli::error_chain(&e)))?;
    start_with(client, options).await
}

/// The agent over the API server `client` talks to. Fails at once when the Rollout CRD is not
/// installed or the agent may not list Rollouts.
pub async fn start_with(client: ::kube::Client, options: Options) -> Result<Agent, Error> {
    let elector = match &options.election {
        None => None,
        Some(e) => {
            e.timing.validate()?;
            let identity = options
                .instance
                .clone()
                .or_else(hostname)
                .ok_or(Error::NoIdentity)?;
            let lease = LeaseOptions {
                name: e.lease_name.clone(),
                namespace: e
                    .lease_namespace
                    .clone()
                    .unwrap_or_else(|| client.default_namespace().to_owned()),
                identity,
                timing: e.timing,
            };
            tracing::info!(lease = %lease.name, namespace = %lease.namespace, identity = %lease.identity, "standing by until this agent holds the Lease");
            Some(Elector::new(client.clone(), lease, Leadership::elected()))
        }
    };
    let deployments = KubeDeployments::new(client.clone());
    let store = KubeStore::connect(client, options.scope.clone(), options.instance).await?;
    let listen = Listen {
        grpc: options.grpc,
        http: options.http,
        tick: options.tick,
        require_peer_identity: options.require_peer_identity,
        max_stream_requests_per_second: options.max_stream_requests_per_second,
        http_commands: options.http_commands,
        http_reads: options.http_reads,
    };
    let leadership = elector.as_ref().map(Elector::leadership);
    let workloads: std::sync::Arc<dyn crate::gates::Gate> = match leadership {
        Some(l) => WorkloadGate::start_while(deployments, WORKLOADS_EVERY, move || l.may_write()),
        None => WorkloadGate::start(deployments, WORKLOADS_EVERY),
    };
    let gates = Gates::new(vec![
        MetricGates::gate(options.prometheus.clone())?,
        workloads,
    ]);
    let agent = Agent::serve_with(store, listen, gates, elector).await?;
    tracing::info!(grpc_addr = %agent.grpc_addr, http_addr = %agent.http_addr, scope = %options.scope, "fledge agent running (Kubernetes store)");
    Ok(agent)
}

/// The host's name, for an agent without POD_NAME.
fn hostname() -> Option<String> {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
}
