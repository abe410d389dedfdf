//! What the host's integration tests share: the real modules (a missing one fails the test with
//! how to build it), plugin configurations and request helpers. The telemetry server the filter
//! reports to is fledge-testkit's stand-in agent.

#![allow(dead_code)]

use std::path::PathBuf;
use std::time::Duration;

use fledge_sandbox_host::{FilterHost, LogInfo, RequestHandle, bench};

pub const AGENT_CLUSTER: &str = "outbound|9090||fledge-agent.fledge-system.svc.cluster.local";
pub const REVIEWS: &str = "reviews.shop.svc.cluster.local";

pub fn filter_wasm() -> PathBuf {
    bench::filter_module().unwrap_or_else(|e| panic!("{e}"))
}

pub fn minimal_wasm() -> PathBuf {
    bench::minimal_module().unwrap_or_else(|e| panic!("{e}"))
}

/// A client-role configuration with an initial table for `reviews`: `x-beta: 1` → v2, else a
/// sticky split on `x-user-id` with `canary_basis_points` to v2.
pub fn client_config(canary_basis_points: u32, report_interval_ms: u64) -> String {
    format!(
        r#"{{
  "agent": {{"cluster": "{AGENT_CLUSTER}"}},
  "role": "client",
  "report_interval_ms": {report_interval_ms},
  "routes": [{{
    "host": "{REVIEWS}",
    "rules": [{{"header": {{"name": "x-beta", "exact": "1"}}, "version": "v2"}}],
    "split": {{"stable": "v1", "canary": "v2", "canary_basis_points": {canary_basis_points}}},
    "sticky_key": {{"header": "x-user-id"}}
  }}]
}}"#
    )
}

pub fn request_headers(extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut headers = vec![
        (":authority".to_string(), format!("{REVIEWS}:9080")),
        (":path".to_string(), "/reviews/1".to_string()),
        (":method".to_string(), "GET".to_string()),
        (":scheme".to_string(), "http".to_string()),
    ];
    headers.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    headers
}

pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// Runs one request through `host` and returns the version the filter wrote and its handle.
pub fn route(host: &FilterHost, extra: &[(&str, &str)]) -> (Option<String>, RequestHandle) {
    let mut headers = request_headers(extra);
    let handle = host.on_request_headers(&mut headers);
    (
        header(&headers, "x-fledge-version").map(str::to_string),
        handle,
    )
}

/// Completes a request as the mesh would after the backend of `version` answered.
pub fn complete(mut handle: RequestHandle, version: &str, latency: Duration, status: u16) {
    let mut response = vec![(":status".to_string(), status.to_string())];
    handle.on_response_headers(&mut response);
    handle.on_log(LogInfo {
        duration: latency,
        response_code: Some(status),
        response_flags: 0,
        grpc_status: None,
        cluster_name: format!("outbound|9080|{version}|{REVIEWS}"),
    });
}

/// Polls `check` every 20 ms until it holds or `within` passes; returns whether it held.
pub async fn eventually(within: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if check() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
