//! `clear_route_cache`: the filter asks the host to pick the route again after it writes the
//! version header, unless `"clear_route_cache": false` says the host does that by itself; a host
//! without the function changes nothing about the request or how it is counted.

mod common;

use std::time::Duration;

use common::*;
use fledge_sandbox_host::{FilterHost, HostConfig, HostQuirks};

/// [`client_config`] with `"clear_route_cache"` set.
fn config(clear_route_cache: bool) -> String {
    let config = client_config(0, 100);
    let config = config.trim_end().strip_suffix('}').unwrap();
    format!("{config}, \"clear_route_cache\": {clear_route_cache}}}")
}

/// Routes twenty requests (half with `x-beta: 1`) and completes them; returns how many asked
/// for the route cache to be cleared.
fn run(host: &FilterHost) -> usize {
    let mut cleared = 0;
    for i in 0..20 {
        let (beta, expected) = if i % 2 == 0 { ("1", "v2") } else { ("0", "v1") };
        let (version, handle) = route(host, &[("x-beta", beta)]);
        assert_eq!(version.as_deref(), Some(expected), "x-beta {beta}");
        cleared += usize::from(handle.route_cache_cleared());
        complete(handle, expected, Duration::from_millis(2), 200);
    }
    cleared
}

/// Waits until the filter's metrics count `n` routed and `n` recorded requests.
async fn counted(host: &FilterHost, n: i64) -> bool {
    eventually(Duration::from_secs(5), || {
        let metrics = host.stats().metrics;
        metrics.get("fledge_filter_requests_routed") == Some(&n)
            && metrics.get("fledge_filter_requests_recorded") == Some(&n)
    })
    .await
}

#[tokio::test]
async fn the_switch_turns_the_call_off_and_routing_stays() {
    for (switch, cleared) in [(true, 20), (false, 0)] {
        let host = FilterHost::start(HostConfig::new(filter_wasm(), config(switch)))
            .await
            .unwrap();
        assert_eq!(run(&host), cleared, "clear_route_cache {switch}");
        assert!(counted(&host, 20).await, "{:?}", host.stats().metrics);
        assert_eq!(host.stats().traps, 0);
        host.shutdown().await;
    }
}

#[tokio::test]
async fn a_host_without_the_function_is_no_failure() {
    let quirks = HostQuirks {
        without_foreign_functions: true,
        ..HostQuirks::default()
    };
    let host = FilterHost::start_with(HostConfig::new(filter_wasm(), config(true)), quirks)
        .await
        .unwrap();
    // The call is answered NotFound: nothing cleared, every request still routed and counted
    // under the version it was sent to.
    assert_eq!(run(&host), 0);
    assert!(counted(&host, 20).await, "{:?}", host.stats().metrics);
    let metrics = host.stats().metrics;
    assert_eq!(metrics.get("fledge_filter_host_call_failures"), Some(&0));
    assert_eq!(host.stats().traps, 0);
    host.shutdown().await;
}
