//! fledge's demo: one rollout scenario on one machine, no cluster — the fledge agent (local
//! store), the sandbox mesh running the real filter `.wasm`, stable and canary backends and
//! open-loop load — told second by second as a person can follow, ending with the outcome and
//! why. The `fledge-demo` binary (`./dev demo --scenario S`) and the end-to-end tests both call
//! [`run`] (or drive a [`Stack`] themselves when they need to stop the agent midway).
//!
//! This crate is where the agent and the sandbox meet; neither depends on the other. The
//! scenarios are data ([`scenario`]), the lines are formatting ([`progress`]); [`Stack`] starts
//! and observes the parts. Nothing here decides anything about the rollout: every decision is
//! the agent's, every route the mesh's.

pub mod approval;
mod pods;
pub mod progress;
mod prometheus;
pub mod scenario;
mod stack;
pub mod traffic;

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use serde_json::Value;

pub use progress::Progress;
pub use scenario::Scenario;
pub use stack::{Observation, ROLLOUT_FILE, Stack, VIRTUAL_SERVICE_FILE};
pub use traffic::{Cohort, Slice};

use fledge_sandbox::BackendCounts;

/// Why a demo could not run (a scenario ending other than expected is an [`Outcome`], not an
/// error).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Sandbox(#[from] fledge_sandbox::Error),
    #[error("starting the agent: {0}")]
    Agent(#[from] fledge_agent::local::Error),
    #[error("the agent's API: {0}")]
    Api(#[from] fledge_agent::cli::ClientError),
    #[error("the agent's runtime: {source}")]
    Runtime { source: std::io::Error },
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the approval service: {source}")]
    Approval { source: std::io::Error },
    #[error("the filter module: {0} (run ./dev wasm)")]
    Module(String),
    #[error("the local Prometheus: {0}")]
    Prometheus(String),
    #[error(
        "scenario {scenario} did not end within {after:?}; last phase {phase}; the rollout folder is {dir}"
    )]
    Timeout {
        scenario: Scenario,
        after: Duration,
        phase: String,
        dir: PathBuf,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How to run a scenario. [`DemoConfig::new`] gives the demo's settings; tests shorten them.
#[derive(Debug, Clone)]
pub struct DemoConfig {
    pub scenario: Scenario,
    /// fledge's filter module.
    pub module: PathBuf,
    /// How long each stage (step, A/B or shadow phase) is held at least.
    pub hold: Duration,
    /// The analysis interval.
    pub interval: Duration,
    /// The agent's reconcile tick.
    pub tick: Duration,
    /// How often the filters report.
    pub report_interval: Duration,
    /// Requests per second.
    pub rate: f64,
    pub users: u32,
    pub seed: u64,
    /// Load keeps running this long after the rollout ended, to show where requests go then.
    pub linger: Duration,
    /// Give up after this long.
    pub timeout: Duration,
}

impl DemoConfig {
    /// The demo's settings for `scenario`, with the filter module from `FLEDGE_FILTER_WASM` or
    /// the workspace's `target/wasm32-wasip1/wasm/fledge_filter.wasm`.
    pub fn new(scenario: Scenario) -> Result<DemoConfig> {
        let module = fledge_sandbox_host::bench::filter_module()
            .map_err(|e| Error::Module(e.to_string()))?;
        Ok(DemoConfig {
            scenario,
            module,
            hold: Duration::from_secs(15),
            interval: Duration::from_secs(1),
            tick: Duration::from_millis(250),
            report_interval: Duration::from_millis(500),
            rate: 200.0,
            users: 500,
            seed: 7,
            // Long enough to see the old stable scaled down after its delay (rolling).
            linger: Duration::from_secs(if scenario == Scenario::Rolling { 8 } else { 2 }),
            timeout: Duration::from_secs(480),
        })
    }
}

/// How a scenario ended, with what the clients and backends saw.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub scenario: Scenario,
    /// The rollout folder (Rollout, VirtualService, persisted status).
    pub dir: PathBuf,
    /// The rollout's final phase (or the last one seen, on timeout).
    pub phase: String,
    pub reason: String,
    /// Summaries of the checks that failed in the last analysis.
    pub failing_checks: Vec<String>,
    pub elapsed: Duration,
    /// The rollout as last answered.
    pub rollout: Value,
    pub observations: Vec<Observation>,
    pub slices: Vec<Slice>,
    pub stable: BackendCounts,
    pub canary: BackendCounts,
    /// What the scenario's approval service and chat received (empty without one).
    pub hooks: Vec<approval::HookRequest>,
}

impl Outcome {
    /// Whether the rollout ended as the scenario expects.
    pub fn as_expected(&self) -> bool {
        self.phase == self.scenario.expected_phase()
    }

    /// When the agent first decided a phase among `phases` (from `status.history`).
    pub fn decided_at(&self, phases: &[&str]) -> Option<SystemTime> {
        self.rollout["status"]["history"]
            .as_array()?
            .iter()
            .find(|d| d["phase"].as_str().is_some_and(|p| phases.contains(&p)))
            .and_then(|d| humantime::parse_rfc3339(d["at"].as_str()?).ok())
    }

    /// When every request was switched to the canary (Promoting or Succeeded decided).
    pub fn switched_at(&self) -> Option<SystemTime> {
        self.decided_at(&["Promoting", "Succeeded"])
    }

