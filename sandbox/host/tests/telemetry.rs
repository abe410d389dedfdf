//! fledge's real filter streaming to a real fledge.v1.Telemetry gRPC server through the host's
//! HTTP/2 bridge: every logged request is reported once with its latency, routing tables pushed
//! back change routing, and an agent that goes away loses nothing.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use fledge_proto::v1::HostRoute;
use fledge_sandbox_host::{FilterHost, HostConfig, LogInfo, NodeInfo};
use fledge_testkit::messages::HostRouteExt;
use fledge_testkit::telemetry::StandInAgent;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::Deserializer;

const REPORT_MS: u64 = 200;

fn host_config(agent: SocketAddr, canary_basis_points: u32) -> HostConfig {
    HostConfig {
        node: NodeInfo {
            id: "sidecar~10.0.0.7~productpage-v1-7d9c.shop~shop.svc.cluster.local".into(),
            workload: "productpage-v1".into(),
            namespace: "shop".into(),
            labels: [("version".to_string(), "v1".to_string())].into(),
        },
        clusters: HashMap::from([(AGENT_CLUSTER.to_string(), agent)]),
        ..HostConfig::new(filter_wasm(), client_config(canary_basis_points, REPORT_MS))
    }
}

/// The latency the test's backend of `version` takes for request `i`, in µs.
fn latency_us(version: &str, i: u64) -> u64 {
    match version {
        "v1" => 5_000 + (i * 37) % 1_000,
        _ => 20_000 + (i * 53) % 4_000,
    }
}

/// Runs `n` requests (user ids `first..first + n`) and returns the latencies sent per version.
fn run(host: &FilterHost, first: u64, n: u64) -> BTreeMap<String, Vec<u64>> {
    let mut sent: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for i in first..first + n {
        let user = format!("user-{i}");
        let (version, handle) = route(host, &[("x-user-id", &user)]);
        let version = version.expect("routed");
        let us = latency_us(&version, i);
        complete(handle, &version, Duration::from_micros(us), 200);
        sent.entry(version).or_default().push(us);
    }
    sent
}

