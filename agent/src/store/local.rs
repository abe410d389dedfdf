//! The local store: a folder of YAML files (`*.yaml`, `*.yml`, several documents per file
//! allowed) holding Rollouts and VirtualServices, as `kubectl apply -f DIR` would take them.
//!
//! - Rollouts are read, never written: the agent does not touch a person's spec. Each one's
//!   status goes to `DIR/status/<namespace>_<name>.yaml` with the spec's digest; a spec whose
//!   digest changed gets the next `metadata.generation`, as the API server would give it.
//! - VirtualServices are rewritten in place, atomically: a temporary file in the same folder,
//!   fsync, rename over the old one, fsync of the folder. A reader (the sandbox proxy) sees the
//!   old file or the new one, never a half. Other documents in the same file are kept as values
//!   (YAML comments in that file are not).
//!
//! - Events (the decisions a cluster would show as Kubernetes Events) are appended, one JSON
//!   object a line, to `DIR/status/<namespace>_<name>.events.jsonl`, so `tail -f` shows what the
//!   rollout decided and why. Only decisions are logged, so the file grows by a few lines per
//!   step, not per tick.
//!
//! Other kinds in the folder (DestinationRules, …) are left alone.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Error, Listing, ObjectKey, Result, RolloutEvent, RolloutStore};
use fledge_core::rollout::{EventKind, Phase, Rollout, RolloutStatus};

const ROLLOUT_API: &str = "fledge.dev/v1alpha1";

/// A folder of YAML files. Cheap to create; caches nothing the files say (only which file held
/// each VirtualService, checked on every read), so a restarted agent reads exactly what they say.
#[derive(Debug)]
pub struct LocalStore {
    dir: PathBuf,
    writes: AtomicU64,
    /// Whether the temporaries a killed agent left behind were removed (on the first listing).
    swept: AtomicBool,
    /// Which file held each VirtualService at the last full read, so reading or replacing one
    /// parses that file only (a full read per VirtualService made a tick with many Rollouts
    /// quadratic). A file that no longer holds it sends the lookup back to a full read.
    where_is: Mutex<HashMap<ObjectKey, PathBuf>>,
}

/// One YAML document of one file.
struct Doc {
    path: PathBuf,
    value: Value,
}

/// What `DIR/status/…` holds for one Rollout.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StatusFile {
    rollout: String,
    generation: i64,
    /// FNV-1a of the spec's JSON, hex: tells whether the spec changed since.
    spec_digest: String,
    status: RolloutStatus,
}

impl LocalStore {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            writes: AtomicU64::new(0),
            swept: AtomicBool::new(false),
            where_is: Mutex::new(HashMap::new()),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn status_path(&self, key: &ObjectKey) -> PathBuf {
        // `_` cannot appear in Kubernetes names, so the file name is unambiguous.
        self.dir
            .join("status")
            .join(format!("{}_{}.yaml", key.namespace, key.name))
    }

    /// Where a Rollout's events are appended.
    pub fn events_path(&self, key: &ObjectKey) -> PathBuf {
        self.dir
            .join("status")
            .join(format!("{}_{}.events.jsonl", key.namespace, key.name))
    }

