//! Leader election over a `coordination.k8s.io/v1` Lease, as decisions on plain data: given the
//! Lease as read (or none), who we are, the timing, the time now and how long the Lease has
//! stayed as it is, what to write next — create it, renew it, take it over, or wait for its
//! holder — and what a leader that stops gives back.
//!
//! The rules (those of client-go's leader election):
//! - a Lease without a holder is free; one whose holder is us is renewed;
//! - another holder's Lease expires once we have seen it unchanged for its
//!   `leaseDurationSeconds`, counted on our own clock from the moment we first read it as it is
//!   ([`Observed`]); before that we wait, from then on we may take it (`leaseTransitions` + 1,
//!   `acquireTime` now). The Lease's `renewTime` is the holder's clock: compared with ours, a
//!   clock running ahead would take a Lease its holder still renews, so it only says when, not
//!   whether;
//! - a leader writes only until `renewDeadline` after the start of its last successful renew,
//!   which is shorter than the lease duration: a standby first saw that renewal after it started,
//!   so the leader has stopped before the standby may take over.
//!
//! What it is not: it reads and writes nothing. The agent's `leader` module makes the calls, at
//! the resourceVersion it read, so of two candidates taking one Lease only one write succeeds.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::LeaseSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;

/// How long a Lease lasts, how long a leader keeps writing without renewing, how often to try.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// `leaseDurationSeconds`: a standby may take the Lease this long after its last renewal.
    pub lease_duration: Duration,
    /// A leader that has not renewed for this long stops writing (shorter than the lease).
    pub renew_deadline: Duration,
    /// Time between attempts to take or renew the Lease.
    pub retry_period: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// Timing that cannot elect a single leader safely.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimingError {
    #[error("--lease-duration {0:?} must be a whole number of seconds, at least 1s")]
    LeaseNotWholeSeconds(Duration),
    #[error(
        "--renew-deadline {renew:?} must be shorter than --lease-duration {lease:?}: a leader \
         must stop writing before a standby may take the Lease over"
    )]
    RenewNotShorter { renew: Duration, lease: Duration },
    #[error(
        "--retry-period {retry:?} must be shorter than --renew-deadline {renew:?}: a leader \
         gets at least one more try to renew before it must stop"
    )]
    RetryNotShorter { retry: Duration, renew: Duration },
    #[error("--retry-period must be more than zero")]
    RetryZero,
}

impl Timing {
    /// Refuses timing where two leaders could write at once, or a leader could never renew.
    pub fn validate(&self) -> Result<(), TimingError> {
        let lease = self.lease_duration;
        if lease.subsec_nanos() != 0 || lease.as_secs() == 0 || lease.as_secs() > i32::MAX as u64 {
            return Err(TimingError::LeaseNotWholeSeconds(lease));
        }
        if self.renew_deadline >= lease {
            return Err(TimingError::RenewNotShorter {
                renew: self.renew_deadline,
                lease,
            });
        }
        if self.retry_period.is_zero() {
            return Err(TimingError::RetryZero);
        }
        if self.retry_period >= self.renew_deadline {
            return Err(TimingError::RetryNotShorter {
                retry: self.retry_period,
                renew: self.renew_deadline,
            });
        }
        Ok(())
    }
}

/// What to do with the Lease next.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// No Lease exists: create it with this spec.
    Create(LeaseSpec),
    /// It is ours: write this spec at the resourceVersion read.
    Renew(LeaseSpec),
    /// It is free or expired: write this spec at the resourceVersion read; a 409 means another
    /// candidate took it first.
    Take(LeaseSpec),
    /// Another holder has it for at least `remaining` more, unless it changes.
    Wait { holder: String, remaining: Duration },
}

impl Step {
    /// The spec to write, if any.
    pub fn spec(&self) -> Option<&LeaseSpec> {
        match self {
            Self::Create(s) | Self::Renew(s) | Self::Take(s) => Some(s),
            Self::Wait { .. } => None,
        }
    }
}

