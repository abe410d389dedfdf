//! The Lease decisions, table by table: who holds it, when it expires (seen unchanged on our
//! own clock), what to write, and which timing is refused.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::LeaseSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;

use super::*;

const T0: i64 = 1_800_000_000;

fn at(secs: i64) -> Timestamp {
    Timestamp::from_second(T0 + secs).unwrap()
}

fn held(holder: &str, renewed: Option<i64>, duration: Option<i32>, transitions: i32) -> LeaseSpec {
    LeaseSpec {
        holder_identity: Some(holder.into()),
        renew_time: renewed.map(|s| MicroTime(at(s))),
        acquire_time: Some(MicroTime(at(0))),
        lease_duration_seconds: duration,
        lease_transitions: Some(transitions),
        ..LeaseSpec::default()
    }
}

/// What a step amounts to, for the tables: its kind, holder, transitions and renew time (for a
/// wait: the seconds it still lasts).
fn summary(step: &Step) -> (&'static str, String, i32, Option<i64>) {
    match step {
        Step::Wait { holder, remaining } => {
            ("wait", holder.clone(), -1, Some(remaining.as_secs() as i64))
        }
        Step::Create(s) | Step::Renew(s) | Step::Take(s) => {
            let kind = match step {
                Step::Create(_) => "create",
                Step::Renew(_) => "renew",
                _ => "take",
            };
            (
                kind,
                s.holder_identity.clone().unwrap_or_default(),
                s.lease_transitions.unwrap_or(-1),
                s.renew_time.as_ref().map(|t| t.0.as_second() - T0),
            )
        }
    }
}

/// The kind of step, the holder it writes, its transitions and its renew time (seconds from T0;
/// for a wait, the seconds left).
type Summary = (&'static str, &'static str, i32, Option<i64>);

#[test]
fn what_a_candidate_writes_next() {
    let timing = Timing::default();
    let free = LeaseSpec {
        holder_identity: Some(String::new()),
        lease_transitions: Some(4),
        ..LeaseSpec::default()
    };
    // (what, the Lease, now, seen unchanged for (s), the step)
    let cases: Vec<(&str, Option<LeaseSpec>, i64, u64, Summary)> = vec![
        ("no Lease", None, 5, 0, ("create", "a", 0, Some(5))),
        (
            "ours, renewed",
            Some(held("a", Some(3), Some(15), 2)),
            5,
            2,
            ("renew", "a", 2, Some(5)),
        ),
        // Ours even when it looks expired: nobody else took it, so renewing keeps it.
        (
            "ours, unchanged past its duration",
            Some(held("a", Some(0), Some(15), 2)),
            40,
            40,
            ("renew", "a", 2, Some(40)),
        ),
        (
            "another's, just read",
            Some(held("b", Some(3), Some(15), 2)),
            5,
            0,
            ("wait", "b", -1, Some(15)),
        ),
        (
            "another's, unchanged one second short of its duration",
            Some(held("b", Some(3), Some(15), 2)),
            17,
            14,
            ("wait", "b", -1, Some(1)),
        ),
        (
            "another's, unchanged its whole duration",
            Some(held("b", Some(3), Some(15), 2)),
            18,
            15,
            ("take", "a", 3, Some(18)),
        ),
        (
            "another's, unchanged long",
            Some(held("b", Some(3), Some(15), 2)),
            100,
            97,
            ("take", "a", 3, Some(100)),
        ),
        // Its renewTime says nothing of whether it is held: the holder's clock may be behind
        // ours (or it was renewed long ago and we just started); only what we saw counts.
        (
            "another's, renewed long ago by its clock, just read",
            Some(held("b", Some(-3600), Some(15), 2)),
            5,
            0,
            ("wait", "b", -1, Some(15)),
        ),
        (
            "another's, renewed in our future, unchanged its duration",
            Some(held("b", Some(3600), Some(15), 2)),
            20,
            15,
            ("take", "a", 3, Some(20)),
        ),
        // The Lease's own duration counts, not ours.
        (
            "another's, its own short duration, unchanged for it",
            Some(held("b", Some(3), Some(2), 2)),
            5,
            2,
            ("take", "a", 3, Some(5)),
        ),
        (
            "another's, its own short duration, not yet",
            Some(held("b", Some(3), Some(2), 2)),
            4,
            1,
            ("wait", "b", -1, Some(1)),
        ),
        (
            "another's, no duration: ours",
            Some(held("b", Some(3), None, 2)),
            17,
            14,
            ("wait", "b", -1, Some(1)),
        ),
        (
            "another's, naming no time at all, just read",
            Some(LeaseSpec {
                holder_identity: Some("b".into()),
                ..LeaseSpec::default()
            }),
            5,
            0,
            ("wait", "b", -1, Some(15)),
        ),
        (
            "released (empty holder)",
            Some(free.clone()),
            5,
            0,
            ("take", "a", 5, Some(5)),
        ),
        (
            "released (no holder)",
            Some(LeaseSpec {
                holder_identity: None,
                ..free
            }),
            5,
            0,
            ("take", "a", 5, Some(5)),
        ),
    ];
    for (what, lease, now, unchanged, expected) in cases {
        let step = next(
            lease.as_ref(),
            "a",
            &timing,
            at(now),
            Duration::from_secs(unchanged),
        );
        let (kind, holder, transitions, renewed) = summary(&step);
        assert_eq!(
            (kind, holder.as_str(), transitions, renewed),
            expected,
            "{what}: {step:?}"
        );
    }
}

