//! `fledge-sandbox`: the local mesh, a backend, the load generator and the filter benchmark
//! from the command line. Each subcommand runs one part; the whole rollout with the agent is
//! `fledge-demo`'s.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use fledge_sandbox::{
    Backend, BackendConfig, Behaviour, Latency, LoadConfig, Mesh, SandboxConfig, load,
};
use fledge_sandbox_host::bench;

#[derive(Parser)]
#[command(
    name = "fledge-sandbox",
    version,
    about = "fledge's local mesh, backends and load, with the real filter"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the mesh proxy (and its inbound listeners) from a sandbox config file.
    Proxy {
        #[arg(long, env = "FLEDGE_SANDBOX_CONFIG")]
        config: PathBuf,
    },
    /// Run one backend version. Change it while running with PUT /__backend (JSON Behaviour).
    Backend {
        #[arg(long, default_value = "127.0.0.1:9001")]
        listen: SocketAddr,
        /// The version it answers as (response header x-sandbox-version).
        #[arg(long)]
        version: String,
        /// `fixed:20ms` or `lognormal:MEDIAN:P99`, e.g. `lognormal:20ms:80ms`.
        #[arg(long, default_value = "fixed:0ms")]
        latency: Latency,
        /// Fraction of requests answered 500, in [0, 1].
        #[arg(long, default_value_t = 0.0)]
        error_rate: f64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Send open-loop load and print what came back.
    Load {
        /// The mesh proxy's address.
        #[arg(long)]
        target: SocketAddr,
        /// The service called (Host / :authority).
        #[arg(long)]
        host: String,
        #[arg(long, default_value = "/")]
        path: String,
        /// Requests per second.
        #[arg(long, default_value_t = 100.0)]
        rate: f64,
        /// How long to send, e.g. 10s.
        #[arg(long, default_value = "10s", value_parser = duration)]
        duration: Duration,
        /// Distinct user ids sent in --user-header (0: none).
        #[arg(long, default_value_t = 0)]
        users: u32,
        #[arg(long, default_value = "x-user-id")]
        user_header: String,
        /// Extra header, NAME:VALUE (repeatable).
        #[arg(long = "header", value_parser = header)]
        headers: Vec<(String, String)>,
        /// HTTP/2 with prior knowledge instead of HTTP/1.1.
        #[arg(long)]
        http2: bool,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Benchmarks.
    Bench {
        #[command(subcommand)]
        what: Bench,
    },
}

#[derive(Subcommand)]
enum Bench {
    /// fledge's filter against a minimal proxy-wasm module in the same host: ns per request.
    Filter {
        #[arg(long, default_value_t = 200_000)]
        requests: usize,
        #[arg(long, default_value_t = 10)]
        rounds: usize,
    },
}

fn duration(text: &str) -> Result<Duration, String> {
    fledge_sandbox::virtual_service::parse_duration(text)
}

fn header(text: &str) -> Result<(String, String), String> {
    let (name, value) = text
        .split_once(':')
        .ok_or_else(|| format!("{text:?} is not NAME:VALUE"))?;
    Ok((name.trim().to_owned(), value.trim().to_owned()))
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Command::Proxy { config } => {
            let config = SandboxConfig::load(&config)?;
            let mesh = Mesh::start(config).await?;
            println!("mesh proxy listening on {}", mesh.addr());
            tokio::signal::ctrl_c().await?;
            mesh.shutdown().await;
        }
        Command::Backend {
            listen,
            version,
            latency,
            error_rate,
            seed,
        } => {
            let config = BackendConfig {
                listen,
                version,
                behaviour: Behaviour::new(latency, error_rate),
                seed,
            };
            let backend = Backend::start(config).await?;
            println!(
                "backend {} listening on {}",
                backend.version(),
                backend.addr()
            );
            tokio::signal::ctrl_c().await?;
        }
        Command::Load {
            target,
            host,
            path,
            rate,
            duration,
            users,
            user_header,
            headers,
            http2,
            json,
        } => {
            let config = LoadConfig {
                path,
                users,
                user_header,
                headers,
                http2,
                ..LoadConfig::new(target, host, rate, duration)
            };
            let report = load::run(&config).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{report}");
            }
        }
        Command::Bench {
            what: Bench::Filter { requests, rounds },
        } => {
            let config = bench::BenchConfig {
                requests,
                rounds,
                ..bench::BenchConfig::from_env().context("finding the wasm modules")?
            };
            let report = bench::run(&config).await?;
            println!(
                "fledge filter: {:.0} ns/request; minimal module: {:.0} ns/request; ratio {:.2} ({} requests, {} traps, {} property misses)",
                report.filter_ns,
                report.minimal_ns,
                report.ratio,
                report.requests,
                report.traps,
                report.property_misses
            );
            if report.traps > 0 {
                bail!("{} callbacks trapped during the benchmark", report.traps);
            }
            if report.property_misses > 0 {
                bail!(
                    "{} property reads went unanswered: the filter did not measure what it does in Envoy",
                    report.property_misses
                );
            }
        }
    }
    Ok(())
}
