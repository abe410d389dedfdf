//! Metric gates against a real Prometheus (`fledge_testkit::prometheus`: the `prometheus` binary
//! on a loopback port, scraping every second an exporter this test sets), through the real
//! agent over a folder store. Four Rollouts, one agent: a canary whose CPU (0.85) is over its
//! bound is rolled back and its status names the query and the value; a healthy one (0.3)
//! passes its gate; a query Prometheus refuses is reported in Prometheus's words and fails the
//! gate once errors have lasted `failAfter`; a query that matches nothing holds the step and
//! never fails it.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use fledge_agent::local::{LocalAgent, Options};
use fledge_agent::store::LocalStore;
use fledge_core::rollout::{GateKind, Phase, RolloutStatus};
use fledge_testkit::prometheus::{Exporter, Prometheus};

/// A two-step canary of `name` (its own host and VirtualService) gated by `metric` (YAML lines
/// of one `spec.analysis.metrics[]` entry, indented for it).
fn rollout(dir: &Path, name: &str, metric: &str) {
    let rollout = format!(
        "apiVersion: fledge.dev/v1alpha1\nkind: Rollout\nmetadata: {{name: {name}, namespace: shop}}\n\
         spec:\n  host: {name}.shop.svc.cluster.local\n  stable: v1\n  canary: v2\n  \
         virtualService: {{name: {name}}}\n  strategy:\n    canary:\n      steps:\n        \
         - {{weight: 10, pause: {{duration: 1s}}}}\n        - {{weight: 50, pause: {{duration: 1s}}}}\n  \
         analysis:\n    metrics:\n      - name: cpu\n{metric}"
    );
    let vs = format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: {name}, namespace: shop}}\n\
         spec:\n  hosts: [{name}]\n  http:\n    - name: default\n      route:\n        \
         - destination: {{host: {name}, subset: v1}}\n"
    );
    std::fs::write(dir.join(format!("{name}.yaml")), rollout).unwrap();
    std::fs::write(dir.join(format!("{name}-vs.yaml")), vs).unwrap();
}

fn statuses(dir: &Path) -> Vec<(String, RolloutStatus)> {
    let listing = LocalStore::new(dir).read_rollouts().unwrap();
    assert!(listing.problems.is_empty(), "{:?}", listing.problems);
    listing
        .rollouts
        .into_iter()
        .filter_map(|r| Some((r.metadata.name.clone()?, r.status?)))
        .collect()
}

