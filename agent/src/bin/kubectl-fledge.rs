//! `kubectl-fledge`, the kubectl plugin (`kubectl fledge …` once it is on the PATH): reads and
//! commands Rollouts through the Kubernetes API with the user's kubeconfig. Parses flags and
//! prints; the calls are `fledge_agent::kubectl`, the decisions the agent's.
//!
//! Exit codes: 0 done (a command applied, a `wait` that succeeded); 1 a command the agent ignored
//! or refused, or a `wait` that ended rolled back, aborted or failed; 2 gave up waiting (the agent
//! did not take the command in time, or `wait` timed out); 3 the call could not be made.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use fledge_agent::kubectl::{self, Plugin, Waited, show};
use fledge_core::rollout::{CommandOutcome, UserCommand};

#[derive(Debug, Parser)]
#[command(
    name = "kubectl-fledge",
    version,
    about = "fledge Rollouts through the Kubernetes API (kubectl fledge …)"
)]
struct Cli {
    /// The namespace (default: the kubeconfig context's, else `default`).
    #[arg(short, long, global = true)]
    namespace: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List Rollouts: phase, step, canary weight, last verdict, last command.
    Get {
        /// Only this Rollout.
        name: Option<String>,
        /// In every namespace.
        #[arg(short = 'A', long)]
        all_namespaces: bool,
    },
    /// One Rollout in full: where it is, the last analysis, the last command, recent decisions.
    Status { name: String },
    /// Pass the current gate (a pause "until promoted", or the whole rollout when it is done).
    Promote(Given),
    /// Stop now and send every request back to stable.
    Abort(Given),
    /// Hold the current step.
    Pause(Given),
    /// Undo a pause.
    Resume(Given),
    /// Start an aborted or rolled-back rollout again from its first step.
    Retry(Given),
    /// Wait until the Rollout ends: exit 0 succeeded, 1 rolled back/aborted/failed (with the
    /// evidence), 2 timed out.
    Wait {
        name: String,
        #[arg(long, default_value = "30m", value_parser = humantime::parse_duration)]
        timeout: Duration,
        /// How often to read the Rollout.
        #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
        every: Duration,
    },
}

#[derive(Debug, clap::Args)]
struct Given {
    name: String,
    /// How long to wait for the agent to take the command (0s: do not wait).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    ack_timeout: Duration,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("kubectl fledge: {e}");
            ExitCode::from(3)
        }
    }
}

async fn run(cli: Cli) -> kubectl::Result<u8> {
    let plugin = Plugin::connect().await?;
    let namespace = cli.namespace.unwrap_or_else(|| plugin.namespace.clone());
    let who = plugin.whoami().await;
    let given = |g: Given, c: UserCommand| (g, c);
    let (g, command) = match cli.command {
        Command::Get {
            name,
            all_namespaces,
        } => {
            let rollouts = match name {
                Some(name) => vec![
                    plugin
                        .get(&kubectl::key_of(&name, &namespace)?, &who)
                        .await?,
                ],
                None => {
                    let ns = (!all_namespaces).then_some(namespace.as_str());
                    plugin.list(ns, &who).await?
                }
            };
            if rollouts.is_empty() {
                eprintln!("No Rollouts in namespace {namespace}.");
            } else {
                print!("{}", show::table(&rollouts, all_namespaces));
            }
            return Ok(0);
        }
        Command::Status { name } => {
            let rollout = plugin
                .get(&kubectl::key_of(&name, &namespace)?, &who)
                .await?;
            print!("{}", show::status(&rollout));
            return Ok(0);
        }
        Command::Wait {
            name,
            timeout,
            every,
        } => {
            let key = kubectl::key_of(&name, &namespace)?;
            let mut last = String::new();
            let waited = plugin
                .wait(&key, &who, every, timeout, |r| {
                    let line = fledge_agent::cli::summary_line(r);
                    if line != last {
                        println!("{line}");
                        last = line;
                    }
                })
                .await?;
            return Ok(match waited {
                Waited::Succeeded(_) => 0,
                Waited::Failed(r) => {
                    eprint!("{}", show::evidence(&r));
                    1
                }
                Waited::TimedOut(r) => {
                    eprintln!(
                        "kubectl fledge: gave up waiting for {key} after {}; it is {}",
                        humantime::format_duration(timeout),
                        fledge_agent::cli::summary_line(&r)
                    );
                    2
                }
            });
        }
        Command::Promote(g) => given(g, UserCommand::Promote),
        Command::Abort(g) => given(g, UserCommand::Abort),
        Command::Pause(g) => given(g, UserCommand::Pause),
        Command::Resume(g) => given(g, UserCommand::Resume),
        Command::Retry(g) => given(g, UserCommand::Retry),
    };
    let key = kubectl::key_of(&g.name, &namespace)?;
    let recorded = plugin.command(&key, command, &who).await?;
    println!(
        "{command} recorded on Rollout {key} as command {} by {who}",
        recorded.id
    );
    if g.ack_timeout.is_zero() {
        return Ok(0);
    }
    let every = Duration::from_millis(500);
    match plugin
        .taken(&key, recorded.id, &who, every, g.ack_timeout)
        .await?
    {
        Some(taken) if taken.id == recorded.id => {
            println!("{:?}: {}", taken.outcome, taken.reason);
            Ok(if taken.outcome == CommandOutcome::Applied {
                0
            } else {
                1
            })
        }
        Some(later) => {
            eprintln!(
                "kubectl fledge: a later command ({} by {}, command {}) was taken instead",
                later.command, later.by, later.id
            );
            Ok(1)
        }
        None => {
            eprintln!(
                "kubectl fledge: the agent has not taken command {} within {}; it stays recorded \
                 and is taken when the agent runs (kubectl -n fledge-system get pods)",
                recorded.id,
                humantime::format_duration(g.ack_timeout)
            );
            Ok(2)
        }
    }
}
