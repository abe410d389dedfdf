//! Where Rollouts and VirtualServices live: the [`RolloutStore`] trait the reconcile loop talks
//! to, its local implementation (`local`), a folder of YAML files for the embedded default, and
//! its Kubernetes implementation (`kube`): Rollouts as custom resources with a status
//! subresource, VirtualServices and Events through the API server.
//!
//! The trait speaks of objects only — no paths, files or API calls — so the loop cannot tell the
//! two apart. What it is not: it decides nothing; what to write comes from `rollout` and `routes`.

use serde_json::Value;

pub use fledge_core::ObjectKey;
use fledge_core::planner::WriteFailure;
use fledge_core::rollout::{EventKind, Rollout, RolloutStatus};

mod kube;
mod led;
pub(crate) mod local;

pub use self::kube::{FIELD_MANAGER, KubeStore, Scope};
pub use led::Led;
pub use local::LocalStore;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{kind} {key} not found{hint}")]
    NotFound {
        kind: &'static str,
        key: ObjectKey,
        /// Where it was looked for, for a person.
        hint: String,
    },
    /// An object that exists but cannot be read as its kind; `at` says where it is.
    #[error("{kind} {key} in {at}: {problem}")]
    Unreadable {
        kind: &'static str,
        key: String,
        at: String,
        problem: String,
    },
    /// The same object defined twice.
    #[error("{kind} {key} is defined twice: in {first} and in {second}")]
    Duplicate {
        kind: &'static str,
        key: ObjectKey,
        first: String,
        second: String,
    },
    /// An API server call that failed; `why` says what it means and what to do about it.
    #[error("cannot {action} {kind} {key}: {why}")]
    Api {
        action: &'static str,
        kind: &'static str,
        key: String,
        why: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The Rollouts have not been listed yet since the agent started.
    #[error("Rollouts not listed yet: {0}")]
    NotSynced(String),
    /// A write asked of an agent that is not the leader (a standby, or a leader that could not
    /// renew its Lease in time): nothing was written.
    #[error("not the leader: the {what} is not written (only the agent holding the Lease writes)")]
    NotLeading { what: &'static str },
    #[error("cannot {action} {at}: {source}")]
    Io {
        action: &'static str,
        at: String,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// What kind of failure this is, for the retry policy and the metric label.
    pub fn failure(&self) -> WriteFailure {
        match self {
            Self::NotFound { .. } => WriteFailure::NotFound,
            Self::Unreadable { .. } | Self::Duplicate { .. } => WriteFailure::Invalid,
            Self::Api { source, .. } => self::kube::failure(source.as_ref()),
            Self::NotSynced(_) | Self::NotLeading { .. } | Self::Io { .. } => {
                WriteFailure::Unavailable
            }
        }
    }
}

/// Every Rollout that could be read, and a problem for each one that could not. One broken
/// object never hides the others.
#[derive(Debug, Default)]
pub struct Listing {
    /// Each with `metadata.generation` (bumped whenever its spec changes) and its persisted
    /// status, if any.
    pub rollouts: Vec<Rollout>,
    pub problems: Vec<Error>,
}

/// A decision of the rollout worth telling a person about, as the reconcile loop hands it to the
/// store (Kubernetes Events, or the local store's event log).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RolloutEvent {
    pub kind: EventKind,
    /// A short CamelCase token: `Started`, `StepAdvanced`, `RolledBack`, …
    pub reason: &'static str,
    /// The phase the decision moved the rollout to (`Progressing`, `RolledBack`, …).
    pub action: String,
    /// What happened and why, for a person, with the analysis's evidence when there was one.
    pub note: String,
}

/// Rollouts and the VirtualServices they manage.
pub trait RolloutStore: Send + Sync {
    /// Every Rollout with its last persisted status.
    fn rollouts(&self) -> impl Future<Output = Result<Listing>> + Send;

    /// As [`rollouts`](Self::rollouts), but read from the source now rather than from a cache
    /// that may lag: for an agent that has just become the leader, whose first statuses must
    /// be the ones the previous leader persisted last.
    fn rollouts_now(&self) -> impl Future<Output = Result<Listing>> + Send {
        self.rollouts()
    }

    /// Persists `status` for `rollout` (computed from `rollout.spec` at
    /// `rollout.metadata.generation`), so a restarted agent resumes from it.
    fn write_status(
        &self,
        rollout: &Rollout,
        status: &RolloutStatus,
    ) -> impl Future<Output = Result<()>> + Send;

    /// The VirtualService as stored: apiVersion, kind, metadata, spec.
    fn virtual_service(&self, key: &ObjectKey) -> impl Future<Output = Result<Value>> + Send;

    /// Replaces the VirtualService named by `vs.metadata` with `vs`, whole or not at all.
    fn write_virtual_service(&self, vs: &Value) -> impl Future<Output = Result<()>> + Send;

    /// Records a decision about `rollout` where people look for them. Failing to record one
    /// never undoes the decision; the caller logs the error.
    fn record_event(
        &self,
        rollout: &Rollout,
        event: &RolloutEvent,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Whether Rollouts here are deleted through finalizers (Kubernetes), so the agent must put
    /// its own on each and take the Rollout's routes out before it lets one go.
    fn finalizes(&self) -> bool {
        false
    }

    /// Puts fledge's finalizer (`routes::FINALIZER`) on the Rollout (`present`), or takes it off;
    /// every other finalizer stays. Only called when [`finalizes`](Self::finalizes).
    fn set_finalizer(
        &self,
        rollout: &Rollout,
        present: bool,
    ) -> impl Future<Output = Result<()>> + Send {
        let _ = (rollout, present);
        std::future::ready(Ok(()))
    }
}

#[cfg(test)]
mod tests;