/// Polls the statuses until `done` holds for `name`'s (at most 30 s); returns it.
async fn until(
    dir: &Path,
    name: &str,
    what: &str,
    done: impl Fn(&RolloutStatus) -> bool,
) -> RolloutStatus {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let found = statuses(dir).into_iter().find(|(n, _)| n == name);
        if let Some((_, s)) = &found
            && done(s)
        {
            return s.clone();
        }
        assert!(
            Instant::now() < deadline,
            "{name}: never {what}: {found:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metric_gates_roll_back_pass_report_errors_and_hold_on_no_data() {
    let exporter = Exporter::start();
    for (app, version, cpu) in [
        ("cpu-high", "v2", 0.85),
        ("cpu-high", "v1", 0.3),
        ("cpu-ok", "v2", 0.3),
    ] {
        exporter.set(
            &format!("cpu_usage{{app=\"{app}\",version=\"{version}\"}}"),
            cpu,
        );
    }
    let prometheus = Prometheus::start(&[exporter.addr()]).expect("prometheus runs");
    prometheus
        .wait_for("cpu_usage{app=\"cpu-high\"}", Duration::from_secs(20))
        .expect("the exporter is scraped");

    let dir = tempfile::tempdir().unwrap();
    let gate = |app: &str, extra: &str| {
        format!(
            "        query: 'cpu_usage{{app=\"{app}\",version=\"{{{{version}}}}\"}}'\n        \
             max: 0.7\n        interval: 1s\n        failAfter: 3s\n{extra}"
        )
    };
    rollout(
        dir.path(),
        "cpu-high",
        &gate("cpu-high", "        maxRatioToStable: 2\n"),
    );
    rollout(dir.path(), "cpu-ok", &gate("cpu-ok", ""));
    rollout(dir.path(), "nobody", &gate("nobody", ""));
    // A query Prometheus cannot parse, with the gate's own address.
    rollout(
        dir.path(),
        "bad-query",
        &format!(
            "        query: 'cpu_usage{{version=\"{{{{version}}}}\"'\n        max: 0.7\n        \
             interval: 1s\n        failAfter: 3s\n        address: {}\n",
            prometheus.url()
        ),
    );
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let agent = LocalAgent::start(Options {
        dir: dir.path().to_path_buf(),
        grpc: any,
        http: any,
        tick: Duration::from_millis(200),
        prometheus: Some(prometheus.url().to_owned()),
    })
    .await
    .unwrap();

    // Over its bound: rolled back, the status naming the query and the value.
    let high = until(dir.path(), "cpu-high", "rolled back", |s| {
        s.phase == Phase::RolledBack
    })
    .await;
    assert_eq!(high.canary_weight, 0);
    let report = high
        .gates
        .iter()
        .find(|g| g.name == "cpu")
        .expect("the cpu gate's report");
    assert_eq!(report.kind, GateKind::Metric);
    assert_eq!(report.state.label(), "Fail");
    let query = "cpu_usage{app=\"cpu-high\",version=\"v2\"}";
    assert_eq!(
        report.state.reason(),
        Some(format!("canary 0.85 is above max 0.7; query: {query}").as_str())
    );
    assert_eq!(report.evidence["canary"]["query"], query);
    assert_eq!(report.evidence["canary"]["value"], 0.85);
    assert_eq!(
        report.evidence["stable"]["query"],
        "cpu_usage{app=\"cpu-high\",version=\"v1\"}"
    );
    assert_eq!(report.evidence["stable"]["value"], 0.3);
    assert_eq!(report.evidence["bounds"][1]["bound"], "maxRatioToStable");
    assert_eq!(report.evidence["bounds"][1]["limit"], 0.6);
    assert!(
        high.reason.contains("Metric check cpu failed") && high.reason.contains("canary 0.85"),
        "{}",
        high.reason
    );
    let events =
        std::fs::read_to_string(dir.path().join("status/shop_cpu-high.events.jsonl")).unwrap();
    assert!(
        events.contains("RolledBack") && events.contains("canary 0.85 is above max 0.7"),
        "{events}"
    );

    // A query error is reported in Prometheus's words, then fails the gate after failAfter.
    let erring = until(dir.path(), "bad-query", "reporting the error", |s| {
        s.gates.iter().any(|g| g.state.label() == "Hold")
    })
    .await;
    let hold = erring.gates[0]
        .state
        .reason()
        .unwrap_or_default()
        .to_owned();
    assert!(hold.starts_with("query failed, retrying (the gate fails once errors last 3s): Prometheus at http://127.0.0.1:"), "{hold}");
    assert!(
        hold.contains("answered 400: bad_data: invalid parameter \"query\"")
            && hold.contains("parse error"),
        "{hold}"
    );
    assert_eq!(erring.phase, Phase::Progressing);
    let failed = until(dir.path(), "bad-query", "failed", |s| {
        s.phase == Phase::RolledBack
    })
    .await;
    let why = failed.gates[0].state.reason().unwrap_or_default();
    assert!(
        why.starts_with("queries have failed for ")
            && why.contains("(failAfter 3s)")
            && why.contains("bad_data"),
        "{why}"
    );

    // Healthy: the gate passes (the step still waits for the analysis: no requests here).
    let ok = until(dir.path(), "cpu-ok", "passed its gate", |s| {
        s.gates.iter().any(|g| g.state.label() == "Pass")
    })
    .await;
    assert_eq!(ok.phase, Phase::Progressing);
    assert_eq!(ok.gates[0].evidence["canary"]["value"], 0.3);
    assert_eq!(ok.gates[0].evidence["bounds"][0]["kept"], true);

    // Nothing matches: not enough data, a Hold, never a failure, however long it lasts.
    let none = until(dir.path(), "nobody", "holding for data", |s| {
        s.gates.iter().any(|g| {
            g.state.reason().is_some_and(|r| {
                r.starts_with("not enough data: the canary query answered no series")
            })
        })
    })
    .await;
    assert_eq!(none.phase, Phase::Progressing);
    tokio::time::sleep(Duration::from_secs(4)).await;
    let later = until(dir.path(), "nobody", "still progressing", |_| true).await;
    assert_eq!(later.phase, Phase::Progressing, "{later:#?}");
    assert_eq!(later.gates[0].state.label(), "Hold");
    agent.stop();
}
