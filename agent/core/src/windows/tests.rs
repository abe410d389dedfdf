//! The windows: sparse seconds against full histograms, only needed series kept, late and
//! ignored data counted, incremental state equal to a from-scratch merge.

use super::*;

fn delta(requests: u64, failures: u64, latency_us: u64) -> SeriesDelta {
    SeriesDelta::test(requests, failures, latency_us)
}

#[test]
fn merges_per_second_and_reads_intervals() {
    let v2 = SeriesKey::new("reviews", "v2", Traffic::Live);
    let mut store = Windows::new(60, 16);
    store.merge(100, vec![(v2.clone(), delta(10, 1, 1000))], 0, 100);
    store.merge(100, vec![(v2.clone(), delta(5, 0, 3000))], 0, 100);
    store.merge(101, vec![(v2.clone(), delta(7, 2, 2000))], 0, 101);
    assert_eq!(store.second(&v2, 100).map(|w| w.counts.requests), Some(15));
    let all = store.window(&v2, 100, 102);
    assert_eq!(
        (all.counts.requests, all.counts.failures, all.latency.len()),
        (22, 3, 22)
    );
    assert_eq!(store.window(&v2, 101, 102).counts.requests, 7);
    assert_eq!(
        store
            .window(&SeriesKey::new("reviews", "v1", Traffic::Live), 0, 200)
            .counts
            .requests,
        0
    );
}

#[test]
fn old_buckets_and_their_series_are_dropped() {
    let (a, b) = (
        SeriesKey::new("h", "a", Traffic::Live),
        SeriesKey::new("h", "b", Traffic::Shadow),
    );
    let mut store = Windows::new(10, 16);
    store.merge(100, vec![(a.clone(), delta(1, 0, 10))], 0, 100);
    store.merge(105, vec![(b.clone(), delta(1, 0, 10))], 0, 105);
    store.expire(112);
    assert_eq!(store.window(&a, 0, 200).counts.requests, 0);
    assert_eq!(store.window(&b, 0, 200).counts.requests, 1);
    assert_eq!(store.series(), vec![b]);
}

#[test]
fn series_beyond_the_cap_are_counted_not_lost_silently() {
    let mut store = Windows::new(60, 2);
    let keys: Vec<_> = (0..4)
        .map(|i| SeriesKey::new("h", &format!("v{i}"), Traffic::Live))
        .collect();
    let windows = keys.iter().map(|k| (k.clone(), delta(3, 0, 10))).collect();
    store.merge(100, windows, 5, 100);
    assert_eq!(store.series().len(), 2);
    assert_eq!(store.overflow_requests(), 6);
    assert_eq!(store.filter_dropped(), 5);
    // A series already held keeps merging at the cap.
    store.merge(101, vec![(keys[0].clone(), delta(1, 0, 10))], 0, 101);
    assert_eq!(store.window(&keys[0], 0, 200).counts.requests, 4);
}

#[test]
fn a_sparse_second_reads_as_a_histogram_would() {
    use rand::{Rng, SeedableRng, rngs::StdRng};
    let mut rng = StdRng::seed_from_u64(7);
    for _ in 0..200 {
        let mut second = Second::default();
        let mut window = Window::default();
        for _ in 0..rng.random_range(1..5) {
            let latency: Vec<(u64, u64)> = (0..rng.random_range(0..40))
                .map(|_| {
                    let v = 10f64.powf(rng.random_range(0.0..9.5)) as u64;
                    (
                        v.clamp(1, fledge_proto::HISTOGRAM_MAX_US),
                        rng.random_range(1..1000),
                    )
                })
                .collect();
            let requests = latency.iter().map(|(_, c)| c).sum();
            let delta = SeriesDelta {
                counts: Counts {
                    requests,
                    ..Counts::default()
                },
                latency,
            };
            second.add(&delta);
            window.add(&delta);
            // Folded now or later, or left open: the same answers.
            if rng.random_bool(0.5) {
                second.fold();
            }
        }
        let mut from_second = latency::new_histogram();
        second.add_latencies_to(&mut from_second);
        assert_eq!(from_second, window.latency);
        for us in [0, 1, 99, 1000, 20_000, 123_456, 5_000_000, u64::MAX] {
            assert_eq!(second.count_above(us), window.count_above(us), "above {us}");
        }
        assert_eq!(second.counts, window.counts);
    }
}