    /// Appends one event line (`at`, `type`, `reason`, `action`, `note`, `generation`).
    pub fn append_event(&self, rollout: &Rollout, event: &RolloutEvent) -> Result<()> {
        let key = ObjectKey::of(rollout);
        let path = self.events_path(&key);
        let kind = match event.kind {
            EventKind::Normal => "Normal",
            EventKind::Warning => "Warning",
        };
        let line = serde_json::json!({
            "at": jiff::Timestamp::now(),
            "type": kind,
            "reason": event.reason,
            "action": event.action,
            "note": event.note,
            "generation": rollout.metadata.generation,
        });
        let io = |action, at: &Path| {
            let at = at.display().to_string();
            move |source| Error::Io { action, at, source }
        };
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).map_err(io("create", dir))?;
        }
        let mut file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io("open", &path))?;
        // One write per line, so concurrent readers never see half a line.
        file.write_all(format!("{line}\n").as_bytes())
            .map_err(io("append to", &path))
    }

    /// Removes the temporary files of [`Self::write_atomically`] that another process (an agent
    /// killed between create and rename) left in the folder or under `status/`. The file they
    /// were to replace is intact: the rename never happened.
    fn sweep_temporaries(&self) {
        if self.swept.swap(true, Ordering::Relaxed) {
            return;
        }
        let own = format!(".{}-", std::process::id());
        for dir in [self.dir.clone(), self.dir.join("status")] {
            let Ok(entries) = fs::read_dir(&dir) else {
                continue;
            };
            for path in entries.filter_map(|e| e.ok().map(|e| e.path())) {
                let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
                let stale = name.is_some_and(|n| {
                    n.starts_with('.') && n.ends_with(".tmp") && !n.contains(&own)
                });
                if stale && fs::remove_file(&path).is_ok() {
                    tracing::info!(path = %path.display(), "removed a temporary file left by an interrupted write");
                }
            }
        }
    }

    /// Every document of every YAML file, files in name order; unreadable files as problems.
    fn documents(&self) -> Result<(Vec<Doc>, Vec<Error>)> {
        self.sweep_temporaries();
        let io = |source| Error::Io {
            action: "list",
            at: self.dir.display().to_string(),
            source,
        };
        let mut paths: Vec<PathBuf> = fs::read_dir(&self.dir)
            .map_err(io)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| is_yaml(p) && p.is_file())
            .collect();
        paths.sort();
        let (mut docs, mut problems) = (Vec::new(), Vec::new());
        for path in paths {
            match read_documents(&path) {
                Ok(values) => docs.extend(values.into_iter().map(|value| Doc {
                    path: path.clone(),
                    value,
                })),
                Err(e) => problems.push(e),
            }
        }
        let mut where_is = self.where_is.lock().unwrap_or_else(PoisonError::into_inner);
        where_is.clear();
        for doc in docs.iter().filter(|d| is_virtual_service(&d.value)) {
            // The first file in name order, as a full read finds it.
            let key = ObjectKey::of_object(&doc.value);
            where_is.entry(key).or_insert_with(|| doc.path.clone());
        }
        Ok((docs, problems))
    }

    /// Every Rollout with its generation and persisted status.
    pub fn read_rollouts(&self) -> Result<Listing> {
        let (docs, mut problems) = self.documents()?;
        let mut seen: BTreeMap<ObjectKey, PathBuf> = BTreeMap::new();
        let mut rollouts = Vec::new();
        for doc in docs.iter().filter(|d| d.value["kind"] == "Rollout") {
            let key = ObjectKey::of_object(&doc.value);
            let at = doc.path.display().to_string();
            let unreadable = |problem: String| Error::Unreadable {
                kind: "Rollout",
                key: key.to_string(),
                at: at.clone(),
                problem,
            };
            if doc.value["apiVersion"] != ROLLOUT_API {
                problems.push(unreadable(format!(
                    "apiVersion is {}, not {ROLLOUT_API}",
                    doc.value["apiVersion"]
                )));
                continue;
            }
            let mut rollout: Rollout = match serde_path_to_error::deserialize(&doc.value) {
                Ok(r) => r,
                Err(e) => {
                    problems.push(unreadable(format!("{}: {}", e.path(), e.inner())));
                    continue;
                }
            };
            // The key names files under status/: only a Kubernetes name may do that.
            if let Err(e) = key.check() {
                problems.push(unreadable(e.to_string()));
                continue;
            }
            if let Some(first) = seen.get(&key) {
                problems.push(Error::Duplicate {
                    kind: "Rollout",
                    key,
                    first: first.display().to_string(),
                    second: at,
                });
                continue;
            }
            seen.insert(key.clone(), doc.path.clone());
            rollout.metadata.namespace = Some(key.namespace.clone());
            match self.persisted(&key, &rollout) {
                Ok((generation, status)) => {
                    rollout.metadata.generation = Some(generation);
                    if status.is_some() {
                        rollout.status = status;
                    }
                    rollouts.push(rollout);
                }
                // A status that cannot be read is not replaced by a fresh one: that would restart
                // the rollout. The problem is reported and the Rollout left alone until fixed.
                Err(e) => problems.push(e),
            }
        }
        Ok(Listing { rollouts, problems })
    }

    /// The generation and status persisted for a Rollout (generation 1 and no status if none).
    fn persisted(&self, key: &ObjectKey, r: &Rollout) -> Result<(i64, Option<RolloutStatus>)> {
        let path = self.status_path(key);
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((1, None)),
            Err(source) => {
                return Err(Error::Io {
                    action: "read",
                    at: path.display().to_string(),
                    source,
                });
            }
        };
        let file: StatusFile = serde_norway::from_str(&text).map_err(|e| Error::Unreadable {
            kind: "status of Rollout",
            key: key.to_string(),
            at: path.display().to_string(),
            problem: e.to_string(),
        })?;
        // A status that has started has the generation it was computed from; one without it was
        // damaged, and taking it as new would start the rollout again from its first step.
        if file.status.phase != Phase::Pending && file.status.observed_generation.is_none() {
            return Err(Error::Unreadable {
                kind: "status of Rollout",
                key: key.to_string(),
                at: path.display().to_string(),
                problem: format!(
                    "status.observedGeneration is missing from a {} status: restore the file, \
                     or delete it to start the rollout again from its first step",
                    file.status.phase
                ),
            });
        }
        let generation = if file.spec_digest == digest(r) {
            file.generation
        } else {
            file.generation + 1
        };
        Ok((generation, Some(file.status)))
    }

    pub fn write_rollout_status(&self, rollout: &Rollout, status: &RolloutStatus) -> Result<()> {
        let key = ObjectKey::of(rollout);
        let file = StatusFile {
            rollout: key.to_string(),
            generation: rollout.metadata.generation.unwrap_or(1),
            spec_digest: digest(rollout),
            status: status.clone(),
        };
        let yaml = serde_norway::to_string(&file).map_err(|e| Error::Unreadable {
            kind: "status of Rollout",
            key: key.to_string(),
            at: "memory".into(),
            problem: e.to_string(),
        })?;
        let text = format!(
            "# The fledge agent's record of Rollout {key}: it resumes from here after a restart.\n{yaml}"
        );
        let path = self.status_path(&key);
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).map_err(|source| Error::Io {
                action: "create",
                at: dir.display().to_string(),
                source,
            })?;
        }
        self.write_atomically(&path, text.as_bytes())
    }

    /// The documents of the file holding the VirtualService `key` (all documents, when it took
    /// a full read to find it) and its position among them.
    fn find_virtual_service(&self, key: &ObjectKey) -> Result<(Vec<Doc>, usize)> {
        let known = self
            .where_is
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
            .cloned();
        if let Some(path) = known
            && let Ok(values) = read_documents(&path)
        {
            let docs: Vec<Doc> = values
                .into_iter()
                .map(|value| Doc {
                    path: path.clone(),
                    value,
                })
                .collect();
            let at = docs.iter().position(|d| {
                is_virtual_service(&d.value) && ObjectKey::of_object(&d.value) == *key
            });
            if let Some(at) = at {
                return Ok((docs, at));
            }
        }
        let (docs, _) = self.documents()?;
        let at = docs
            .iter()
            .position(|d| is_virtual_service(&d.value) && ObjectKey::of_object(&d.value) == *key)
            .ok_or_else(|| Error::NotFound {
                kind: "VirtualService",
                key: key.clone(),
                hint: format!(" in the YAML files of {}", self.dir.display()),
            })?;
        Ok((docs, at))
    }

    pub fn read_virtual_service(&self, key: &ObjectKey) -> Result<Value> {
        let (mut docs, at) = self.find_virtual_service(key)?;
        Ok(docs.swap_remove(at).value)
    }

    /// Rewrites the file holding the VirtualService named by `vs.metadata`; a no-op when the
    /// stored object already equals `vs`.
    pub fn replace_virtual_service(&self, vs: &Value) -> Result<()> {
        let key = ObjectKey::of_object(vs);
        let (docs, at) = self.find_virtual_service(&key)?;
        if docs[at].value == *vs {
            return Ok(());
        }
        let path = docs[at].path.clone();
        let mut text = String::new();
        for (i, doc) in docs.iter().enumerate().filter(|(_, d)| d.path == path) {
            let value = if i == at { vs } else { &doc.value };
            let yaml = serde_norway::to_string(value).map_err(|e| Error::Unreadable {
                kind: "VirtualService",
                key: key.to_string(),
                at: path.display().to_string(),
                problem: e.to_string(),
            })?;
            if !text.is_empty() {
                text.push_str("---\n");
            }
            text.push_str(&yaml);
        }
        self.write_atomically(&path, text.as_bytes())
    }

    /// Temporary file in the same folder, fsync, rename over `path`, fsync the folder.
    pub(crate) fn write_atomically(&self, path: &Path, bytes: &[u8]) -> Result<()> {
        let dir = path.parent().unwrap_or(Path::new("."));
        let name = path
            .file_name()
            .map_or_else(|| "object".into(), |n| n.to_string_lossy().into_owned());
        let n = self.writes.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!(".{name}.{}-{n}.tmp", std::process::id()));
        let io = |action, at: &Path| {
            let at = at.display().to_string();
            move |source| Error::Io { action, at, source }
        };
        let written = (|| {
            let mut f = fs::File::create(&tmp).map_err(io("create", &tmp))?;
            f.write_all(bytes).map_err(io("write", &tmp))?;
            f.sync_all().map_err(io("fsync", &tmp))?;
            fs::rename(&tmp, path).map_err(io("rename onto", path))
        })();
        if written.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        written?;
        fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io("fsync", dir))
    }
}

