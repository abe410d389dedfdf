//! Carries out one rollout's [`TickPlan`]: the status first, then the VirtualService and the
//! filters' table, then the events — each write timed and counted by what it wrote and how it
//! ended (`fledge_agent_writes_total{write,result}`, `fledge_agent_write_duration_seconds{write}`).
//!
//! The status goes first because it is the intent: an agent killed between the two writes (or
//! a leader that dies there) leaves a status one step ahead of the routes, and the next agent
//! re-applies the routes that status stands for. The other order left routes ahead of the
//! status, and the next agent moved the weight back to the persisted step's.
//!
//! The split linkerd's policy-controller uses: the planner computes what to write, this applies
//! it. It also lets a deleted Rollout go (`release`): its routes out, then the finalizer off. It
//! decides nothing: a failed write is returned, typed, and the controller waits as
//! `planner::retry_after` says before trying again.

use std::sync::Arc;
use std::time::Instant;

use fledge_core::ObjectKey;
use fledge_core::planner::{self, Notice, TickPlan, WriteFailure};
use fledge_core::rollout::{EventKind, Rollout, RolloutStatus, RoutingIntent};
use fledge_core::routes;

use crate::metrics::Metrics;
use crate::store::{RolloutEvent, RolloutStore};
use crate::telemetry::Hub;

/// A write that failed, and the status persisted before or after it, if any.
#[derive(Debug, thiserror::Error)]
#[error("{failure:?} writing the {write} of Rollout {rollout}: {message}")]
pub struct ApplyError {
    pub rollout: ObjectKey,
    /// `status` or `routing`.
    pub write: &'static str,
    pub failure: WriteFailure,
    /// What went wrong, naming the object and, where there is one, the field.
    pub message: String,
    /// The status this tick persisted (the plan's, with `routingError` when it could say it):
    /// it stands, and the routes behind it are still to be applied.
    pub persisted: Option<RolloutStatus>,
}

/// What the controller writes with.
pub struct Applier<S> {
    pub store: Arc<S>,
    pub hub: Arc<Hub>,
    pub metrics: Arc<Metrics>,
}

impl<S> Clone for Applier<S> {
    fn clone(&self) -> Self {
        Self {
            store: self.store.clone(),
            hub: self.hub.clone(),
            metrics: self.metrics.clone(),
        }
    }
}

impl<S: RolloutStore> Applier<S> {
    /// Applies `plan` for `rollout` (the rollout as it was before the tick).
    pub async fn apply(&self, rollout: &Rollout, plan: &TickPlan) -> Result<(), ApplyError> {
        let key = ObjectKey::of(rollout);
        if plan.status_changed {
            self.status(&key, rollout, &plan.status).await?;
        }
        if let Some(intent) = &plan.routing
            && let Err(e) = self
                .routing(&key, rollout, intent, plan.status.routing_revision)
                .await
        {
            // The status says why its weight is not routed, as soon as it can.
            let failed = planner::routing_failed(&plan.status, e.to_string());
            let persisted = match self.status(&key, rollout, &failed).await {
                Ok(()) => Some(failed),
                Err(_) => plan.status_changed.then(|| plan.status.clone()),
            };
            return Err(ApplyError { persisted, ..e });
        }
        for notice in &plan.notices {
            self.notice(&key, rollout, &plan.status, notice).await;
        }
        Ok(())
    }

    /// Writes the VirtualService (when it changes) and pushes the filters' table for `intent`.
    async fn routing(
        &self,
        key: &ObjectKey,
        rollout: &Rollout,
        intent: &RoutingIntent,
        revision: u64,
    ) -> Result<(), ApplyError> {
        let started = Instant::now();
        let failed = |failure: WriteFailure, message: String| {
            self.metrics.wrote(
                "virtual_service",
                failure.label(),
                started.elapsed().as_secs_f64(),
            );
            ApplyError {
                rollout: key.clone(),
                write: "routing",
                failure,
                message,
                persisted: None,
            }
        };
        let vs_key = ObjectKey::virtual_service_of(rollout);
        let user = self
            .store
            .virtual_service(&vs_key)
            .await
            .map_err(|e| failed(e.failure(), e.to_string()))?;
        let vs = routes::virtual_service(intent, &user)
            .map_err(|e| failed(WriteFailure::Invalid, e.to_string()))?;
        if vs != user {
            self.store
                .write_virtual_service(&vs)
                .await
                .map_err(|e| failed(e.failure(), e.to_string()))?;
        }
        self.metrics
            .wrote("virtual_service", "ok", started.elapsed().as_secs_f64());
        let table_revision = self.hub.set_route(&intent.host, routes::host_route(intent));
        self.metrics.routing_revision.set(table_revision as i64);
        tracing::info!(rollout = %key, virtual_service = %vs_key, revision, table_revision, weight = intent.canary_weight(), "routing applied");
        Ok(())
    }

