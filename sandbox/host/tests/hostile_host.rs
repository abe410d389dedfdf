//! fledge's real filter in a host that answers as no proxy here does ([`HostQuirks`]): every
//! status the ABI allows for each host call in turn, numbers as ASCII text or with the wrong
//! size, and header replaces that keep later copies (as nginx with ngx_wasm_module). Whatever the
//! host answers, the filter must never trap and must serve every request (no request may need
//! the host's fail-open), and nothing it reports may be a guess: a request it could not measure
//! is counted as unmeasured, never as a latency of 0 or as a success.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::*;
use fledge_proto::v1::Counts;
use fledge_sandbox_host::{FilterHost, HostConfig, HostError, HostQuirks, PropertyForm};
use fledge_testkit::telemetry::StandInAgent;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::Deserializer;

/// Starting points of the status sequences: the longest (`proxy_grpc_stream`: five failures,
/// each after two Oks) has fifteen entries, so these start every call at every place of its
/// sequence.
const OFFSETS: usize = 15;
const BATCHES: usize = 2;
/// Requests open at once: 80 in each of the host's two VMs, more than the filter's table of
/// request contexts has slots (64), so some of them live in its spill map.
const PER_BATCH: usize = 160;
/// How long each request is held open before it completes.
const HELD: Duration = Duration::from_millis(250);
const REPORT_MS: u64 = 100;

fn hostile(offset: usize) -> HostQuirks {
    HostQuirks {
        every_status: Some(offset),
        properties: PropertyForm::Mixed,
        replace_keeps_duplicates: true,
        ..HostQuirks::default()
    }
}

/// A client on `reviews`: `x-beta: 1` goes to v2 (which answers 503), everyone else to v1 (200).
fn config(agent: std::net::SocketAddr) -> HostConfig {
    HostConfig {
        clusters: HashMap::from([(AGENT_CLUSTER.to_string(), agent)]),
        ..HostConfig::new(filter_wasm(), client_config(0, REPORT_MS))
    }
}

/// Runs batches of concurrent requests, each held open for [`HELD`], half of them asking for v2.
/// Each completes as the mesh would route it: by the version header the filter left (v2 answers
/// 503, v1 200), to v1 when there is none.
async fn drive(host: &FilterHost, offset: usize) {
    for batch in 0..BATCHES {
        let begun = Instant::now();
        let handles: Vec<_> = (0..PER_BATCH)
            .map(|i| {
                let beta = if i % 2 == 0 { "1" } else { "0" };
                let user = format!("user-{batch}-{i}");
                route(host, &[("x-beta", beta), ("x-user-id", &user)])
            })
            .collect();
        // Each request is inside the filter (its context lives), none passed it by.
        assert_eq!(
            host.stats().open_contexts,
            PER_BATCH,
            "offset {offset} batch {batch}"
        );
        tokio::time::sleep(HELD).await;
        for (version, handle) in handles {
            let (version, status) = match version.as_deref() {
                Some("v2") => ("v2", 503),
                _ => ("v1", 200),
            };
            complete(handle, version, begun.elapsed(), status);
        }
    }
}

/// Requests in every series the agent received.
fn reported_requests(agent: &StandInAgent) -> u64 {
    agent
        .series()
        .iter()
        .map(|s| s.counts.unwrap_or_default().requests)
        .sum()
}

