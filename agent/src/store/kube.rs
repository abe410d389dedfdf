//! The Kubernetes store: Rollouts (`fledge.dev/v1alpha1`) as custom resources, Istio
//! VirtualServices (`networking.istio.io/v1`) and `events.k8s.io/v1` Events, all through the API
//! server with kube's client.
//!
//! - Rollouts come from a watch-backed cache (kube's watcher and reflector), in every namespace
//!   or one. The cache keeps objects untyped, so a Rollout that does not read as one becomes a
//!   `problems` entry naming it and the field, while the others proceed. `metadata.generation`
//!   is the API server's own.
//! - The status is written through the status subresource with server-side apply (field manager
//!   `fledge-agent`, forced), never the spec: a person's spec edit and the agent's status write
//!   cannot overwrite each other.
//! - A VirtualService is replaced (PUT) at the `resourceVersion` it was read at. Someone else's
//!   edit in between gets a 409 Conflict, reported as such and never overwritten; the reconcile
//!   loop reads it again on its next attempt.
//! - Each Rollout carries fledge's finalizer (`fledge.dev/routes`), patched into
//!   `metadata.finalizers` at the resourceVersion read, so a deleted Rollout stays until the
//!   loop has taken its routes out of the VirtualService.
//! - Decisions are published as Events with kube's recorder (reporter `fledge-agent`), which
//!   creates an Event and patches it into a series when the same decision repeats.
//!
//! What it is not: it decides nothing, and it holds no state beyond the cache.

mod explain;

pub(super) use explain::failure;

use std::sync::{Arc, Mutex};

use ::kube::Client;
use ::kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams, PostParams,
};
use ::kube::runtime::events::{Event, EventType, Recorder, Reporter};
use ::kube::runtime::reflector::{self, store::Writer};
use ::kube::runtime::{WatchStreamExt, watcher};
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::ObjectReference;
use serde_json::Value;
use tokio::task::JoinHandle;

use self::explain::Call;
use super::{Error, Listing, ObjectKey, Result, RolloutEvent, RolloutStore};
use fledge_core::rollout::{EventKind, Rollout, RolloutStatus};
use fledge_core::routes::FINALIZER;

/// The name the agent writes under: server-side apply's field manager, the `fieldManager` of
/// its updates, and the Events' reporting controller.
pub const FIELD_MANAGER: &str = "fledge-agent";

const ROLLOUT_API: &str = "fledge.dev/v1alpha1";
/// The API server refuses longer Event notes and actions (events.k8s.io/v1 validation).
const NOTE_LIMIT: usize = 1024;
const ACTION_LIMIT: usize = 128;

/// Which Rollouts the agent reconciles.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    AllNamespaces,
    Namespace(String),
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::AllNamespaces => f.write_str("in all namespaces"),
            Self::Namespace(ns) => write!(f, "in namespace {ns}"),
        }
    }
}

/// How the Rollout watch is doing, shared with its task.
#[derive(Default)]
struct WatchState {
    /// The watch's last failure, cleared when it recovers.
    last_error: Mutex<Option<String>>,
}

impl WatchState {
    fn set_error(&self, error: Option<String>) {
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = error;
    }

    fn error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// Rollouts, VirtualServices and Events through one API server. Dropping it stops its watch.
pub struct KubeStore {
    client: Client,
    scope: Scope,
    rollout_api: ApiResource,
    vs_api: ApiResource,
    cache: reflector::Store<DynamicObject>,
    watch: Arc<WatchState>,
    task: JoinHandle<()>,
    recorder: Recorder,
}

impl Drop for KubeStore {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl KubeStore {
    /// Checks that Rollouts can be listed (the CRD is installed, the agent may list them), then
    /// starts the watch that fills the cache. `instance` names this agent in Events (its pod).
    pub async fn connect(client: Client, scope: Scope, instance: Option<String>) -> Result<Self> {
        let rollout_api = ApiResource::erase::<Rollout>(&());
        let vs_api = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("networking.istio.io", "v1", "VirtualService"),
            "virtualservices",
        );
        let api = rollouts(&client, &scope, &rollout_api);
        api.list(&ListParams::default().limit(1))
            .await
            .map_err(|e| explain::unlistable(e, &scope))?;

