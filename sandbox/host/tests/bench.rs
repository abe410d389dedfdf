//! The filter benchmark runs end to end with few requests and gives sane numbers (speed itself
//! is recorded in BENCHMARKS.md from a release run, not asserted here).

use fledge_sandbox_host::bench::{self, BenchConfig, HeaderSet};

#[tokio::test]
async fn the_filter_benchmark_measures_both_modules() {
    let config = BenchConfig {
        requests: 400,
        rounds: 4,
        ..BenchConfig::from_env().unwrap_or_else(|e| panic!("{e}"))
    };
    let report = bench::run(&config).await.unwrap();
    assert_eq!(report.requests, 400);
    assert_eq!(report.traps, 0);
    // Every property the filter read was there: it measured what it measures in Envoy.
    assert_eq!(report.property_misses, 0);
    assert!(
        report.filter_ns > 0.0 && report.minimal_ns > 0.0,
        "{report:?}"
    );
    assert!(
        (report.ratio - report.filter_ns / report.minimal_ns).abs() < 1e-9,
        "{report:?}"
    );
    // The filter does strictly more per request than a module that reads one header.
    assert!(report.ratio > 1.0, "{report:?}");
}

/// With fifteen request headers (a 300-byte cookie among them) both modules run every request
/// without a trap, and the filter finds every property it reads.
#[tokio::test]
async fn the_filter_benchmark_runs_with_realistic_headers() {
    let config = BenchConfig {
        requests: 200,
        rounds: 2,
        headers: HeaderSet::Realistic,
        ..BenchConfig::from_env().unwrap_or_else(|e| panic!("{e}"))
    };
    let report = bench::run(&config).await.unwrap();
    assert_eq!(report.requests, 200);
    assert_eq!(report.traps, 0);
    assert_eq!(report.property_misses, 0);
    assert!(report.ratio > 1.0, "{report:?}");
}
