//! Metric gates through the Kubernetes store: the canary example with a CPU gate, judged by a
//! real Prometheus (`fledge_testkit::prometheus`) scraping an exporter this test sets, driven
//! by the real controller against the stand-in API server (every call checked, the status
//! against the CRD's schema). A canary at 0.85 CPU against `max: 0.7` is rolled back and the
//! status and Event name the query and the value; at 0.3 the same canary runs to its promotion
//! with the gate's Pass in the status.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use fledge_agent::controller::Controller;
use fledge_agent::gates::Gates;
use fledge_agent::metric_gate::MetricGates;
use fledge_agent::metrics::Metrics;
use fledge_agent::telemetry::Hub;
use fledge_core::rollout::Phase;
use fledge_core::windows::Windows as Telemetry;
use fledge_testkit::prometheus::{Exporter, Prometheus};
use serde_json::json;

use super::apiserver::ApiServer;
use super::{drive, example, kube_status, kube_store};

const QUERY: &str = "cpu_usage{app=\"reviews\",version=\"v2\"}";

/// The stand-in holding the canary example with a CPU gate asking `prometheus`.
async fn cluster_with_gate(prometheus: &str) -> ApiServer {
    let server = ApiServer::start().await;
    let mut rollout = example("canary.yaml");
    rollout["spec"]["analysis"]["metrics"] = json!([{
        "name": "cpu",
        "query": "cpu_usage{app=\"reviews\",version=\"{{version}}\"}",
        "max": 0.7,
        "interval": "1s",
        "address": prometheus,
    }]);
    server.apply_rollout(rollout);
    server.create_virtual_service(example("virtualservice.yaml"));
    server
}

/// Drives the rollout to its end; returns the last second ticked and the cpu gate's states
/// seen in the status, in order, each once.
async fn run(server: &ApiServer) -> (i64, Vec<String>) {
    let telemetry = Arc::new(Mutex::new(Telemetry::new(3600, 64)));
    let gates = Gates::new(vec![MetricGates::gate(None).expect("a client")]);
    let kube = Controller::new(
        kube_store(server).await,
        telemetry.clone(),
        Hub::new(),
        Arc::new(Metrics::new()),
    )
    .with_gates(gates);
    let mut seen: Vec<String> = Vec::new();
    // Simulated time for the controller, real time for Prometheus: each tick waits a little.
    let end = drive(&kube, server, &telemetry, 2, 1200, async |_| {
        let state =
            kube_status(server).and_then(|s| s.gates.first().map(|g| g.state.label().to_owned()));
        if let Some(state) = state
            && seen.last() != Some(&state)
        {
            seen.push(state);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    })
    .await;
    (end, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cpu_gate_rolls_back_a_hot_canary_and_passes_a_cool_one_through_the_api_server() {
    let exporter = Exporter::start();
    exporter.set("cpu_usage{app=\"reviews\",version=\"v2\"}", 0.85);
    let prometheus = Prometheus::start(&[exporter.addr()]).expect("prometheus runs");
    prometheus
        .wait_for("cpu_usage{app=\"reviews\"}", Duration::from_secs(20))
        .expect("the exporter is scraped");

    let hot = cluster_with_gate(prometheus.url()).await;
    let (end, seen) = run(&hot).await;
    assert_eq!(seen.last().map(String::as_str), Some("Fail"), "{seen:?}");
    let status = kube_status(&hot).expect("a status");
    assert_eq!(status.phase, Phase::RolledBack, "{status:#?} after {end}s");
    assert_eq!(status.canary_weight, 0);
    let gate = &status.gates[0];
    assert_eq!((gate.name.as_str(), gate.state.label()), ("cpu", "Fail"));
    assert_eq!(
        gate.state.reason(),
        Some(format!("canary 0.85 is above max 0.7; query: {QUERY}").as_str())
    );
    assert_eq!(
        gate.evidence["canary"],
        json!({"query": QUERY, "value": 0.85})
    );
    assert_eq!(
        gate.evidence["bounds"],
        json!([{"bound": "max", "limit": 0.7, "kept": false}])
    );
    let rolled_back = hot
        .events()
        .into_iter()
        .find(|e| e["reason"] == "RolledBack")
        .expect("a RolledBack event");
    let note = rolled_back["note"].as_str().unwrap_or_default();
    assert!(
        note.contains("Metric check cpu failed") && note.contains(QUERY),
        "{note}"
    );
    assert!(hot.violations().is_empty(), "{:#?}", hot.violations());

    exporter.set("cpu_usage{app=\"reviews\",version=\"v2\"}", 0.3);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let cool = cluster_with_gate(prometheus.url()).await;
    let (end, seen) = run(&cool).await;
    let status = kube_status(&cool).expect("a status");
    assert_eq!(status.phase, Phase::Succeeded, "{status:#?} after {end}s");
    // Each step held until its first look, then passed; it never failed.
    assert!(seen.contains(&"Pass".to_owned()), "{seen:?}");
    assert!(!seen.contains(&"Fail".to_owned()), "{seen:?}");
    let reasons: Vec<_> = status.history.iter().map(|d| d.reason.as_str()).collect();
    assert!(
        !reasons.iter().any(|r| r.contains("Metric check")),
        "{reasons:?}"
    );
    assert!(cool.violations().is_empty(), "{:#?}", cool.violations());
}
