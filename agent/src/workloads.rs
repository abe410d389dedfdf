//! The workloads gate: scales the two Deployments a Rollout names (`spec.workloads`) to the
//! replicas its status calls for (`fledge_core::rollout::workloads::targets`) and answers, for
//! the current step, whether the canary is ready for the next weight.
//!
//! Its own task reads both Deployments of every Rollout it was asked about, every `every`, and
//! scales the one whose `spec.replicas` differs from the target; `reports` answers at once from
//! what that task last read (a Hold while it has read nothing). A Rollout that has handed its
//! Deployments back (`workloads::settled`: not started, or ended with its scale-down done) is
//! read no more while its status stays: an autoscaler or a person may scale them then. It
//! scales no Deployment but the two the Rollout names, in the Rollout's namespace. Where
//! Deployments live is a [`Deployments`]: the API server (`kube`) or the local store's folder
//! (`local`).
//!
//! What it is not: the math (the core's), or a judge of the rollout (the machine takes the
//! answers).

pub mod kube;
pub mod local;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use fledge_core::planner::TickPlan;
use fledge_core::rollout::workloads::{self, GATE_NAME, Observed};
use fledge_core::rollout::{GateKind, GateReport, GateState, Phase, Rollout, RolloutStatus};
use jiff::Timestamp;

use crate::gates::Gate;

/// How often the agent reads (and, when their replicas are off, scales) each Rollout's
/// Deployments.
pub const WORKLOADS_EVERY: Duration = Duration::from_secs(1);
/// A Rollout the gate stops watching when the loop has not asked about it this long (deleted).
const FORGET_AFTER: Duration = Duration::from_secs(300);

/// Why a Deployment could not be read or scaled; the message names it.
#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    #[error("Deployment {namespace}/{name} could not be read: {reason}")]
    Read {
        namespace: String,
        name: String,
        reason: String,
    },
    #[error("Deployment {namespace}/{name} could not be scaled to {replicas}: {reason}")]
    Scale {
        namespace: String,
        name: String,
        replicas: u32,
        reason: String,
    },
}

pub type Result<T, E = WorkloadError> = std::result::Result<T, E>;

/// Where Deployments are read and scaled.
pub trait Deployments: Send + Sync + 'static {
    /// The Deployment's replicas and readiness; None when it does not exist.
    fn read(
        &self,
        namespace: &str,
        name: &str,
    ) -> impl Future<Output = Result<Option<Observed>>> + Send;

    /// Sets the Deployment's `spec.replicas` (its scale subresource).
    fn scale(
        &self,
        namespace: &str,
        name: &str,
        replicas: u32,
    ) -> impl Future<Output = Result<()>> + Send;
}

/// What the task last learned about one Rollout's Deployments.
#[derive(Clone, Debug)]
struct Seen {
    canary: Option<Observed>,
    stable: Option<Observed>,
    /// The stable's replicas at the start, once known.
    total: Option<u32>,
    problem: Option<String>,
}

struct Watched {
    rollout: Rollout,
    asked: std::time::Instant,
    /// The loop's clock when it last asked: the scale-down delay is measured on it, as every
    /// time in the status is.
    now: Timestamp,
    seen: Option<Seen>,
    /// The status with which the Deployments were handed back at their targets: while the
    /// Rollout's status is this one, they are not read or scaled.
    settled: Option<RolloutStatus>,
}

/// The gate; [`WorkloadGate::start`] runs its task for as long as the gate lives.
pub struct WorkloadGate {
    watched: Mutex<HashMap<String, Watched>>,
}

impl WorkloadGate {
    /// The gate, and its task reading and scaling through `deployments` every `every`.
    pub fn start<D: Deployments>(deployments: D, every: Duration) -> Arc<Self> {
        Self::start_while(deployments, every, || true)
    }

