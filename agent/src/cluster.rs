//! `fledge-agent kube`: the agent inside a Kubernetes cluster with Istio — the same telemetry
//! server, reconcile loop and HTTP API as `local`, over the Kubernetes store. The client comes
//! from the pod's ServiceAccount when in a cluster, else from KUBECONFIG / ~/.kube/config.
//!
//! Only wiring: settings come from `config`, the store is `store::KubeStore`, the servers are
//! `serve::Agent`. `/readyz` answers 200 only once the Rollout cache has synced and the loop has
//! read it.

use std::net::SocketAddr;
use std::time::Duration;

use crate::gates::Gates;
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
    /// Take commands over the HTTP API too (off: only on the Rollout object, under RBAC).
    pub http_commands: bool,
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
    let deployments = KubeDeployments::new(client.clone());
    let store = KubeStore::connect(client, options.scope.clone(), options.instance).await?;
    let listen = Listen {
        grpc: options.grpc,
        http: options.http,
        tick: options.tick,
        require_peer_identity: options.require_peer_identity,
        http_commands: options.http_commands,
    };
    let gates = Gates::new(vec![WorkloadGate::start(deployments, WORKLOADS_EVERY)]);
    let agent = Agent::serve_with_gates(store, listen, gates).await?;
    tracing::info!(grpc_addr = %agent.grpc_addr, http_addr = %agent.http_addr, scope = %options.scope, "fledge agent running (Kubernetes store)");
    Ok(agent)
}
