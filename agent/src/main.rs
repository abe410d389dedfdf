//! `fledge-agent`: the agent and its command-line client. Parses flags (`config.rs`) and hands
//! each subcommand to the library; nothing is decided here.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use fledge_agent::cli::{ApiClient, ClientError, summary_line};
use fledge_agent::config::{BenchCommand, Cli, Command, SimulateArgs};
use fledge_core::analysis::{AnalysisSpec, simulate};
use fledge_core::rollout::UserCommand;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let bench = matches!(cli.command, Command::Bench { .. });
    fledge_agent::logging::init(if bench { "warn" } else { "info" });
    match run(cli.command).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("fledge-agent: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Local(args) => {
            let options = fledge_agent::local::Options {
                dir: args.dir,
                grpc: args.grpc,
                http: args.http,
                tick: std::time::Duration::from_secs(1),
                prometheus: args.prometheus_url,
            };
            fledge_agent::local::LocalAgent::start(options)
                .await?
                .serve_until_terminated()
                .await;
            Ok(ExitCode::SUCCESS)
        }
        Command::Kube(args) => {
            let scope = match args.namespace {
                Some(ns) => fledge_agent::store::Scope::Namespace(ns),
                None => fledge_agent::store::Scope::AllNamespaces,
            };
            let options = fledge_agent::cluster::Options {
                scope,
                grpc: args.grpc,
                http: args.http,
                tick: std::time::Duration::from_secs(1),
                instance: args.pod_name,
                require_peer_identity: args.require_peer_identity,
                max_stream_requests_per_second: args.max_stream_requests_per_second,
                http_commands: args.http_commands,
                prometheus: args.prometheus_url,
                http_reads: args.http_reads,
                election: Some(fledge_agent::cluster::Election {
                    lease_name: args.election.lease_name.clone(),
                    lease_namespace: args.election.lease_namespace.clone(),
                    timing: args.election.timing(),
                }),
            };
            fledge_agent::cluster::start(options)
                .await?
                .serve_until_terminated()
                .await;
            Ok(ExitCode::SUCCESS)
        }
        Command::Crd => {
            print!("{}", fledge_core::rollout::crd_yaml());
            Ok(ExitCode::SUCCESS)
        }
        Command::Simulate(args) => simulate(args),
        Command::Bench {
            what: BenchCommand::Ingest { reports, requests },
        } => {
            let r = fledge_agent::bench::ingest(reports, requests);
            println!(
                "ingest: {} reports × {} series ({} requests, {} B histogram each) in {:.2?}\n  {:.0} reports/s, {:.0} series/s on one core",
                r.reports,
                r.series_per_report,
                r.requests_per_series,
                r.encoded_bytes_per_series,
                r.elapsed,
                r.reports_per_sec,
                r.series_per_sec
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench {
            what:
                BenchCommand::Store {
                    series,
                    secs,
                    requests,
                },
        } => {
            let r = fledge_agent::bench::store(series, secs, requests);
            let mib =
                |kib: Option<u64>| kib.map_or("?".into(), |k| format!("{:.1}", k as f64 / 1024.0));
            println!(
                "store: {} series × {} s at {} requests/s each (retention {} s) in {:.2?}\n  held at the end: {} seconds, {:.1} MiB of latency counters\n  peak RSS: {} MiB before, {} MiB after",
                r.series,
                r.simulated_secs,
                r.requests_per_series_second,
                r.retention_secs,
                r.elapsed,
                r.seconds_held,
                r.counter_bytes_held as f64 / (1 << 20) as f64,
                mib(r.peak_rss_kib_before),
                mib(r.peak_rss_kib_after),
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench {
            what:
                BenchCommand::Streams {
                    streams,
                    seconds,
                    per_connection,
                    quick,
                },
        } => {
            let options =
                fledge_agent::bench::StreamsOptions::new(streams, seconds, per_connection, quick);
            println!(
                "streams: {} streams × 1 report/s for {} s, {} per HTTP/2 connection",
                options.streams, options.seconds, options.per_connection
            );
            let r = fledge_agent::bench::streams(options).await?;
            let (first, last) = r.rss_after_warm_up;
            println!(
                "  {} connections; reports sent {}, counted {}, lost {}, refused {}\n  agent after warm-up: {:.1} % of a core, RSS {:.1} → {:.1} MiB",
                r.connections,
                r.sent,
                r.counted,
                r.lost(),
                r.refused,
                r.cpu_after_warm_up * 100.0,
                first as f64 / 1024.0,
                last as f64 / 1024.0,
            );
            Ok(if r.lost() == 0 && r.refused == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Bench {
            what:
                BenchCommand::Tick {
                    rollouts,
                    seconds,
                    store,
                },
        } => {
            let r = fledge_agent::bench::tick(rollouts, seconds, store).await?;
            println!(
                "tick: {} progressing Rollouts, {} ticks (one per simulated second), {store:?} store\n  tick mean {:.1?}, median {:.1?}, p90 {:.1?}, max {:.1?}",
                r.rollouts,
                r.ticks,
                r.mean(),
                r.quantile(0.5),
                r.quantile(0.9),
                r.quantile(1.0),
            );
            let writes: Vec<String> = r
                .writes
                .iter()
                .map(|(kind, n)| format!("{kind} {n}"))
                .collect();
            println!(
                "  writes over the run: {}\n  status writes once every Rollout is in its step: {:.1}/s ({} in {} s)\n  peak RSS of the process: {} MiB",
                writes.join(", "),
                r.steady_status_writes as f64 / r.steady_secs.max(1) as f64,
                r.steady_status_writes,
                r.steady_secs,
                r.peak_rss_kib
                    .map_or("?".into(), |k| format!("{:.1}", k as f64 / 1024.0)),
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench {
            what: BenchCommand::Look { requests },
        } => {
            let r = fledge_agent::bench::look(&[10, 60, 600, 1800], requests);
            for (secs, took) in &r.looks {
                println!("look at {secs:>5} s into the step: {took:.2?}");
            }
            println!("feeding one settled second: {:.2?}", r.feed_per_second);
            Ok(ExitCode::SUCCESS)
        }
        Command::Status { name, api } => {
            let client = ApiClient::new(&api.api)?;
            let (rollouts, problems) = match name {
                Some(n) => (vec![client.get(&n, &api.namespace).await?], Vec::new()),
                None => client.listing().await?,
            };
            if rollouts.is_empty() {
                println!("no rollouts");
            }
            for r in &rollouts {
                println!("{}", summary_line(r));
            }
            for problem in &problems {
                println!("cannot read: {problem}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Promote(n) => command_one(n, UserCommand::Promote).await,
        Command::Abort(n) => command_one(n, UserCommand::Abort).await,
        Command::Pause(n) => command_one(n, UserCommand::Pause).await,
        Command::Resume(n) => command_one(n, UserCommand::Resume).await,
        Command::Retry(n) => command_one(n, UserCommand::Retry).await,
        Command::Wait { named, timeout } => {
            let client = ApiClient::new(&named.api.api)?;
            let every = std::time::Duration::from_secs(1);
            match client
                .wait(&named.name, &named.api.namespace, every, timeout, |line| {
                    println!("{line}")
                })
                .await
            {
                Ok(outcome) if outcome.succeeded() => Ok(ExitCode::SUCCESS),
                Ok(outcome) => {
                    eprintln!("{}: {}", outcome.phase, outcome.reason);
                    Ok(ExitCode::from(1))
                }
                Err(e @ ClientError::Timeout { .. }) => {
                    eprintln!("fledge-agent: {e}");
                    Ok(ExitCode::from(2))
                }
                Err(e) => Err(e.into()),
            }
        }
    }
}

async fn command_one(
    named: fledge_agent::config::NamedArgs,
    command: UserCommand,
) -> anyhow::Result<ExitCode> {
    let client = ApiClient::new(&named.api.api)?;
    client
        .command(&named.name, &named.api.namespace, command)
        .await
        .with_context(|| format!("{command} {}", named.name))?;
    println!("{command}: sent to {}", named.name);
    Ok(ExitCode::SUCCESS)
}

fn simulate(args: SimulateArgs) -> anyhow::Result<ExitCode> {
    if args.table {
        print!(
            "{}",
            simulate::published_table(args.runs, args.step, args.seed)
        );
        return Ok(ExitCode::SUCCESS);
    }
    let baseline = simulate::Arm {
        rps: args.baseline_rps,
        error_rate: args.baseline_errors,
        median_ms: args.median_ms,
        p99_ms: args.p99_ms,
    };
    let canary = simulate::Arm {
        rps: args.canary_rps,
        error_rate: args.canary_errors.unwrap_or(args.baseline_errors),
        median_ms: args.median_ms * args.latency_shift,
        p99_ms: args.p99_ms * args.latency_shift,
    };
    let spec = AnalysisSpec {
        interval: args.look,
        false_alarm: args.false_alarm,
        ..AnalysisSpec::default()
    };
    let scenario = simulate::Scenario {
        baseline,
        canary,
        step: args.step,
        runs: args.runs,
        seed: args.seed,
        spec,
    };
    scenario
        .validate()
        .map_err(anyhow::Error::msg)
        .context("invalid simulation flags")?;
    let out = scenario.run();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(ExitCode::SUCCESS);
    }
    print!("{}", simulate::table(&scenario, &out));
    Ok(ExitCode::SUCCESS)
}
