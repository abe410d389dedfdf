//! A store whose writes happen only while this agent leads: every write (status, VirtualService,
//! Event, finalizer) first asks [`Leadership`], and an agent that is not the leader — a standby,
//! or a leader whose renew deadline passed — gets [`Error::NotLeading`] without any call made.
//! Reads pass through. The reconcile loop also skips its ticks while standing by; this wrapper
//! is what makes "a standby writes nothing" hold for a write already under way in a tick.
//!
//! What it is not: the election itself (`leader`), or a lock: a write that started inside the
//! deadline may land just after it, which the margin between the renew deadline and the lease
//! duration covers.

use std::sync::Arc;

use fledge_core::rollout::{Rollout, RolloutStatus};
use serde_json::Value;

use super::{Error, Listing, ObjectKey, Result, RolloutEvent, RolloutStore};
use crate::leader::Leadership;

/// `S`, writing only while `leadership` allows it.
pub struct Led<S> {
    inner: S,
    leadership: Arc<Leadership>,
}

impl<S> Led<S> {
    pub fn new(inner: S, leadership: Arc<Leadership>) -> Self {
        Self { inner, leadership }
    }

    fn may(&self, what: &'static str) -> Result<()> {
        if self.leadership.may_write() {
            Ok(())
        } else {
            Err(Error::NotLeading { what })
        }
    }
}

impl<S: RolloutStore> RolloutStore for Led<S> {
    async fn rollouts(&self) -> Result<Listing> {
        self.inner.rollouts().await
    }

    async fn rollouts_now(&self) -> Result<Listing> {
        self.inner.rollouts_now().await
    }

    async fn write_status(&self, rollout: &Rollout, status: &RolloutStatus) -> Result<()> {
        self.may("status")?;
        self.inner.write_status(rollout, status).await
    }

    async fn virtual_service(&self, key: &ObjectKey) -> Result<Value> {
        self.inner.virtual_service(key).await
    }

    async fn write_virtual_service(&self, vs: &Value) -> Result<()> {
        self.may("VirtualService")?;
        self.inner.write_virtual_service(vs).await
    }

    async fn record_event(&self, rollout: &Rollout, event: &RolloutEvent) -> Result<()> {
        self.may("Event")?;
        self.inner.record_event(rollout, event).await
    }

    fn finalizes(&self) -> bool {
        self.inner.finalizes()
    }

    async fn set_finalizer(&self, rollout: &Rollout, present: bool) -> Result<()> {
        self.may("finalizer")?;
        self.inner.set_finalizer(rollout, present).await
    }
}
