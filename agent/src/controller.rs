//! The reconcile loop: every tick, for every Rollout in the store, judge the current step from
//! the merged telemetry, run the state machine with the people's commands, carry out its actions
//! (VirtualService write, routing-table push, events recorded through the store), and persist
//! the status. It holds no policy: the machine decides, `routes` builds, the store writes. Also
//! the HTTP API's view of the rollouts (`ControlPlane`).
//!
//! A routing write that fails leaves the status unpersisted, so the next tick tries the same
//! transition again, after a backoff that doubles per failure (1 s … 30 s).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use jiff::Timestamp;

use crate::http::{ApiError, ControlPlane, UserCommand};
use crate::metrics::Metrics;
use crate::store::{ObjectKey, RolloutEvent, RolloutStore};
use fledge_core::rollout::{self, Action, EventKind, Rollout, RoutingIntent};
use fledge_core::routes;
use fledge_core::windows::Windows;

use crate::telemetry::Hub;

use fledge_core::judge::{Arms, Judge, outcome};

/// One Rollout as the loop knows it.
struct Entry {
    rollout: Rollout,
    judge: Judge,
    /// Whether the routing its status stands for was applied since this agent started.
    routing_applied: bool,
    failures: u32,
    retry_at: Option<Instant>,
}

#[derive(Default)]
struct State {
    entries: BTreeMap<ObjectKey, Entry>,
    commands: HashMap<ObjectKey, Vec<UserCommand>>,
    loaded: bool,
}

/// The loop's shared state; cheap to clone.
pub struct Controller<S> {
    store: Arc<S>,
    telemetry: Arc<Mutex<Windows>>,
    hub: Arc<Hub>,
    metrics: Arc<Metrics>,
    state: Arc<Mutex<State>>,
}