    /// Answers by `version` to `cohort` in slices wholly between `from` and `to`.
    pub fn answers_between(
        &self,
        cohort: Cohort,
        version: &str,
        from: SystemTime,
        to: SystemTime,
    ) -> u64 {
        self.slices
            .iter()
            .filter(|s| s.cohort == cohort && s.started >= from && s.ended <= to)
            .map(|s| s.report.versions.get(version).copied().unwrap_or(0))
            .sum()
    }

    /// Answers by version over the whole run, for one cohort.
    pub fn answers(&self, cohort: Cohort, version: &str) -> u64 {
        let (from, to) = (SystemTime::UNIX_EPOCH, SystemTime::now());
        self.answers_between(cohort, version, from, to)
    }

    /// Requests that got no HTTP answer at all.
    pub fn unanswered(&self) -> u64 {
        self.slices.iter().map(|s| s.report.failed).sum()
    }

    /// Requests sent.
    pub fn sent(&self) -> u64 {
        self.slices.iter().map(|s| s.report.sent).sum()
    }

    /// (phase, step index, canary weight) of each observation the agent answered.
    pub fn trajectory(&self) -> Vec<(String, Option<u64>, u64)> {
        self.observations
            .iter()
            .filter_map(|o| o.rollout.as_ref())
            .map(|r| {
                let s = &r["status"];
                (
                    s["phase"].as_str().unwrap_or("").to_owned(),
                    s["currentStep"].as_u64(),
                    s["canaryWeight"].as_u64().unwrap_or(0),
                )
            })
            .collect()
    }

    /// The closing lines a person reads.
    pub fn summary(&self) -> Vec<String> {
        let mut lines = vec![format!(
            "outcome: {} after {:.0}s ({} {})",
            self.phase,
            self.elapsed.as_secs_f64(),
            self.scenario,
            if self.as_expected() {
                "ended as expected"
            } else {
                "did NOT end as expected"
            },
        )];
        lines.push(format!("reason: {}", self.reason));
        for check in &self.failing_checks {
            lines.push(format!("failing check: {check}"));
        }
        lines.push(format!(
            "clients: {} requests sent, {} unanswered; stable answered {} ({} errors), canary answered {} ({} errors) and saw {} mirrored copies",
            self.sent(),
            self.unanswered(),
            self.stable.live,
            self.stable.errors,
            self.canary.live,
            self.canary.errors,
            self.canary.shadow,
        ));
        lines
    }
}

/// Runs `config.scenario` to its end, giving each progress line (and the closing lines) to
/// `out`.
pub async fn run(config: &DemoConfig, mut out: impl FnMut(&str)) -> Result<Outcome> {
    out(&format!(
        "fledge demo: {} — {}",
        config.scenario,
        config.scenario.describe()
    ));
    let mut stack = Stack::start(config).await?;
    out(&format!(
        "agent {} (gRPC {}), rollout folder {}, {} requests/s through the mesh at {}",
        stack.agent_addrs().1,
        stack.agent_addrs().0,
        stack.dir.display(),
        config.rate,
        stack
            .proxy_addr()
            .map(|a| a.to_string())
            .unwrap_or_default(),
    ));
    let result = drive(&mut stack, config, &mut out).await;
    stack.shutdown().await;
    result?;
    let outcome = outcome(&stack);
    for line in outcome.summary() {
        out(&line);
    }
    Ok(outcome)
}

/// Observes every second until the rollout ends (then `linger` more), or times out.
async fn drive(stack: &mut Stack, config: &DemoConfig, out: &mut impl FnMut(&str)) -> Result<()> {
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    let mut ended: Option<tokio::time::Instant> = None;
    loop {
        ticker.tick().await;
        let line = stack.observe().await;
        out(&line.to_string());
        for line in stack.approval.iter().flat_map(|a| a.take_lines()) {
            out(&format!("  {line}"));
        }
        if let Some(pods) = stack.pods_line() {
            out(&pods);
        }
        if ended.is_none() && stack.finished() {
            ended = Some(tokio::time::Instant::now());
        }
        if ended.is_some_and(|at| at.elapsed() >= config.linger) {
            return Ok(());
        }
        if stack.elapsed() >= config.timeout {
            return Err(Error::Timeout {
                scenario: config.scenario,
                after: config.timeout,
                phase: stack
                    .last_rollout()
                    .and_then(progress::phase)
                    .unwrap_or("unknown")
                    .to_owned(),
                dir: stack.dir.clone(),
            });
        }
    }
}

/// The outcome of a stack whose rollout ended.
pub fn outcome(stack: &Stack) -> Outcome {
    let rollout = stack.last_rollout().cloned().unwrap_or(Value::Null);
    Outcome {
        scenario: stack.scenario,
        dir: stack.dir.clone(),
        phase: progress::phase(&rollout).unwrap_or("unknown").to_owned(),
        reason: rollout["status"]["reason"]
            .as_str()
            .unwrap_or("")
            .to_owned(),
        failing_checks: progress::failing_checks(&rollout),
        elapsed: stack.elapsed(),
        observations: stack.observations.clone(),
        slices: stack.slices.clone(),
        stable: stack.stable.counts(),
        canary: stack.canary.counts(),
        hooks: stack
            .approval
            .as_ref()
            .map(|a| a.received())
            .unwrap_or_default(),
        rollout,
    }
}
