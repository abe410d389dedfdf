//! The agent's webhooks (`spec.webhooks`): the HTTP calls the core says are due, made on their
//! own tasks through [`Outbound`], so no tick ever waits for a hook.
//!
//! Gates (`preRollout`, `confirmPromotion`): the first tick of a step they answer about starts a
//! task that asks the hook (retrying what is worth retrying, with backoff) and, until it says
//! yes, asks again every `interval`; [`Gate::reports`] answers from the task's latest result —
//! the hook's pending state until then. Notifications (`step`, `postRollout`, `rollback`,
//! `notify`): [`Gate::applied`] compares the written status with the one of the last plan it
//! heard of (or, the first time, the loop's) and sends what the change calls for; a notification that fails is logged and counted, never held against
//! the rollout. Every call carries the core's idempotency key (header `Idempotency-Key` and the
//! body), so a receiver knows a call sent twice — retried, or again after a restart.
//!
//! A Rollout the loop stops asking about (deleted) is forgotten after [`FORGET_AFTER`]: its
//! gating hooks are no longer asked, and what the gate kept of it goes.
//!
//! What it is not: which hooks are due, what they are sent and what answers mean are the
//! core's (`fledge_core::rollout::webhooks`).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use fledge_core::planner::TickPlan;
use fledge_core::rollout::webhooks::{self, Answer, HookCall, Meaning};
use fledge_core::rollout::{GateKind, GateReport, GateState, Rollout, RolloutStatus, Webhook};
use jiff::Timestamp;
use serde_json::{Value, json};

use crate::gates::Gate;
use crate::metrics::Metrics;
use crate::outbound::Outbound;

/// The header that carries a call's idempotency key.
pub const IDEMPOTENCY_HEADER: &str = "idempotency-key";

/// A Rollout the loop has not asked about this long (deleted, or no longer ticked) is
/// forgotten: its gating hooks' tasks end and its last status goes.
pub const FORGET_AFTER: Duration = Duration::from_secs(60);

/// What a gating hook says now, by its call's idempotency key.
struct Asked {
    /// `namespace/name` of the rollout it is about.
    rollout: String,
    state: GateState,
    evidence: Value,
    /// When the loop last asked for this answer.
    read: Instant,
}

type Calls = Arc<Mutex<HashMap<String, Asked>>>;
/// The status each rollout with webhooks had at the last plan this gate heard of, and when the
/// loop last asked about the rollout.
type Seen = Arc<Mutex<HashMap<String, (RolloutStatus, Instant)>>>;

/// The webhook gate; cheap to clone.
#[derive(Clone)]
pub struct Webhooks {
    /// The client, or why none could be made (every call then fails with that reason).
    client: Result<Outbound, String>,
    metrics: Arc<Metrics>,
    asked: Calls,
    seen: Seen,
    /// [`FORGET_AFTER`], shorter in tests.
    forget_after: Duration,
}

impl Webhooks {
    pub fn new(client: Outbound, metrics: Arc<Metrics>) -> Self {
        Self {
            client: Ok(client),
            metrics,
            asked: Arc::default(),
            seen: Arc::default(),
            forget_after: FORGET_AFTER,
        }
    }

    /// The gate with a client of its own. Should the client not be made, the agent still runs:
    /// every call fails with the reason, so gating hooks hold or abort as configured.
    pub fn start(metrics: Arc<Metrics>) -> Self {
        let client = Outbound::new().map_err(|e| {
            tracing::error!(error = %e, "webhooks cannot be called");
            e.to_string()
        });
        Self {
            client,
            metrics,
            asked: Arc::default(),
            seen: Arc::default(),
            forget_after: FORGET_AFTER,
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Asked>> {
        self.asked.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn seen(&self) -> MutexGuard<'_, HashMap<String, (RolloutStatus, Instant)>> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the call `key` is still asked for: its entry is there and the loop read it
    /// within [`FORGET_AFTER`]. An entry nobody reads any more is dropped here.
    fn still_asked(&self, key: &str) -> bool {
        let mut asked = self.lock();
        match asked.get(key) {
            Some(entry) if entry.read.elapsed() < self.forget_after => true,
            Some(_) => {
                asked.remove(key);
                false
            }
            None => false,
        }
    }

    /// Starts asking a gating hook, unless a task already does for this call.
    fn ask(&self, call: &HookCall<'_>, rollout: &str) {
        let hook = call.hook.clone();
        let (key, body) = (call.key.clone(), call.body.clone());
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                let (meaning, evidence) = me.send(&hook, &key, &body).await;
                let state = webhooks::state_after(&hook, &meaning);
                let done = matches!(state, GateState::Pass | GateState::Abort(_));
                {
                    let mut asked = me.lock();
                    // Gone: the step is over and nobody reads the answer any more.
                    let Some(entry) = asked.get_mut(&key) else {
                        return;
                    };
                    entry.state = state;
                    entry.evidence = evidence;
                }
                if done {
                    return;
                }
                tokio::time::sleep(hook.interval()).await;
                if !me.still_asked(&key) {
                    return;
                }
            }
        });
        tracing::info!(rollout, hook = %call.hook.name, kind = call.event, url = %call.hook.url, "asking a webhook");
    }

