//! The metric gates (`spec.analysis.metrics[]`) as a [`Gate`]: one task per Rollout and gate
//! queries Prometheus every interval (sooner after an error, see
//! `fledge_core::metric::next_look_after`) and keeps its latest judgment; the controller's
//! ticks read it at once. A judgment from a look that began before the current step did is not
//! used for it (the step holds until the first look of its own); a new step wakes the task.
//! Steps are told apart by a count the gate keeps, not by time, so the controller's clock and
//! the tasks' need not agree.
//!
//! A task lives while its Rollout is progressing or paused and the controller keeps asking
//! about it; a changed gate (query, bound, address, subsets) replaces its task. What it is
//! not: the meaning of a value is `fledge_core::metric::decide`'s, the HTTP API
//! `prometheus`'s.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use fledge_core::metric::{self, ErrorRun, Look, MetricGate, Names, Queries, Sample};
use fledge_core::planner::TickPlan;
use fledge_core::rollout::{GateKind, GateReport, GateState, Phase, Rollout, RolloutStatus};
use jiff::Timestamp;
use serde_json::{Value, json};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::gates::Gate;
use crate::outbound::{Outbound, OutboundError};
use crate::prometheus::Prometheus;

/// A task nobody asked about for this long (its Rollout was deleted) ends; at least this, and
/// at least three of its intervals.
const IDLE: Duration = Duration::from_secs(60);

/// Every metric gate of every Rollout.
pub struct MetricGates {
    prometheus: Prometheus,
    /// The agent's `--prometheus-url`, for gates that name no address.
    default_address: Option<String>,
    /// By (Rollout key, gate name).
    runs: Mutex<HashMap<(String, String), Run>>,
}

/// What a task does; any change starts a new one.
#[derive(Clone, Debug, PartialEq)]
struct Target {
    gate: MetricGate,
    queries: Queries,
    address: Option<String>,
    /// For the words of a missing address.
    index: usize,
}

/// One gate's latest judgment.
#[derive(Clone, Debug)]
struct Judged {
    /// The step count when the look began.
    step: u64,
    at: Timestamp,
    state: GateState,
    evidence: Value,
}