fn reported_total(agent: &StandInAgent) -> u64 {
    let seen = agent.seen();
    seen.requests("v1") + seen.requests("v2")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_count_every_request_once_with_its_latency() {
    let (agent, server) = StandInAgent::start().await;
    let host = FilterHost::start(host_config(server.addr, 2000))
        .await
        .unwrap();
    let sent = run(&host, 0, 400);
    assert!(
        eventually(Duration::from_secs(10), || reported_total(&agent) >= 400).await,
        "reports did not arrive"
    );
    tokio::time::sleep(Duration::from_millis(3 * REPORT_MS)).await;
    check_reports(&agent, &sent);
    assert_eq!(host.stats().traps, 0);
    host.shutdown().await;
    server.stop().await;
}

/// Every request of `sent` is in exactly one report, with its latency.
fn check_reports(agent: &StandInAgent, sent: &BTreeMap<String, Vec<u64>>) {
    let seen = agent.seen();
    let hellos = seen.hellos();
    assert_eq!(hellos.len(), 2, "one Hello per VM");
    let hello = hellos[0];
    assert_eq!(
        (
            hello.proxy_id.as_str(),
            hello.workload.as_str(),
            hello.namespace.as_str(),
            hello.version_label.as_str()
        ),
        (
            "sidecar~10.0.0.7~productpage-v1-7d9c.shop~shop.svc.cluster.local",
            "productpage-v1",
            "shop",
            "v1"
        )
    );
    for (version, latencies) in sent {
        assert_eq!(
            seen.requests(version),
            latencies.len() as u64,
            "{version}: reported requests"
        );
        let mut merged = Histogram::<u64>::new(2).unwrap();
        for series in seen.series().iter().filter(|s| &s.version == version) {
            assert_eq!(series.host, REVIEWS);
            let h: Histogram<u64> = Deserializer::new()
                .deserialize(&mut series.latency_us_hdr.as_slice())
                .unwrap();
            merged.add(&h).unwrap();
        }
        assert_eq!(
            merged.len(),
            latencies.len() as u64,
            "{version}: histogram count"
        );
        let mut sorted = latencies.clone();
        sorted.sort_unstable();
        for q in [0.5, 0.9, 0.99] {
            let exact =
                sorted[((q * sorted.len() as f64).ceil() as usize).saturating_sub(1)] as f64;
            let got = merged.value_at_quantile(q) as f64;
            assert!(
                (got - exact).abs() / exact <= 0.01,
                "{version} p{q}: reported {got} µs, sent {exact} µs"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_routing_table_from_the_agent_changes_routing_within_a_second() {
    let (agent, server) = StandInAgent::start().await;
    let host = FilterHost::start(host_config(server.addr, 0))
        .await
        .unwrap();
    assert!(
        eventually(Duration::from_secs(10), || agent.streams() == 2).await,
        "both VMs connect"
    );
    assert_eq!(run(&host, 0, 50).keys().collect::<Vec<_>>(), ["v1"]);
    agent.push(
        HostRoute::test()
            .host(REVIEWS)
            .split("v1", "v3", 10_000)
            .table(1),
    );
    let pushed = Instant::now();
    let switched = eventually(Duration::from_secs(1), || {
        run(&host, 0, 10).keys().eq(["v3"])
    })
    .await;
    assert!(
        switched,
        "routing still old {:?} after the push",
        pushed.elapsed()
    );
    assert_eq!(
        host.stats().metrics.get("fledge_filter_table_revision"),
        Some(&1)
    );
    host.shutdown().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_down_loses_no_request_and_totals_are_exact_after_restart() {
    let (agent, server) = StandInAgent::start().await;
    let addr = server.addr;
    let host = FilterHost::start(host_config(addr, 5000)).await.unwrap();
    run(&host, 0, 100);
    assert!(eventually(Duration::from_secs(10), || reported_total(&agent) == 100).await);
    server.stop().await;
    // The agent is gone: requests keep being routed, and the VMs survive refused connections.
    let down = Instant::now();
    let mut during = 0;
    while down.elapsed() < Duration::from_secs(2) {
        let sent = run(&host, 100 + during, 20);
        assert_eq!(sent.values().map(Vec::len).sum::<usize>(), 20);
        during += 20;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stats = host.stats();
    assert_eq!(
        (stats.traps, stats.vm_restarts),
        (0, 0),
        "a lost agent must not trap"
    );
    // Each VM opened its first stream and then tried again at least once (each refused attempt
    // ends in on_grpc_close with Unavailable).
    assert!(
        stats
            .metrics
            .get("fledge_filter_stream_opens")
            .copied()
            .unwrap_or(0)
            >= 4,
        "{stats:?}"
    );
    assert_eq!(reported_total(&agent), 100, "nothing reported while down");
    let server = agent.serve(addr).await;
    let expected = 100 + during;
    let exact = eventually(Duration::from_secs(20), || {
        reported_total(&agent) == expected
    })
    .await;
    assert!(
        exact,
        "after restart {} reported of {expected}",
        reported_total(&agent)
    );
    tokio::time::sleep(Duration::from_millis(3 * REPORT_MS)).await;
    assert_eq!(reported_total(&agent), expected, "no request counted twice");
    host.shutdown().await;
    server.stop().await;
}

/// Envoy answers `response.grpc_status` for every request (200 without a `grpc-status` is
/// Unknown), so the filter must count gRPC errors only for gRPC requests: plain HTTP 200s are not
/// failures, while a gRPC request's `grpc-status`, or the status inferred from its HTTP code, is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_errors_count_only_for_grpc_requests() {
    let (agent, server) = StandInAgent::start().await;
    let host = FilterHost::start(host_config(server.addr, 0))
        .await
        .unwrap();
    // (content-type, HTTP status, grpc-status, how many)
    let cases: [(&str, u16, Option<i32>, u64); 5] = [
        ("text/html", 200, None, 40),
        ("text/html", 404, None, 3),
        ("application/grpc", 200, Some(0), 20),
        ("application/grpc+proto", 200, Some(14), 5),
        ("application/grpc", 503, None, 2),
    ];
    for (content_type, status, grpc_status, n) in cases {
        for _ in 0..n {
            let (version, mut handle) = route(&host, &[("content-type", content_type)]);
            assert_eq!(version.as_deref(), Some("v1"));
            let mut response = vec![(":status".to_string(), status.to_string())];
            handle.on_response_headers(&mut response);
            handle.on_log(LogInfo {
                duration: Duration::from_millis(2),
                response_code: Some(status),
                response_flags: 0,
                grpc_status,
                cluster_name: format!("outbound|9080|v1|{REVIEWS}"),
            });
        }
    }
    let total: u64 = cases.iter().map(|c| c.3).sum();
    assert!(
        eventually(Duration::from_secs(10), || reported_total(&agent) == total).await,
        "reports did not arrive"
    );
    let sums = {
        let seen = agent.seen();
        let series = seen.series();
        let sum =
            |f: fn(&fledge_proto::v1::Series) -> u64| series.iter().map(|s| f(s)).sum::<u64>();
        [
            sum(|s| s.counts.unwrap_or_default().grpc_errors),
            sum(|s| s.counts.unwrap_or_default().errors_5xx),
            sum(|s| s.counts.unwrap_or_default().errors_4xx),
            sum(|s| s.counts.unwrap_or_default().failures),
        ]
    };
    // [gRPC errors, 5xx, 4xx, failures]: 5 with grpc-status 14 and 2 inferred Unavailable from
    // 503; none of the plain HTTP ones, whose 200s Envoy would call Unknown.
    assert_eq!(sums, [7, 2, 3, 7]);
    host.shutdown().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_hosts_the_routing_table_names_are_reported() {
    let (agent, server) = StandInAgent::start().await;
    let host = FilterHost::start(host_config(server.addr, 2000))
        .await
        .unwrap();
    // Requests to a host no route names pass untouched and are never reported.
    for _ in 0..50 {
        let mut headers = request_headers(&[("x-user-id", "user-1")]);
        headers.retain(|(name, _)| name != ":authority");
        headers.push((
            ":authority".into(),
            "ratings.shop.svc.cluster.local:9080".into(),
        ));
        let handle = host.on_request_headers(&mut headers);
        assert_eq!(header(&headers, "x-fledge-version"), None, "not routed");
        complete(handle, "v1", Duration::from_millis(5), 200);
    }
    let sent = run(&host, 0, 100);
    assert!(
        eventually(Duration::from_secs(10), || reported_total(&agent) >= 100).await,
        "reports did not arrive"
    );
    tokio::time::sleep(Duration::from_millis(3 * REPORT_MS)).await;
    let seen = agent.seen();
    let hosts: Vec<&str> = seen.series().iter().map(|s| s.host.as_str()).collect();
    assert!(hosts.iter().all(|h| *h == REVIEWS), "{hosts:?}");
    assert_eq!(
        reported_total(&agent),
        sent.values().map(|l| l.len() as u64).sum::<u64>()
    );
    host.shutdown().await;
    server.stop().await;
}
