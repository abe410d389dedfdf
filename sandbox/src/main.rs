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
    /// fledge's filter against a minimal proxy-wasm module in the same host, on the routed path
    /// and for a host no rollout concerns: ns per request.
    Filter {
        #[arg(long, default_value_t = 200_000)]
        requests: usize,
        #[arg(long, default_value_t = 10)]
        rounds: usize,
        /// The request headers: `sidecar` (an Istio sidecar's eighteen) or `mesh` (five).
        #[arg(long, default_value = "sidecar", value_parser = header_set)]
        headers: bench::HeaderSet,
        /// A short run that only checks the benchmark works (few requests).
        #[arg(long)]
        quick: bool,
    },
    /// CPU per request of one proxy hop of the sandbox mesh (a separate process) with no
    /// filter, the minimal module and fledge's filter, at a fixed rate.
    Mesh {
        /// Requests per second.
        #[arg(long, default_value_t = 1000.0)]
        rate: f64,
        /// Requests measured per setup and round.
        #[arg(long, default_value_t = 10_000)]
        requests: u64,
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// A short run that only checks the benchmark works (few requests).
        #[arg(long)]
        quick: bool,
    },
}

fn header_set(text: &str) -> Result<bench::HeaderSet, String> {
    match text {
        "sidecar" => Ok(bench::HeaderSet::Sidecar),
        "mesh" => Ok(bench::HeaderSet::Mesh),
        other => Err(format!("{other:?} is not sidecar or mesh")),
    }
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
            what:
                Bench::Filter {
                    requests,
                    rounds,
                    headers,
                    quick,
                },
        } => {
            let (requests, rounds) = if quick {
                (2_000, 2)
            } else {
                (requests, rounds)
            };
            let config = bench::BenchConfig {
                requests,
                rounds,
                headers,
                ..bench::BenchConfig::from_env().context("finding the wasm modules")?
            };
            let report = bench::run(&config).await?;
            println!(
                "filter benchmark: {} requests per module and path, {:?} headers",
                report.requests, config.headers
            );
            println!("{report}");
            if report.traps > 0 {
                bail!("{} callbacks trapped during the benchmark", report.traps);
            }
            if report.property_misses > 0 {
                bail!(
                    "{} property reads went unanswered: the filter did not measure what it does in Envoy",
                    report.property_misses
                );
            }
            if report.routed.versioned != report.requests || report.unrouted.versioned != 0 {
                bail!(
                    "the filter versioned {} of {} routed requests and {} requests to a host it does not route",
                    report.routed.versioned,
                    report.requests,
                    report.unrouted.versioned
                );
            }
        }
        Command::Bench {
            what:
                Bench::Mesh {
                    rate,
                    requests,
                    rounds,
                    quick,
                },
        } => {
            let (requests, rounds) = if quick { (500, 1) } else { (requests, rounds) };
            mesh_bench(rate, requests, rounds).await?;
        }
    }
    Ok(())
}

/// Runs the mesh benchmark with this binary as the proxy and prints each setup's CPU per
/// request, what the filters add, and fledge's share of a hop.
async fn mesh_bench(rate: f64, requests: u64, rounds: usize) -> Result<()> {
    let config = fledge_sandbox::bench::MeshBenchConfig {
        proxy: std::env::current_exe().context("finding this binary")?,
        filter: bench::filter_module()?,
        minimal: bench::minimal_module()?,
        rate,
        requests,
        warmup: (requests / 5).max(200),
        rounds,
        dir: std::env::temp_dir().join(format!("fledge-sandbox-bench-mesh-{}", std::process::id())),
    };
    let rows = fledge_sandbox::bench::run(&config).await;
    let _ = std::fs::remove_dir_all(&config.dir);
    let rows = rows?;
    println!(
        "mesh benchmark: one proxy hop (its own process), {rate} requests/s, {requests} requests per setup, median of {rounds} rounds, Istio sidecar headers"
    );
    let base = rows.first().map_or(0.0, |row| row.cpu_us);
    for row in &rows {
        println!(
            "  {:<20} {:>7.1} µs CPU/request  ({:>+6.1} µs over no filter; {} of {} answered 200)",
            row.setup.to_string(),
            row.cpu_us,
            row.cpu_us - base,
            row.ok,
            row.sent
        );
    }
    if let Some(routed) = rows
        .iter()
        .find(|row| row.setup == fledge_sandbox::bench::Setup::FledgeRouted)
        && routed.cpu_us > 0.0
    {
        println!(
            "  fledge (routed) is {:.1} % of this hop's CPU; against an Istio sidecar's ~200 µs per request (Istio 1.24, 1,000 requests/s), {:.1} %",
            100.0 * (routed.cpu_us - base) / routed.cpu_us,
            100.0 * (routed.cpu_us - base) / 200.0
        );
    }
    let of = |setup| {
        rows.iter()
            .find(|row| row.setup == setup)
            .map(|row| row.cpu_us)
    };
    if let (Some(minimal), Some(unrouted), Some(routed)) = (
        of(fledge_sandbox::bench::Setup::Minimal),
        of(fledge_sandbox::bench::Setup::FledgeUnrouted),
        of(fledge_sandbox::bench::Setup::FledgeRouted),
    ) {
        println!(
            "  fledge over the minimal module: {:+.1} µs no rollout, {:+.1} µs routed (one run's noise is several µs; with --quick, tens)",
            unrouted - minimal,
            routed - minimal
        );
    }
    if let Some(row) = rows.iter().find(|row| row.ok != row.sent) {
        bail!(
            "{}: {} of {} requests were not answered 200",
            row.setup,
            row.sent - row.ok,
            row.sent
        );
    }
    Ok(())
}
