//! `fledge-demo`: one rollout scenario end to end on this machine, from the command line
//! (`./dev demo`). Parses the flags, runs [`fledge_demo::run`] and turns an unexpected ending
//! into a failing exit status; the scenario itself lives in the library.

use std::time::Duration;

use anyhow::{Result, bail};
use clap::Parser;
use fledge_demo::{DemoConfig, Scenario};

/// A rollout end to end on this machine: agent, mesh with the real filter, backends, load.
/// Exits 0 when the scenario ended as expected.
#[derive(Parser)]
#[command(name = "fledge-demo", version)]
struct Cli {
    /// healthy (promotes), erroring or slow (roll back), ab or shadow (promote), approval
    /// (promotes once a webhook approves), cpu-gate (rolls back: needs the `prometheus` binary),
    /// rolling (promotes; the Deployments' replicas follow the weight).
    #[arg(long, default_value = "healthy")]
    scenario: Scenario,
    /// How long each step is held, e.g. 15s.
    #[arg(long, default_value = "15s", value_parser = duration)]
    hold: Duration,
    /// Requests per second.
    #[arg(long, default_value_t = 200.0)]
    rate: f64,
}

fn duration(text: &str) -> Result<Duration, String> {
    fledge_sandbox::virtual_service::parse_duration(text)
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    // The demo speaks in its own lines; logs only errors.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "error".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let config = DemoConfig {
        hold: cli.hold,
        rate: cli.rate,
        ..DemoConfig::new(cli.scenario)?
    };
    let outcome = fledge_demo::run(&config, |line| println!("{line}")).await?;
    if !outcome.as_expected() {
        bail!(
            "scenario {} ended {}, expected {}",
            cli.scenario,
            outcome.phase,
            cli.scenario.expected_phase()
        );
    }
    Ok(())
}