        let writer = Writer::new(rollout_api.clone());
        let cache = writer.as_reader();
        let watch = Arc::new(WatchState::default());
        let events = reflector::reflector(
            writer,
            watcher(api, watcher::Config::default()).default_backoff(),
        );
        let task = tokio::spawn(follow(events, watch.clone(), scope.clone()));
        let reporter = Reporter {
            controller: FIELD_MANAGER.into(),
            instance,
        };
        Ok(Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            scope,
            rollout_api,
            vs_api,
            cache,
            watch,
            task,
        })
    }

    /// Which Rollouts this store sees.
    pub fn scope(&self) -> &Scope {
        &self.scope
    }

    /// Whether the first complete list of Rollouts has reached the cache.
    pub fn is_synced(&self) -> bool {
        // The reflector marks its cache ready as it applies the end of the first list.
        matches!(self.cache.wait_until_ready().now_or_never(), Some(Ok(())))
    }

    /// Waits until the first complete list of Rollouts has reached the cache.
    pub async fn synced(&self) {
        // The writer lives in the watch task, which ends only when the store is dropped.
        let _ = self.cache.wait_until_ready().await;
    }

    fn listing(&self) -> Result<Listing> {
        if !self.is_synced() {
            let why = self
                .watch
                .error()
                .unwrap_or_else(|| format!("waiting for the first list {}", self.scope));
            return Err(Error::NotSynced(why));
        }
        let mut objects = self.cache.state();
        objects.sort_by_key(|o| (o.metadata.namespace.clone(), o.metadata.name.clone()));
        let mut listing = Listing::default();
        for object in objects {
            match read_rollout(&object) {
                Ok(rollout) => listing.rollouts.push(rollout),
                Err(problem) => listing.problems.push(problem),
            }
        }
        Ok(listing)
    }

    /// Every Rollout as the API server holds it now (a list without a resourceVersion is a
    /// quorum read), page by page, bypassing the watch cache.
    async fn list_now(&self) -> Result<Listing> {
        let api = rollouts(&self.client, &self.scope, &self.rollout_api);
        let mut objects = Vec::new();
        let mut params = ListParams::default().limit(500);
        loop {
            let page = api
                .list(&params)
                .await
                .map_err(|e| explain::unlistable(e, &self.scope))?;
            objects.extend(page.items);
            match page.metadata.continue_.filter(|c| !c.is_empty()) {
                Some(token) => params = params.continue_token(&token),
                None => break,
            }
        }
        objects.sort_by_key(|o| (o.metadata.namespace.clone(), o.metadata.name.clone()));
        let mut listing = Listing::default();
        for object in &objects {
            match read_rollout(object) {
                Ok(rollout) => listing.rollouts.push(rollout),
                Err(problem) => listing.problems.push(problem),
            }
        }
        Ok(listing)
    }

