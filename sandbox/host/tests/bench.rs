//! The filter benchmark runs end to end with few requests and gives sane numbers (speed itself,
//! and so any ratio, is recorded in BENCHMARKS.md from a release run, not asserted here: a debug
//! build on a shared machine says nothing about it).

use fledge_sandbox_host::bench::{self, BenchConfig, BenchReport, HeaderSet, RequestPath};

async fn run(headers: HeaderSet, requests: usize, rounds: usize) -> BenchReport {
    let config = BenchConfig {
        requests,
        rounds,
        headers,
        ..BenchConfig::from_env().unwrap_or_else(|e| panic!("{e}"))
    };
    bench::run(&config).await.unwrap()
}

/// Both header sets, both paths: every request served without a trap, every routed request
/// versioned and measured (no property miss), no other request touched.
#[tokio::test]
async fn the_filter_benchmark_measures_both_paths_with_either_header_set() {
    for (headers, requests, rounds) in [(HeaderSet::Sidecar, 400, 4), (HeaderSet::Mesh, 200, 2)] {
        let report = run(headers, requests, rounds).await;
        assert_eq!(report.requests, requests, "{headers:?}");
        assert_eq!(report.traps, 0, "{headers:?}: {report:?}");
        // Every property the filter read was there: it measured what it measures in Envoy.
        assert_eq!(report.property_misses, 0, "{headers:?}: {report:?}");
        assert_eq!(report.routed.versioned, requests, "{headers:?}: {report:?}");
        assert_eq!(report.unrouted.versioned, 0, "{headers:?}: {report:?}");
        for path in RequestPath::ALL {
            let p = report.path(path);
            assert!(p.filter_ns > 0.0 && p.minimal_ns > 0.0, "{path:?}: {p:?}");
            assert!(
                (p.ratio - p.filter_ns / p.minimal_ns).abs() < 1e-9,
                "{path:?}: {p:?}"
            );
        }
    }
}
