//! What the agent's surfaces (the HTTP API) may ask of the running reconciler: the rollouts with
//! their status, a person's command, readiness. The controller implements it; `http` serves it.
//! A trait of its own so neither adapter imports the other.

use fledge_core::ObjectKey;
use fledge_core::rollout::UserCommand;

/// A command for a Rollout the agent does not hold.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("Rollout {0} not found")]
pub struct UnknownRollout(pub ObjectKey);

/// The running agent, as its surfaces see it.
pub trait ControlPlane: Send + Sync + 'static {
    /// Every Rollout with its status, as the JSON objects the API serves (Kubernetes shape:
    /// apiVersion, kind, metadata, spec, status).
    fn rollouts(&self) -> Vec<serde_json::Value>;
    /// Queues `command` for one rollout; it takes effect at the next reconcile.
    fn command(
        &self,
        namespace: &str,
        name: &str,
        command: UserCommand,
    ) -> Result<(), UnknownRollout>;
    /// The objects the agent cannot act on (a Rollout or status that does not read), each with
    /// the reason, for as long as it lasts.
    fn problems(&self) -> Vec<String>;
    /// Whether the agent has loaded its rollouts and serves telemetry.
    fn ready(&self) -> bool;
    /// Whether this agent leads (always, for an agent that runs alone).
    fn leading(&self) -> bool {
        true
    }
}