#[test]
fn a_series_keeps_few_open_seconds_whatever_the_seconds_reported() {
    let key = SeriesKey::new("reviews", "v2", Traffic::Live);
    let mut store = Windows::new(120, 16);
    // Reports for 40 different seconds while the clock stands still, in a shuffled order.
    let mut expected = Window::default();
    for i in 0..40i64 {
        let second = 1000 + (i * 17) % 40;
        let d = delta(3, 0, 1000 + i as u64 * 500);
        expected.add(&d);
        store.merge(second, vec![(key.clone(), d)], 0, 1041);
        let held = &store.series[&key];
        let open = held.seconds.iter().filter(|(_, s)| s.is_open()).count();
        assert_eq!(open, held.open);
        assert!(open <= MAX_OPEN, "{open} open seconds");
    }
    let window = store.window(&key, 0, 2000);
    assert_eq!(window.counts, expected.counts);
    assert_eq!(window.latency, expected.latency);
    // As the clock moves on, the seconds that ended are folded.
    store.merge(1041, vec![(key.clone(), delta(1, 0, 10))], 0, 1042);
    let held = &store.series[&key];
    assert_eq!(
        held.open, 1,
        "only the second still receiving reports is open"
    );
}

#[test]
fn only_the_series_a_rollout_needs_are_kept_the_rest_counted() {
    // One Rollout on host-7: its stable and canary, live on the callers' side.
    let needed: HashSet<SeriesKey> = ["v1", "v2"]
        .iter()
        .map(|v| SeriesKey::new("host-7", v, Traffic::Live))
        .collect();
    let mut store = Windows::new(60, 16);
    store.keep_only(needed.clone());
    for s in 100..110 {
        let deltas = (0..500)
            .flat_map(|h| {
                ["v1", "v2", "v3"].map(|v| {
                    let key = SeriesKey::new(&format!("host-{h}"), v, Traffic::Live);
                    (key, delta(10, 0, 1000))
                })
            })
            .collect();
        let merged = store.merge(s, deltas, 0, s);
        assert_eq!(merged.ignored.len(), 500 * 3 - 2);
    }
    let mut kept = store.series();
    kept.sort();
    let mut expected: Vec<_> = needed.into_iter().collect();
    expected.sort();
    assert_eq!(kept, expected);
    let (series, seconds, _) = store.footprint();
    assert_eq!((series, seconds), (2, 20));
    assert_eq!(store.ignored().len(), 500);
    assert_eq!(
        store.ignored()["host-3"],
        Uncounted {
            series: 30,
            requests: 300
        }
    );
    assert_eq!(store.ignored()["host-7"].requests, 100, "host-7's v3");
    assert_eq!(
        store.overflow_requests(),
        0,
        "the cap does not apply to needed series"
    );
    // A Rollout that ends: its series go, and new data for them is counted as ignored.
    store.keep_only(HashSet::new());
    assert!(store.series().is_empty());
}

#[test]
fn the_hosts_counted_by_name_are_bounded() {
    let mut store = Windows::new(60, 16);
    store.keep_only(HashSet::new());
    let deltas = (0..COUNTED_HOSTS + 10)
        .map(|h| {
            (
                SeriesKey::new(&format!("h{h}"), "v1", Traffic::Live),
                delta(1, 0, 5),
            )
        })
        .collect();
    let merged = store.merge(100, deltas, 0, 100);
    assert_eq!(store.ignored().len(), COUNTED_HOSTS + 1);
    assert_eq!(store.ignored()[OTHER_HOSTS].requests, 10);
    assert_eq!(
        merged.ignored.last().map(|(h, _)| h.as_str()),
        Some(OTHER_HOSTS)
    );
}

#[test]
fn data_for_a_second_already_read_is_counted_late_not_stored() {
    let key = SeriesKey::new("h", "v2", Traffic::Live);
    let mut store = Windows::new(60, 16);
    store.keep_only([key.clone()].into());
    store.merge(100, vec![(key.clone(), delta(5, 0, 10))], 0, 101);
    store.read_before(&key, 101);
    let merged = store.merge(100, vec![(key.clone(), delta(3, 0, 10))], 0, 102);
    assert_eq!(merged.late, vec![("h".to_string(), 3)]);
    assert_eq!(store.second(&key, 100).map(|s| s.counts.requests), Some(5));
    // Older than the retention is late too.
    store.merge(10, vec![(key.clone(), delta(4, 0, 10))], 0, 102);
    assert_eq!(
        store.late()["h"],
        Uncounted {
            series: 2,
            requests: 7
        }
    );
    // A second not yet read still merges, in order.
    store.merge(102, vec![(key.clone(), delta(1, 0, 10))], 0, 102);
    store.merge(101, vec![(key.clone(), delta(2, 0, 10))], 0, 102);
    assert_eq!(store.window(&key, 0, 200).counts.requests, 8);
}