    /// As [`start`](Self::start), scaling only while `leads` says this agent leads. While it
    /// does not, the task forgets every Rollout: what it held may be stale by the time the agent
    /// leads again, and the loop's first tick as leader tells it the persisted statuses.
    pub fn start_while<D: Deployments>(
        deployments: D,
        every: Duration,
        leads: impl Fn() -> bool + Send + Sync + 'static,
    ) -> Arc<Self> {
        let gate = Arc::new(Self {
            watched: Mutex::new(HashMap::new()),
        });
        let weak = Arc::downgrade(&gate);
        tokio::spawn(run(weak, deployments, every, leads));
        gate
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Watched>> {
        self.watched.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Keeps the latest Rollout (spec and status) the loop holds, and its clock, for the task.
    fn watch(&self, rollout: &Rollout, now: Option<Timestamp>) {
        let mut watched = self.lock();
        let entry = watched.entry(rollout.key()).or_insert_with(|| Watched {
            rollout: rollout.clone(),
            asked: std::time::Instant::now(),
            now: now.unwrap_or_else(Timestamp::now),
            seen: None,
            settled: None,
        });
        entry.rollout = rollout.clone();
        entry.asked = std::time::Instant::now();
        if let Some(now) = now {
            entry.now = now;
        }
    }
}

impl Gate for WorkloadGate {
    fn reports(&self, rollout: &Rollout, now: Timestamp) -> Vec<GateReport> {
        let Some(w) = &rollout.spec.workloads else {
            return Vec::new();
        };
        self.watch(rollout, Some(now));
        let Some(status) = &rollout.status else {
            return Vec::new();
        };
        if !matches!(status.phase, Phase::Progressing | Phase::Paused) {
            return Vec::new();
        }
        let seen = self.lock().get(&rollout.key()).and_then(|e| e.seen.clone());
        let (state, evidence) = match seen {
            None => (
                GateState::Hold(format!(
                    "the Deployments {} and {} are not read yet",
                    w.stable, w.canary
                )),
                serde_json::Value::Null,
            ),
            Some(Seen {
                problem: Some(why), ..
            }) => (GateState::Hold(why), serde_json::Value::Null),
            Some(Seen { total: None, .. }) => (
                GateState::Hold(format!(
                    "the replicas of {} at the start are not known yet",
                    w.stable
                )),
                serde_json::Value::Null,
            ),
            Some(
                seen @ Seen {
                    total: Some(total), ..
                },
            ) => {
                let targets = workloads::targets(&rollout.spec, w, status, total, now);
                workloads::answer(
                    w,
                    &targets,
                    total,
                    seen.canary.as_ref(),
                    seen.stable.as_ref(),
                )
            }
        };
        GateReport::about(status, GATE_NAME, GateKind::Workload, state, now)
            .map(|r| r.with_evidence(evidence))
            .into_iter()
            .collect()
    }

    fn applied(&self, rollout: &Rollout, plan: &TickPlan) {
        if rollout.spec.workloads.is_some() {
            let mut r = rollout.clone();
            r.status = Some(plan.status.clone());
            self.watch(&r, None);
        }
    }
}

/// The gate's task: ends when the gate is dropped.
async fn run<D: Deployments>(
    gate: Weak<WorkloadGate>,
    deployments: D,
    every: Duration,
    leads: impl Fn() -> bool,
) {
    let mut interval = tokio::time::interval(every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let Some(gate) = gate.upgrade() else {
            return;
        };
        if !leads() {
            gate.lock().clear();
            continue;
        }
        let rollouts: Vec<(Rollout, Option<u32>, Timestamp)> = {
            let mut watched = gate.lock();
            watched.retain(|_, e| e.asked.elapsed() < FORGET_AFTER);
            watched
                .values()
                .filter(|e| e.settled.is_none() || e.settled != e.rollout.status)
                .map(|e| {
                    (
                        e.rollout.clone(),
                        e.seen.as_ref().and_then(|s| s.total),
                        e.now,
                    )
                })
                .collect()
        };
        for (rollout, known, now) in rollouts {
            let seen = reconcile(&deployments, &rollout, known, now).await;
            let handed_back = handed_back(&rollout, &seen, now);
            if let Some(e) = gate.lock().get_mut(&rollout.key()) {
                e.seen = Some(seen);
                if handed_back {
                    tracing::info!(rollout = %rollout.key(), "workloads handed back: no longer scaled");
                    e.settled = rollout.status.clone();
                }
            }
        }
    }
}

/// Whether `rollout`'s Deployments can be left alone from now on: its status is settled and the
/// last reconcile left both at their targets, with no problem.
fn handed_back(rollout: &Rollout, seen: &Seen, now: Timestamp) -> bool {
    let (Some(w), Some(status)) = (&rollout.spec.workloads, &rollout.status) else {
        return false;
    };
    if !workloads::settled(w, status, now) || seen.problem.is_some() {
        return false;
    }
    // Without a problem the reconcile knew the total (every early return names a problem).
    let Some(total) = seen.total else {
        return false;
    };
    let targets = workloads::targets(&rollout.spec, w, status, total, now);
    let at = |target: Option<u32>, observed: &Option<workloads::Observed>| {
        target.is_none_or(|t| observed.as_ref().is_some_and(|o| o.replicas == t))
    };
    at(targets.canary, &seen.canary) && at(targets.stable, &seen.stable)
}

/// Reads both Deployments, scales each whose replicas differ from the target, and says what it
/// saw (after the scaling).
async fn reconcile<D: Deployments>(
    d: &D,
    rollout: &Rollout,
    known: Option<u32>,
    now: Timestamp,
) -> Seen {
    let (Some(w), Some(status)) = (&rollout.spec.workloads, &rollout.status) else {
        return Seen {
            canary: None,
            stable: None,
            total: known,
            problem: Some("the rollout has not started".into()),
        };
    };
    let ns = rollout.metadata.namespace.as_deref().unwrap_or("default");
    let read = async |name: &str| d.read(ns, name).await;
    let (canary, stable) = match (read(&w.canary).await, read(&w.stable).await) {
        (Ok(c), Ok(s)) => (c, s),
        (Err(e), _) | (_, Err(e)) => {
            tracing::warn!(rollout = %rollout.key(), error = %e, "workloads");
            return Seen {
                canary: None,
                stable: None,
                total: known,
                problem: Some(e.to_string()),
            };
        }
    };
    let Some(stable_seen) = stable else {
        return Seen {
            canary,
            stable: None,
            total: known,
            problem: Some(format!("stable Deployment {ns}/{} not found", w.stable)),
        };
    };
    let Some(canary_seen) = canary else {
        return Seen {
            canary: None,
            stable: Some(stable_seen),
            total: known,
            problem: Some(format!("canary Deployment {ns}/{} not found", w.canary)),
        };
    };
    let first_stage = status.current_step == Some(0);
    let total = workloads::recorded_total(status)
        .or(known.filter(|_| !first_stage))
        .unwrap_or_else(|| {
            workloads::inferred_total(&rollout.spec, w, status, &canary_seen, &stable_seen)
        });
    let targets = workloads::targets(&rollout.spec, w, status, total, now);
    let mut seen = Seen {
        canary: Some(canary_seen),
        stable: Some(stable_seen),
        total: Some(total),
        problem: None,
    };
    for (name, target, observed) in [
        (&w.canary, targets.canary, &mut seen.canary),
        (&w.stable, targets.stable, &mut seen.stable),
    ] {
        let (Some(want), Some(was)) = (target, observed.as_mut()) else {
            continue;
        };
        if was.replicas == want {
            continue;
        }
        match d.scale(ns, name, want).await {
            Ok(()) => {
                tracing::info!(rollout = %rollout.key(), deployment = %name, from = was.replicas, to = want, "scaled");
                match d.read(ns, name).await {
                    Ok(now) => *observed = now,
                    Err(e) => seen.problem = Some(e.to_string()),
                }
            }
            Err(e) => {
                tracing::warn!(rollout = %rollout.key(), error = %e, "workloads");
                seen.problem = Some(e.to_string());
            }
        }
    }
    seen
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    /// Deployments in memory: every scale is recorded, every read counted.
    #[derive(Clone, Default)]
    struct Memory {
        replicas: Arc<Mutex<HashMap<String, u32>>>,
        scaled: Arc<Mutex<Vec<(String, u32)>>>,
        reads: Arc<std::sync::atomic::AtomicUsize>,
    }

    impl Memory {
        fn set(&self, name: &str, replicas: u32) {
            self.replicas
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(name.to_owned(), replicas);
        }

        fn get(&self, name: &str) -> Option<u32> {
            let replicas = self.replicas.lock().unwrap_or_else(PoisonError::into_inner);
            replicas.get(name).copied()
        }
    }

    impl Deployments for Memory {
        async fn read(&self, _: &str, name: &str) -> Result<Option<Observed>> {
            self.reads.fetch_add(1, Ordering::SeqCst);
            let replicas = self.replicas.lock().unwrap_or_else(PoisonError::into_inner);
            Ok(replicas.get(name).map(|&r| Observed {
                replicas: r,
                generation: 1,
                observed_generation: 1,
                ready_replicas: r,
                available_replicas: r,
            }))
        }

        async fn scale(&self, _: &str, name: &str, replicas: u32) -> Result<()> {
            self.replicas
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(name.to_owned(), replicas);
            self.scaled
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push((name.to_owned(), replicas));
            Ok(())
        }
    }

    /// A started canary whose Rollout names reviews-v1 (4 replicas) and reviews-v2 (none).
    fn started() -> Rollout {
        let mut r: Rollout = serde_norway::from_str(
            "apiVersion: fledge.dev/v1alpha1
kind: Rollout
metadata: {name: reviews, namespace: shop, generation: 1}
spec:
  host: reviews.shop.svc.cluster.local
  stable: v1
  canary: v2
  virtualService: {name: reviews}
  workloads: {stable: reviews-v1, canary: reviews-v2, scaleWithWeight: true}
  strategy:
    canary:
      steps:
        - {weight: 25, pause: {duration: 10s}}
",
        )
        .expect("a valid Rollout");
        let now = Timestamp::from_second(1_800_000_000).expect("a valid time");
        let (status, _) = fledge_core::rollout::step(&r, None, &[], &[], now);
        r.status = Some(status);
        r
    }

    #[tokio::test]
    async fn only_a_leading_agent_scales_and_a_standby_forgets() {
        let memory = Memory::default();
        memory
            .replicas
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend([("reviews-v1".to_owned(), 4), ("reviews-v2".to_owned(), 0)]);
        let leads = Arc::new(AtomicBool::new(false));
        let flag = leads.clone();
        let gate =
            WorkloadGate::start_while(memory.clone(), Duration::from_millis(10), move || {
                flag.load(Ordering::SeqCst)
            });
        let rollout = started();
        let now = Timestamp::from_second(1_800_000_001).expect("a valid time");
        let scaled = || {
            memory
                .scaled
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone()
        };

        gate.reports(&rollout, now);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(scaled(), vec![], "a standby scales nothing");
        assert!(gate.lock().is_empty(), "and keeps nothing it was told");

        leads.store(true, Ordering::SeqCst);
        gate.reports(&rollout, now);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            scaled(),
            vec![("reviews-v2".to_owned(), 1)],
            "the leader scales the canary for the first step"
        );
    }

    #[tokio::test]
    async fn an_ended_rollout_hands_its_deployments_back_once_they_are_at_their_targets() {
        let memory = Memory::default();
        memory.set("reviews-v1", 4);
        memory.set("reviews-v2", 4);
        let gate = WorkloadGate::start(memory.clone(), Duration::from_millis(10));
        // Promoted an hour ago: the canary keeps the total, the old stable goes to zero.
        let mut rollout = started();
        let ended = Timestamp::from_second(1_800_000_100).expect("a valid time");
        let status = rollout.status.as_mut().expect("a status");
        status.phase = Phase::Succeeded;
        status.current_step = Some(1);
        status.canary_weight = 100;
        status.history.push(fledge_core::rollout::Decision {
            at: ended,
            phase: Phase::Succeeded,
            step: None,
            canary_weight: 100,
            reason: "promoted".into(),
        });
        let now = Timestamp::from_second(1_800_003_700).expect("a valid time");
        gate.reports(&rollout, now);
        // Waits (the gate's task runs on this runtime) until `done` says so, for at most 10 s.
        async fn until(done: impl Fn() -> bool) {
            let end = std::time::Instant::now() + Duration::from_secs(10);
            while !done() {
                assert!(std::time::Instant::now() < end, "not within 10 s");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        let key = rollout.key();
        until(|| gate.lock().get(&key).is_some_and(|e| e.settled.is_some())).await;
        assert_eq!(
            (memory.get("reviews-v1"), memory.get("reviews-v2")),
            (Some(0), Some(4))
        );
        // Handed back: an autoscaler's (or a person's) replicas stay, and nothing is read.
        memory.set("reviews-v2", 7);
        let reads = memory.reads.load(Ordering::SeqCst);
        for _ in 0..10 {
            gate.reports(&rollout, now);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(memory.get("reviews-v2"), Some(7), "scaled back by fledge");
        assert_eq!(memory.reads.load(Ordering::SeqCst), reads, "still read");
        // A new rollout (a new status) takes them again.
        let mut next = started();
        next.status.as_mut().expect("a status").observed_generation = Some(2);
        gate.reports(&next, now);
        until(|| memory.reads.load(Ordering::SeqCst) > reads).await;
    }
}
