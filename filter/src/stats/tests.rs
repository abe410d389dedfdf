use hdrhistogram::serialization::Deserializer;

use super::*;
use crate::routing::Rng;

fn ok(latency_us: u64) -> Outcome {
    Outcome {
        latency_us,
        ..Outcome::default()
    }
}

fn decode(bytes: &[u8]) -> Histogram<u64> {
    Deserializer::new().deserialize(&mut &bytes[..]).unwrap()
}

/// Log-normal latencies around 20 ms with a long tail, in µs.
fn latencies(seed: u64, n: usize) -> Vec<u64> {
    let mut rng = Rng::new(seed);
    let mut unit = move || (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
    (0..n)
        .map(|_| {
            let (u1, u2) = (unit().max(f64::MIN_POSITIVE), unit());
            let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
            (20_000.0 * (0.8 * z).exp()).round().max(1.0) as u64
        })
        .collect()
}

#[test]
fn a_recorded_sequence_comes_back_from_the_report() {
    let mut stats = Stats::new(16, 1_000);
    let values = latencies(11, 50_000);
    let mut expected = [0u64; 5];
    let mut failures = 0u64;
    for (i, &v) in values.iter().enumerate() {
        let outcome = Outcome {
            latency_us: v,
            error_5xx: i % 50 == 0,
            error_4xx: i % 7 == 0,
            grpc_error: i % 11 == 0,
            reset: i % 101 == 0,
            timeout: i % 103 == 0,
        };
        for (count, hit) in expected.iter_mut().zip([
            outcome.error_5xx,
            outcome.error_4xx,
            outcome.grpc_error,
            outcome.reset,
            outcome.timeout,
        ]) {
            *count += u64::from(hit);
        }
        // A 4xx alone is the client's failure, not the version's; the rest count once each.
        failures += u64::from(i % 50 == 0 || i % 11 == 0 || i % 101 == 0 || i % 103 == 0);
        stats.record("reviews", "v2", Traffic::Live, &outcome);
    }
    stats.record("reviews", "v2", Traffic::Shadow, &ok(5));
    stats.record("reviews", "v1", Traffic::Live, &ok(7));

    let report = stats.take(2_000).to_report(1);
    assert_eq!(
        (
            report.seq,
            report.window_start_unix_ms,
            report.window_end_unix_ms
        ),
        (1, 1_000, 2_000)
    );
    assert_eq!(report.series.len(), 3);
    let s = &report.series[0];
    assert_eq!(
        (s.host.as_str(), s.version.as_str(), s.traffic()),
        ("reviews", "v2", Traffic::Live)
    );
    assert_eq!(s.counts.unwrap_or_default().requests, values.len() as u64);
    assert_eq!(
        [
            s.counts.unwrap_or_default().errors_5xx,
            s.counts.unwrap_or_default().errors_4xx,
            s.counts.unwrap_or_default().grpc_errors,
            s.counts.unwrap_or_default().resets,
            s.counts.unwrap_or_default().timeouts
        ],
        expected
    );
    assert_eq!(
        s.counts.unwrap_or_default().failures,
        failures,
        "each failed request counted once"
    );

    let h = decode(&s.latency_us_hdr);
    assert_eq!(h.len(), s.counts.unwrap_or_default().requests);
    let mut sorted = values.clone();
    sorted.sort_unstable();
    for q in [0.5, 0.9, 0.95, 0.99, 0.999] {
        let rank = ((q * sorted.len() as f64).ceil() as usize).max(1) - 1;
        let exact = sorted[rank] as f64;
        let got = h.value_at_quantile(q) as f64;
        assert!(
            (got - exact).abs() / exact <= 0.01,
            "q{q}: {got} vs exact {exact}"
        );
    }
    assert!((h.max() as f64 - *sorted.last().unwrap() as f64).abs() / (h.max() as f64) <= 0.01);
    assert_eq!(decode(&report.series[1].latency_us_hdr).max(), 5);
    assert_eq!(report.series[1].traffic(), Traffic::Shadow);

    // The next delta starts empty where this one ended.
    let next = stats.take(3_000).to_report(2);
    assert!(next.series.is_empty());
    assert_eq!(
        (
            next.window_start_unix_ms,
            next.window_end_unix_ms,
            next.dropped
        ),
        (2_000, 3_000, 0)
    );
}

#[test]
fn deltas_after_an_outage_add_up_exactly() {
    // Two filters see the same requests; one reports every interval, the other loses its
    // stream for a while (its deltas are restored and merge). Their totals must agree.
    let values = latencies(5, 30_000);
    let mut steady = Stats::new(8, 0);
    let mut flaky = Stats::new(8, 0);
    let mut steady_reports = Vec::new();
    let mut flaky_reports = Vec::new();
    for (interval, chunk) in values.chunks(1_000).enumerate() {
        for (i, &v) in chunk.iter().enumerate() {
            let version = if i % 3 == 0 { "v2" } else { "v1" };
            let outcome = Outcome {
                latency_us: v,
                error_5xx: v > 60_000,
                ..Outcome::default()
            };
            steady.record("reviews", version, Traffic::Live, &outcome);
            flaky.record("reviews", version, Traffic::Live, &outcome);
        }
        let now = (interval as i64 + 1) * 1000;
        steady_reports.push(steady.take(now).to_report(interval as u64 + 1));
        let delta = flaky.take(now);
        let outage = (5..20).contains(&interval);
        if outage {
            flaky.restore(delta);
        } else {
            flaky_reports.push(delta.to_report(flaky_reports.len() as u64 + 1));
        }
    }
    // The report right after the outage spans it.
    let after = &flaky_reports[5];
    assert_eq!(
        (after.window_start_unix_ms, after.window_end_unix_ms),
        (5_000, 21_000)
    );
    assert_eq!(flaky_reports.len(), steady_reports.len() - 15);

    let totals = |reports: &[v1::Report], version: &str| {
        let mut h = new_histogram().unwrap();
        let (mut requests, mut errors) = (0, 0);
        for s in reports
            .iter()
            .flat_map(|r| &r.series)
            .filter(|s| s.version == version)
        {
            requests += s.counts.unwrap_or_default().requests;
            errors += s.counts.unwrap_or_default().errors_5xx;
            h.add(decode(&s.latency_us_hdr)).unwrap();
        }
        (requests, errors, h)
    };
    for version in ["v1", "v2"] {
        let (r1, e1, h1) = totals(&steady_reports, version);
        let (r2, e2, h2) = totals(&flaky_reports, version);
        assert_eq!((r1, e1), (r2, e2), "{version}");
        assert_eq!(h1, h2, "{version}");
        assert_eq!(h1.len(), r1);
    }
    let v2_expected = values
        .chunks(1_000)
        .map(|c| c.len().div_ceil(3) as u64)
        .sum::<u64>();
    assert_eq!(totals(&flaky_reports, "v2").0, v2_expected);
}

#[test]
fn beyond_the_series_limit_samples_are_counted_as_dropped() {
    let mut stats = Stats::new(2, 0);
    for host in ["a", "b", "c", "c", "a", "d"] {
        stats.record(host, "v1", Traffic::Live, &ok(10));
    }
    assert_eq!((stats.series_count(), stats.dropped()), (2, 3));
    let delta = stats.take(10);
    // After the take, new series find room again; a restore that no longer fits is dropped.
    stats.record("e", "v1", Traffic::Live, &ok(10));
    stats.record("f", "v1", Traffic::Live, &ok(10));
    stats.restore(delta);
    let report = stats.take(20).to_report(1);
    let hosts: Vec<&str> = report.series.iter().map(|s| s.host.as_str()).collect();
    assert_eq!(hosts, ["e", "f"]);
    // 3 dropped before, plus a (2 requests) and b (1) that found no room on restore.
    assert_eq!(report.dropped, 6);
    assert_eq!(report.window_start_unix_ms, 0);
    let recorded: u64 = report
        .series
        .iter()
        .map(|s| s.counts.unwrap_or_default().requests)
        .sum::<u64>()
        + report.dropped;
    assert_eq!(recorded, 8);
}

#[test]
fn latencies_beyond_an_hour_are_clamped_not_lost() {
    let mut stats = Stats::new(4, 0);
    stats.record("a", "v1", Traffic::Live, &ok(0));
    stats.record("a", "v1", Traffic::Live, &ok(u64::MAX));
    let report = stats.take(1).to_report(1);
    let h = decode(&report.series[0].latency_us_hdr);
    assert_eq!(
        (
            report.series[0].counts.unwrap_or_default().requests,
            h.len()
        ),
        (2, 2)
    );
    assert!(h.max() >= fledge_proto::HISTOGRAM_MAX_US);
}

#[test]
fn unmeasured_requests_are_counted_apart_and_never_in_the_histogram() {
    let mut stats = Stats::new(2, 0);
    stats.record("a", "v2", Traffic::Live, &ok(250_000));
    stats.record_unmeasured("a", "v2", Traffic::Live);
    stats.record_unmeasured("a", "v2", Traffic::Live);
    // A series that saw only unmeasured requests; then one the limit no longer admits.
    stats.record_unmeasured("b", "v1", Traffic::Live);
    stats.record_unmeasured("c", "v1", Traffic::Live);
    assert_eq!((stats.series_count(), stats.dropped()), (2, 1));
    // A delta that could not be sent merges with what came after, unmeasured included.
    let delta = stats.take(10);
    stats.record_unmeasured("a", "v2", Traffic::Live);
    stats.restore(delta);
    let report = stats.take(20).to_report(1);
    let counts = |host: &str| {
        let s = report.series.iter().find(|s| s.host == host).unwrap();
        (s.counts.unwrap_or_default(), &s.latency_us_hdr)
    };
    let (a, a_hdr) = counts("a");
    assert_eq!((a.requests, a.unmeasured, a.measured()), (4, 3, 1));
    assert_eq!((a.errors_5xx, a.failures), (0, 0));
    let h = decode(a_hdr);
    assert_eq!(h.len(), 1);
    assert!(h.min() >= 249_000, "no latency of 0 for the unmeasured");
    let (b, b_hdr) = counts("b");
    assert_eq!((b.requests, b.unmeasured), (1, 1));
    assert!(b_hdr.is_empty(), "nothing measured, no histogram");
    assert_eq!(report.dropped, 1);
}
