//! An agent killed between the two writes of a routing change (the status and the
//! VirtualService), in both stores: a fresh agent takes over from what was persisted, and no
//! canary weight, in the status or in the VirtualService, ever goes backward.
//!
//! The kill is a store that stops writing after its n-th write, as a process killed the moment
//! that write returned; the test kills at each write of each routing change of a whole canary.

use std::sync::atomic::{AtomicUsize, Ordering};

use fledge_agent::store::{Error as StoreError, Listing, RolloutEvent};
use fledge_core::rollout::Rollout;

use super::*;

/// A store that performs `left` more writes (status or VirtualService), then fails every write.
struct Dying<S> {
    inner: Arc<S>,
    left: Arc<AtomicUsize>,
    /// What was written, in order: `status` or `routes`.
    log: Arc<Mutex<Vec<&'static str>>>,
}

impl<S> Dying<S> {
    /// Whether this write may happen; records it when it may.
    fn write(&self, what: &'static str) -> Result<(), StoreError> {
        let left = self.left.load(Ordering::SeqCst);
        if left == 0 {
            return Err(StoreError::Io {
                action: "write",
                at: "a killed agent's store".into(),
                source: std::io::Error::other("the agent was killed"),
            });
        }
        self.left.store(left - 1, Ordering::SeqCst);
        self.log.lock().unwrap().push(what);
        Ok(())
    }
}

impl<S: RolloutStore + 'static> RolloutStore for Dying<S> {
    async fn rollouts(&self) -> Result<Listing, StoreError> {
        self.inner.rollouts().await
    }

    async fn write_status(
        &self,
        rollout: &Rollout,
        status: &RolloutStatus,
    ) -> Result<(), StoreError> {
        self.write("status")?;
        self.inner.write_status(rollout, status).await
    }

    async fn virtual_service(&self, key: &ObjectKey) -> Result<Value, StoreError> {
        self.inner.virtual_service(key).await
    }

    async fn write_virtual_service(&self, vs: &Value) -> Result<(), StoreError> {
        self.write("routes")?;
        self.inner.write_virtual_service(vs).await
    }

    async fn record_event(
        &self,
        rollout: &Rollout,
        event: &RolloutEvent,
    ) -> Result<(), StoreError> {
        if self.left.load(Ordering::SeqCst) == 0 {
            return Ok(()); // a killed agent records nothing, and nothing waits on it
        }
        self.inner.record_event(rollout, event).await
    }
}

/// The canary's weight as the status says it and as the VirtualService routes it.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Weights {
    status: u32,
    routes: u32,
}

/// The canary's share in a VirtualService: the `v2` weight of fledge's split route, or 100 once
/// the user's own route sends everything to `v2`.
pub(super) fn routed_weight(vs: &Value) -> u32 {
    let http = vs["spec"]["http"].as_array().unwrap();
    if let Some(split) = http.iter().find(|r| r["name"] == "fledge-reviews-split") {
        let canary = split["route"].as_array().unwrap().iter();
        return canary
            .filter(|d| d["destination"]["subset"] == "v2")
            .map(|d| d["weight"].as_u64().unwrap_or(100) as u32)
            .sum();
    }
    let user = &http.last().unwrap()["route"][0]["destination"]["subset"];
    if user == "v2" { 100 } else { 0 }
}

/// Where a run's objects live, and how a (re)started agent reaches them.
trait World {
    type Store: RolloutStore + 'static;
    /// The store a newly started agent opens.
    async fn store(&self) -> Self::Store;
    /// The weights as stored now.
    fn weights(&self) -> Weights;
}

/// A folder of the canary example's files.
struct Folder(tempfile::TempDir);

impl World for Folder {
    type Store = LocalStore;

    async fn store(&self) -> LocalStore {
        LocalStore::new(self.0.path())
    }

    fn weights(&self) -> Weights {
        let reader = LocalStore::new(self.0.path());
        let status = reader.read_rollouts().unwrap().rollouts.remove(0).status;
        let vs = reader
            .read_virtual_service(&ObjectKey::new("shop", "reviews"))
            .unwrap();
        Weights {
            status: status.map_or(0, |s| s.canary_weight),
            routes: routed_weight(&vs),
        }
    }
}

