//! The reconcile loop: every tick, for every Rollout in the store, it snapshots what it holds,
//! lets the core decide (`fledge_core::planner`: what to judge, then status, routing and events),
//! and has `apply` carry the writes out. It holds no policy. Where Rollouts are deleted through
//! finalizers (Kubernetes), it puts fledge's on each and, when one is deleted, has `apply` take
//! its routes out of the VirtualService before the finalizer comes off. Also the HTTP API's view of the
//! rollouts (`ControlPlane`).
//!
//! Locks are held only to copy: the judge of a rollout is taken out of the shared state while it
//! runs, the telemetry store is locked only to copy the seconds the judge wants, so the analysis
//! never blocks report ingest or the HTTP API. A routing write that fails leaves the status
//! unpersisted, so the next tick tries the same transition again after the wait
//! `planner::retry_after` gives for that kind of failure; meanwhile the judge keeps reading the
//! seconds as they settle, so none expires unread. Every tick also tells the telemetry store
//! which series the Rollouts read (`planner::measured`); nothing else is stored. The status is
//! persisted when the planner says it is worth it (a change, or evidence at most every few
//! seconds), so an unchanged rollout costs the store nothing.

mod apply;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use fledge_core::ObjectKey;
use fledge_core::judge::{Judge, Settled};
use fledge_core::planner::{self, Tick};
use fledge_core::rollout::{Rollout, RolloutStatus, UserCommand};
use fledge_core::routes;
use fledge_core::windows::Windows;
use jiff::Timestamp;
use tokio::sync::watch;

use crate::gates::Gates;
use crate::leader::Leadership;
use crate::metrics::Metrics;
use crate::plane::{ControlPlane, UnknownRollout};
use crate::store::RolloutStore;
use crate::telemetry::Hub;

pub use apply::{Applier, ApplyError};

/// One Rollout as the loop knows it.
struct Entry {
    rollout: Rollout,
    judge: Judge,
    /// Whether the routing its status stands for was applied since this agent started.
    routing_applied: bool,
    failures: u32,
    retry_at: Option<Instant>,
    /// The status as last persisted (or read from the store), and when this agent wrote it;
    /// shared, so a tick reads it without copying its evidence.
    persisted: Option<Arc<RolloutStatus>>,
    persisted_at: Option<Timestamp>,
}

#[derive(Default)]
struct State {
    entries: BTreeMap<ObjectKey, Entry>,
    commands: HashMap<ObjectKey, Vec<UserCommand>>,
    loaded: bool,
    /// What the last listing could not read, each naming the object, the file and the reason.
    problems: Vec<String>,
}

/// The loop's shared state; cheap to clone.
pub struct Controller<S> {
    store: Arc<S>,
    telemetry: Arc<Mutex<Windows>>,
    applier: Applier<S>,
    metrics: Arc<Metrics>,
    gates: Gates,
    state: Arc<Mutex<State>>,
    /// Whether this agent leads; ticks are skipped while it stands by.
    leadership: Arc<Leadership>,
}

impl<S> Clone for Controller<S> {
    fn clone(&self) -> Self {
        Self {
            store: self.store.clone(),
            telemetry: self.telemetry.clone(),
            applier: self.applier.clone(),
            metrics: self.metrics.clone(),
            gates: self.gates.clone(),
            state: self.state.clone(),
            leadership: self.leadership.clone(),
        }
    }
}

