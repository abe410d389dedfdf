//! `kubectl fledge`: the kubectl plugin's calls, straight to the Kubernetes API with the user's
//! own kubeconfig (no port-forward, no agent address). It reads Rollouts, and gives a command by
//! recording it on the Rollout (annotation `fledge.dev/command`, see `fledge_core::rollout::
//! recorded`) with a merge patch at the resourceVersion it read, so Kubernetes RBAC decides who
//! may, and a concurrent change is refused (409) rather than overwritten. The agent takes the
//! command from its watch and answers in `status.lastCommand`, which the plugin waits for.
//!
//! Who gives the command is what the API server says in a SelfSubjectReview
//! (authentication.k8s.io/v1), or, where that API is missing or refused, the kubeconfig's user
//! name. What it is not: it decides nothing (the next id comes from the core) and words its
//! errors in `explain`, its output in `show`.

mod explain;
pub mod show;

use std::time::Duration;

use ::kube::api::{Api, ApiResource, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use ::kube::config::Kubeconfig;
use ::kube::{Client, Config};
use fledge_core::ObjectKey;
use fledge_core::rollout::recorded::{self, Pending};
use fledge_core::rollout::{
    COMMAND_ANNOTATION, CommandRecord, Phase, RecordedCommand, Rollout, UserCommand,
};
use jiff::Timestamp;
use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use serde_json::{Value, json};

pub use explain::Error;
use explain::Verb;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The field manager of the plugin's patches.
pub const FIELD_MANAGER: &str = "kubectl-fledge";

/// How a `wait` ended.
#[derive(Debug)]
pub enum Waited {
    Succeeded(Value),
    /// Rolled back, aborted or failed: the Rollout, with its evidence.
    Failed(Value),
    /// Still running when the time was up: the Rollout as last read.
    TimedOut(Value),
}

/// The plugin's connection: a client, the namespace by default, and who is asking.
pub struct Plugin {
    client: Client,
    api: ApiResource,
    /// The kubeconfig context's namespace, or `default`.
    pub namespace: String,
    /// The kubeconfig's user name, when there is one.
    kubeconfig_user: Option<String>,
}

impl Plugin {
    /// Connects as kubectl would: `KUBECONFIG` or `~/.kube/config`, else the in-cluster account.
    pub async fn connect() -> Result<Self> {
        let config = Config::infer()
            .await
            .map_err(|e| Error::NoConfig(crate::cli::error_chain(&e)))?;
        let kubeconfig_user = Kubeconfig::read().ok().and_then(|k| {
            let current = k.current_context.clone()?;
            let context = k.contexts.iter().find(|c| c.name == current)?;
            context.context.as_ref()?.user.clone()
        });
        Self::with_config(config, kubeconfig_user)
    }

    /// A plugin over `config`; `kubeconfig_user` names the user when the API server cannot.
    pub fn with_config(config: Config, kubeconfig_user: Option<String>) -> Result<Self> {
        let namespace = config.default_namespace.clone();
        let client =
            Client::try_from(config).map_err(|e| Error::NoConfig(crate::cli::error_chain(&e)))?;
        Ok(Self {
            client,
            api: ApiResource::erase::<Rollout>(&()),
            namespace,
            kubeconfig_user,
        })
    }

    /// Who the API server takes the caller for; the kubeconfig's user name when it will not say.
    pub async fn whoami(&self) -> String {
        let api: Api<SelfSubjectReview> = Api::all(self.client.clone());
        match api
            .create(&PostParams::default(), &SelfSubjectReview::default())
            .await
        {
            Ok(review) => review
                .status
                .and_then(|s| s.user_info)
                .and_then(|u| u.username)
                .or_else(|| self.kubeconfig_user.clone())
                .unwrap_or_else(|| "an unnamed user".into()),
            Err(e) => {
                tracing::debug!(error = %e, "no SelfSubjectReview; naming the kubeconfig user");
                self.kubeconfig_user
                    .clone()
                    .unwrap_or_else(|| "an unnamed user".into())
            }
        }
    }

    fn rollouts(&self, namespace: Option<&str>) -> Api<DynamicObject> {
        match namespace {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, &self.api),
            None => Api::all_with(self.client.clone(), &self.api),
        }
    }

    /// Every Rollout in `namespace` (all namespaces when None), as the API server keeps them.
    pub async fn list(&self, namespace: Option<&str>, who: &str) -> Result<Vec<Value>> {
        let list = self
            .rollouts(namespace)
            .list(&ListParams::default().limit(500))
            .await
            .map_err(|e| explain::failed(e, Verb::List, namespace, None, who))?;
        list.items
            .into_iter()
            .map(|o| serde_json::to_value(o).map_err(|e| Error::Unreadable(e.to_string())))
            .collect()
    }

    /// One Rollout.
    pub async fn get(&self, key: &ObjectKey, who: &str) -> Result<Value> {
        let object = self
            .rollouts(Some(&key.namespace))
            .get(&key.name)
            .await
            .map_err(|e| explain::failed(e, Verb::Get, Some(&key.namespace), Some(key), who))?;
        serde_json::to_value(object).map_err(|e| Error::Unreadable(e.to_string()))
    }

    /// Records `command` on the Rollout for the agent, as given by `who` now; returns it. The
    /// patch is made at the resourceVersion read; when the Rollout changed in between (the agent
    /// writes its status often), it is read again and the command recomputed, a few times.
    pub async fn command(
        &self,
        key: &ObjectKey,
        command: UserCommand,
        who: &str,
    ) -> Result<RecordedCommand> {
        let mut attempts = 0;
        loop {
            attempts += 1;
            let object = self.get(key, who).await?;
            let rollout: Rollout = serde_json::from_value(object.clone())
                .map_err(|e| Error::Unreadable(format!("Rollout {key}: {e}")))?;
            if let Some(Pending::Command(c)) = recorded::pending(&rollout) {
                return Err(Error::Pending {
                    key: key.clone(),
                    command: c,
                });
            }
            let recorded = RecordedCommand::next(&rollout, command, who, Timestamp::now());
            let patch = json!({
                "metadata": {
                    "resourceVersion": object["metadata"]["resourceVersion"],
                    "annotations": { COMMAND_ANNOTATION: recorded.to_annotation() },
                }
            });
            let params = PatchParams {
                field_manager: Some(FIELD_MANAGER.into()),
                ..PatchParams::default()
            };
            match self
                .rollouts(Some(&key.namespace))
                .patch(&key.name, &params, &Patch::Merge(&patch))
                .await
            {
                Ok(_) => return Ok(recorded),
                Err(::kube::Error::Api(status)) if status.code == 409 && attempts < 3 => continue,
                Err(e) => {
                    let ns = Some(key.namespace.as_str());
                    return Err(explain::failed(e, Verb::Patch, ns, Some(key), who));
                }
            }
        }
    }

    /// Waits until the agent has taken command `id`, polling every `every`; None when it has
    /// not within `timeout`.
    pub async fn taken(
        &self,
        key: &ObjectKey,
        id: u64,
        who: &str,
        every: Duration,
        timeout: Duration,
    ) -> Result<Option<CommandRecord>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let object = self.get(key, who).await?;
            let last: Option<CommandRecord> =
                serde_json::from_value(object["status"]["lastCommand"].clone()).ok();
            if let Some(last) = last.filter(|l| l.id >= id) {
                return Ok(Some(last));
            }
            if tokio::time::Instant::now() + every > deadline {
                return Ok(None);
            }
            tokio::time::sleep(every).await;
        }
    }

    /// Polls until the Rollout ends or `timeout` passes, handing each read to `progress`.
    pub async fn wait(
        &self,
        key: &ObjectKey,
        who: &str,
        every: Duration,
        timeout: Duration,
        mut progress: impl FnMut(&Value),
    ) -> Result<Waited> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let object = self.get(key, who).await?;
            progress(&object);
            let phase: Option<Phase> =
                serde_json::from_value(object["status"]["phase"].clone()).ok();
            match phase {
                Some(Phase::Succeeded) => return Ok(Waited::Succeeded(object)),
                Some(p) if p.is_final() => return Ok(Waited::Failed(object)),
                _ => {}
            }
            if tokio::time::Instant::now() + every > deadline {
                return Ok(Waited::TimedOut(object));
            }
            tokio::time::sleep(every).await;
        }
    }
}

/// `NAME` in `namespace`, or `NAMESPACE/NAME`.
pub fn key_of(name: &str, namespace: &str) -> Result<ObjectKey> {
    let (ns, name) =
        crate::cli::split_name(name, namespace).map_err(|e| Error::BadName(e.to_string()))?;
    Ok(ObjectKey::new(ns, name))
}
