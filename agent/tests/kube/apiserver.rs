//! A stand-in for the Kubernetes API server (axum over real HTTP), serving exactly the calls the
//! agent's Kubernetes store makes, and checking each one as the real server would: method, path,
//! query, content type and body. Rollouts (status subresource) are checked against our own CRD
//! schema, VirtualServices against Istio's (the pinned bundle in `FLEDGE_ISTIO_CRDS`), Events
//! against the events.k8s.io/v1 validation rules; Deployments are read and scaled
//! (`apiserver/deployments.rs`). Objects get uids, resourceVersions from one
//! counter, generations bumped on spec changes only; a replace at a stale resourceVersion gets
//! 409; absent objects 404; watches stream real watch events (`{"type":…,"object":…}` lines).
//!
//! Any call it does not expect, or that breaks a rule, is refused with the status the real server
//! would give (or 400) and recorded in `violations()`, which every test asserts empty.
//!
//! Besides the agent (calls without a token), people come in with bearer tokens (`add_user`), as
//! `kubectl fledge` does with a kubeconfig: each call is recorded and may be refused per user,
//! and a SelfSubjectReview answers who the token stands for.
//!
//! Simplification, said plainly: server-side apply of the status is taken as "the status becomes
//! the applied one", which is what the real server does when the agent is the only manager of
//! status fields (it is: people write the spec).

mod answers;
mod checks;
mod deployments;
mod handlers;
mod leases;
mod rollouts;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use serde_json::{Value, json};
use tokio::sync::watch;

/// What RBAC would check for one call.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Access {
    pub verb: String,
    pub group: String,
    /// `resource` or `resource/subresource`.
    pub resource: String,
}

impl Access {
    pub fn new(verb: &str, group: &str, resource: &str) -> Self {
        Self {
            verb: verb.into(),
            group: group.into(),
            resource: resource.into(),
        }
    }
}

/// The user a call without a bearer token is taken for: the agent's ServiceAccount.
pub const AGENT: &str = "system:serviceaccount:fledge-system:fledge-agent";

/// One successful write: who made it, what it wrote (`status NS/NAME`, `virtualservice NS/NAME`,
/// `event NS`, `lease NS/NAME`, …) and the body it sent.
#[derive(Clone, Debug)]
pub struct Write {
    pub user: String,
    /// The bearer token it came with: two pods of one ServiceAccount are one user with two
    /// tokens, as the real server's pod-bound tokens are.
    pub token: Option<String>,
    pub what: String,
    pub body: Value,
    /// When the stand-in took it.
    pub at: std::time::Instant,
}

type Key = (String, String);
type Edit = Box<dyn FnOnce(&mut Value) + Send>;

#[derive(Default)]
pub struct World {
    revision: u64,
    uids: u64,
    pub rollouts: BTreeMap<Key, Value>,
    pub virtual_services: BTreeMap<Key, Value>,
    pub events: BTreeMap<Key, Value>,
    pub leases: BTreeMap<Key, Value>,
    /// Every successful write, in order.
    writes: Vec<Write>,
    /// VirtualService replaces refused with 409 (at a resourceVersion that had moved on).
    vs_conflicts: u32,
    /// Lease replaces refused with 409.
    lease_conflicts: u32,
    pub deployments: BTreeMap<Key, Value>,
    /// Every change to a Rollout, for watches: (resourceVersion, type, object).
    rollout_log: Vec<(u64, &'static str, Value)>,
    /// What each user asked for, by user name.
    accesses: BTreeMap<String, BTreeSet<Access>>,
    /// Bearer tokens and the users they stand for; a call without one is the agent's.
    tokens: BTreeMap<String, String>,
    calls: Vec<String>,
    violations: Vec<String>,
    /// Applied to a VirtualService right after the agent has read it: someone else's edit.
    edit_after_read: BTreeMap<Key, Edit>,
    /// Calls refused with 403, as a ServiceAccount without the permission would be.
    forbidden: BTreeSet<Access>,
    /// Rollouts changed right after each of their next N single reads (a status write in
    /// between, as the agent makes): the reader's resourceVersion is stale.
    rollout_changes_after_read: BTreeMap<Key, u32>,
    /// Calls refused with 403 for one user only.
    forbidden_for: BTreeSet<(String, Access)>,
    /// Rollout calls answered 404, as without the CRD.
    pub crd_missing: bool,
}

impl World {
    fn next_revision(&mut self) -> u64 {
        self.revision += 1;
        self.revision
    }

    fn stamp_new(&mut self, object: &mut Value) {
        self.uids += 1;
        let rv = self.next_revision();
        let meta = &mut object["metadata"];
        meta["uid"] = json!(format!("00000000-0000-4000-8000-{:012}", self.uids));
        meta["resourceVersion"] = json!(rv.to_string());
        meta["generation"] = json!(1);
        meta["creationTimestamp"] = json!("2026-01-01T00:00:00Z");
    }

