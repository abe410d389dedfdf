//! The host's answers to host calls, checked by a hand-written module (tests/modules/
//! conformance.wat): the statuses Envoy gives ABI 0.2.1 modules, Unimplemented for what this
//! host does not do, a refused gRPC connection closing with Unavailable, and a trap failing open
//! with the VM recreated and configured again.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use fledge_sandbox_host::{FilterHost, HostConfig};

/// Each host call the module makes on request headers, and the status it must get.
const EXPECTED: [(&str, u8); 16] = [
    ("get_header_map_value of a missing header: NotFound", 1),
    ("get_header_map_value of :path: Ok", 0),
    ("get_property of an unknown path: NotFound", 1),
    ("get_property plugin_root_id: Ok", 0),
    ("call_foreign_function clear_route_cache: Ok", 0),
    ("call_foreign_function of an unknown name: NotFound", 1),
    ("get_buffer_bytes PluginConfiguration: Ok", 0),
    ("get_buffer_bytes HttpRequestBody (not here): NotFound", 1),
    ("get_buffer_bytes of buffer 99: BadArgument", 2),
    ("get_header_map_pairs of absent trailers: Ok", 0),
    ("get_status: Ok", 0),
    ("grpc_stream to an unknown cluster: InternalFailure", 10),
    ("get_shared_data (not implemented): Unimplemented", 12),
    ("increment_metric of a counter by 0: BadArgument", 2),
    ("set_tick_period_milliseconds: Ok", 0),
    ("get_header_map_value of map 9: BadArgument", 2),
];

fn module() -> PathBuf {
    let wat = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/modules/conformance.wat");
    let wasm = wat::parse_file(&wat).expect("conformance.wat parses");
    let path = std::env::temp_dir().join(format!("fledge-conformance-{}.wasm", std::process::id()));
    std::fs::write(&path, wasm).unwrap();
    path
}

fn headers(extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut headers: Vec<(String, String)> = [
        (":authority", "reviews"),
        (":path", "/r"),
        (":method", "GET"),
        (":scheme", "http"),
    ]
    .iter()
    .chain(extra)
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    headers.shrink_to_fit();
    headers
}

#[tokio::test]
async fn host_calls_answer_with_envoys_statuses() {
    let host = FilterHost::start(HostConfig::new(module(), "{}"))
        .await
        .unwrap();
    for _ in 0..2 {
        let mut request = headers(&[]);
        let handle = host.on_request_headers(&mut request);
        let statuses = request
            .iter()
            .find(|(k, _)| k == "x-statuses")
            .map(|(_, v)| v.clone())
            .expect("x-statuses written");
        assert_eq!(statuses.len(), EXPECTED.len(), "{statuses}");
        for ((call, expected), got) in EXPECTED.iter().zip(statuses.bytes()) {
            assert_eq!(got - b'A', *expected, "{call}");
        }
        assert!(handle.route_cache_cleared());
    }
    let stats = host.stats();
    assert_eq!(stats.unimplemented_imports, ["proxy_get_shared_data"]);
    assert_eq!(stats.unimplemented_calls, 2);
    assert_eq!(stats.traps, 0);
    host.shutdown().await;
}

#[tokio::test]
async fn a_refused_grpc_connection_closes_with_unavailable() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let config = HostConfig {
        workers: 1,
        clusters: HashMap::from([("dead".to_string(), addr)]),
        ..HostConfig::new(module(), "{}")
    };
    let host = FilterHost::start(config).await.unwrap();
    let mut closed = None;
    for _ in 0..250 {
        let metrics = host.stats().metrics;
        if metrics.get("close_code").copied().unwrap_or(0) != 0 {
            closed = Some((metrics["close_code"], metrics["close_message"]));
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (code, message_len) = closed.expect("on_grpc_close was called");
    assert_eq!(code, 14, "Unavailable");
    assert!(message_len > 0, "get_status gives the reason");
    assert_eq!(host.stats().traps, 0);
    host.shutdown().await;
}

#[tokio::test]
async fn a_trap_fails_open_and_the_vm_is_recreated() {
    let host = FilterHost::start(HostConfig {
        workers: 1,
        ..HostConfig::new(module(), "{}")
    })
    .await
    .unwrap();
    assert_eq!(host.stats().metrics["configured"], 1);
    let mut request = headers(&[("x-trap", "1")]);
    let before = request.clone();
    let mut handle = host.on_request_headers(&mut request);
    assert_eq!(request, before, "a trapping request continues unfiltered");
    assert!(!handle.route_cache_cleared());
    let mut response = vec![(":status".to_string(), "200".to_string())];
    handle.on_response_headers(&mut response);
    drop(handle);
    let stats = host.stats();
    assert_eq!((stats.traps, stats.vm_restarts), (1, 1));
    assert_eq!(
        stats.metrics["configured"], 2,
        "the new VM was started and configured"
    );
    // The recreated VM filters the next request.
    let mut request = headers(&[]);
    host.on_request_headers(&mut request);
    assert!(request.iter().any(|(k, _)| k == "x-statuses"));
    host.shutdown().await;
}
