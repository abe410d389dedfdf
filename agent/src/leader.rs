//! Leader election for agents in a cluster: one of several replicas reconciles and writes; the
//! others stand by, ready to take over. [`Leadership`] is the gate every write and every filter
//! stream asks; [`Elector`] is the thin adapter that reads and writes the `coordination.k8s.io/v1`
//! Lease with kube's client and lets `fledge_core::lease` decide what to write.
//!
//! The gate is a deadline, not a flag: a renew that succeeds lets the agent write until
//! `renew_deadline` after the moment it was sent, measured on the monotonic clock. A leader that
//! cannot renew (API server unreachable, process stalled) stops writing when that deadline
//! passes, without any call having to return first — before `lease_duration` has passed and a
//! standby may take over. Each time leadership is (re)gained its term grows, so the reconcile
//! loop starts over from the persisted status rather than from what it held before.
//!
//! What it is not: it decides nothing about the Lease's fields (the core does) and knows
//! nothing of Rollouts.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fledge_core::lease::{self, Observed, Step, Timing};
use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::Lease;
use kube::Client;
use kube::api::{Api, ObjectMeta, PostParams};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::store::FIELD_MANAGER;

/// Whether this agent may write now.
#[derive(Debug)]
pub struct Leadership {
    /// False for an agent that leads alone (the local store): it always may write.
    elected: bool,
    /// Until when writes are allowed (elected agents only).
    until: Mutex<Option<Instant>>,
    /// Grows each time leadership is gained.
    term: AtomicU64,
    leading: watch::Sender<bool>,
}

impl Leadership {
    /// An agent that is the only one (the local store): it always leads.
    pub fn alone() -> Arc<Self> {
        Arc::new(Self {
            elected: false,
            until: Mutex::new(None),
            term: AtomicU64::new(1),
            leading: watch::channel(true).0,
        })
    }

    /// An agent that leads only while its Lease says so; a standby until it takes it.
    pub fn elected() -> Arc<Self> {
        Arc::new(Self {
            elected: true,
            until: Mutex::new(None),
            term: AtomicU64::new(0),
            leading: watch::channel(false).0,
        })
    }

    fn until(&self) -> Option<Instant> {
        *self.until.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a write may start now.
    pub fn may_write(&self) -> bool {
        !self.elected || self.until().is_some_and(|u| Instant::now() < u)
    }

    /// Which leadership a write belongs to: it changes whenever leadership is gained again.
    pub fn term(&self) -> u64 {
        self.term.load(Ordering::SeqCst)
    }

    /// Follows leading (true) and standing by (false), as [`refresh`](Self::refresh) says it.
    pub fn watch(&self) -> watch::Receiver<bool> {
        self.leading.subscribe()
    }

    /// A renew that started at `started` succeeded: writes are allowed until its deadline.
    fn renewed(&self, started: Instant, timing: &Timing) {
        *self.until.lock().unwrap_or_else(|p| p.into_inner()) =
            Some(lease::writes_until(started, timing));
        self.refresh();
    }

    /// Someone else holds the Lease (or we gave it back): no more writes.
    pub(crate) fn lost(&self) {
        *self.until.lock().unwrap_or_else(|p| p.into_inner()) = None;
        self.refresh();
    }

    /// Tells watchers whether the agent leads now; a new term begins when it starts to.
    fn refresh(&self) {
        let now = self.may_write();
        self.leading.send_if_modified(|was| {
            if *was == now {
                return false;
            }
            if now {
                self.term.fetch_add(1, Ordering::SeqCst);
            }
            *was = now;
            true
        });
    }
}

/// Which Lease, who we are, and how long things last.
#[derive(Clone, Debug)]
pub struct LeaseOptions {
    pub name: String,
    pub namespace: String,
    /// This agent's name in `holderIdentity` (its pod's name).
    pub identity: String,
    pub timing: Timing,
}

/// Takes and renews the Lease, and keeps [`Leadership`] true to it.
#[derive(Clone)]
pub struct Elector {
    api: Api<Lease>,
    options: LeaseOptions,
    leadership: Arc<Leadership>,
    /// The Lease as last read, and since when it has stayed so on the monotonic clock: another
    /// holder's Lease expires by this, never by comparing its renewTime with our clock.
    observed: Arc<Mutex<Observed<Instant>>>,
}

impl Elector {
    pub fn new(client: Client, options: LeaseOptions, leadership: Arc<Leadership>) -> Self {
        Self {
            api: Api::namespaced(client, &options.namespace),
            options,
            leadership,
            observed: Arc::default(),
        }
    }

    /// The gate this elector keeps.
    pub fn leadership(&self) -> Arc<Leadership> {
        self.leadership.clone()
    }

    /// Tries every `retry_period`, forever; wakes at the write deadline to say it passed.
    pub async fn run(self) {
        let timing = self.options.timing;
        loop {
            let started = Instant::now();
            // A call that hangs is given up in time for the next try, not awaited forever.
            match tokio::time::timeout(timing.renew_deadline, self.attempt(started)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::warn!(lease = %self.options.name, error = %e, "cannot read or write the Lease")
                }
                Err(_) => {
                    tracing::warn!(lease = %self.options.name, after = ?timing.renew_deadline, "the Lease call did not answer in time")
                }
            }
            self.leadership.refresh();
            let next = started + timing.retry_period;
            let wake = match self.leadership.until() {
                Some(until) if until > Instant::now() => next.min(until),
                _ => next,
            };
            tokio::time::sleep_until(wake).await;
            let was = *self.leadership.leading.borrow();
            self.leadership.refresh();
            if was && !self.leadership.may_write() {
                tracing::warn!(lease = %self.options.name, "not renewed within the renew deadline: writing nothing until it is");
            }
        }
    }

