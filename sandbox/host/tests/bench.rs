//! The filter benchmark runs end to end with few requests and gives sane numbers (speed itself,
//! and so any ratio, is recorded in BENCHMARKS.md from a release run, not asserted here: a debug
//! build on a shared machine says nothing about it).

use fledge_sandbox_host::bench::{
    self, BenchConfig, BenchReport, HeaderSet, Module, Profiled, RequestPath,
};

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

/// Each module the profile runs does what BENCHMARKS.md says it does: fledge's filter and the
/// two floors (the minimal fixture making fledge's routed host calls, or the fewest) version
/// every routed request and have every property they read answered; the baseline versions
/// none; nothing traps. Unrouted requests are left alone by all.
#[tokio::test]
async fn every_profiled_module_makes_the_calls_it_stands_for() {
    let config = BenchConfig {
        headers: HeaderSet::Mesh,
        ..BenchConfig::from_env().unwrap_or_else(|e| panic!("{e}"))
    };
    for (module, versions) in [
        (Module::Filter, true),
        (Module::Minimal, false),
        (Module::Calls, true),
        (Module::Pairs, true),
    ] {
        let routed = bench::profile(&config, module, RequestPath::Routed, 50)
            .await
            .unwrap();
        let expected = Profiled {
            ns: routed.ns,
            versioned: if versions { 50 } else { 0 },
            traps: 0,
            property_misses: 0,
        };
        assert_eq!(routed, expected, "{module:?}");
        assert!(routed.ns > 0.0, "{module:?}");
        if module == Module::Filter {
            let unrouted = bench::profile(&config, module, RequestPath::Unrouted, 50)
                .await
                .unwrap();
            assert_eq!((unrouted.versioned, unrouted.traps), (0, 0));
        }
    }
}
