//! Deployments on the Kubernetes API server: read with `get deployments` (apps/v1), scaled with
//! a merge patch of `spec.replicas` on the scale subresource (`patch deployments/scale`) — the
//! two calls the agent's ClusterRole grants for workloads, nothing else.

use ::kube::Client;
use ::kube::api::{Api, Patch, PatchParams};
use fledge_core::rollout::workloads::Observed;
use k8s_openapi::api::apps::v1::Deployment;

use super::{Deployments, Result, WorkloadError};
use crate::store::FIELD_MANAGER;

/// Deployments through `client`.
#[derive(Clone)]
pub struct KubeDeployments {
    client: Client,
}

impl KubeDeployments {
    pub fn new(client: Client) -> Self {
        Self { client }
    }
}

/// The error chain in one line, the API server's message included.
fn reason(e: &::kube::Error) -> String {
    match e {
        ::kube::Error::Api(status) => format!("{} ({})", status.message, status.code),
        other => crate::cli::error_chain(other),
    }
}

impl Deployments for KubeDeployments {
    async fn read(&self, namespace: &str, name: &str) -> Result<Option<Observed>> {
        let api: Api<Deployment> = Api::namespaced(self.client.clone(), namespace);
        let d = api.get_opt(name).await.map_err(|e| WorkloadError::Read {
            namespace: namespace.into(),
            name: name.into(),
            reason: reason(&e),
        })?;
        Ok(d.map(|d| {
            let count = |n: Option<i32>| n.and_then(|n| u32::try_from(n).ok()).unwrap_or(0);
            let status = d.status.unwrap_or_default();
            Observed {
                // Kubernetes' default when the spec leaves it out.
                replicas: d.spec.replicas.map_or(1, |n| count(Some(n))),
                generation: d.metadata.generation.unwrap_or(0),
                observed_generation: status.observed_generation.unwrap_or(0),
                ready_replicas: count(status.ready_replicas),
                available_replicas: count(status.available_replicas),
            }
        }))
    }

    async fn scale(&self, namespace: &str, name: &str, replicas: u32) -> Result<()> {
        let api: Api<Deployment> = Api::namespaced(self.client.clone(), namespace);
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PatchParams::default()
        };
        let patch = serde_json::json!({ "spec": { "replicas": replicas } });
        api.patch_scale(name, &params, &Patch::Merge(&patch))
            .await
            .map(drop)
            .map_err(|e| WorkloadError::Scale {
                namespace: namespace.into(),
                name: name.into(),
                replicas,
                reason: reason(&e),
            })
    }
}
