//! `fledge-agent bench ingest`: how many filter reports one core decodes, validates and merges
//! per second. Reports are made up front (4 series each, lognormal latencies, V2-encoded like the
//! filter's), then timed through the same `validate` + `Windows::merge` the gRPC server runs.

use std::time::{Duration, Instant};

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