    /// Sends one notification on its own task; a failure is logged (and counted by `send`).
    fn notify(&self, call: HookCall<'_>, rollout: String) {
        let hook = call.hook.clone();
        let (key, body, event) = (call.key, call.body, call.event);
        let me = self.clone();
        tokio::spawn(async move {
            let (meaning, evidence) = me.send(&hook, &key, &body).await;
            match meaning {
                Meaning::Yes => {
                    tracing::info!(rollout, hook = %hook.name, event, "webhook notified");
                }
                Meaning::NotYet(why) | Meaning::Retry(why) | Meaning::No(why) => {
                    tracing::warn!(rollout, hook = %hook.name, event, url = %hook.url, error = %why, %evidence, "webhook notification failed; the rollout goes on");
                }
            }
        });
    }

    /// Calls `hook` until an answer that is no reason to try again at once, or its retries are
    /// spent; returns what the last answer meant and the evidence for the status.
    async fn send(&self, hook: &Webhook, key: &str, body: &Value) -> (Meaning, Value) {
        let mut attempt = 0;
        loop {
            let sent = match &self.client {
                Ok(client) => {
                    let headers = [(IDEMPOTENCY_HEADER, key)];
                    client
                        .post_json_with(&hook.url, body, &headers, hook.timeout())
                        .await
                        .map_err(|e| e.to_string())
                }
                Err(e) => Err(e.clone()),
            };
            let answer = match sent {
                Ok(a) => Answer::Status(a.status.as_u16()),
                // The error names the URL; the gate's words name it once already.
                Err(words) => {
                    let words = words.strip_prefix(hook.url.as_str()).unwrap_or(&words);
                    Answer::NoAnswer(words.trim_start().to_owned())
                }
            };
            let meaning = webhooks::meaning(hook, &answer);
            let result = match &meaning {
                Meaning::Yes => "ok",
                Meaning::NotYet(_) => "not_yet",
                Meaning::Retry(_) => "error",
                Meaning::No(_) => "refused",
            };
            self.metrics.hook_called(hook.on.as_str(), result);
            if matches!(meaning, Meaning::Retry(_)) && attempt < hook.retries() {
                attempt += 1;
                tokio::time::sleep(Webhook::backoff(attempt)).await;
                continue;
            }
            let answered = match &answer {
                Answer::Status(code) => json!(code),
                Answer::NoAnswer(why) => json!(why),
            };
            let evidence = json!({
                "url": hook.url,
                "answer": answered,
                "attempts": attempt + 1,
                "at": Timestamp::now().to_string(),
            });
            return (meaning, evidence);
        }
    }
}

impl Webhooks {
    /// What each gating hook of `rollout`'s current step says now (name, state, evidence),
    /// starting to ask those not asked yet, and forgetting the rollout's calls about other steps
    /// (their tasks stop at their next answer).
    fn gates_now(&self, rollout: &Rollout) -> Vec<(String, GateState, Value)> {
        let calls = webhooks::gating(rollout);
        let key = rollout.key();
        let current: HashSet<&str> = calls.iter().map(|c| c.key.as_str()).collect();
        let mut asked = self.lock();
        let forget_after = self.forget_after;
        asked.retain(|k, a| {
            (a.rollout != key || current.contains(k.as_str())) && a.read.elapsed() < forget_after
        });
        let mut out = Vec::with_capacity(calls.len());
        for call in &calls {
            if !asked.contains_key(&call.key) {
                asked.insert(
                    call.key.clone(),
                    Asked {
                        rollout: key.clone(),
                        state: webhooks::pending(call.hook),
                        evidence: json!({ "url": call.hook.url }),
                        read: Instant::now(),
                    },
                );
                self.ask(call, &key);
            }
            let Some(entry) = asked.get_mut(&call.key) else {
                continue;
            };
            entry.read = Instant::now();
            out.push((
                call.hook.name.clone(),
                entry.state.clone(),
                entry.evidence.clone(),
            ));
        }
        out
    }
}

impl Gate for Webhooks {
    fn reports(&self, rollout: &Rollout, now: Timestamp) -> Vec<GateReport> {
        let Some(status) = rollout.status.as_ref() else {
            return Vec::new();
        };
        if !rollout.spec.webhooks.is_empty()
            && let Some((_, read)) = self.seen().get_mut(&rollout.key())
        {
            // Asked about: kept (`applied`, the only one that adds, drops the others).
            *read = Instant::now();
        }
        self.gates_now(rollout)
            .into_iter()
            .filter_map(|(name, state, evidence)| {
                GateReport::about(status, name, GateKind::Webhook, state, now)
                    .map(|r| r.with_evidence(evidence))
            })
            .collect()
    }

    fn applied(&self, rollout: &Rollout, plan: &TickPlan) {
        if rollout.spec.webhooks.is_empty() {
            return;
        }
        // The change since the last plan heard of, not only since the loop's status: a tick
        // whose status was persisted but whose routes failed is not heard of, and the change
        // it made must still be told.
        let key = rollout.key();
        let before = {
            let mut seen = self.seen();
            let forget_after = self.forget_after;
            seen.retain(|_, (_, read)| read.elapsed() < forget_after);
            seen.insert(key.clone(), (plan.status.clone(), Instant::now()))
                .map(|(status, _)| status)
        };
        let mut was = rollout.clone();
        if let Some(before) = before {
            was.status = Some(before);
        }
        for call in webhooks::due(&was, &plan.status) {
            self.notify(call, key.clone());
        }
        // A step that a hook gates starts asking now, not at the next tick.
        if rollout.spec.webhooks.iter().any(|h| h.on.is_gate()) {
            let mut next = rollout.clone();
            next.status = Some(plan.status.clone());
            self.gates_now(&next);
        }
    }
}

#[cfg(test)]
mod tests;