/// One running gate.
struct Run {
    target: Target,
    latest: Arc<Mutex<Option<Judged>>>,
    wake: Arc<Notify>,
    /// When the controller last asked (Unix seconds, the task's clock).
    asked: Arc<AtomicI64>,
    /// The step the run is for now, and how many steps it has seen.
    step: (Option<u32>, Option<Timestamp>),
    steps: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl Drop for Run {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl MetricGates {
    /// The gates, asking `default_address` when a gate names no Prometheus of its own.
    pub fn new(outbound: Outbound, default_address: Option<String>) -> Self {
        Self {
            prometheus: Prometheus::new(outbound),
            default_address,
            runs: Mutex::default(),
        }
    }

    /// As a [`Gate`] for `Gates::new`, with its own client.
    pub fn gate(default_address: Option<String>) -> Result<Arc<dyn Gate>, OutboundError> {
        Ok(Arc::new(Self::new(Outbound::new()?, default_address)))
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<(String, String), Run>> {
        self.runs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts the runs `rollout` needs with `status`, ends the ones it no longer needs; wakes
    /// the runs whose step changed.
    fn ensure(&self, rollout: &Rollout, status: &RolloutStatus) {
        let key = rollout.key();
        let mut runs = self.lock();
        runs.retain(|(k, name), run| {
            !run.task.is_finished()
                && (*k != key
                    || rollout
                        .spec
                        .analysis
                        .metrics
                        .iter()
                        .any(|g| g.name == *name))
        });
        if !running(status) {
            runs.retain(|(k, _), _| *k != key);
            return;
        }
        let names = Names {
            namespace: rollout.metadata.namespace.as_deref().unwrap_or("default"),
            canary: status
                .canary_subset
                .as_deref()
                .unwrap_or(&rollout.spec.canary),
            stable: status
                .stable_subset
                .as_deref()
                .unwrap_or(&rollout.spec.stable),
        };
        let step = (status.current_step, status.step_started_at);
        for (index, gate) in rollout.spec.analysis.metrics.iter().enumerate() {
            let target = Target {
                gate: gate.clone(),
                queries: Queries::of(gate, &names),
                address: gate.address.clone().or(self.default_address.clone()),
                index,
            };
            let id = (key.clone(), gate.name.clone());
            match runs.get_mut(&id) {
                Some(run) if run.target == target => {
                    if run.step != step {
                        run.step = step;
                        run.steps.fetch_add(1, Ordering::SeqCst);
                        run.wake.notify_one();
                    }
                }
                _ => {
                    let run = self.start(&key, target, step);
                    runs.insert(id, run);
                }
            }
        }
    }

    fn start(&self, key: &str, target: Target, step: (Option<u32>, Option<Timestamp>)) -> Run {
        let latest = Arc::new(Mutex::new(None));
        let wake = Arc::new(Notify::new());
        let asked = Arc::new(AtomicI64::new(Timestamp::now().as_second()));
        let steps = Arc::new(AtomicU64::new(0));
        let looking = Looking {
            steps: steps.clone(),
            prometheus: self.prometheus.clone(),
            key: key.to_owned(),
            target: target.clone(),
            latest: latest.clone(),
            wake: wake.clone(),
            asked: asked.clone(),
        };
        Run {
            target,
            latest,
            wake,
            asked,
            step,
            steps,
            task: tokio::spawn(looking.run()),
        }
    }
}

impl Gate for MetricGates {
    fn reports(&self, rollout: &Rollout, now: Timestamp) -> Vec<GateReport> {
        let Some(status) = rollout.status.as_ref() else {
            return Vec::new();
        };
        self.ensure(rollout, status);
        if !running(status) {
            return Vec::new();
        }
        let runs = self.lock();
        let key = rollout.key();
        let mut out = Vec::new();
        for gate in &rollout.spec.analysis.metrics {
            let Some(run) = runs.get(&(key.clone(), gate.name.clone())) else {
                continue;
            };
            run.asked
                .store(Timestamp::now().as_second(), Ordering::Relaxed);
            let step = run.steps.load(Ordering::SeqCst);
            let latest = run.latest.lock().unwrap_or_else(|p| p.into_inner()).clone();
            let judged = latest.filter(|j| j.step == step).unwrap_or_else(|| Judged {
                step,
                at: now,
                state: GateState::Hold("no look at the metric since the step began yet".into()),
                evidence: json!({ "canary": { "query": run.target.queries.canary } }),
            });
            out.extend(
                GateReport::about(
                    status,
                    &gate.name,
                    GateKind::Metric,
                    judged.state,
                    judged.at,
                )
                .map(|r| r.with_evidence(judged.evidence)),
            );
        }
        out
    }

    fn applied(&self, rollout: &Rollout, plan: &TickPlan) {
        self.ensure(rollout, &plan.status);
    }
}

/// Whether a step runs that metric gates judge.
fn running(status: &RolloutStatus) -> bool {
    matches!(status.phase, Phase::Progressing | Phase::Paused)
        && status.current_step.is_some()
        && status.step_started_at.is_some()
}

/// One gate's task.
struct Looking {
    prometheus: Prometheus,
    key: String,
    target: Target,
    latest: Arc<Mutex<Option<Judged>>>,
    wake: Arc<Notify>,
    asked: Arc<AtomicI64>,
    steps: Arc<AtomicU64>,
}

impl Looking {
    async fn run(self) {
        let gate = &self.target.gate;
        let idle = IDLE.max(gate.interval * 3).as_secs() as i64;
        let mut errors = ErrorRun::default();
        loop {
            let at = Timestamp::now();
            let step = self.steps.load(Ordering::SeqCst);
            if at.as_second() - self.asked.load(Ordering::Relaxed) > idle {
                return;
            }
            let (state, evidence) = match &self.target.address {
                Some(address) => {
                    let look = self.look(address).await;
                    errors = errors.after(&look, at);
                    if let Some(e) = look.error() {
                        tracing::warn!(rollout = %self.key, metric = %gate.name, error = %e, "metric query failed");
                    }
                    metric::decide(gate, &look, &errors, at)
                }
                None => (
                    GateState::Abort(format!(
                        "no Prometheus to ask: set spec.analysis.metrics[{}].address or start \
                         the agent with --prometheus-url",
                        self.target.index
                    )),
                    json!({ "canary": { "query": self.target.queries.canary } }),
                ),
            };
            let judged = Judged {
                step,
                at,
                state,
                evidence,
            };
            let before = self
                .latest
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .replace(judged.clone());
            if before.is_none_or(|b| b.state.label() != judged.state.label()) {
                tracing::info!(rollout = %self.key, metric = %gate.name, state = judged.state.label(), reason = judged.state.reason().unwrap_or_default(), "metric gate");
            }
            tokio::select! {
                _ = tokio::time::sleep(metric::next_look_after(gate, &errors)) => {}
                _ = self.wake.notified() => {}
            }
        }
    }

    /// Both arms' queries, at once.
    async fn look(&self, address: &str) -> Look<'_> {
        let queries = &self.target.queries;
        let timeout = self.target.gate.query_timeout();
        let ask = |q: String| async move {
            match self.prometheus.query(address, &q, timeout).await {
                Ok(Some(v)) => Sample::Value(v),
                Ok(None) => Sample::Empty,
                Err(e) => Sample::Error(e.to_string()),
            }
        };
        let stable = async {
            match &queries.stable {
                Some(q) => Some(ask(q.clone()).await),
                None => None,
            }
        };
        let (canary, stable) = tokio::join!(ask(queries.canary.clone()), stable);
        Look {
            queries,
            canary,
            stable,
        }
    }
}

#[cfg(test)]
mod tests;
