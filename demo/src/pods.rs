//! The demo's stand-in for Kubernetes' Deployment controller: the agent writes a Deployment
//! file's `spec.replicas`; this brings its `status` along as pods would come and go — a pod
//! more ready every `startup`, pods gone at once when the spec asks for fewer — with
//! `observedGeneration` set to the spec's generation. It never touches `spec`.
//!
//! What it is not: real instances. The sandbox's backends stay one per version; the counts here
//! are what the rollout sees and what the demo prints.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// How often the files are looked at.
const EVERY: Duration = Duration::from_millis(200);

/// The running stand-in; dropping it stops it.
pub struct Pods {
    task: JoinHandle<()>,
}

impl Drop for Pods {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Pods {
    /// Starts bringing the status of each file in `files` (under `dir`) along.
    pub fn start(dir: PathBuf, files: Vec<String>, startup: Duration) -> Pods {
        let task = tokio::spawn(async move {
            let mut last_up: Vec<Instant> = vec![Instant::now(); files.len()];
            loop {
                tokio::time::sleep(EVERY).await;
                for (file, last) in files.iter().zip(last_up.iter_mut()) {
                    let path = dir.join(file);
                    let ready_one_more = last.elapsed() >= startup;
                    match step(&path, ready_one_more) {
                        Ok(true) => *last = Instant::now(),
                        Ok(false) => {}
                        Err(e) => tracing::warn!(path = %path.display(), error = %e, "pods"),
                    }
                }
            }
        });
        Pods { task }
    }
}

fn read(path: &Path) -> std::io::Result<Value> {
    let text = std::fs::read_to_string(path)?;
    serde_norway::from_str(&text).map_err(std::io::Error::other)
}

/// One look at one file; whether a pod became ready.
fn step(path: &Path, ready_one_more: bool) -> std::io::Result<bool> {
    let mut d = read(path)?;
    let want = d["spec"]["replicas"].as_u64().unwrap_or(1);
    let ready = d["status"]["readyReplicas"].as_u64().unwrap_or(0);
    let generation = d["metadata"]["generation"].as_u64().unwrap_or(1);
    let next = match ready.cmp(&want) {
        std::cmp::Ordering::Less if ready_one_more => ready + 1,
        std::cmp::Ordering::Greater => want,
        _ => ready,
    };
    let status = json!({
        "observedGeneration": generation,
        "replicas": want,
        "readyReplicas": next,
        "availableReplicas": next,
    });
    if d["status"] == status {
        return Ok(false);
    }
    d["status"] = status;
    let text = serde_norway::to_string(&d).map_err(std::io::Error::other)?;
    let tmp = path.with_extension("pods.tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)?;
    Ok(next > ready)
}

/// `v1 3 (3 ready)`: a Deployment file's replicas as the demo prints them; None when unreadable.
pub fn describe(path: &Path, version: &str) -> Option<String> {
    let d = read(path).ok()?;
    Some(format!(
        "{version} {} ({} ready)",
        d["spec"]["replicas"].as_u64().unwrap_or(1),
        d["status"]["readyReplicas"].as_u64().unwrap_or(0)
    ))
}