    fn namespaced(&self, api: &ApiResource, namespace: &str) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), namespace, api)
    }

    async fn apply_status(&self, rollout: &Rollout, status: &RolloutStatus) -> Result<()> {
        let key = ObjectKey::of(rollout);
        // Only apiVersion, kind and status: with server-side apply, the fields the agent owns
        // are exactly these, and a field it no longer sends is removed.
        let patch = serde_json::json!({
            "apiVersion": ROLLOUT_API,
            "kind": "Rollout",
            "status": status,
        });
        self.namespaced(&self.rollout_api, &key.namespace)
            .patch_status(
                &key.name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&patch),
            )
            .await
            .map(drop)
            .map_err(|e| explain::failed(Call::STATUS, &key, e))
    }

    async fn get_virtual_service(&self, key: &ObjectKey) -> Result<Value> {
        let object = self
            .namespaced(&self.vs_api, &key.namespace)
            .get(&key.name)
            .await
            .map_err(|e| explain::failed(Call::GET_VS, key, e))?;
        let mut value = serde_json::to_value(&object).map_err(|e| unreadable(key, e))?;
        // The API server keeps these itself; leaving them out of the replacement keeps them.
        if let Some(meta) = value["metadata"].as_object_mut() {
            meta.remove("managedFields");
        }
        Ok(value)
    }

    async fn replace_virtual_service(&self, vs: &Value) -> Result<()> {
        let key = ObjectKey::of_object(vs);
        if vs["metadata"]["resourceVersion"].as_str().is_none() {
            return Err(Error::Unreadable {
                kind: "VirtualService",
                key: key.to_string(),
                at: "metadata.resourceVersion".into(),
                problem: "missing: a VirtualService is only replaced at the version it was read at"
                    .into(),
            });
        }
        let object: DynamicObject =
            serde_json::from_value(vs.clone()).map_err(|e| unreadable(&key, e))?;
        let params = PostParams {
            dry_run: false,
            field_manager: Some(FIELD_MANAGER.into()),
        };
        self.namespaced(&self.vs_api, &key.namespace)
            .replace(&key.name, &params, &object)
            .await
            .map(drop)
            .map_err(|e| explain::failed(Call::REPLACE_VS, &key, e))
    }

    /// A merge patch of `metadata.finalizers` at the resourceVersion read: the list is replaced
    /// whole, so a finalizer someone added meanwhile gets a 409, never a silent removal.
    async fn patch_finalizers(&self, rollout: &Rollout, present: bool) -> Result<()> {
        let key = ObjectKey::of(rollout);
        let mut finalizers = rollout.metadata.finalizers.clone().unwrap_or_default();
        finalizers.retain(|f| f != FINALIZER);
        if present {
            finalizers.push(FINALIZER.to_owned());
        }
        let patch = serde_json::json!({
            "metadata": {
                "resourceVersion": rollout.metadata.resource_version,
                "finalizers": finalizers,
            }
        });
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PatchParams::default()
        };
        self.namespaced(&self.rollout_api, &key.namespace)
            .patch(&key.name, &params, &Patch::Merge(&patch))
            .await
            .map(drop)
            .map_err(|e| explain::failed(Call::FINALIZER, &key, e))
    }

    async fn publish(&self, rollout: &Rollout, event: &RolloutEvent) -> Result<()> {
        let key = ObjectKey::of(rollout);
        let regarding = ObjectReference {
            api_version: Some(ROLLOUT_API.into()),
            kind: Some("Rollout".into()),
            name: Some(key.name.clone()),
            namespace: Some(key.namespace.clone()),
            // No resourceVersion: every status write changes it, and the recorder would then
            // create a new Event for a repeated decision instead of counting it in a series.
            uid: rollout.metadata.uid.clone(),
            ..ObjectReference::default()
        };
        let event = Event {
            type_: match event.kind {
                EventKind::Normal => EventType::Normal,
                EventKind::Warning => EventType::Warning,
            },
            reason: event.reason.into(),
            note: Some(truncate(&event.note, NOTE_LIMIT)),
            action: truncate(&event.action, ACTION_LIMIT),
            secondary: None,
        };
        self.recorder
            .publish(&event, &regarding)
            .await
            .map_err(|e| explain::failed(Call::EVENT, &key, e))
    }
}

impl RolloutStore for KubeStore {
    fn rollouts(&self) -> impl Future<Output = Result<Listing>> + Send {
        std::future::ready(self.listing())
    }

    fn rollouts_now(&self) -> impl Future<Output = Result<Listing>> + Send {
        self.list_now()
    }