/// The stand-in API server holding the canary example's objects.
struct Cluster(ApiServer);

impl World for Cluster {
    type Store = KubeStore;

    async fn store(&self) -> KubeStore {
        kube_store(&self.0).await
    }

    fn weights(&self) -> Weights {
        Weights {
            status: kube_status(&self.0).map_or(0, |s| s.canary_weight),
            routes: routed_weight(&self.0.virtual_service("shop", "reviews").unwrap()),
        }
    }
}

/// Runs the canary example to its end with healthy traffic, the agent killed after its
/// `kill_after`-th write and replaced by a fresh one; returns the first agent's writes and the
/// weights stored after every tick.
async fn run<W: World>(world: &W, kill_after: usize) -> (Vec<&'static str>, Vec<Weights>) {
    let telemetry = Arc::new(Mutex::new(Telemetry::new(3600, 64)));
    let log = Arc::new(Mutex::new(Vec::new()));
    let dying = |inner, left| Dying {
        inner: Arc::new(inner),
        left: Arc::new(AtomicUsize::new(left)),
        log: log.clone(),
    };
    let first = dying(world.store().await, kill_after);
    let left = first.left.clone();
    let mut agent = controller(first, &telemetry);
    let mut killed = false;
    let mut seen = Vec::new();
    for s in (2..1400).step_by(2) {
        feed(&telemetry, s - 2);
        feed(&telemetry, s - 1);
        agent.tick(at(s)).await;
        seen.push(world.weights());
        if !killed && left.load(Ordering::SeqCst) == 0 {
            // The process died in this tick; a new one starts from what the store holds.
            killed = true;
            agent = controller(dying(world.store().await, usize::MAX), &telemetry);
            agent.tick(at(s)).await;
            seen.push(world.weights());
        }
        let status: Option<RolloutStatus> = agent
            .rollouts()
            .first()
            .and_then(|r| serde_json::from_value(r["status"].clone()).ok());
        let Some(status) = status else { continue };
        if status.phase.is_final() {
            assert_eq!(
                status.phase,
                Phase::Succeeded,
                "killed after write {kill_after}"
            );
            let writes = log.lock().unwrap().clone();
            return (writes, seen);
        }
        let held = status
            .step_started_at
            .is_some_and(|t| at(s).as_second() - t.as_second() >= 120);
        if status.current_step == Some(2) && held {
            agent
                .command("shop", "reviews", UserCommand::Promote)
                .unwrap();
        }
    }
    panic!("killed after write {kill_after}: the canary did not end: {seen:?}");
}

/// Kills the agent right after each write of each routing change, in a fresh `world` each time,
/// and checks that no weight went backward and every step was routed.
async fn kill_at_every_routing_change<W: World>(world: impl AsyncFn() -> W) {
    let (writes, _) = run(&world().await, usize::MAX).await;
    // Kill just before and just after each routes write, whatever the order of the writes.
    let changes: Vec<usize> = (0..writes.len())
        .filter(|&i| writes[i] == "routes")
        .collect();
    assert_eq!(
        changes.len(),
        5,
        "five routing changes (10 %, 25 %, 50 %, 100 %, the hand-over): {writes:?}"
    );
    let kills = changes.iter().flat_map(|&i| [i, i + 1]).filter(|&n| n > 0);
    for kill_after in kills {
        let (_, seen) = run(&world().await, kill_after).await;
        for pair in seen.windows(2) {
            assert!(
                pair[1].status >= pair[0].status && pair[1].routes >= pair[0].routes,
                "killed after write {kill_after}: a weight went backward: {seen:?}"
            );
        }
        // Every step was routed (a kill before the first routes write shows the user's 0 first).
        let mut routed: Vec<u32> = seen
            .iter()
            .map(|w| w.routes)
            .skip_while(|&w| w == 0)
            .collect();
        routed.dedup();
        assert_eq!(routed, [10, 25, 50, 100], "killed after write {kill_after}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_between_the_status_and_the_routes_never_moves_a_weight_backward() {
    kill_at_every_routing_change(async || {
        Folder(fledge_testkit::examples::folder(&[
            "canary.yaml",
            "virtualservice.yaml",
        ]))
    })
    .await;
    kill_at_every_routing_change(async || Cluster(cluster().await)).await;
}
