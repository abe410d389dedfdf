//! The plugin's errors, in words a person can act on: a refusal (403) names who was refused, the
//! verb, the resource and the namespace, and the Role that would allow it; a missing Rollout or
//! CRD says how to find or install it; a 409 says someone changed the Rollout meanwhile.
//!
//! Wording only; what to call and when is `kubectl`'s business.

use fledge_core::ObjectKey;
use fledge_core::rollout::RecordedCommand;

/// Why a plugin command failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "no Kubernetes configuration found: {0} (kubectl-fledge reads KUBECONFIG or ~/.kube/config, as kubectl does)"
    )]
    NoConfig(String),
    #[error("{0}")]
    BadName(String),
    /// A call the API server refused or could not take; the words say why and what to do.
    #[error("{0}")]
    Api(String),
    #[error("the API server's answer is not a Rollout: {0}")]
    Unreadable(String),
    #[error(
        "Rollout {key} has a command the agent has not taken yet: {} (command {}) by {} at {}; \
         the agent takes commands within seconds when it runs (kubectl -n fledge-system get pods), \
         then try again",
        command.command, command.id, command.by, command.at
    )]
    Pending {
        key: ObjectKey,
        command: RecordedCommand,
    },
}

/// What the plugin asked the API server to do with Rollouts, as RBAC names it.
#[derive(Clone, Copy, Debug)]
pub(super) enum Verb {
    List,
    Get,
    Patch,
}

impl Verb {
    fn as_str(self) -> &'static str {
        match self {
            Self::List => "list",
            Self::Get => "get",
            Self::Patch => "patch",
        }
    }
}

/// The error for a Rollout call that failed, by `who`, in `namespace` (None: all namespaces).
pub(super) fn failed(
    e: ::kube::Error,
    verb: Verb,
    namespace: Option<&str>,
    key: Option<&ObjectKey>,
    who: &str,
) -> Error {
    let verb = verb.as_str();
    let place = match namespace {
        Some(ns) => format!("in namespace {ns}"),
        None => "in all namespaces".into(),
    };
    let words = match &e {
        ::kube::Error::Api(status) => match (status.code, key) {
            (403, _) => {
                let grant = match namespace {
                    Some(ns) => format!(
                        "kubectl create rolebinding fledge-operator-{user} -n {ns} --clusterrole=fledge-operator --user={who}",
                        user = safe(who)
                    ),
                    None => format!(
                        "kubectl create clusterrolebinding fledge-operator-{user} --clusterrole=fledge-operator --user={who}",
                        user = safe(who)
                    ),
                };
                format!(
                    "you ({who}) may not {verb} rollouts.fledge.dev {place}: ask for a Role granting \
                     {verb} on rollouts.fledge.dev {place}; the ClusterRole fledge-operator in \
                     manifests/install/base/operator.yaml grants what kubectl fledge needs, e.g. \
                     `{grant}` (the API server said: {})",
                    status.message
                )
            }
            (401, _) => format!(
                "the API server did not accept your credentials (401): log in again as kubectl \
                 would need (the API server said: {})",
                status.message
            ),
            (404, Some(key)) if status.message.contains(&format!("\"{}\"", key.name)) => format!(
                "Rollout {key} not found: `kubectl fledge get -n {}` lists the Rollouts there",
                key.namespace
            ),
            (404, _) => format!(
                "the Rollout CustomResourceDefinition (rollouts.fledge.dev) is not installed in \
                 this cluster: install fledge first (kubectl apply -k manifests/install/<which>) \
                 (the API server said: {})",
                status.message
            ),
            (409, Some(key)) => format!(
                "Rollout {key} changed while the command was being recorded (409 Conflict), so \
                 nothing was written: run the command again (the API server said: {})",
                status.message
            ),
            (code, _) => format!(
                "cannot {verb} rollouts.fledge.dev {place}: the API server answered {code} {}: {}",
                status.reason, status.message
            ),
        },
        other => format!(
            "cannot {verb} rollouts.fledge.dev {place}: cannot reach the API server: {}",
            crate::cli::error_chain(other)
        ),
    };
    Error::Api(words)
}

/// A user name as a Kubernetes object name part (`alice@example.com` → `alice-example-com`).
fn safe(who: &str) -> String {
    let s: String = who
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    s.trim_matches('-').to_owned()
}

#[cfg(test)]
mod tests {
    #[test]
    fn user_names_become_object_name_parts() {
        for (who, expected) in [
            ("alice", "alice"),
            ("alice@Example.com", "alice-example-com"),
            (
                "system:serviceaccount:ci:deployer",
                "system-serviceaccount-ci-deployer",
            ),
        ] {
            assert_eq!(super::safe(who), expected);
        }
    }
}
