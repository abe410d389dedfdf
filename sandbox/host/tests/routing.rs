//! fledge's real filter module in the host: loading, refusing a bad configuration, routing by
//! header rule (with the route cache cleared), sticky splits, and the minimal fixture.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use fledge_sandbox_host::{FilterHost, HostConfig, HostError};

#[tokio::test]
async fn header_rule_routes_to_v2_and_clears_the_route_cache() {
    // Reports (and the metric counts, added on each tick) every 100 ms.
    let host = FilterHost::start(HostConfig::new(filter_wasm(), client_config(0, 100)))
        .await
        .unwrap();
    let cases: [(&[(&str, &str)], &str); 4] = [
        (&[("x-beta", "1")], "v2"),
        (&[("x-beta", "0")], "v1"),
        (&[], "v1"),
        (&[("X-Beta", "1"), ("x-user-id", "u7")], "v2"),
    ];
    // Twice round: both VMs answer each case.
    for _ in 0..2 {
        for (extra, expected) in cases {
            let (version, handle) = route(&host, extra);
            assert_eq!(version.as_deref(), Some(expected), "{extra:?}");
            assert!(
                handle.route_cache_cleared(),
                "{extra:?}: clear_route_cache not seen"
            );
            complete(handle, expected, std::time::Duration::from_millis(3), 200);
        }
    }
    // A host without a route passes untouched, and its route cache stays.
    let mut headers = request_headers(&[("x-beta", "1")]);
    headers[0].1 = "ratings.shop.svc.cluster.local".into();
    let before = headers.clone();
    let handle = host.on_request_headers(&mut headers);
    assert_eq!(headers, before);
    assert!(!handle.route_cache_cleared());
    assert_eq!(host.stats().open_contexts, 1);
    drop(handle);
    let stats = host.stats();
    assert_eq!(stats.open_contexts, 0);
    assert_eq!(stats.unimplemented_calls, 0);
    assert_eq!((stats.requests, stats.traps, stats.vm_restarts), (9, 0, 0));
    // The filter counts per request and hands the counts to the host's metrics on its tick.
    let counted = eventually(Duration::from_secs(5), || {
        let metrics = host.stats().metrics;
        metrics.get("fledge_filter_requests_recorded") == Some(&8)
            && metrics.get("fledge_filter_requests_routed") == Some(&8)
    })
    .await;
    assert!(counted, "metrics: {:?}", host.stats().metrics);
    host.shutdown().await;
}

#[tokio::test]
async fn sticky_split_keeps_each_user_on_one_version() {
    let host = FilterHost::start(HostConfig::new(filter_wasm(), client_config(3000, 100)))
        .await
        .unwrap();
    let mut first: HashMap<String, String> = HashMap::new();
    for round in 0..3 {
        for user in 0..400 {
            let user = format!("user-{user}");
            let (version, handle) = route(&host, &[("x-user-id", &user)]);
            let version = version.expect("a routed request carries a version");
            let seen = first.entry(user.clone()).or_insert_with(|| version.clone());
            assert_eq!(*seen, version, "{user} moved in round {round}");
            drop(handle);
        }
    }
    // Handles dropped without on_log end their contexts without recording anything.
    assert_eq!(host.stats().open_contexts, 0);
    let counted = eventually(Duration::from_secs(5), || {
        host.stats().metrics.get("fledge_filter_requests_routed") == Some(&1200)
    })
    .await;
    assert!(counted, "metrics: {:?}", host.stats().metrics);
    assert_eq!(
        host.stats().metrics.get("fledge_filter_requests_recorded"),
        Some(&0)
    );
    let canary = first.values().filter(|v| *v == "v2").count();
    // 30 % of 400 users: binomial sd ≈ 9, so 80..160 holds with overwhelming probability.
    assert!(
        (80..=160).contains(&canary),
        "{canary} of 400 users on the canary"
    );
    host.shutdown().await;
}

#[tokio::test]
async fn bad_configuration_is_refused_with_the_filters_reason() {
    let cases = [
        (r#"{"agent": {"cluster": ""}}"#, "agent.cluster"),
        (
            r#"{"agent": {"cluster": "a"}, "limits": {"max_series": 0}}"#,
            "limits.max_series",
        ),
        (r#"{"agent": {"cluster": "a"}, "colour": "blue"}"#, "colour"),
    ];
    for (config, field) in cases {
        let error = FilterHost::start(HostConfig::new(filter_wasm(), config))
            .await
            .err();
        let Some(HostError::Refused { callback, log, .. }) = &error else {
            panic!("{config}: expected a refusal, got {error:?}");
        };
        assert_eq!(*callback, "proxy_on_configure");
        assert!(
            log.contains(field),
            "{config}: the reason {log:?} does not name {field}"
        );
    }
}

#[tokio::test]
async fn the_minimal_fixture_loads_and_passes_requests() {
    let host = FilterHost::start(HostConfig::new(minimal_wasm(), ""))
        .await
        .unwrap();
    let (version, handle) = route(&host, &[("x-user-id", "u1")]);
    assert_eq!(version, None);
    assert!(!handle.route_cache_cleared());
    complete(handle, "v1", std::time::Duration::from_millis(1), 200);
    let stats = host.stats();
    assert_eq!(
        (stats.requests, stats.traps, stats.unimplemented_calls),
        (1, 0, 0)
    );
    host.shutdown().await;
}

#[tokio::test]
async fn a_missing_module_or_no_workers_is_an_error() {
    let missing = FilterHost::start(HostConfig::new("/nonexistent/filter.wasm", ""))
        .await
        .err();
    assert!(
        matches!(missing, Some(HostError::ReadModule { .. })),
        "{missing:?}"
    );
    let none = FilterHost::start(HostConfig {
        workers: 0,
        ..HostConfig::new(minimal_wasm(), "")
    })
    .await
    .err();
    assert!(matches!(none, Some(HostError::NoWorkers)), "{none:?}");
}