#[test]
fn how_long_a_lease_stayed_as_it_is_counts_from_each_change() {
    let s = Duration::from_secs;
    let lease = held("b", Some(3), Some(15), 2);
    let renewed = held("b", Some(5), Some(15), 2);
    let mut observed = Observed::default();
    let steps: Vec<(Option<&LeaseSpec>, u64, u64)> = vec![
        // (what was read, when (s on our clock), how long it has stayed so)
        (Some(&lease), 100, 0),
        (Some(&lease), 103, 3),
        (Some(&lease), 110, 10),
        (Some(&renewed), 111, 0),
        (Some(&renewed), 115, 4),
        (None, 116, 0),
        (None, 118, 2),
        (Some(&renewed), 119, 0),
    ];
    for (read, now, unchanged) in steps {
        assert_eq!(
            observed.see(read, s(now)),
            s(unchanged),
            "at {now}: {read:?}"
        );
    }
}

#[test]
fn a_renewal_keeps_the_acquire_time_and_a_takeover_sets_it() {
    let timing = Timing::default();
    let lease = held("a", Some(3), Some(15), 2);
    let renewed = next(Some(&lease), "a", &timing, at(5), Duration::ZERO);
    assert_eq!(renewed.spec().unwrap().acquire_time, Some(MicroTime(at(0))));
    assert_eq!(renewed.spec().unwrap().lease_duration_seconds, Some(15));
    let other = held("b", Some(3), Some(15), 2);
    let taken = next(Some(&other), "a", &timing, at(20), Duration::from_secs(15));
    assert_eq!(taken.spec().unwrap().acquire_time, Some(MicroTime(at(20))));
}

#[test]
fn only_the_holder_releases_and_a_released_lease_is_free_at_once() {
    let timing = Timing::default();
    let lease = held("a", Some(3), Some(15), 2);
    for (who, releases) in [("a", true), ("b", false)] {
        assert_eq!(released(&lease, who, at(4)).is_some(), releases, "{who}");
    }
    let free = released(&lease, "a", at(4)).unwrap();
    assert_eq!(holder(&free), None);
    assert_eq!(free.lease_transitions, Some(2));
    // A standby takes it the moment it reads it, not 15 s later.
    let step = next(Some(&free), "b", &timing, at(4), Duration::ZERO);
    assert!(matches!(step, Step::Take(_)), "{step:?}");
}

#[test]
fn a_leader_stops_writing_before_anyone_may_take_over() {
    for secs in [1, 2, 15, 60] {
        let timing = Timing {
            lease_duration: Duration::from_secs(secs),
            renew_deadline: Duration::from_millis(secs * 1000 * 2 / 3),
            retry_period: Duration::from_millis(secs * 1000 / 5),
        };
        timing.validate().unwrap();
        // The renew started at 10 s (real time). A standby reads the renewed Lease no earlier,
        // so when the leader stops writing it has seen it unchanged for at most the deadline.
        let lease = held("a", Some(10), Some(secs as i32), 0);
        let started = Duration::from_secs(10);
        let stop = writes_until(started, &timing);
        assert!(stop < started + duration(&lease, &timing), "{secs} s");
        let seen_for = stop - started;
        assert!(
            matches!(
                next(Some(&lease), "b", &timing, at(10), seen_for),
                Step::Wait { .. }
            ),
            "{secs} s"
        );
        let step = next(
            Some(&lease),
            "b",
            &timing,
            at(10),
            Duration::from_secs(secs),
        );
        assert!(matches!(step, Step::Take(_)), "{secs} s: {step:?}");
    }
}

#[test]
fn timing_that_could_elect_two_leaders_is_refused() {
    let s = Duration::from_secs;
    let ms = Duration::from_millis;
    let cases = [
        ((s(15), s(10), s(2)), None),
        ((s(2), ms(1500), ms(250)), None),
        ((ms(1500), s(1), ms(100)), Some("whole number of seconds")),
        ((s(0), s(0), s(0)), Some("whole number of seconds")),
        (
            (s(15), s(15), s(2)),
            Some("--renew-deadline 15s must be shorter than --lease-duration 15s"),
        ),
        (
            (s(15), s(20), s(2)),
            Some("must be shorter than --lease-duration"),
        ),
        (
            (s(15), s(10), s(10)),
            Some("--retry-period 10s must be shorter than --renew-deadline 10s"),
        ),
        (
            (s(15), s(10), s(0)),
            Some("--retry-period must be more than zero"),
        ),
    ];
    for ((lease, renew, retry), expected) in cases {
        let timing = Timing {
            lease_duration: lease,
            renew_deadline: renew,
            retry_period: retry,
        };
        match (timing.validate(), expected) {
            (Ok(()), None) => {}
            (Err(e), Some(words)) => assert!(e.to_string().contains(words), "{timing:?}: {e}"),
            (got, want) => panic!("{timing:?}: got {got:?}, expected an error with {want:?}"),
        }
    }
}
