//! Who is connected, and what routing they should hold. The hub keeps one routing table for the
//! whole mesh (every host fledge routes), bumps its revision on every change, and hands it to
//! every filter stream through a watch channel, so a slow stream only ever skips to the newest
//! table and never queues stale ones. It also records what each stream said in its Hello.
//!
//! Revisions start at the agent's start time in milliseconds and only grow, so filters (which
//! ignore tables older than the one they hold) accept a restarted agent's tables.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use fledge_proto::v1;
use serde::Serialize;
use tokio::sync::watch;

use super::peer::Identity;

/// A filter stream as the agent knows it.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StreamInfo {
    pub id: u64,
    pub proxy_id: String,
    pub workload: String,
    pub namespace: String,
    pub version_label: String,
    pub role: String,
    pub worker: u32,
    pub filter_build: String,
    /// The mesh identity the stream came with (`spiffe://…`), or empty when it had none.
    pub peer: String,
    /// The routing-table revision the filter held when it said Hello.
    pub hello_revision: u64,
    /// The newest revision sent on this stream.
    pub sent_revision: u64,
    pub reports: u64,
    /// Hosts this filter has reported traffic for (the first [`HOSTS_PER_STREAM`]).
    pub hosts: BTreeSet<String>,
}

/// Hosts recorded per stream: an old filter reports every host it sees, and a stream's record
/// must not grow with them.
pub const HOSTS_PER_STREAM: usize = 64;

#[derive(Debug, Default)]
struct State {
    next_id: u64,
    streams: BTreeMap<u64, StreamInfo>,
    routes: BTreeMap<String, v1::HostRoute>,
    revision: u64,
}

#[derive(Debug)]
pub struct Hub {
    state: Mutex<State>,
    table: watch::Sender<Arc<v1::RoutingTable>>,
    /// Set once by [`Hub::close`]: every stream ends and no new one is served.
    closing: watch::Sender<bool>,
    /// Set while this agent stands by (another leads): streams end and new ones are refused,
    /// so filters reconnect to the leader.
    standby: watch::Sender<bool>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Hub {
    pub fn new() -> Arc<Self> {
        let revision = now_ms();
        let (table, _) = watch::channel(Arc::new(v1::RoutingTable {
            revision,
            routes: Vec::new(),
        }));
        Arc::new(Self {
            state: Mutex::new(State {
                revision,
                ..State::default()
            }),
            table,
            closing: watch::channel(false).0,
            standby: watch::channel(false).0,
        })
    }

    /// Stands by (`true`: every stream ends with UNAVAILABLE and new ones are refused, so the
    /// filters go to the leader) or serves again (`false`).
    pub fn set_standby(&self, standby: bool) {
        self.standby.send_replace(standby);
    }

    pub fn is_standby(&self) -> bool {
        *self.standby.borrow()
    }

    /// Resolves once the agent stands by (at once if it does).
    pub fn standing_by(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut standby = self.standby.subscribe();
        async move {
            let _ = standby.wait_for(|s| *s).await;
        }
    }

    /// Ends every filter stream (they see UNAVAILABLE and reconnect elsewhere or later) and
    /// refuses new ones: for an agent that stops.
    pub fn close(&self) {
        self.closing.send_replace(true);
    }

    pub fn is_closed(&self) -> bool {
        *self.closing.borrow()
    }

    /// Resolves once [`Hub::close`] was called (at once if it already was).
    pub fn closed(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut closing = self.closing.subscribe();
        async move {
            // An error means the hub is gone, which also ends everything.
            let _ = closing.wait_for(|closed| *closed).await;
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind; keep serving it.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sets (or with `None` removes) the route for `host` and pushes the new table to every
    /// connected filter. Returns the new revision.
    pub fn set_route(&self, host: &str, route: Option<v1::HostRoute>) -> u64 {
        let mut state = self.lock();
        match route {
            Some(r) => state.routes.insert(host.to_string(), r),
            None => state.routes.remove(host),
        };
        state.revision = (state.revision + 1).max(now_ms());
        let table = v1::RoutingTable {
            revision: state.revision,
            routes: state.routes.values().cloned().collect(),
        };
        self.table.send_replace(Arc::new(table));
        state.revision
    }

    /// The table every filter should hold now.
    pub fn table(&self) -> Arc<v1::RoutingTable> {
        self.table.borrow().clone()
    }

    pub fn subscribe(&self) -> watch::Receiver<Arc<v1::RoutingTable>> {
        self.table.subscribe()
    }

    pub fn streams(&self) -> Vec<StreamInfo> {
        self.lock().streams.values().cloned().collect()
    }

    /// Streams whose filters have reported traffic for `host`.
    pub fn streams_for_host(&self, host: &str) -> Vec<StreamInfo> {
        self.lock()
            .streams
            .values()
            .filter(|s| s.hosts.contains(host))
            .cloned()
            .collect()
    }

    pub(super) fn register(&self, hello: &v1::Hello, peer: Option<&Identity>) -> u64 {
        let mut state = self.lock();
        state.next_id += 1;
        let id = state.next_id;
        let role = match v1::Role::try_from(hello.role) {
            Ok(v1::Role::Client) => "client",
            Ok(v1::Role::Server) => "server",
            _ => "unspecified",
        };
        let info = StreamInfo {
            id,
            proxy_id: hello.proxy_id.clone(),
            workload: hello.workload.clone(),
            namespace: hello.namespace.clone(),
            version_label: hello.version_label.clone(),
            role: role.to_string(),
            worker: hello.worker,
            filter_build: hello.filter_build.clone(),
            peer: peer.map(ToString::to_string).unwrap_or_default(),
            hello_revision: hello.table_revision,
            sent_revision: hello.table_revision,
            reports: 0,
            hosts: BTreeSet::new(),
        };
        state.streams.insert(id, info);
        id
    }

    pub(super) fn reported<'a>(&self, id: u64, hosts: impl Iterator<Item = &'a str>) {
        if let Some(s) = self.lock().streams.get_mut(&id) {
            s.reports += 1;
            for h in hosts {
                if !s.hosts.contains(h) && s.hosts.len() < HOSTS_PER_STREAM {
                    s.hosts.insert(h.to_string());
                }
            }
        }
    }

    pub(super) fn sent(&self, id: u64, revision: u64) {
        if let Some(s) = self.lock().streams.get_mut(&id) {
            s.sent_revision = revision;
        }
    }

    pub(super) fn unregister(&self, id: u64) {
        self.lock().streams.remove(&id);
    }
}