    /// Stores `object` as the next version of `old`: same uid, next resourceVersion, the
    /// generation bumped when the spec changed.
    fn stamp_update(&mut self, old: &Value, object: &mut Value) {
        let rv = self.next_revision();
        let generation = old["metadata"]["generation"].as_i64().unwrap_or(1)
            + i64::from(old["spec"] != object["spec"]);
        let meta = &mut object["metadata"];
        for field in ["uid", "creationTimestamp"] {
            meta[field] = old["metadata"][field].clone();
        }
        meta["resourceVersion"] = json!(rv.to_string());
        meta["generation"] = json!(generation);
    }

    fn log_rollout(&mut self, kind: &'static str, object: &Value) {
        let rv = self.revision;
        self.rollout_log.push((rv, kind, object.clone()));
    }

    pub fn violation(&mut self, message: String) {
        eprintln!("stand-in API server: {message}");
        self.violations.push(message);
    }
}

/// The stand-in, listening on 127.0.0.1.
pub struct ApiServer {
    pub url: String,
    world: Arc<Mutex<World>>,
    changed: watch::Sender<u64>,
    lists_open: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Clone)]
pub struct Shared {
    pub world: Arc<Mutex<World>>,
    pub changed: watch::Sender<u64>,
    /// While false, the watcher's lists of Rollouts wait (a slow API server).
    pub lists_open: watch::Sender<bool>,
}

