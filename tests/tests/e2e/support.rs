//! What the end-to-end tests share: the scenario settings shortened for tests, a driver that
//! runs a [`Stack`] to its end with hooks at given moments, and a plain HTTP GET.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use fledge_demo::{Cohort, DemoConfig, Outcome, Scenario, Stack};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// The demo's settings with shorter stages and less load. The filter module must be built:
/// the config fails saying to run `./dev wasm` otherwise.
pub fn config(scenario: Scenario) -> DemoConfig {
    let config = DemoConfig::new(scenario).unwrap_or_else(|e| panic!("{e}"));
    DemoConfig {
        hold: Duration::from_secs(10),
        rate: 150.0,
        users: 300,
        timeout: Duration::from_secs(420),
        ..config
    }
}

/// Scenarios running at once: more would make the machine, not the canary, the slow part.
static RUNNING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(4);

/// Waits for a turn to run a scenario; hold the permit while it runs.
pub async fn turn() -> tokio::sync::SemaphorePermit<'static> {
    RUNNING
        .acquire()
        .await
        .expect("the semaphore is never closed")
}

/// Runs a scenario to its end, printing its lines (shown when a test fails).
pub async fn run(scenario: Scenario) -> Outcome {
    let _turn = turn().await;
    let name = scenario.name();
    let outcome = fledge_demo::run(&config(scenario), |line| println!("[{name}] {line}"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    tidy(&outcome);
    outcome
}

/// Removes the rollout folder of a scenario that ended as expected (others stay to be read).
fn tidy(outcome: &Outcome) {
    if outcome.as_expected() {
        let _ = std::fs::remove_dir_all(&outcome.dir);
    }
}

/// Drives `stack` (observing every second) until `until` says so or the rollout ends; true
/// when `until` said so.
pub async fn drive_until(
    stack: &mut Stack,
    limit: Duration,
    mut until: impl FnMut(&Stack) -> bool,
) -> bool {
    let name = stack.scenario.name();
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let line = stack.observe().await;
        println!("[{name}] {line}");
        if until(stack) {
            return true;
        }
        if stack.finished() || stack.elapsed() >= limit {
            return false;
        }
    }
}

/// Drives `stack` to the end of its rollout (and two seconds more), then stops everything.
pub async fn finish(mut stack: Stack, limit: Duration) -> Outcome {
    drive_until(&mut stack, limit, |_| false).await;
    let ended = stack.elapsed();
    drive_until(&mut stack, limit, |s| {
        s.elapsed() >= ended + Duration::from_secs(2)
    })
    .await;
    stack.shutdown().await;
    let outcome = fledge_demo::outcome(&stack);
    tidy(&outcome);
    for line in outcome.summary() {
        println!("[{}] {line}", stack.scenario.name());
    }
    outcome
}

/// The current step index and canary weight the agent reports.
pub fn position(stack: &Stack) -> Option<(u64, u64)> {
    let status = &stack.observations.last()?.rollout.as_ref()?["status"];
    Some((
        status["currentStep"].as_u64().unwrap_or(0),
        status["canaryWeight"].as_u64()?,
    ))
}

/// Answers by `version` to `cohort` over the whole run.
pub fn answers(outcome: &Outcome, cohort: Cohort, version: &str) -> u64 {
    outcome.answers(cohort, version)
}

/// Answers by `version` to `cohort` in slices that began at `from` or later.
pub fn answers_after(outcome: &Outcome, cohort: Cohort, version: &str, from: SystemTime) -> u64 {
    outcome.answers_between(cohort, version, from, SystemTime::now())
}

/// GETs `url` and returns the body as text.
pub async fn get(url: &str) -> String {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let response = client
        .get(url.parse().expect("url"))
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let body = response.into_body().collect().await.expect("body");
    String::from_utf8_lossy(&body.to_bytes()).into_owned()
}