    fn write_status(
        &self,
        rollout: &Rollout,
        status: &RolloutStatus,
    ) -> impl Future<Output = Result<()>> + Send {
        self.apply_status(rollout, status)
    }

    fn virtual_service(&self, key: &ObjectKey) -> impl Future<Output = Result<Value>> + Send {
        self.get_virtual_service(key)
    }

    fn write_virtual_service(&self, vs: &Value) -> impl Future<Output = Result<()>> + Send {
        self.replace_virtual_service(vs)
    }

    fn record_event(
        &self,
        rollout: &Rollout,
        event: &RolloutEvent,
    ) -> impl Future<Output = Result<()>> + Send {
        self.publish(rollout, event)
    }

    fn finalizes(&self) -> bool {
        true
    }

    fn set_finalizer(
        &self,
        rollout: &Rollout,
        present: bool,
    ) -> impl Future<Output = Result<()>> + Send {
        self.patch_finalizers(rollout, present)
    }
}

/// The Rollout API for `scope`.
fn rollouts(client: &Client, scope: &Scope, api: &ApiResource) -> Api<DynamicObject> {
    match scope {
        Scope::AllNamespaces => Api::all_with(client.clone(), api),
        Scope::Namespace(ns) => Api::namespaced_with(client.clone(), ns, api),
    }
}

/// Drives the watch (the reflector fills the cache as it goes), noting when the first list is
/// complete and what the last failure was. The watcher retries with backoff by itself.
async fn follow(
    events: impl futures::Stream<Item = Result<watcher::Event<DynamicObject>, watcher::Error>>,
    state: Arc<WatchState>,
    scope: Scope,
) {
    let mut events = std::pin::pin!(events);
    while let Some(event) = events.next().await {
        match event {
            Ok(event) => {
                if matches!(event, watcher::Event::InitDone) {
                    tracing::info!(%scope, "Rollouts listed; watching for changes");
                }
                state.set_error(None);
            }
            Err(e) => {
                let why = explain::watch_failed(&e, &scope);
                tracing::warn!(error = %why, "Rollout watch failed; retrying with backoff");
                state.set_error(Some(why));
            }
        }
    }
}

/// A cached object as a Rollout, or the problem naming it and the field that did not read.
fn read_rollout(object: &DynamicObject) -> Result<Rollout> {
    let key = ObjectKey::new(
        object.metadata.namespace.as_deref().unwrap_or("default"),
        object.metadata.name.as_deref().unwrap_or(""),
    );
    let at = format!(
        "/apis/{ROLLOUT_API}/namespaces/{}/rollouts/{}",
        key.namespace, key.name
    );
    let value = serde_json::to_value(object).map_err(|e| Error::Unreadable {
        kind: "Rollout",
        key: key.to_string(),
        at: at.clone(),
        problem: e.to_string(),
    })?;
    serde_path_to_error::deserialize(&value).map_err(|e| Error::Unreadable {
        kind: "Rollout",
        key: key.to_string(),
        at,
        problem: format!("{}: {}", e.path(), e.inner()),
    })
}

fn unreadable(key: &ObjectKey, e: serde_json::Error) -> Error {
    Error::Unreadable {
        kind: "VirtualService",
        key: key.to_string(),
        at: "the object".into(),
        problem: e.to_string(),
    }
}

/// At most `limit` bytes, cut at a character boundary with `…` when cut.
fn truncate(text: &str, limit: usize) -> String {
    if text.len() <= limit {
        return text.to_owned();
    }
    let mut end = limit - '…'.len_utf8();
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_are_cut_at_a_character_boundary() {
        for (text, limit, expected) in [
            ("short", 10, "short"),
            ("exactly ten", 11, "exactly ten"),
            ("abcdefghijk", 8, "abcde…"),
            ("ééééé", 6, "é…"),
        ] {
            let cut = truncate(text, limit);
            assert_eq!(cut, expected, "{text:?} at {limit}");
            assert!(cut.len() <= limit);
        }
    }
}