/// Checks that every reported series holds only what was measured, and returns the counts.
fn nothing_guessed(agent: &StandInAgent, offset: usize) -> Counts {
    let mut total = Counts::default();
    for series in agent.series() {
        let counts = series.counts.unwrap_or_default();
        let at = format!(
            "offset {offset}: {}/{}: {counts:?}",
            series.host, series.version
        );
        let measured = counts.measured();
        assert!(counts.unmeasured <= counts.requests, "{at}");
        match series.version.as_str() {
            // Only v2 answered 503, and every one of its measured requests did.
            "v2" => assert_eq!(
                (counts.errors_5xx, counts.failures),
                (measured, measured),
                "{at}"
            ),
            "v1" => assert_eq!((counts.errors_5xx, counts.failures), (0, 0), "{at}"),
            _ => assert!(counts.errors_5xx <= measured, "{at}"),
        }
        if measured > 0 {
            let latency: Histogram<u64> = Deserializer::new()
                .deserialize(&mut series.latency_us_hdr.as_slice())
                .unwrap();
            assert_eq!(latency.len(), measured, "{at}");
            // Held for 250 ms: no latency of 0 (2 significant digits: 245 ms is the same).
            assert!(latency.min() >= 245_000, "{at}: min {} µs", latency.min());
            assert!(latency.max() < 60_000_000, "{at}: max {} µs", latency.max());
        } else {
            assert!(series.latency_us_hdr.is_empty(), "{at}");
        }
        total.add(&counts);
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_status_the_abi_allows_never_traps_and_every_request_is_served() {
    let (mut started, mut reported) = (0, Counts::default());
    for offset in 0..OFFSETS {
        let (agent, server) = StandInAgent::start().await;
        let host = match FilterHost::start_with(config(server.addr), hostile(offset)).await {
            Ok(host) => host,
            // The host refused the plugin its configuration buffer: the filter declines to start
            // (Envoy then runs the listener without it); it did not trap.
            Err(HostError::Refused { callback, log, .. }) => {
                assert_eq!(callback, "proxy_on_configure", "offset {offset}");
                // It says why, unless the host refused the log line too.
                assert!(
                    log.is_empty() || log.contains("did not hand over the plugin configuration"),
                    "offset {offset}: {log}"
                );
                server.stop().await;
                continue;
            }
            Err(e) => panic!("offset {offset}: {e}"),
        };
        started += 1;
        drive(&host, offset).await;
        let completed = (BATCHES * PER_BATCH) as u64;
        let ticking = host.stats().ticking > 0;
        if ticking {
            // Every request reaches the agent in the end, measured or counted as unmeasured,
            // through failed sends and reconnects.
            let all = eventually(Duration::from_secs(10), || {
                reported_requests(&agent) >= completed
            })
            .await;
            assert!(all, "offset {offset}: {:?}", agent.seen().series());
        }
        let stats = host.stats();
        assert_eq!(
            (stats.traps, stats.vm_restarts, stats.open_contexts),
            (0, 0, 0),
            "offset {offset}: {stats:?}"
        );
        assert_eq!(stats.requests, completed);
        assert!(
            stats.injected_statuses > 0,
            "offset {offset}: no call failed"
        );
        host.shutdown().await;
        server.stop().await;
        let counts = nothing_guessed(&agent, offset);
        // Without a tick (the host refused the period) nothing is sent at all.
        let expected = if ticking { completed } else { 0 };
        assert_eq!(counts.requests, expected, "offset {offset}: {counts:?}");
        reported.add(&counts);
    }
    assert!(
        started >= OFFSETS / 2,
        "only {started} of {OFFSETS} starts got past the configuration"
    );
    // Both kinds reached the agent: measured requests, and ones counted as unmeasured.
    assert!(
        reported.measured() > 0 && reported.unmeasured > 0,
        "{reported:?}"
    );
}

/// Requests as the test's backends answer them: `x-beta: 1` goes to v2 (503), others to v1.
async fn run_plain(host: &FilterHost, n: usize, latency: Duration) {
    for i in 0..n {
        let beta = if i % 2 == 0 { "1" } else { "0" };
        let (version, handle) = route(host, &[("x-beta", beta)]);
        let version = version.expect("routed");
        let status = if version == "v2" { 503 } else { 200 };
        complete(handle, &version, latency, status);
    }
}

fn counts_of(agent: &StandInAgent, version: &str) -> (Counts, Option<Histogram<u64>>) {
    let mut counts = Counts::default();
    let mut latency: Option<Histogram<u64>> = None;
    for series in agent.series().iter().filter(|s| s.version == version) {
        counts.add(&series.counts.unwrap_or_default());
        if !series.latency_us_hdr.is_empty() {
            let h: Histogram<u64> = Deserializer::new()
                .deserialize(&mut series.latency_us_hdr.as_slice())
                .unwrap();
            match latency.as_mut() {
                Some(sum) => sum.add(h).unwrap(),
                None => latency = Some(h),
            }
        }
    }
    (counts, latency)
}

/// Waits until the agent has heard of `n` requests.
async fn reported(agent: &StandInAgent, n: u64) -> bool {
    eventually(Duration::from_secs(10), || {
        let seen = agent.seen();
        seen.requests("v1") + seen.requests("v2") >= n
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_properties_as_nginx_writes_them_are_measured_exactly() {
    let (agent, server) = StandInAgent::start().await;
    let quirks = HostQuirks {
        properties: PropertyForm::Text,
        ..HostQuirks::default()
    };
    let host = FilterHost::start_with(config(server.addr), quirks)
        .await
        .unwrap();
    // `request.duration` "0.254", `response.code` "503" or "200".
    run_plain(&host, 200, Duration::from_millis(254)).await;
    assert!(reported(&agent, 200).await, "reports did not arrive");
    for (version, errors) in [("v1", 0), ("v2", 100)] {
        let (counts, latency) = counts_of(&agent, version);
        assert_eq!(
            (
                counts.requests,
                counts.unmeasured,
                counts.errors_5xx,
                counts.failures
            ),
            (100, 0, errors, errors),
            "{version}"
        );
        let latency = latency.expect("measured");
        assert_eq!(latency.len(), 100);
        // 254 ms exactly, within the histogram's 1 % precision.
        assert!(
            latency.equivalent(latency.min(), 254_000),
            "{}",
            latency.min()
        );
        assert!(
            latency.equivalent(latency.max(), 254_000),
            "{}",
            latency.max()
        );
    }
    assert_eq!(host.stats().traps, 0);
    host.shutdown().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn numbers_of_the_wrong_size_are_counted_as_unmeasured() {
    let (agent, server) = StandInAgent::start().await;
    let quirks = HostQuirks {
        properties: PropertyForm::WrongSize,
        ..HostQuirks::default()
    };
    let host = FilterHost::start_with(config(server.addr), quirks)
        .await
        .unwrap();
    run_plain(&host, 200, Duration::from_millis(254)).await;
    assert!(reported(&agent, 200).await, "reports did not arrive");
    for version in ["v1", "v2"] {
        let (counts, latency) = counts_of(&agent, version);
        // Neither a latency of 0 nor a success, nor a 5xx: only unmeasured.
        assert_eq!(
            counts,
            Counts {
                requests: 100,
                unmeasured: 100,
                ..Counts::default()
            },
            "{version}"
        );
        assert!(latency.is_none(), "{version}: a histogram of nothing");
    }
    let unmeasured = eventually(Duration::from_secs(5), || {
        host.stats()
            .metrics
            .get("fledge_filter_requests_unmeasured")
            == Some(&200)
    })
    .await;
    assert!(unmeasured, "{:?}", host.stats().metrics);
    host.shutdown().await;
    server.stop().await;
}

/// A client on `reviews` with a rule only: `x-beta: 1` goes to v2; without a split, any other
/// request has the version header removed.
fn rule_only_config() -> String {
    format!(
        r#"{{
  "agent": {{"cluster": "{AGENT_CLUSTER}"}},
  "role": "client",
  "routes": [{{
    "host": "{REVIEWS}",
    "rules": [{{"header": {{"name": "x-beta", "exact": "1"}}, "version": "v2"}}]
  }}]
}}"#
    )
}

fn copies(headers: &[(String, String)], name: &str) -> Vec<String> {
    headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.clone())
        .collect()
}

#[tokio::test]
async fn every_copy_of_a_client_supplied_version_header_is_replaced() {
    let nginx = HostQuirks {
        replace_keeps_duplicates: true,
        ..HostQuirks::default()
    };
    for (host_kind, quirks) in [("Envoy", HostQuirks::default()), ("nginx", nginx)] {
        for (config, beta, expected) in [
            (client_config(0, 100), "1", vec!["v2"]),
            (client_config(0, 100), "0", vec!["v1"]),
            (rule_only_config(), "1", vec!["v2"]),
            (rule_only_config(), "0", vec![]),
        ] {
            let config = HostConfig::new(filter_wasm(), config);
            let host = FilterHost::start_with(config, quirks.clone())
                .await
                .unwrap();
            // Two copies a client sent, as an HTTP/1 request may carry them.
            let mut headers = request_headers(&[
                ("x-fledge-version", "v9"),
                ("x-beta", beta),
                ("X-Fledge-Version", "v8"),
            ]);
            let handle = host.on_request_headers(&mut headers);
            assert_eq!(
                copies(&headers, "x-fledge-version"),
                expected,
                "{host_kind} host, x-beta {beta}"
            );
            assert!(handle.route_cache_cleared());
            drop(handle);
            // The host itself keeps both copies: a request the filter does not route passes
            // with both.
            let mut headers =
                request_headers(&[("x-fledge-version", "v9"), ("X-Fledge-Version", "v8")]);
            headers[0].1 = "ratings.shop.svc.cluster.local".into();
            drop(host.on_request_headers(&mut headers));
            assert_eq!(copies(&headers, "x-fledge-version"), ["v9", "v8"]);
            assert_eq!(host.stats().traps, 0);
            host.shutdown().await;
        }
    }
}