impl RolloutStore for LocalStore {
    // Small files on a local disk: the work is done at once and handed over as a ready future.

    fn rollouts(&self) -> impl Future<Output = Result<Listing>> + Send {
        std::future::ready(self.read_rollouts())
    }

    fn write_status(
        &self,
        rollout: &Rollout,
        status: &RolloutStatus,
    ) -> impl Future<Output = Result<()>> + Send {
        std::future::ready(self.write_rollout_status(rollout, status))
    }

    fn virtual_service(&self, key: &ObjectKey) -> impl Future<Output = Result<Value>> + Send {
        std::future::ready(self.read_virtual_service(key))
    }

    fn write_virtual_service(&self, vs: &Value) -> impl Future<Output = Result<()>> + Send {
        std::future::ready(self.replace_virtual_service(vs))
    }

    fn record_event(
        &self,
        rollout: &Rollout,
        event: &RolloutEvent,
    ) -> impl Future<Output = Result<()>> + Send {
        std::future::ready(self.append_event(rollout, event))
    }
}

pub(crate) fn is_yaml(path: &Path) -> bool {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    !name.starts_with('.') && (name.ends_with(".yaml") || name.ends_with(".yml"))
}

fn is_virtual_service(v: &Value) -> bool {
    v["kind"] == "VirtualService"
        && v["apiVersion"]
            .as_str()
            .is_some_and(|a| a.starts_with("networking.istio.io/"))
}

pub(crate) fn read_documents(path: &Path) -> Result<Vec<Value>> {
    let at = path.display().to_string();
    let text = fs::read_to_string(path).map_err(|source| Error::Io {
        action: "read",
        at: at.clone(),
        source,
    })?;
    let mut out = Vec::new();
    for (i, doc) in serde_norway::Deserializer::from_str(&text).enumerate() {
        // Read as YAML's own value first: it refuses a key given twice (which is also what two
        // objects without the `---` between them look like) instead of keeping the last one.
        let value = serde_norway::Value::deserialize(doc)
            .and_then(|v| serde_json::to_value(v).map_err(serde::de::Error::custom));
        match value {
            Ok(Value::Null) => {}
            Ok(v) => out.push(v),
            Err(e) => {
                return Err(Error::Unreadable {
                    kind: "YAML document",
                    key: format!("#{}", i + 1),
                    at,
                    problem: e.to_string(),
                });
            }
        }
    }
    Ok(out)
}

/// FNV-1a (64 bit) of the spec's JSON: stable across builds, unlike std's hasher.
fn digest(rollout: &Rollout) -> String {
    let json = serde_json::to_vec(&rollout.spec).unwrap_or_default();
    let hash = json.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("{hash:016x}")
}