    /// A deleted Rollout: its routes out of the VirtualService (the user's own stay as they
    /// are) and out of the filters' table, then fledge's finalizer off so the deletion completes.
    /// A VirtualService that is gone has no routes to take out.
    pub async fn release(&self, rollout: &Rollout) -> Result<(), ApplyError> {
        let key = ObjectKey::of(rollout);
        let failed = |e: crate::store::Error| ApplyError {
            rollout: key.clone(),
            write: "release",
            failure: e.failure(),
            message: e.to_string(),
            persisted: None,
        };
        let started = Instant::now();
        let vs_key = ObjectKey::virtual_service_of(rollout);
        match self.store.virtual_service(&vs_key).await {
            Ok(user) => {
                let vs = routes::release(&key.name, &user);
                if vs != user {
                    let written = self.store.write_virtual_service(&vs).await;
                    let result = written
                        .as_ref()
                        .map_or_else(|e| e.failure().label(), |_| "ok");
                    let seconds = started.elapsed().as_secs_f64();
                    self.metrics.wrote("virtual_service", result, seconds);
                    written.map_err(failed)?;
                }
            }
            Err(e) if e.failure() == WriteFailure::NotFound => {}
            Err(e) => return Err(failed(e)),
        }
        self.hub.set_route(&rollout.spec.host, None);
        self.store
            .set_finalizer(rollout, false)
            .await
            .map_err(failed)?;
        tracing::info!(rollout = %key, virtual_service = %vs_key, "deleted: its routes are out, the finalizer is off");
        Ok(())
    }

    /// Logs, counts and records one decision. Failing to record it never undoes it.
    async fn notice(
        &self,
        key: &ObjectKey,
        rollout: &Rollout,
        status: &RolloutStatus,
        notice: &Notice,
    ) {
        self.metrics.decided(&key.to_string(), notice.reason);
        let evidence = notice.evidence.as_deref().unwrap_or("");
        match notice.kind {
            EventKind::Normal => {
                tracing::info!(reason = notice.reason, phase = %status.phase, step = ?status.current_step, weight = status.canary_weight, evidence, "{}", notice.message)
            }
            EventKind::Warning => {
                tracing::warn!(reason = notice.reason, phase = %status.phase, step = ?status.current_step, weight = status.canary_weight, evidence, "{}", notice.message)
            }
        }
        let event = RolloutEvent {
            kind: notice.kind,
            reason: notice.reason,
            action: notice.action.clone(),
            note: notice.note(),
        };
        let started = Instant::now();
        let result = self.store.record_event(rollout, &event).await;
        let seconds = started.elapsed().as_secs_f64();
        match result {
            Ok(()) => self.metrics.wrote("event", "ok", seconds),
            Err(e) => {
                self.metrics.wrote("event", e.failure().label(), seconds);
                tracing::warn!(error = %e, reason = notice.reason, "cannot record event");
            }
        }
    }

    /// Persists the status. A failure is logged and the next change writes it again; the loop's
    /// own copy stays the truth meanwhile.
    /// Persists the status; on failure nothing else of the plan is written.
    async fn status(
        &self,
        key: &ObjectKey,
        rollout: &Rollout,
        status: &RolloutStatus,
    ) -> Result<(), ApplyError> {
        let started = Instant::now();
        let result = self.store.write_status(rollout, status).await;
        let seconds = started.elapsed().as_secs_f64();
        match result {
            Ok(()) => {
                self.metrics.wrote("status", "ok", seconds);
                Ok(())
            }
            Err(e) => {
                let failure = e.failure();
                self.metrics.wrote("status", failure.label(), seconds);
                Err(ApplyError {
                    rollout: key.clone(),
                    write: "status",
                    failure,
                    message: e.to_string(),
                    persisted: None,
                })
            }
        }
    }
}