/// The judge's running totals, fed second by second as seconds settle from reports that
/// arrive out of order (and some too late), equal a from-scratch analysis of the same
/// seconds merged as full histograms.
#[test]
fn incremental_analysis_equals_a_from_scratch_merge() {
    use crate::analysis::{AnalysisSpec, StepAnalysis};
    use crate::judge::{Arms, Judge, SETTLE_SECS, Settled};
    use crate::rollout::AnalysisWindow;
    use jiff::Timestamp;
    use rand::{Rng, SeedableRng, rngs::StdRng};

    for seed in 0..12 {
        let mut rng = StdRng::seed_from_u64(seed);
        let arms = Arms::new("reviews", "v1", "v2", Traffic::Live);
        let t0 = 1_800_000_000i64;
        let len = 40;
        // (arrival second, data second, is canary, delta)
        let mut reports = Vec::new();
        for s in t0..t0 + len {
            for _ in 0..rng.random_range(0..4) {
                let canary = rng.random_bool(0.4);
                let requests = rng.random_range(0..60u64);
                let failures = rng.random_range(0..=requests / 4);
                let latency = (0..requests)
                    .map(|_| (rng.random_range(500..200_000u64), 1))
                    .collect();
                let delta = SeriesDelta {
                    counts: Counts {
                        requests,
                        failures,
                        errors_5xx: failures,
                        ..Counts::default()
                    },
                    latency,
                };
                // Most arrive within the settle delay, in any order; a few much later.
                let arrival = if rng.random_bool(0.05) {
                    s + SETTLE_SECS + 3
                } else {
                    s + rng.random_range(0..SETTLE_SECS)
                };
                reports.push((arrival, s, canary, delta));
            }
        }
        reports.sort_by_key(|r| r.0);
        let spec = AnalysisSpec::default();
        let step = AnalysisWindow {
            step: 0,
            since: Timestamp::from_second(t0).unwrap(),
            canary_traffic: Traffic::Live,
        };
        let mut store = Windows::new(30, 16);
        store.keep_only([arms.canary.clone(), arms.baseline.clone()].into());
        let mut judge = Judge::default();
        let mut incremental = Vec::new();
        let mut next = reports.iter().peekable();
        for now in t0..t0 + len + 5 {
            while let Some((_, s, canary, delta)) = next.next_if(|r| r.0 <= now) {
                let key = if *canary {
                    &arms.canary
                } else {
                    &arms.baseline
                };
                store.merge(*s, vec![(key.clone(), delta.clone())], 0, now);
            }
            let at = Timestamp::from_second(now).unwrap();
            if let Some(due) = judge.due(&step, arms.clone(), &spec, at) {
                judge.feed(&Settled::take(&mut store, &due));
            }
            incremental.extend(judge.look(&spec, at));
        }

        // From scratch: every report that arrived before its second was read.
        let read_at = |s: i64| s + SETTLE_SECS;
        let mut scratch = StepAnalysis::new(spec.clone());
        let mut from_scratch = Vec::new();
        let mut last_look = t0;
        let mut late = 0;
        let mut fed = t0;
        for now in t0..t0 + len + 5 {
            while fed <= now - SETTLE_SECS {
                let (mut c, mut b) = (Window::default(), Window::default());
                for (arrival, s, canary, delta) in &reports {
                    if *s != fed {
                        continue;
                    }
                    if *arrival >= read_at(fed) {
                        late += 1;
                        continue;
                    }
                    if *canary { c.add(delta) } else { b.add(delta) }
                }
                scratch.observe(std::time::Duration::from_secs(1), &c, &b);
                fed += 1;
            }
            if now - last_look >= spec.interval.as_secs().max(1) as i64 {
                last_look = now;
                from_scratch.push(scratch.look());
            }
        }
        assert!(!incremental.is_empty());
        assert_eq!(incremental.len(), from_scratch.len(), "seed {seed}");
        for (i, (a, b)) in incremental.iter().zip(&from_scratch).enumerate() {
            assert!(
                a == b,
                "seed {seed}, look {i}: {:?} != {:?}",
                a.checks.first(),
                b.checks.first()
            );
        }
        let counted_late: u64 = store.late().values().map(|u| u.series).sum();
        assert_eq!(counted_late, late, "seed {seed}");
    }
}