impl<S> Clone for Controller<S> {
    fn clone(&self) -> Self {
        Self {
            store: self.store.clone(),
            telemetry: self.telemetry.clone(),
            hub: self.hub.clone(),
            metrics: self.metrics.clone(),
            state: self.state.clone(),
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
        Self {
            store: Arc::new(store),
            telemetry,
            hub,
            metrics,
            state: Arc::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs ticks every `every` until the task is dropped.
    pub async fn run(self, every: Duration) {
        let mut ticker = tokio::time::interval(every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            self.tick(Timestamp::now()).await;
        }
    }

    /// One pass over every Rollout.
    pub async fn tick(&self, now: Timestamp) {
        let started = Instant::now();
        let listing = match self.store.rollouts().await {
            Ok(listing) => listing,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list rollouts");
                return;
            }
        };
        for problem in &listing.problems {
            tracing::warn!(error = %problem, "skipping a Rollout that cannot be read");
        }
        let keys: Vec<ObjectKey> = listing.rollouts.iter().map(ObjectKey::of).collect();
        {
            let mut state = self.lock();
            state.entries.retain(|k, _| keys.contains(k));
            for rollout in &listing.rollouts {
                let key = ObjectKey::of(rollout);
                match state.entries.get_mut(&key) {
                    // The loop's own status is the truth once loaded: the store only persists it.
                    Some(e) => {
                        let status = e.rollout.status.take();
                        e.rollout = rollout.clone();
                        e.rollout.status = status.or_else(|| rollout.status.clone());
                    }
                    None => {
                        let entry = Entry {
                            rollout: rollout.clone(),
                            judge: Judge::default(),
                            routing_applied: false,
                            failures: 0,
                            retry_at: None,
                        };
                        state.entries.insert(key, entry);
                    }
                }
            }
            state.loaded = true;
        }
        for key in keys {
            self.reconcile(&key, now).await;
        }
        self.metrics
            .analysis_seconds
            .observe(started.elapsed().as_secs_f64());
    }

    #[tracing::instrument(skip(self, key, now), fields(rollout = %key))]
    async fn reconcile(&self, key: &ObjectKey, now: Timestamp) {
        // Take what this tick needs out of the shared state; nothing is held across an await.
        let (rollout, judgment, commands, restore) = {
            let mut state = self.lock();
            let commands = state.commands.remove(key).unwrap_or_default();
            let Some(entry) = state.entries.get_mut(key) else {
                return;
            };
            if entry.retry_at.is_some_and(|at| Instant::now() < at) {
                state
                    .commands
                    .entry(key.clone())
                    .or_default()
                    .extend(commands);
                return;
            }
            let rollout = entry.rollout.clone();
            // A stage that sends the canary nothing (a blue/green preview without a mirror) has
            // nothing to judge; judging it would only find the canary starved.
            let starved_by_design = rollout::routing(&rollout).is_some_and(|i| i.starves_canary());
            let judgment = rollout::analysis_window(&rollout)
                .filter(|_| !starved_by_design)
                .and_then(|window| {
                    let spec = &rollout.spec;
                    let status = rollout.status.as_ref()?;
                    let stable = status.stable_subset.as_deref().unwrap_or(&spec.stable);
                    let canary = status.canary_subset.as_deref().unwrap_or(&spec.canary);
                    let arms = Arms::new(&spec.host, stable, canary, window.canary_traffic);
                    let telemetry = self.telemetry.lock().unwrap_or_else(|p| p.into_inner());
                    entry
                        .judge
                        .tick(&window, arms, &spec.analysis, &telemetry, now)
                });
            let restore = (!entry.routing_applied)
                .then(|| rollout::routing(&rollout))
                .flatten();
            (rollout, judgment, commands, restore)
        };
        let outcome = judgment.as_ref().map(outcome);
        if let Some(o) = &outcome {
            tracing::debug!(verdict = ?o.verdict, reason = %o.reason, "analysis");
        }
        let (status, actions) = rollout::step(&rollout, outcome.as_ref(), &commands, now);
        let mut routing = actions.iter().filter_map(|a| match a {
            Action::SetRouting(intent) => Some(intent.clone()),
            Action::Event(_) => None,
        });
        // A restarted agent re-applies the routing its persisted status stands for.
        let intent = routing.next_back().or(restore);
        if let Some(intent) = intent
            && let Err(e) = self
                .apply(key, &rollout, &intent, status.routing_revision)
                .await
        {
            self.metrics.patch_failures.inc();
            let mut state = self.lock();
            state
                .commands
                .entry(key.clone())
                .or_default()
                .splice(0..0, commands);
            if let Some(entry) = state.entries.get_mut(key) {
                entry.failures += 1;
                let backoff =
                    Duration::from_secs(1 << entry.failures.min(5)).min(Duration::from_secs(30));
                entry.retry_at = Some(Instant::now() + backoff);
                tracing::warn!(error = %e, retry_in = ?backoff, "routing write failed; status kept until it succeeds");
            }
            return;
        }
        for action in &actions {
            if let Action::Event(event) = action {
                self.metrics.decided(&key.to_string(), event.reason);
                let evidence = outcome.as_ref().map(|o| o.reason.as_str()).unwrap_or("");
                match event.kind {
                    EventKind::Normal => {
                        tracing::info!(reason = event.reason, phase = %status.phase, step = ?status.current_step, weight = status.canary_weight, evidence, "{}", event.message)
                    }
                    EventKind::Warning => {
                        tracing::warn!(reason = event.reason, phase = %status.phase, step = ?status.current_step, weight = status.canary_weight, evidence, "{}", event.message)
                    }
                }
                let note = match evidence {
                    "" => event.message.clone(),
                    e => format!("{} ({e})", event.message),
                };
                let recorded = RolloutEvent {
                    kind: event.kind,
                    reason: event.reason,
                    action: status.phase.to_string(),
                    note,
                };
                if let Err(e) = self.store.record_event(&rollout, &recorded).await {
                    tracing::warn!(error = %e, reason = event.reason, "cannot record event");
                }
            }
        }
        if rollout.status.as_ref() != Some(&status)
            && let Err(e) = self.store.write_status(&rollout, &status).await
        {
            tracing::warn!(error = %e, "cannot persist status; will retry");
        }
        let mut state = self.lock();
        if let Some(entry) = state.entries.get_mut(key) {
            entry.rollout.status = Some(status.clone());
            entry.routing_applied = true;
            entry.failures = 0;
            entry.retry_at = None;
            if status.phase.is_final() {
                entry.judge.reset();
            }
        }
    }

    /// Writes the VirtualService and pushes the filters' table for `intent`.
    async fn apply(
        &self,
        key: &ObjectKey,
        rollout: &Rollout,
        intent: &RoutingIntent,
        revision: u64,
    ) -> Result<(), String> {
        let started = Instant::now();
        let vs_key = ObjectKey::virtual_service_of(rollout);
        let user = self
            .store
            .virtual_service(&vs_key)
            .await
            .map_err(|e| e.to_string())?;
        let vs = routes::virtual_service(intent, &user).map_err(|e| e.to_string())?;
        if vs != user {
            self.store
                .write_virtual_service(&vs)
                .await
                .map_err(|e| e.to_string())?;
        }
        let table_revision = self.hub.set_route(&intent.host, routes::host_route(intent));
        self.metrics.routing_revision.set(table_revision as i64);
        self.metrics
            .patch_seconds
            .observe(started.elapsed().as_secs_f64());
        tracing::info!(rollout = %key, virtual_service = %vs_key, revision, table_revision, weight = intent.canary_weight(), "routing applied");
        Ok(())
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

    fn command(&self, namespace: &str, name: &str, command: UserCommand) -> Result<(), ApiError> {
        let key = ObjectKey::new(namespace, name);
        let mut state = self.lock();
        if !state.entries.contains_key(&key) {
            return Err(ApiError::NotFound {
                namespace: namespace.into(),
                name: name.into(),
            });
        }
        state.commands.entry(key).or_default().push(command);
        Ok(())
    }

    fn ready(&self) -> bool {
        self.lock().loaded
    }
}