impl<S: RolloutStore + 'static> Controller<S> {
    pub fn new(
        store: S,
        telemetry: Arc<Mutex<Windows>>,
        hub: Arc<Hub>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let store = Arc::new(store);
        Self {
            applier: Applier {
                store: store.clone(),
                hub,
                metrics: metrics.clone(),
            },
            store,
            telemetry,
            metrics,
            gates: Gates::default(),
            state: Arc::default(),
            leadership: Leadership::alone(),
        }
    }

    /// The checks outside the proxy the loop asks every tick (none unless given).
    pub fn with_gates(mut self, gates: Gates) -> Self {
        self.gates = gates;
        self
    }

    /// Ticks only while `leadership` leads (its store should be `store::Led` on the same one).
    pub fn led_by(mut self, leadership: Arc<Leadership>) -> Self {
        self.leadership = leadership;
        self
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs ticks every `every` until the task is dropped or `stopping` says true; a tick in
    /// progress is never cut short by it.
    pub async fn run(self, every: Duration, mut stopping: watch::Receiver<bool>) {
        let mut ticker = tokio::time::interval(every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // A sender that is gone will never say stop: tick on without watching it.
        let mut watching = true;
        let mut term = None;
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                changed = stopping.changed(), if watching => watching = changed.is_ok(),
            }
            if *stopping.borrow() {
                return;
            }
            // A standby writes nothing and holds no rollout; a leader that was one before
            // starts over from the persisted status, which another leader may have moved on.
            if !self.leadership.may_write() {
                self.stand_by().await;
                continue;
            }
            // The first tick of a term reads the Rollouts from the source, not from a cache
            // that may not have seen the previous leader's last status yet.
            let now_term = self.leadership.term();
            let new_term = term != Some(now_term);
            if new_term {
                *self.lock() = State::default();
            }
            if self.pass(Timestamp::now(), new_term).await {
                term = Some(now_term);
            }
        }
    }

    /// A standby's tick: it only checks that it could take over (the Rollouts can be listed),
    /// which is its readiness; it keeps nothing of them.
    async fn stand_by(&self) {
        let listed = self.store.rollouts().await.is_ok();
        let mut state = self.lock();
        state.entries.clear();
        state.commands.clear();
        state.loaded = listed;
    }

    /// One pass over every Rollout.
    pub async fn tick(&self, now: Timestamp) {
        self.pass(now, false).await;
    }

    /// One pass, over the Rollouts as the store reads them now (`fresh`) or as it holds them;
    /// false when they could not be listed.
    async fn pass(&self, now: Timestamp, fresh: bool) -> bool {
        let started = Instant::now();
        let listed = if fresh {
            self.store.rollouts_now().await
        } else {
            self.store.rollouts().await
        };
        let listing = match listed {
            Ok(listing) => listing,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list rollouts");
                return false;
            }
        };
        let problems: Vec<String> = listing.problems.iter().map(ToString::to_string).collect();
        let mut listing = listing;
        if self.store.finalizes() {
            listing.rollouts = self.finalize(std::mem::take(&mut listing.rollouts)).await;
        }
        let keys: Vec<ObjectKey> = listing.rollouts.iter().map(ObjectKey::of).collect();
        {
            let mut state = self.lock();
            // Said once when it appears, not every tick; the API shows it for as long as it lasts.
            for problem in problems.iter().filter(|p| !state.problems.contains(p)) {
                tracing::warn!(error = %problem, "an object cannot be read; it is left alone until fixed");
            }
            state.problems = problems;
            let listed: HashSet<&ObjectKey> = keys.iter().collect();
            state.entries.retain(|k, _| listed.contains(k));
            for (key, mut rollout) in keys.iter().zip(listing.rollouts) {
                match state.entries.get_mut(key) {
                    // The loop's own status is the truth once loaded: the store only persists it.
                    Some(e) => {
                        let listed_status = rollout.status.take();
                        rollout.status = e.rollout.status.take().or(listed_status);
                        e.rollout = rollout;
                    }
                    None => {
                        let entry = Entry {
                            persisted: rollout.status.clone().map(Arc::new),
                            rollout,
                            judge: Judge::default(),
                            routing_applied: false,
                            failures: 0,
                            retry_at: None,
                            persisted_at: None,
                        };
                        state.entries.insert(key.clone(), entry);
                    }
                }
            }
            state.loaded = true;
            self.keep_only_measured(&state);
        }
        for key in keys {
            self.reconcile(&key, now).await;
        }
        // A rollout that started or ended this tick changes what is measured.
        self.keep_only_measured(&self.lock());
        self.metrics
            .analysis_seconds
            .observe(started.elapsed().as_secs_f64());
        true
    }

    /// Lets deleted Rollouts go once their routes are out of the VirtualService, and puts the
    /// finalizer on those that lack it; returns the Rollouts that stay.
    async fn finalize(&self, rollouts: Vec<Rollout>) -> Vec<Rollout> {
        let ours = |r: &Rollout| {
            r.metadata
                .finalizers
                .as_ref()
                .is_some_and(|f| f.iter().any(|f| f == routes::FINALIZER))
        };
        let mut staying = Vec::with_capacity(rollouts.len());
        for rollout in rollouts {
            if rollout.metadata.deletion_timestamp.is_none() {
                if !ours(&rollout)
                    && let Err(e) = self.store.set_finalizer(&rollout, true).await
                {
                    tracing::warn!(rollout = %ObjectKey::of(&rollout), error = %e, "cannot put the finalizer on");
                }
                staying.push(rollout);
            } else if ours(&rollout)
                && let Err(e) = self.applier.release(&rollout).await
            {
                tracing::warn!(error = %e, "a deleted Rollout's routes stay until they can be taken out");
            }
        }
        staying
    }

    /// Tells the telemetry store which series the rollouts read; it drops and ignores the rest.
    fn keep_only_measured(&self, state: &State) {
        let needed: HashSet<_> = state
            .entries
            .values()
            .flat_map(|e| planner::measured(&e.rollout))
            .collect();
        let mut telemetry = self.telemetry.lock().unwrap_or_else(|p| p.into_inner());
        telemetry.keep_only(needed);
        self.metrics
            .series_stored
            .set(telemetry.series_held() as i64);
    }

    #[tracing::instrument(skip(self, key, now), fields(rollout = %key))]
    async fn reconcile(&self, key: &ObjectKey, now: Timestamp) {
        // Take what this tick needs out of the shared state, the judge included.
        let (rollout, mut judge, commands, routing_applied, waiting, persisted) = {
            let mut state = self.lock();
            let commands = state.commands.remove(key).unwrap_or_default();
            let Some(entry) = state.entries.get_mut(key) else {
                return;
            };
            let waiting = entry.retry_at.is_some_and(|at| Instant::now() < at);
            let judge = std::mem::take(&mut entry.judge);
            let persisted = entry.persisted.clone().map(|s| (s, entry.persisted_at));
            let rollout = entry.rollout.clone();
            let routing_applied = entry.routing_applied;
            if waiting {
                state
                    .commands
                    .entry(key.clone())
                    .or_default()
                    .extend(commands);
                (rollout, judge, Vec::new(), routing_applied, true, persisted)
            } else {
                (rollout, judge, commands, routing_applied, false, persisted)
            }
        };
        let target = planner::target(&rollout);
        if let Some((window, arms)) = &target {
            let spec = &rollout.spec.analysis;
            if let Some(due) = judge.due(window, arms.clone(), spec, now) {
                let settled = {
                    let mut telemetry = self.telemetry.lock().unwrap_or_else(|p| p.into_inner());
                    Settled::take(&mut telemetry, &due)
                };
                judge.feed(&settled);
            }
        }
        if waiting {
            // A failed write waits its turn; the judge has read what settled meanwhile.
            if let Some(entry) = self.lock().entries.get_mut(key) {
                entry.judge = judge;
            }
            return;
        }
        let judgment = target.and_then(|_| judge.look(&rollout.spec.analysis, now));
        let gates = self.gates.reports(&rollout, now);
        let plan = planner::plan(Tick {
            rollout: &rollout,
            judgment: judgment.as_ref(),
            gates: &gates,
            commands: &commands,
            routing_applied,
            persisted: persisted.as_ref().map(|(s, at)| (&**s, *at)),
            now,
        });
        if let Some(o) = &plan.outcome {
            tracing::debug!(verdict = ?o.verdict, reason = %o.reason, "analysis");
        }
        let applied = self.applier.apply(&rollout, &plan).await;

        let mut state = self.lock();
        if let Err(e) = applied {
            if e.persisted.is_none() {
                // Nothing of this tick stands: its commands are given again next time.
                state
                    .commands
                    .entry(key.clone())
                    .or_default()
                    .splice(0..0, commands);
            }
            let Some(entry) = state.entries.get_mut(key) else {
                return;
            };
            if let Some(status) = e.persisted.clone() {
                // The intent is persisted: it stands, and its routes are applied again
                // after the wait, as a restarted agent would.
                if plan.finished() {
                    judge.reset();
                }
                entry.persisted = Some(Arc::new(status.clone()));
                entry.persisted_at = Some(now);
                entry.rollout.status = Some(status);
                entry.routing_applied = false;
            }
            entry.judge = judge;
            entry.failures += 1;
            let wait = planner::retry_after(e.failure, entry.failures);
            entry.retry_at = Some(Instant::now() + wait);
            tracing::warn!(error = %e, failure = e.failure.label(), retry_in = ?wait, "write failed; will retry");
            return;
        }
        if let Some(entry) = state.entries.get_mut(key) {
            if plan.finished() {
                judge.reset();
            }
            entry.judge = judge;
            if plan.status_changed {
                entry.persisted = Some(Arc::new(plan.status.clone()));
                entry.persisted_at = Some(now);
            }
            entry.rollout.status = Some(plan.status.clone());
            entry.routing_applied = true;
            entry.failures = 0;
            entry.retry_at = None;
        }
        drop(state);
        self.gates.applied(&rollout, &plan);
    }
}

impl<S: RolloutStore + 'static> ControlPlane for Controller<S> {
    fn rollouts(&self) -> Vec<serde_json::Value> {
        self.lock()
            .entries
            .values()
            .filter_map(|e| serde_json::to_value(&e.rollout).ok())
            .collect()
    }

    fn command(
        &self,
        namespace: &str,
        name: &str,
        command: UserCommand,
    ) -> Result<(), UnknownRollout> {
        let key = ObjectKey::new(namespace, name);
        let mut state = self.lock();
        if !state.entries.contains_key(&key) {
            return Err(UnknownRollout(key));
        }
        state.commands.entry(key).or_default().push(command);
        Ok(())
    }

    fn problems(&self) -> Vec<String> {
        self.lock().problems.clone()
    }

    fn ready(&self) -> bool {
        self.lock().loaded
    }

    fn leading(&self) -> bool {
        self.leadership.may_write()
    }
}