/// The holder named in a Lease, if any (an empty name is none).
pub fn holder(lease: &LeaseSpec) -> Option<&str> {
    lease.holder_identity.as_deref().filter(|h| !h.is_empty())
}

/// How long the Lease lasts without a renewal: its own duration, else ours.
pub fn duration(lease: &LeaseSpec, timing: &Timing) -> Duration {
    lease
        .lease_duration_seconds
        .and_then(|s| u64::try_from(s).ok())
        .filter(|s| *s > 0)
        .map_or(timing.lease_duration, Duration::from_secs)
}

/// What `me` does next with `lease` (None: no Lease exists) at `now`, having seen it unchanged
/// for `unchanged_for` ([`Observed::see`]).
pub fn next(
    lease: Option<&LeaseSpec>,
    me: &str,
    timing: &Timing,
    now: Timestamp,
    unchanged_for: Duration,
) -> Step {
    let lease_secs = i32::try_from(timing.lease_duration.as_secs()).unwrap_or(i32::MAX);
    let ours = |acquired: MicroTime, transitions: i32| LeaseSpec {
        holder_identity: Some(me.to_owned()),
        lease_duration_seconds: Some(lease_secs),
        acquire_time: Some(acquired),
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(transitions),
        ..LeaseSpec::default()
    };
    let Some(lease) = lease else {
        return Step::Create(ours(MicroTime(now), 0));
    };
    let transitions = lease.lease_transitions.unwrap_or(0);
    match holder(lease) {
        Some(h) if h == me => {
            let acquired = lease.acquire_time.clone().unwrap_or(MicroTime(now));
            Step::Renew(ours(acquired, transitions))
        }
        Some(h) => match duration(lease, timing).checked_sub(unchanged_for) {
            Some(remaining) if !remaining.is_zero() => Step::Wait {
                holder: h.to_owned(),
                remaining,
            },
            _ => Step::Take(ours(MicroTime(now), transitions.saturating_add(1))),
        },
        None => Step::Take(ours(MicroTime(now), transitions.saturating_add(1))),
    }
}

/// What a candidate last read of the Lease and since when, on its own clock `T` (the agent's
/// monotonic clock): any change to the record (a renewal, a new holder, a release, the Lease
/// created or deleted) starts the count again.
#[derive(Clone, Debug)]
pub struct Observed<T> {
    lease: Option<Option<LeaseSpec>>,
    since: Option<T>,
}

impl<T> Default for Observed<T> {
    fn default() -> Self {
        Self {
            lease: None,
            since: None,
        }
    }
}

impl<T: Copy + std::ops::Sub<Output = Duration>> Observed<T> {
    /// Records the Lease as read at `now` (None: there is none); how long it has stayed so.
    pub fn see(&mut self, lease: Option<&LeaseSpec>, now: T) -> Duration {
        let same = self
            .lease
            .as_ref()
            .is_some_and(|seen| seen.as_ref() == lease);
        match self.since {
            Some(since) if same => now - since,
            _ => {
                self.lease = Some(lease.cloned());
                self.since = Some(now);
                Duration::ZERO
            }
        }
    }
}

/// The Lease a stopping leader writes back so a standby takes over at once rather than after
/// the lease duration: no holder, the transitions kept. None when `me` does not hold it.
pub fn released(lease: &LeaseSpec, me: &str, now: Timestamp) -> Option<LeaseSpec> {
    (holder(lease) == Some(me)).then(|| LeaseSpec {
        holder_identity: None,
        lease_duration_seconds: lease.lease_duration_seconds,
        acquire_time: None,
        renew_time: Some(MicroTime(now)),
        lease_transitions: lease.lease_transitions,
        ..LeaseSpec::default()
    })
}

/// Until when a leader may write after a renew that started at `renew_started` succeeded.
/// Generic over the clock so the agent uses a monotonic one.
pub fn writes_until<T: std::ops::Add<Duration, Output = T>>(
    renew_started: T,
    timing: &Timing,
) -> T {
    renew_started + timing.renew_deadline
}

#[cfg(test)]
mod tests;
