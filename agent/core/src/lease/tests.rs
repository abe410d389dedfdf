//! The Lease decisions, table by table: who holds it, when it expires, what to write, and
//! which timing is refused.

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

/// What a step amounts to, for the tables: its kind, holder, transitions and renew time.
fn summary(step: &Step) -> (&'static str, String, i32, Option<i64>) {
    match step {
        Step::Wait { holder, until } => ("wait", holder.clone(), -1, Some(until.as_second() - T0)),
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

/// The kind of step, the holder it writes, its transitions and its renew time (seconds from T0).
type Summary = (&'static str, &'static str, i32, Option<i64>);

#[test]
fn what_a_candidate_writes_next() {
    let timing = Timing::default();
    let free = LeaseSpec {
        holder_identity: Some(String::new()),
        lease_transitions: Some(4),
        ..LeaseSpec::default()
    };
    let cases: Vec<(&str, Option<LeaseSpec>, i64, Summary)> = vec![
        ("no Lease", None, 5, ("create", "a", 0, Some(5))),
        (
            "ours, renewed",
            Some(held("a", Some(3), Some(15), 2)),
            5,
            ("renew", "a", 2, Some(5)),
        ),
        // Ours even when it looks expired: nobody else took it, so renewing keeps it.
        (
            "ours, past its duration",
            Some(held("a", Some(0), Some(15), 2)),
            40,
            ("renew", "a", 2, Some(40)),
        ),
        (
            "another's, fresh",
            Some(held("b", Some(3), Some(15), 2)),
            5,
            ("wait", "b", -1, Some(18)),
        ),
        (
            "another's, one second before expiry",
            Some(held("b", Some(3), Some(15), 2)),
            17,
            ("wait", "b", -1, Some(18)),
        ),
        (
            "another's, expired exactly now",
            Some(held("b", Some(3), Some(15), 2)),
            18,
            ("take", "a", 3, Some(18)),
        ),
        (
            "another's, long expired",
            Some(held("b", Some(3), Some(15), 2)),
            100,
            ("take", "a", 3, Some(100)),
        ),
        // The Lease's own duration counts, not ours.
        (
            "another's, its own short duration",
            Some(held("b", Some(3), Some(2), 2)),
            5,
            ("take", "a", 3, Some(5)),
        ),
        (
            "another's, no duration: ours",
            Some(held("b", Some(3), None, 2)),
            17,
            ("wait", "b", -1, Some(18)),
        ),
        // No renew time: the acquire time stands in for it.
        (
            "another's, acquired only",
            Some(held("b", None, Some(15), 2)),
            14,
            ("wait", "b", -1, Some(15)),
        ),
        (
            "released (empty holder)",
            Some(free.clone()),
            5,
            ("take", "a", 5, Some(5)),
        ),
        (
            "released (no holder)",
            Some(LeaseSpec {
                holder_identity: None,
                ..free
            }),
            5,
            ("take", "a", 5, Some(5)),
        ),
    ];
    for (what, lease, now, expected) in cases {
        let step = next(lease.as_ref(), "a", &timing, at(now));
        let (kind, holder, transitions, renewed) = summary(&step);
        assert_eq!(
            (kind, holder.as_str(), transitions, renewed),
            expected,
            "{what}: {step:?}"
        );
    }
}

#[test]
fn a_lease_naming_a_holder_but_no_time_is_taken() {
    let lease = LeaseSpec {
        holder_identity: Some("b".into()),
        ..LeaseSpec::default()
    };
    assert_eq!(expires(&lease, &Timing::default()), None);
    let step = next(Some(&lease), "a", &Timing::default(), at(0));
    assert!(matches!(step, Step::Take(_)), "{step:?}");
}

#[test]
fn a_renewal_keeps_the_acquire_time_and_a_takeover_sets_it() {
    let timing = Timing::default();
    let lease = held("a", Some(3), Some(15), 2);
    let renewed = next(Some(&lease), "a", &timing, at(5));
    assert_eq!(renewed.spec().unwrap().acquire_time, Some(MicroTime(at(0))));
    assert_eq!(renewed.spec().unwrap().lease_duration_seconds, Some(15));
    let taken = next(Some(&held("b", Some(3), Some(15), 2)), "a", &timing, at(20));
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
    // A standby takes it the moment after, not 15 s later.
    let step = next(Some(&free), "b", &timing, at(4));
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
        // The renew started at 10 s; the Lease says renewed at 10 s (written after the start).
        let lease = held("a", Some(10), Some(secs as i32), 0);
        let stop = writes_until(at(10), &timing);
        let until = expires(&lease, &timing).unwrap();
        assert!(
            stop < until,
            "{secs} s: stops at {stop}, expires at {until}"
        );
        assert!(matches!(
            next(Some(&lease), "b", &timing, stop),
            Step::Wait { .. }
        ));
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
