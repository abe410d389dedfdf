//! The gate's bookkeeping on a current-thread runtime, so that nothing a test spawns runs
//! until the test waits: a step holds until a look of its own, a new step discards the last
//! one's answer, a gate with no Prometheus aborts in words, and runs end with their rollout.

use std::time::Duration;

use fledge_core::rollout::{GateState, Phase, Rollout, RolloutStatus};
use jiff::Timestamp;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::MetricGates;
use crate::gates::Gate;
use crate::outbound::Outbound;

/// A Prometheus that answers every query with one series at `value`.
async fn prometheus(value: &'static str) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("binds");
    let addr = listener.local_addr().expect("an address");
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0; 4096];
                let _ = conn.read(&mut buf).await;
                let body = format!(
                    r#"{{"status":"success","data":{{"resultType":"vector","result":[{{"metric":{{}},"value":[1,"{value}"]}}]}}}}"#
                );
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = conn.write_all(answer.as_bytes()).await;
            });
        }
    });
    format!("http://{addr}")
}

fn rollout(address: Option<&str>) -> Rollout {
    let address = address
        .map(|a| format!("        address: {a}\n"))
        .unwrap_or_default();
    let text = format!(
        "apiVersion: fledge.dev/v1alpha1\nkind: Rollout\nmetadata: {{name: reviews, namespace: shop}}\n\
         spec:\n  host: reviews.shop.svc.cluster.local\n  stable: v1\n  canary: v2\n  \
         virtualService: {{name: reviews}}\n  strategy:\n    canary:\n      steps:\n        \
         - {{weight: 10, pause: {{duration: 1s}}}}\n  analysis:\n    metrics:\n      - name: cpu\n        \
         query: 'cpu{{version=\"{{{{version}}}}\"}}'\n        max: 0.7\n        interval: 1s\n{address}"
    );
    let mut r: Rollout = serde_norway::from_str(&text).expect("a Rollout");
    r.status = Some(at_step(0, 100));
    r
}

fn at_step(step: u32, started: i64) -> RolloutStatus {
    RolloutStatus {
        phase: Phase::Progressing,
        current_step: Some(step),
        step_started_at: Some(Timestamp::from_second(1_700_000_000 + started).expect("a time")),
        ..Default::default()
    }
}

/// Polls `gates` about `rollout` until its report is not the first Hold; returns that state.
async fn answer(gates: &MetricGates, rollout: &Rollout) -> GateState {
    for _ in 0..250 {
        let reports = gates.reports(rollout, Timestamp::now());
        let state = reports[0].state.clone();
        if !matches!(&state, GateState::Hold(r) if r.starts_with("no look")) {
            assert_eq!(
                Some(reports[0].step),
                rollout.status.as_ref().and_then(|s| s.current_step)
            );
            return state;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no answer within 5 s");
}

#[tokio::test]
async fn each_step_waits_for_a_look_of_its_own_and_runs_end_with_the_rollout() {
    let address = prometheus("0.85").await;
    let gates = MetricGates::new(Outbound::new().expect("a client"), Some(address));
    let mut r = rollout(None);
    let first = gates.reports(&r, Timestamp::now());
    assert_eq!(
        first[0].state,
        GateState::Hold("no look at the metric since the step began yet".into())
    );
    assert_eq!(first[0].evidence["canary"]["query"], "cpu{version=\"v2\"}");
    let failed = answer(&gates, &r).await;
    assert_eq!(
        failed,
        GateState::Fail("canary 0.85 is above max 0.7; query: cpu{version=\"v2\"}".into())
    );

    // A new step: the last step's answer is not its answer.
    r.status = Some(at_step(1, 130));
    let next = gates.reports(&r, Timestamp::now());
    assert_eq!(next[0].step, 1);
    assert_eq!(next[0].state.label(), "Hold");
    assert_eq!(answer(&gates, &r).await.label(), "Fail");

    // The gate taken out of the spec, then the rollout ended: no run is left.
    let mut without = r.clone();
    without.spec.analysis.metrics.clear();
    assert!(gates.reports(&without, Timestamp::now()).is_empty());
    assert!(gates.lock().is_empty());
    gates.reports(&r, Timestamp::now());
    assert_eq!(gates.lock().len(), 1);
    r.status = Some(RolloutStatus {
        phase: Phase::RolledBack,
        ..at_step(1, 130)
    });
    assert!(gates.reports(&r, Timestamp::now()).is_empty());
    assert!(gates.lock().is_empty());
}

#[tokio::test]
async fn a_gate_with_no_prometheus_to_ask_aborts_saying_how_to_give_one() {
    let gates = MetricGates::new(Outbound::new().expect("a client"), None);
    let r = rollout(None);
    assert_eq!(
        answer(&gates, &r).await,
        GateState::Abort(
            "no Prometheus to ask: set spec.analysis.metrics[0].address or start the agent \
             with --prometheus-url"
                .into()
        )
    );
    // The gate's own address is enough.
    let address = prometheus("0.5").await;
    let own = rollout(Some(&address));
    let gates = MetricGates::new(Outbound::new().expect("a client"), None);
    assert_eq!(answer(&gates, &own).await, GateState::Pass);
}
