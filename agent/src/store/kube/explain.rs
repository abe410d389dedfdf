//! What the API server answered, turned into the store's errors a person can act on: 404 is
//! `NotFound`, 409 says the object changed since it was read and was not overwritten, 403 names
//! the RBAC permission the agent's ServiceAccount lacks, a transport failure says the API server
//! could not be reached.
//!
//! Wording, and which kind of failure an answer is ([`failure`]); which call to make and when to
//! retry is decided elsewhere.

use ::kube::runtime::watcher;
use fledge_core::planner::WriteFailure;

use super::super::{Error, ObjectKey};
use super::Scope;

/// One kind of call the store makes, with the RBAC permission it needs.
#[derive(Clone, Copy, Debug)]
pub(super) struct Call {
    pub action: &'static str,
    pub kind: &'static str,
    pub verb: &'static str,
    /// `resource[/subresource].group`, as a ClusterRole rule grants it.
    pub resource: &'static str,
}

impl Call {
    pub const STATUS: Self = Self {
        action: "write the status of",
        kind: "Rollout",
        verb: "patch",
        resource: "rollouts/status.fledge.dev",
    };
    pub const FINALIZER: Self = Self {
        action: "set the finalizer of",
        kind: "Rollout",
        verb: "patch",
        resource: "rollouts.fledge.dev",
    };
    pub const GET_VS: Self = Self {
        action: "read",
        kind: "VirtualService",
        verb: "get",
        resource: "virtualservices.networking.istio.io",
    };
    pub const REPLACE_VS: Self = Self {
        action: "replace",
        kind: "VirtualService",
        verb: "update",
        resource: "virtualservices.networking.istio.io",
    };
    pub const EVENT: Self = Self {
        action: "record an Event for",
        kind: "Rollout",
        verb: "create and patch",
        resource: "events.events.k8s.io",
    };
}

/// The store's error for a failed `call` on the object `key`.
pub(super) fn failed(call: Call, key: &ObjectKey, e: ::kube::Error) -> Error {
    if let ::kube::Error::Api(status) = &e
        && status.code == 404
        // A 404 on an Event call concerns the Event, not the Rollout it is about.
        && call.resource != Call::EVENT.resource
    {
        return Error::NotFound {
            kind: call.kind,
            key: key.clone(),
            hint: format!(" in the cluster ({})", status.message),
        };
    }
    Error::Api {
        action: call.action,
        kind: call.kind,
        key: key.to_string(),
        why: why(&e, call.verb, call.resource),
        source: Box::new(e),
    }
}

/// What kind of failure an API call's error is: by the status code the server answered, or
/// unavailable when it gave none (unreachable, timed out).
pub(crate) fn failure(source: &(dyn std::error::Error + Send + Sync + 'static)) -> WriteFailure {
    match source.downcast_ref::<::kube::Error>() {
        Some(::kube::Error::Api(status)) => match status.code {
            409 => WriteFailure::Conflict,
            401 | 403 => WriteFailure::Forbidden,
            404 | 410 => WriteFailure::NotFound,
            400 | 422 => WriteFailure::Invalid,
            _ => WriteFailure::Unavailable,
        },
        _ => WriteFailure::Unavailable,
    }
}

/// The error for the first list of Rollouts, which tells a missing CRD from missing rights.
pub(super) fn unlistable(e: ::kube::Error, scope: &Scope) -> Error {
    let why = match &e {
        ::kube::Error::Api(status) if status.code == 404 => format!(
            "the Rollout CustomResourceDefinition (rollouts.fledge.dev, version v1alpha1) is not \
             installed: kubectl apply -f manifests/install/base/crd.yaml ({})",
            status.message
        ),
        _ => why(&e, "list", "rollouts.fledge.dev"),
    };
    Error::Api {
        action: "list",
        kind: "Rollouts",
        key: scope.to_string(),
        why,
        source: Box::new(e),
    }
}

/// One line for a failed watch of the Rollouts.
pub(super) fn watch_failed(e: &watcher::Error, scope: &Scope) -> String {
    let (verb, inner) = match e {
        watcher::Error::InitialListFailed(e) => ("list", e),
        watcher::Error::WatchStartFailed(e) | watcher::Error::WatchFailed(e) => ("watch", e),
        watcher::Error::WatchError(status) => {
            return format!(
                "cannot watch Rollouts {scope}: the API server ended the watch: {} {}",
                status.code, status.message
            );
        }
        watcher::Error::NoResourceVersion => {
            return format!("cannot watch Rollouts {scope}: {e}");
        }
    };
    format!(
        "cannot {verb} Rollouts {scope}: {}",
        why(inner, verb, "rollouts.fledge.dev")
    )
}

/// Why a call failed, in words; names the missing permission on 403.
fn why(e: &::kube::Error, verb: &str, resource: &str) -> String {
    match e {
        ::kube::Error::Api(status) => match status.code {
            403 => format!(
                "forbidden: the agent's ServiceAccount needs RBAC verb `{verb}` on `{resource}` \
                 (the ClusterRole in manifests/install/base/agent.yaml grants it): {}",
                status.message
            ),
            401 => format!(
                "unauthorized: the API server refused the agent's credentials: {}",
                status.message
            ),
            409 => format!(
                "it was changed by someone else since it was read (409 Conflict), so it was not \
                 overwritten; the next attempt reads it again: {}",
                status.message
            ),
            422 => format!(
                "the API server refused it as invalid (422): {}",
                status.message
            ),
            code => format!(
                "the API server answered {code} {}: {}",
                status.reason, status.message
            ),
        },
        ::kube::Error::HyperError(_) | ::kube::Error::Service(_) => {
            format!("cannot reach the API server: {}", chain(e))
        }
        other => chain(other),
    }
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let next = s.to_string();
        if !out.contains(&next) {
            out.push_str(": ");
            out.push_str(&next);
        }
        source = s.source();
    }
    out
}