impl Shared {
    pub fn lock(&self) -> MutexGuard<'_, World> {
        self.world.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl ApiServer {
    pub async fn start() -> Self {
        let world = Arc::new(Mutex::new(World::default()));
        let (changed, _) = watch::channel(0);
        let (lists_open, _) = watch::channel(true);
        let shared = Shared {
            world: world.clone(),
            changed: changed.clone(),
            lists_open: lists_open.clone(),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let app = axum::Router::new()
            .fallback(handlers::handle)
            .with_state(shared);
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self {
            url,
            world,
            changed,
            lists_open,
            task,
        }
    }

    /// A kube client pointed at the stand-in.
    pub fn client(&self) -> kube::Client {
        let config = kube::Config::new(self.url.parse().unwrap());
        kube::Client::try_from(config).unwrap()
    }

    fn lock(&self) -> MutexGuard<'_, World> {
        self.world.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Creates or updates a Rollout's spec, as `kubectl apply` would; the status is kept.
    pub fn apply_rollout(&self, mut object: Value) {
        let errors = checks::rollout_errors(&object);
        assert!(
            errors.is_empty(),
            "a test Rollout the API server would refuse: {errors:?}"
        );
        let key = key_of(&object);
        let mut world = self.lock();
        let kind = match world.rollouts.get(&key).cloned() {
            Some(old) => {
                object["status"] = old["status"].clone();
                if object["status"].is_null() {
                    object.as_object_mut().unwrap().remove("status");
                }
                // Fields `kubectl apply` does not manage stay as others set them.
                for field in ["finalizers", "annotations", "deletionTimestamp"] {
                    if !old["metadata"][field].is_null() {
                        object["metadata"][field] = old["metadata"][field].clone();
                    }
                }
                world.stamp_update(&old, &mut object);
                "MODIFIED"
            }
            None => {
                world.stamp_new(&mut object);
                "ADDED"
            }
        };
        world.log_rollout(kind, &object);
        world.rollouts.insert(key, object);
        let rv = world.revision;
        drop(world);
        self.changed.send_replace(rv);
    }

    /// Deletes a Rollout as `kubectl delete` would: at once without finalizers, else it gets a
    /// deletionTimestamp and stays until the last finalizer is patched off.
    pub fn delete_rollout(&self, ns: &str, name: &str) {
        let key = (ns.to_owned(), name.to_owned());
        let mut world = self.lock();
        let Some(old) = world.rollouts.get(&key).cloned() else {
            panic!("no Rollout {ns}/{name} to delete");
        };
        let held = old["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|f| !f.is_empty());
        if held {
            let mut new = old.clone();
            new["metadata"]["deletionTimestamp"] = json!("2026-01-01T01:00:00Z");
            world.stamp_update(&old, &mut new);
            world.log_rollout("MODIFIED", &new);
            world.rollouts.insert(key, new);
        } else {
            world.next_revision();
            world.log_rollout("DELETED", &old);
            world.rollouts.remove(&key);
        }
        let rv = world.revision;
        drop(world);
        self.changed.send_replace(rv);
    }

    pub fn create_virtual_service(&self, mut object: Value) {
        let errors = checks::virtual_service_errors(&object);
        assert!(
            errors.is_empty(),
            "a test VirtualService Istio would refuse: {errors:?}"
        );
        let mut world = self.lock();
        world.stamp_new(&mut object);
        world.virtual_services.insert(key_of(&object), object);
    }

    pub fn rollout(&self, ns: &str, name: &str) -> Option<Value> {
        self.lock().rollouts.get(&(ns.into(), name.into())).cloned()
    }

    pub fn virtual_service(&self, ns: &str, name: &str) -> Option<Value> {
        self.lock()
            .virtual_services
            .get(&(ns.into(), name.into()))
            .cloned()
    }

    /// Every Event, oldest first.
    pub fn events(&self) -> Vec<Value> {
        let mut events: Vec<Value> = self.lock().events.values().cloned().collect();
        events.sort_by_key(|e| e["eventTime"].as_str().unwrap_or_default().to_owned());
        events
    }

    /// Someone else edits the VirtualService right after the agent's next read of it.
    pub fn edit_after_next_read(
        &self,
        ns: &str,
        name: &str,
        edit: impl FnOnce(&mut Value) + Send + 'static,
    ) {
        self.lock()
            .edit_after_read
            .insert((ns.into(), name.into()), Box::new(edit));
    }

    /// The Rollout changes right after each of its next `times` single reads.
    pub fn change_rollout_after_reads(&self, ns: &str, name: &str, times: u32) {
        self.lock()
            .rollout_changes_after_read
            .insert((ns.into(), name.into()), times);
    }

    /// Answers every Rollout call with 404 from now on, as a cluster without the CRD.
    pub fn uninstall_crd(&self) {
        self.lock().crd_missing = true;
    }

    /// Holds (false) or lets through (true) the watcher's lists of Rollouts.
    pub fn open_lists(&self, open: bool) {
        self.lists_open.send_replace(open);
    }

    /// Refuses `access` with 403 from now on.
    pub fn forbid(&self, access: Access) {
        self.lock().forbidden.insert(access);
    }

    /// Lets `access` through again after [`forbid`](Self::forbid).
    pub fn permit(&self, access: Access) {
        self.lock().forbidden.remove(&access);
    }

    /// Refuses `access` with 403 to `user` from now on.
    pub fn forbid_for(&self, user: &str, access: Access) {
        self.lock().forbidden_for.insert((user.into(), access));
    }

    /// Lets the bearer `token` in as `user`.
    pub fn add_user(&self, token: &str, user: &str) {
        self.lock().tokens.insert(token.into(), user.into());
    }

    /// What the agent (calls without a token) asked for.
    pub fn accesses(&self) -> BTreeSet<Access> {
        self.accesses_of(AGENT)
    }

    /// What `user` asked for.
    pub fn accesses_of(&self, user: &str) -> BTreeSet<Access> {
        self.lock().accesses.get(user).cloned().unwrap_or_default()
    }

    pub fn lease(&self, ns: &str, name: &str) -> Option<Value> {
        self.lock().leases.get(&(ns.into(), name.into())).cloned()
    }

    /// Every successful write so far, in order, with who made it.
    pub fn writes(&self) -> Vec<Write> {
        self.lock().writes.clone()
    }

    /// VirtualService replaces and Lease replaces refused with 409 so far.
    pub fn conflicts(&self) -> (u32, u32) {
        let world = self.lock();
        (world.vs_conflicts, world.lease_conflicts)
    }

    /// A kube client that authenticates with the bearer `token`, which `add_user` lets in.
    pub fn client_as(&self, token: &str) -> kube::Client {
        let mut config = kube::Config::new(self.url.parse().unwrap());
        config.auth_info.token = Some(token.to_owned().into());
        config.default_namespace = "fledge-system".into();
        kube::Client::try_from(config).unwrap()
    }

    pub fn calls(&self) -> Vec<String> {
        self.lock().calls.clone()
    }

    pub fn violations(&self) -> Vec<String> {
        self.lock().violations.clone()
    }
}

pub fn key_of(object: &Value) -> Key {
    let m = &object["metadata"];
    (
        m["namespace"].as_str().unwrap_or("default").to_owned(),
        m["name"].as_str().unwrap_or_default().to_owned(),
    )
}

/// The `openAPIV3Schema` of VirtualService `networking.istio.io/v1`, compiled once.
pub fn istio_schema() -> &'static jsonschema::Validator {
    fledge_testkit::istio::virtual_service()
}

/// The `openAPIV3Schema` of our own Rollout CRD, compiled once.
pub fn rollout_schema() -> &'static jsonschema::Validator {
    static SCHEMA: OnceLock<jsonschema::Validator> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        use kube::CustomResourceExt;
        let crd = serde_json::to_value(fledge_core::rollout::Rollout::crd()).unwrap();
        jsonschema::validator_for(&crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
            .expect("a usable schema")
    })
}
