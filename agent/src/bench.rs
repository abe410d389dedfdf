//! `fledge-agent bench …`: the agent's own costs on one core. `ingest`: how many filter reports
//! it decodes, validates and merges per second (reports made up front: 4 series each, lognormal
//! latencies, V2-encoded like the filter's, timed through the same `validate` + `Windows::merge`
//! the gRPC server runs). `store`: the telemetry store's memory for many series over a long
//! simulated time. `look`: one analysis look at different points of a step. `streams`
//! (`streams.rs`): many filter streams over real gRPC against the agent as a child process.
//! `tick` (`tick.rs`): the reconcile loop with many progressing Rollouts, and its writes.

use std::time::{Duration, Instant};

mod streams;
mod tick;

pub use streams::{StreamsOptions, StreamsResult, streams};
pub use tick::{TickResult, TickStore, tick};

use fledge_proto::v1;
use hdrhistogram::serialization::{Serializer, V2Serializer};
use rand::{Rng, SeedableRng, rngs::StdRng};
use rand_distr::{Distribution, LogNormal};
use serde::Serialize;

use crate::telemetry::validate::validate;
use fledge_core::analysis::latency::new_histogram;
use fledge_core::windows::Windows;

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IngestResult {
    pub reports: usize,
    pub series_per_report: usize,
    pub requests_per_series: u64,
    pub encoded_bytes_per_series: usize,
    pub elapsed: Duration,
    pub reports_per_sec: f64,
    pub series_per_sec: f64,
}

/// Builds `distinct` different reports of 4 series with `requests` requests each.
pub fn sample_reports(distinct: usize, requests: u64, now_ms: i64, seed: u64) -> Vec<v1::Report> {
    let mut rng = StdRng::seed_from_u64(seed);
    // Median 20 ms, p99 ≈ 120 ms.
    let latency = LogNormal::new((20_000f64).ln(), 0.77).expect("valid lognormal parameters");
    (0..distinct)
        .map(|i| {
            let series = [("v1", 0), ("v2", 0), ("v1", 1), ("v2", 1)]
                .iter()
                .map(|(version, traffic)| {
                    let mut hist = new_histogram();
                    for _ in 0..requests {
                        hist.saturating_record(latency.sample(&mut rng) as u64);
                    }
                    let mut latency_us_hdr = Vec::new();
                    V2Serializer::new()
                        .serialize(&hist, &mut latency_us_hdr)
                        .expect("in-memory encoding");
                    let failures = (0..requests).filter(|_| rng.random_bool(0.01)).count() as u64;
                    v1::Series {
                        host: "reviews.shop.svc.cluster.local".into(),
                        version: (*version).into(),
                        traffic: *traffic,
                        counts: Some(v1::Counts {
                            requests,
                            errors_5xx: failures,
                            failures,
                            ..Default::default()
                        }),
                        latency_us_hdr,
                    }
                })
                .collect();
            v1::Report {
                seq: i as u64,
                window_start_unix_ms: now_ms - 1000,
                window_end_unix_ms: now_ms,
                series,
                dropped: 0,
            }
        })
        .collect()
}

/// Runs `total` reports (cycling through the sample) through validation and merging.
pub fn ingest(total: usize, requests: u64) -> IngestResult {
    let now_ms = 1_800_000_000_000;
    let reports = sample_reports(64, requests, now_ms, 1);
    let encoded = reports[0].series[0].latency_us_hdr.len();
    let mut store = Windows::new(600, 256);
    let start = Instant::now();
    for (i, report) in reports.iter().cycle().take(total).enumerate() {
        // Reports arrive spread over the seconds, as from many filters over time.
        let valid = validate(report, now_ms, 120_000).expect("sample reports are valid");
        store.merge(
            valid.second + (i / 2000) as i64 % 600,
            valid.series,
            valid.dropped,
            now_ms / 1000 + 600,
        );
    }
    let elapsed = start.elapsed();
    let secs = elapsed.as_secs_f64().max(1e-9);
    IngestResult {
        reports: total,
        series_per_report: 4,
        requests_per_series: requests,
        encoded_bytes_per_series: encoded,
        elapsed,
        reports_per_sec: total as f64 / secs,
        series_per_sec: (total * 4) as f64 / secs,
    }
}

/// What `bench store` measured.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StoreResult {
    pub series: usize,
    pub simulated_secs: i64,
    pub retention_secs: i64,
    pub requests_per_series_second: u64,
    /// Seconds and bytes of latency counters held at the end.
    pub seconds_held: usize,
    pub counter_bytes_held: usize,
    /// The process's peak resident set (VmHWM), before and after, in KiB (Linux only).
    pub peak_rss_kib_before: Option<u64>,
    pub peak_rss_kib_after: Option<u64>,
    pub elapsed: Duration,
}

