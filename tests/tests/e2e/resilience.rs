//! The agent's failures during a rollout, as a user would meet them: the agent killed and
//! restarted on the same folder, the agent down while the filters keep serving, and a
//! malformed report stream that is refused while the rollout goes on.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fledge_demo::{Scenario, Stack};
use fledge_proto::v1::{self, FilterMessage, filter_message, telemetry_client::TelemetryClient};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::support::{config, drive_until, finish, get, position, turn};

const LIMIT: Duration = Duration::from_secs(420);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_killed_mid_rollout_resumes_from_its_status_without_moving_backward() {
    let _turn = turn().await;
    let mut stack = Stack::start(&config(Scenario::Healthy))
        .await
        .expect("stack");
    // Into the second step (50 %), a few seconds in.
    let reached = drive_until(&mut stack, LIMIT, |s| position(s) == Some((1, 50))).await;
    assert!(reached, "the rollout reached step 2");
    drive_until(&mut stack, LIMIT, |s| s.elapsed().as_secs() % 3 == 0).await;
    let before = position(&stack).expect("position before the kill");
    stack.stop_agent();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(stack.rollout().await.is_none(), "the agent is down");
    stack
        .start_agent()
        .await
        .expect("agent restarts on the same folder");
    let first = loop {
        stack.observe().await;
        if let Some(p) = position(&stack) {
            break p;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        first >= before,
        "after the restart the rollout is at {first:?}, before it was at {before:?}"
    );
    // The filters find the new agent: it receives reports again.
    let metrics = format!("http://{}/metrics", stack.agent_addrs().1);
    let mut received = 0;
    for _ in 0..40 {
        received = counter(&get(&metrics).await, "fledge_agent_reports_received_total");
        if received > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(received > 0, "no report reached the restarted agent");
    let outcome = finish(stack, LIMIT).await;
    assert_eq!(outcome.phase, "Succeeded", "{}", outcome.reason);
    let steps: Vec<(u64, u64)> = outcome
        .trajectory()
        .iter()
        .map(|(_, step, weight)| (step.unwrap_or(0), *weight))
        .collect();
    assert!(
        steps.windows(2).all(|w| w[0] <= w[1]),
        "step and weight never went back: {steps:?}"
    );
    assert_eq!(outcome.unanswered(), 0);
    assert!(
        judged_canary_requests(&outcome.rollout) > 0,
        "the restarted agent judged fresh canary data"
    );
}

/// The value of an unlabelled counter in Prometheus text.
fn counter(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or(0)
}

/// The canary requests the last analysis counted.
fn judged_canary_requests(rollout: &serde_json::Value) -> u64 {
    rollout["status"]["lastAnalysis"]["evidence"]["checks"]
        .as_array()
        .and_then(|checks| checks.iter().find(|c| c["check"] == "traffic"))
        .and_then(|c| c["evidence"]["canaryRequests"].as_u64())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_filters_keep_serving_while_the_agent_is_down() {
    let _turn = turn().await;
    let mut stack = Stack::start(&config(Scenario::Healthy))
        .await
        .expect("stack");
    let reached = drive_until(&mut stack, LIMIT, |s| position(s) == Some((0, 10))).await;
    assert!(reached, "the rollout reached step 1");
    drive_until(&mut stack, LIMIT, |s| s.elapsed() >= Duration::from_secs(4)).await;
    stack.stop_agent();
    let down = SystemTime::now();
    tokio::time::sleep(Duration::from_secs(6)).await;
    let up = SystemTime::now();
    stack.start_agent().await.expect("agent restarts");
    let outcome = finish(stack, LIMIT).await;
    let during: Vec<_> = outcome
        .slices
        .iter()
        .filter(|s| s.started >= down && s.ended <= up)
        .collect();
    assert!(during.len() >= 4, "load ran while the agent was down");
    let sent: u64 = during.iter().map(|s| s.report.sent).sum();
    let answered: u64 = during.iter().map(|s| s.report.answered()).sum();
    let failed: u64 = during.iter().map(|s| s.report.failed).sum();
    assert_eq!((answered, failed), (sent, 0), "no request failed");
    // The split the agent last pushed held: both versions kept answering.
    let by = |v: &str| -> u64 {
        during
            .iter()
            .map(|s| s.report.versions.get(v).copied().unwrap_or(0))
            .sum()
    };
    let share = by("v2") as f64 / answered as f64;
    assert!(
        (0.04..0.2).contains(&share),
        "canary share while down {share:.3}"
    );
    assert_eq!(outcome.phase, "Succeeded", "{}", outcome.reason);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_report_stream_is_refused_while_the_rollout_goes_on() {
    let _turn = turn().await;
    let stack = Stack::start(&config(Scenario::Healthy))
        .await
        .expect("stack");
    let (grpc, http) = stack.agent_addrs();
    let channel = tonic::transport::Channel::from_shared(format!("http://{grpc}"))
        .expect("uri")
        .connect()
        .await
        .expect("connect to the agent's gRPC");
    let (tx, rx) = mpsc::channel(4);
    let hello = v1::Hello {
        proxy_id: "sidecar~10.0.0.9~broken-1.shop".into(),
        role: v1::Role::Client as i32,
        ..Default::default()
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64;
    let garbage = v1::Report {
        seq: 1,
        window_start_unix_ms: now - 1000,
        window_end_unix_ms: now,
        series: vec![v1::Series {
            host: "reviews.shop.svc.cluster.local".into(),
            version: "v2".into(),
            counts: Some(v1::Counts {
                requests: 50,
                failures: 50,
                ..Default::default()
            }),
            latency_us_hdr: b"this is not an HDR histogram".to_vec(),
            ..Default::default()
        }],
        dropped: 0,
    };
    for msg in [
        filter_message::Msg::Hello(hello),
        filter_message::Msg::Report(garbage),
    ] {
        tx.send(FilterMessage { msg: Some(msg) })
            .await
            .expect("send");
    }
    let refused = match TelemetryClient::new(channel)
        .connect(ReceiverStream::new(rx))
        .await
    {
        Err(status) => status,
        Ok(response) => {
            let mut replies = response.into_inner();
            loop {
                match replies.message().await {
                    Ok(Some(_table)) => continue,
                    Ok(None) => panic!("the stream ended without an error"),
                    Err(status) => break status,
                }
            }
        }
    };
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
    assert!(
        refused.message().contains("latency_us_hdr"),
        "the refusal names the field: {}",
        refused.message()
    );
    let metrics = get(&format!("http://{http}/metrics")).await;
    let rejected = metrics
        .lines()
        .find(|l| l.starts_with("fledge_agent_reports_rejected_total{"))
        .unwrap_or_else(|| panic!("no rejected counter in:\n{metrics}"));
    assert!(rejected.ends_with(" 1"), "{rejected}");
    drop(tx);
    // The garbage's 100 % failures never reached the analysis: the healthy canary promotes.
    let outcome = finish(stack, LIMIT).await;
    assert_eq!(outcome.phase, "Succeeded", "{}", outcome.reason);
    assert_eq!(outcome.unanswered(), 0);
}