    async fn attempt(&self, started: Instant) -> Result<(), kube::Error> {
        let o = &self.options;
        let read = self.api.get_opt(&o.name).await?;
        let spec = read.as_ref().map(|l| l.spec.clone().unwrap_or_default());
        let unchanged_for = self
            .observed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .see(spec.as_ref(), Instant::now());
        let step = lease::next(
            spec.as_ref(),
            &o.identity,
            &o.timing,
            Timestamp::now(),
            unchanged_for,
        );
        let written = match &step {
            Step::Wait { holder, remaining } => {
                if self.leadership.may_write() {
                    tracing::warn!(lease = %o.name, %holder, "another agent holds the Lease: standing by");
                }
                tracing::debug!(lease = %o.name, %holder, ?remaining, "standing by");
                self.leadership.lost();
                return Ok(());
            }
            Step::Create(spec) => {
                let lease = self.object(spec.clone(), None);
                self.api.create(&params(), &lease).await.map(drop)
            }
            Step::Renew(spec) | Step::Take(spec) => {
                let rv = read.and_then(|l| l.metadata.resource_version);
                let lease = self.object(spec.clone(), rv);
                self.api.replace(&o.name, &params(), &lease).await.map(drop)
            }
        };
        match written {
            Ok(()) => {
                if !self.leadership.may_write() {
                    tracing::info!(lease = %o.name, identity = %o.identity, "leading");
                }
                self.leadership.renewed(started, &o.timing);
                Ok(())
            }
            Err(e) if conflict(&e) => {
                tracing::info!(lease = %o.name, "another agent wrote the Lease first: standing by");
                self.leadership.lost();
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Gives the Lease back (if it is ours), so a standby takes over at once; writes nothing
    /// more from here on. For an agent that stops.
    pub async fn release(&self) {
        self.leadership.lost();
        let o = &self.options;
        let released = async {
            let Some(read) = self.api.get_opt(&o.name).await? else {
                return Ok::<_, kube::Error>(false);
            };
            let spec = read.spec.clone().unwrap_or_default();
            let Some(free) = lease::released(&spec, &o.identity, Timestamp::now()) else {
                return Ok(false);
            };
            let lease = self.object(free, read.metadata.resource_version);
            self.api.replace(&o.name, &params(), &lease).await?;
            Ok(true)
        };
        match tokio::time::timeout(o.timing.renew_deadline, released).await {
            Ok(Ok(true)) => tracing::info!(lease = %o.name, "Lease released"),
            Ok(Ok(false)) => {}
            Ok(Err(e)) => {
                tracing::warn!(lease = %o.name, error = %e, "cannot release the Lease; it expires by itself")
            }
            Err(_) => {
                tracing::warn!(lease = %o.name, "releasing the Lease took too long; it expires by itself")
            }
        }
    }

    fn object(
        &self,
        spec: k8s_openapi::api::coordination::v1::LeaseSpec,
        rv: Option<String>,
    ) -> Lease {
        Lease {
            metadata: ObjectMeta {
                name: Some(self.options.name.clone()),
                namespace: Some(self.options.namespace.clone()),
                resource_version: rv,
                ..ObjectMeta::default()
            },
            spec: Some(spec),
        }
    }
}

fn params() -> PostParams {
    PostParams {
        dry_run: false,
        field_manager: Some(FIELD_MANAGER.into()),
    }
}

fn conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

/// How long after a leader's death a standby takes over at most: it reads the Lease every
/// retry period, so it sees the last renewal up to one period late, waits the lease duration
/// from then, and takes it at its next try.
pub fn takeover_bound(timing: &Timing) -> Duration {
    timing.lease_duration + 2 * timing.retry_period
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timing(renew_ms: u64) -> Timing {
        Timing {
            lease_duration: Duration::from_secs(1),
            renew_deadline: Duration::from_millis(renew_ms),
            retry_period: Duration::from_millis(renew_ms / 4),
        }
    }

    #[tokio::test]
    async fn an_elected_agent_writes_only_until_its_renew_deadline() {
        let gate = Leadership::elected();
        let mut leading = gate.watch();
        assert!(!gate.may_write(), "a standby until it holds the Lease");
        let started = Instant::now();
        gate.renewed(started, &timing(300));
        assert!(gate.may_write());
        assert!(*leading.borrow_and_update());
        assert_eq!(gate.term(), 1);
        // No renewal: writes stop at the deadline by themselves, without any call returning.
        tokio::time::sleep_until(started + Duration::from_millis(300)).await;
        assert!(
            !gate.may_write(),
            "{:?} after the renew started",
            started.elapsed()
        );
        gate.refresh();
        assert!(!*leading.borrow_and_update());
        // Leading again is a new term: the loop starts over from the persisted status.
        gate.renewed(Instant::now(), &timing(300));
        assert_eq!((gate.may_write(), gate.term()), (true, 2));
        // A renewal while leading is the same term.
        gate.renewed(Instant::now(), &timing(300));
        assert_eq!(gate.term(), 2);
        gate.lost();
        assert!(!gate.may_write());
        assert!(!*leading.borrow_and_update());
    }

    #[test]
    fn an_agent_alone_always_writes() {
        let gate = Leadership::alone();
        assert!(gate.may_write());
        assert!(*gate.watch().borrow());
        assert_eq!(gate.term(), 1);
    }

    #[test]
    fn a_standby_takes_over_after_the_lease_and_two_tries() {
        let t = Timing::default();
        assert_eq!(takeover_bound(&t), Duration::from_secs(19));
    }
}
