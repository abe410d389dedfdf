//! Sandbox backends over real HTTP: the behaviour changes while running (from Rust and through
//! the admin path), latency follows the distribution, requests are counted live or shadow.

use std::time::Duration;

use bytes::Bytes;
use fledge_sandbox::backend::ADMIN_PATH;
use fledge_sandbox::{Backend, BackendConfig, Behaviour, Latency, LoadConfig, load};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

async fn admin(backend: &Backend, method: &str, body: &str) -> (u16, serde_json::Value) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let request = http::Request::builder()
        .method(method)
        .uri(format!("http://{}{ADMIN_PATH}", backend.addr()))
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap();
    let response = client.request(request).await.unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behaviour_changes_while_running_and_requests_are_counted() {
    let latency = Latency::fixed(Duration::from_millis(20));
    let backend = Backend::start(BackendConfig::new("v2").behaviour(Behaviour::new(latency, 0.0)))
        .await
        .unwrap();
    let run = |authority: &str| {
        LoadConfig::new(backend.addr(), authority, 200.0, Duration::from_millis(200))
    };

    let report = load::run(&run("reviews")).await.unwrap();
    assert_eq!(
        (report.statuses.get(&200), report.versions.get("v2")),
        (Some(&40), Some(&40)),
        "{report}"
    );
    assert!(
        report.p50 >= Duration::from_millis(20) && report.p50 < Duration::from_millis(40),
        "{report}"
    );

    let (status, _) = admin(
        &backend,
        "PUT",
        r#"{"latency": {"kind": "fixed", "delay": 0}, "errorRate": 1.0}"#,
    )
    .await;
    assert_eq!(status, 200);
    let report = load::run(&run("reviews-shadow:9080")).await.unwrap();
    assert_eq!(report.statuses.get(&500), Some(&40), "{report}");

    let (status, body) = admin(
        &backend,
        "PUT",
        r#"{"latency": {"kind": "fixed", "delay": 0}, "errorRate": 2.0}"#,
    )
    .await;
    assert_eq!((status, body), (400, serde_json::Value::Null));
    assert!(
        backend
            .set_behaviour(Behaviour::new(Latency::ZERO, -0.1))
            .is_err()
    );
    backend.set_behaviour(Behaviour::default()).unwrap();
    let report = load::run(&run("reviews")).await.unwrap();
    assert_eq!(report.statuses.get(&200), Some(&40), "{report}");

    let (_, status) = admin(&backend, "GET", "").await;
    assert_eq!(status["version"], "v2");
    assert_eq!(
        status["counts"],
        serde_json::json!({"live": 80, "shadow": 40, "errors": 40})
    );
}