/// The process's peak resident set in KiB, from /proc (None elsewhere).
pub fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// `series` series (all needed by Rollouts) each reporting once a second with `requests`
/// requests, for `secs` simulated seconds, into the store the agent runs
/// (`serve::RETENTION_SECS`); the analysis reads each second as it settles, as the controller
/// does.
pub fn store(series: usize, secs: i64, requests: u64) -> StoreResult {
    use fledge_core::judge::{Arms, Due, Settled};
    use fledge_core::windows::Traffic;
    let now_ms = 1_800_000_000_000;
    let deltas: Vec<_> = sample_reports(16, requests, now_ms, 2)
        .iter()
        .flat_map(|r| validate(r, now_ms, 120_000).expect("valid").series)
        .map(|(_, d)| d)
        .collect();
    let arms: Vec<Arms> = (0..series.div_ceil(2))
        .map(|i| Arms::new(&format!("svc-{i}.shop"), "v1", "v2", Traffic::Live))
        .collect();
    let keys: Vec<_> = arms
        .iter()
        .flat_map(|a| [a.canary.clone(), a.baseline.clone()])
        .take(series)
        .collect();
    let retention = crate::serve::RETENTION_SECS;
    let before = peak_rss_kib();
    let start = Instant::now();
    let mut windows = Windows::new(retention, series);
    windows.keep_only(keys.iter().cloned().collect());
    let t0 = now_ms / 1000;
    for s in t0..t0 + secs {
        for (i, key) in keys.iter().enumerate() {
            let delta = deltas[(i + s as usize) % deltas.len()].clone();
            windows.merge(s, vec![(key.clone(), delta)], 0, s + 1);
        }
        for a in &arms {
            let due = Due {
                arms: a.clone(),
                seconds: s - 1..s,
            };
            std::hint::black_box(Settled::take(&mut windows, &due));
        }
    }
    let (_, seconds_held, counter_bytes_held) = windows.footprint();
    StoreResult {
        series,
        simulated_secs: secs,
        retention_secs: retention,
        requests_per_series_second: requests,
        seconds_held,
        counter_bytes_held,
        peak_rss_kib_before: before,
        peak_rss_kib_after: peak_rss_kib(),
        elapsed: start.elapsed(),
    }
}

/// What `bench look` measured: one look's time at points of a step.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LookResult {
    /// (seconds into the step, mean time of one look).
    pub looks: Vec<(u64, Duration)>,
    /// Mean time to feed one settled second (both arms) into the step's running totals.
    pub feed_per_second: Duration,
}

/// A step fed one second at a time (`requests` canary and 9× baseline requests a second), and
/// the look timed at each of `at` seconds into it.
pub fn look(at: &[u64], requests: u64) -> LookResult {
    use fledge_core::analysis::{AnalysisSpec, StepAnalysis};
    use fledge_core::windows::Second;
    let now_ms = 1_800_000_000_000;
    // One second per validated series of made-up reports, as the store keeps them.
    let seconds = |requests: u64, seed: u64| -> Vec<Second> {
        sample_reports(8, requests, now_ms, seed)
            .iter()
            .flat_map(|r| validate(r, now_ms, 120_000).expect("valid").series)
            .map(|(_, d)| {
                let mut s = Second::default();
                s.add(&d);
                // Settled, as the store hands seconds to the analysis.
                s.fold();
                s
            })
            .collect()
    };
    let canary = seconds(requests, 3);
    let baseline = seconds(requests * 9, 4);
    let mut analysis = StepAnalysis::new(AnalysisSpec::default());
    let mut looks = Vec::new();
    let mut fed = 0u64;
    let mut feeding = Duration::ZERO;
    for &point in at {
        let start = Instant::now();
        while fed < point {
            let i = fed as usize;
            analysis.observe(
                Duration::from_secs(1),
                &canary[i % canary.len()],
                &baseline[(i * 7) % baseline.len()],
            );
            fed += 1;
            // A look every 2 s, as the controller does.
            if fed.is_multiple_of(2) {
                std::hint::black_box(analysis.look());
            }
        }
        feeding += start.elapsed();
        let rounds = 200;
        let start = Instant::now();
        for _ in 0..rounds {
            std::hint::black_box(analysis.look());
        }
        looks.push((point, start.elapsed() / rounds));
    }
    LookResult {
        looks,
        feed_per_second: feeding / fed.max(1) as u32,
    }
}
