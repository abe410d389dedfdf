//! Deployments in the local store's folder: `apps/v1` `Deployment` documents in its YAML files,
//! beside the Rollouts (a file of their own or shared; `metadata.namespace` defaults to
//! `default`). The agent writes `spec.replicas` and, as the API server would, the next
//! `metadata.generation`; the rest of the file is kept. Readiness is whatever the document's
//! `status` says (`readyReplicas`, `availableReplicas`, `observedGeneration`): something else —
//! the demo's sandbox, a test — plays the Deployment controller and writes it.
//!
//! Two writers share a file (the agent its spec, the other its status), each reading before it
//! writes; both repeat until the file says what they want, so a write lost between them is
//! made again on the next round.

use std::fs;
use std::path::{Path, PathBuf};

use fledge_core::rollout::workloads::Observed;
use serde_json::{Value, json};

use super::{Deployments, Result, WorkloadError};
use crate::store::LocalStore;
use crate::store::local::{is_yaml, read_documents};

/// The Deployments of the folder `dir`.
pub struct LocalDeployments {
    store: LocalStore,
}

impl LocalDeployments {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            store: LocalStore::new(dir),
        }
    }

    fn dir(&self) -> &Path {
        self.store.dir()
    }

    /// The file holding the Deployment, its documents and the Deployment's position.
    fn find(
        &self,
        namespace: &str,
        name: &str,
    ) -> std::io::Result<Option<(PathBuf, Vec<Value>, usize)>> {
        let mut paths: Vec<PathBuf> = fs::read_dir(self.dir())?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| is_yaml(p) && p.is_file())
            .collect();
        paths.sort();
        for path in paths {
            // A file another writer is replacing is read whole or not at all (atomic renames);
            // one that does not parse holds no Deployment this agent may scale.
            let Ok(docs) = read_documents(&path) else {
                continue;
            };
            if let Some(at) = docs.iter().position(|d| is(d, namespace, name)) {
                return Ok(Some((path, docs, at)));
            }
        }
        Ok(None)
    }
}

fn is(doc: &Value, namespace: &str, name: &str) -> bool {
    doc["kind"] == "Deployment"
        && doc["apiVersion"] == "apps/v1"
        && doc["metadata"]["name"] == name
        && doc["metadata"]["namespace"].as_str().unwrap_or("default") == namespace
}

/// A count from the document: absent is `default`; anything but a non-negative integer is an
/// error naming the field.
fn count(doc: &Value, pointer: &str, default: u32) -> std::result::Result<u32, String> {
    match doc.pointer(pointer) {
        None | Some(Value::Null) => Ok(default),
        Some(v) => v
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| format!("{} is {v}, not a count", &pointer[1..].replace('/', "."))),
    }
}

fn observed(doc: &Value) -> std::result::Result<Observed, String> {
    Ok(Observed {
        replicas: count(doc, "/spec/replicas", 1)?,
        generation: i64::from(count(doc, "/metadata/generation", 1)?),
        observed_generation: i64::from(count(doc, "/status/observedGeneration", 0)?),
        ready_replicas: count(doc, "/status/readyReplicas", 0)?,
        available_replicas: count(doc, "/status/availableReplicas", 0)?,
    })
}

impl Deployments for LocalDeployments {
    async fn read(&self, namespace: &str, name: &str) -> Result<Option<Observed>> {
        let fail = |reason: String| WorkloadError::Read {
            namespace: namespace.into(),
            name: name.into(),
            reason,
        };
        let found = self
            .find(namespace, name)
            .map_err(|e| fail(format!("{}: {e}", self.dir().display())))?;
        match found {
            None => Ok(None),
            Some((path, docs, at)) => observed(&docs[at])
                .map(Some)
                .map_err(|why| fail(format!("{}: {why}", path.display()))),
        }
    }

    async fn scale(&self, namespace: &str, name: &str, replicas: u32) -> Result<()> {
        let fail = |reason: String| WorkloadError::Scale {
            namespace: namespace.into(),
            name: name.into(),
            replicas,
            reason,
        };
        let (path, mut docs, at) = self
            .find(namespace, name)
            .map_err(|e| fail(format!("{}: {e}", self.dir().display())))?
            .ok_or_else(|| fail(format!("not found in {}", self.dir().display())))?;
        let doc = &mut docs[at];
        if doc["spec"]["replicas"] == json!(replicas) {
            return Ok(());
        }
        let generation = doc["metadata"]["generation"].as_i64().unwrap_or(1);
        doc["spec"]["replicas"] = json!(replicas);
        doc["metadata"]["generation"] = json!(generation + 1);
        let mut text = String::new();
        for doc in &docs {
            let yaml = serde_norway::to_string(doc).map_err(|e| fail(e.to_string()))?;
            if !text.is_empty() {
                text.push_str("---\n");
            }
            text.push_str(&yaml);
        }
        self.store
            .write_atomically(&path, text.as_bytes())
            .map_err(|e| fail(e.to_string()))
    }
}
