//! Every setting of the `fledge-agent` binary: clap flags, each with a `FLEDGE_…` environment
//! variable where a deployment would set it. Parsing only; `main.rs` acts on them.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "fledge-agent",
    version,
    about = "fledge: progressive delivery decided inside the service mesh"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the agent with rollouts and VirtualServices kept as YAML files in a folder (no cluster).
    Local(LocalArgs),
    /// Run the agent in a Kubernetes cluster: Rollouts, VirtualServices and Events through the
    /// API server (in-cluster ServiceAccount, else KUBECONFIG).
    Kube(KubeArgs),
    /// Print the Rollout CustomResourceDefinition (YAML) for `kubectl apply -f -`.
    Crd,
    /// Simulate canary steps through the analysis: false-rollback rate and detection time.
    Simulate(SimulateArgs),
    /// Measure the agent's own speed.
    Bench {
        #[command(subcommand)]
        what: BenchCommand,
    },
    /// Show rollouts (all, or one NAME / NAMESPACE/NAME).
    Status {
        name: Option<String>,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Pass the current gate of a rollout (a pause "until promoted").
    Promote(NamedArgs),
    /// Stop a rollout and send every request back to stable.
    Abort(NamedArgs),
    /// Hold a rollout at its current step.
    Pause(NamedArgs),
    /// Undo a pause.
    Resume(NamedArgs),
    /// Start an aborted or rolled-back rollout again from its first step.
    Retry(NamedArgs),
    /// Wait until a rollout finishes: exit 0 when it succeeded, 1 when rolled back, aborted or failed.
    Wait {
        #[command(flatten)]
        named: NamedArgs,
        /// Give up after this long (exit 2).
        #[arg(long, default_value = "30m", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
}

#[derive(Debug, Args)]
pub struct ApiArgs {
    /// The agent's HTTP address.
    #[arg(long, env = "FLEDGE_API", default_value = "http://127.0.0.1:9091")]
    pub api: String,
    /// Namespace for names given without one.
    #[arg(long, short = 'n', env = "FLEDGE_NAMESPACE", default_value = "default")]
    pub namespace: String,
}

#[derive(Debug, Args)]
pub struct NamedArgs {
    /// NAME or NAMESPACE/NAME.
    pub name: String,
    #[command(flatten)]
    pub api: ApiArgs,
}

#[derive(Debug, Args)]
pub struct LocalArgs {
    /// Folder with Rollout and VirtualService YAML files; status is written back there.
    #[arg(long, env = "FLEDGE_DIR")]
    pub dir: PathBuf,
    /// Address of the telemetry gRPC server the filters connect to.
    #[arg(long, env = "FLEDGE_GRPC_ADDR", default_value = "127.0.0.1:9090")]
    pub grpc: std::net::SocketAddr,
    /// Address of the HTTP API, health and metrics.
    #[arg(long, env = "FLEDGE_HTTP_ADDR", default_value = "127.0.0.1:9091")]
    pub http: std::net::SocketAddr,
    /// The Prometheus server metric gates (`spec.analysis.metrics`) ask when they name none,
    /// e.g. `http://prometheus.istio-system:9090`.
    #[arg(long, env = "FLEDGE_PROMETHEUS_URL")]
    pub prometheus_url: Option<String>,
}

#[derive(Debug, Args)]
pub struct KubeArgs {
    /// Reconcile the Rollouts of this namespace only (default: every namespace).
    #[arg(long, env = "FLEDGE_WATCH_NAMESPACE")]
    pub namespace: Option<String>,
    /// Address of the telemetry gRPC server the filters connect to.
    #[arg(long, env = "FLEDGE_GRPC_ADDR", default_value = "0.0.0.0:9090")]
    pub grpc: std::net::SocketAddr,
    /// Address of the HTTP API, health, readiness and metrics.
    #[arg(long, env = "FLEDGE_HTTP_ADDR", default_value = "0.0.0.0:9091")]
    pub http: std::net::SocketAddr,
    /// This agent's name in the Events it records and the Lease it holds (set from the pod's
    /// name; default: the host's name).
    #[arg(long, env = "POD_NAME")]
    pub pod_name: Option<String>,
    /// Refuse telemetry streams that carry no mesh identity in `x-forwarded-client-cert`. Only
    /// meaningful with a sidecar in front of the agent (the install's), which sets that header
    /// from the client's certificate and drops one a client sent.
    #[arg(long, env = "FLEDGE_REQUIRE_PEER_IDENTITY")]
    pub require_peer_identity: bool,
    /// Requests one telemetry stream (one proxy) may report per second on average; a stream
    /// that claims more is refused, which bounds what one stream weighs in a comparison. Raise
    /// it for a gateway that serves more.
    #[arg(long, env = "FLEDGE_MAX_STREAM_REQUESTS_PER_SECOND", default_value_t = crate::telemetry::DEFAULT_MAX_REQUESTS_PER_SECOND)]
    pub max_stream_requests_per_second: u64,
    /// Also take commands over the HTTP API (`POST /api/v1/rollouts/NS/NAME/promote`), which
    /// has no authentication of its own. Off: commands are written on the Rollout object
    /// (`kubectl fledge`), where Kubernetes RBAC decides who may give them.
    #[arg(long, env = "FLEDGE_HTTP_COMMANDS")]
    pub http_commands: bool,
    /// The Prometheus server metric gates (`spec.analysis.metrics`) ask when they name none,
    /// e.g. `http://prometheus.istio-system:9090`.
    #[arg(long, env = "FLEDGE_PROMETHEUS_URL")]
    pub prometheus_url: Option<String>,
    /// Serve the rollout API's reads (`GET /api/v1/rollouts…`) and `/metrics` to the cluster.
    /// Off: only to the agent's own pod (127.0.0.1: the sidecar's metrics merging, `kubectl
    /// port-forward`); health, readiness and `/leaderz` are always served.
    #[arg(long, env = "FLEDGE_HTTP_READS")]
    pub http_reads: bool,
    #[command(flatten)]
    pub election: ElectionArgs,
}

/// Leader election among the agent's replicas: one leads (reconciles, writes, takes telemetry),
/// the others stand by. Checked by `fledge_core::lease::Timing::validate`.
#[derive(Debug, Args)]
pub struct ElectionArgs {
    /// The `coordination.k8s.io/v1` Lease the replicas elect a leader with.
    #[arg(long, env = "FLEDGE_LEASE_NAME", default_value = "fledge-agent")]
    pub lease_name: String,
    /// The Lease's namespace (default: the agent's own, from its ServiceAccount or kubeconfig).
    #[arg(long, env = "FLEDGE_LEASE_NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// A standby may take the Lease over this long after the leader's last renewal (whole seconds).
    #[arg(long, env = "FLEDGE_LEASE_DURATION", default_value = "15s", value_parser = humantime::parse_duration)]
    pub lease_duration: Duration,
    /// A leader that has not renewed the Lease for this long stops writing; shorter than the
    /// lease duration.
    #[arg(long, env = "FLEDGE_RENEW_DEADLINE", default_value = "10s", value_parser = humantime::parse_duration)]
    pub renew_deadline: Duration,
    /// Time between tries to take or renew the Lease; shorter than the renew deadline.
    #[arg(long, env = "FLEDGE_RETRY_PERIOD", default_value = "2s", value_parser = humantime::parse_duration)]
    pub retry_period: Duration,
}

impl ElectionArgs {
    pub fn timing(&self) -> fledge_core::lease::Timing {
        fledge_core::lease::Timing {
            lease_duration: self.lease_duration,
            renew_deadline: self.renew_deadline,
            retry_period: self.retry_period,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Reports decoded, validated and merged per second on one core.
    Ingest {
        #[arg(long, default_value_t = 200_000)]
        reports: usize,
        /// Requests per series per report (histogram size).
        #[arg(long, default_value_t = 50)]
        requests: u64,
    },
    /// Peak memory of the telemetry store: SERIES series reporting every second for SECS
    /// simulated seconds.
    Store {
        #[arg(long, default_value_t = 1000)]
        series: usize,
        #[arg(long, default_value_t = 1800)]
        secs: i64,
        /// Requests per series per second.
        #[arg(long, default_value_t = 200)]
        requests: u64,
    },
    /// Many filter streams over real gRPC, 1 report/s each, against the agent run as a child
    /// process: reports lost, the agent's CPU share and resident set over time.
    Streams {
        #[arg(long, default_value_t = 10_000)]
        streams: usize,
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// Streams per HTTP/2 connection (the agent allows 64).
        #[arg(long, default_value_t = 50)]
        per_connection: usize,
        /// A short run for CI: 500 streams for 10 s (overrides --streams and --seconds).
        #[arg(long)]
        quick: bool,
    },
    /// The reconcile tick with ROLLOUTS progressing canaries, and the writes per second it makes.
    Tick {
        #[arg(long, default_value_t = 1000)]
        rollouts: usize,
        /// Simulated seconds (one tick each).
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        #[arg(long, value_enum, default_value = "memory")]
        store: crate::bench::TickStore,
    },
    /// One analysis look's time at 10 s and at 30 min into a step.
    Look {
        /// Canary requests per second (the baseline gets 9×).
        #[arg(long, default_value_t = 20)]
        requests: u64,
    },
}

#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// Canary requests per second.
    #[arg(long, default_value_t = 20.0)]
    pub canary_rps: f64,
    /// Baseline requests per second.
    #[arg(long, default_value_t = 180.0)]
    pub baseline_rps: f64,
    /// Baseline error rate (0.005 = 0.5 %).
    #[arg(long, default_value_t = 0.005)]
    pub baseline_errors: f64,
    /// Canary error rate; defaults to the baseline's.
    #[arg(long)]
    pub canary_errors: Option<f64>,
    /// Baseline latency median, milliseconds (lognormal).
    #[arg(long, default_value_t = 50.0)]
    pub median_ms: f64,
    /// Baseline latency p99, milliseconds.
    #[arg(long, default_value_t = 200.0)]
    pub p99_ms: f64,
    /// Canary latency = baseline latency × this (1.5 = median and p99 +50 %).
    #[arg(long, default_value_t = 1.0)]
    pub latency_shift: f64,
    /// Length of the simulated step.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    pub step: Duration,
    /// Time between looks.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub look: Duration,
    /// Probability of rolling back a good canary over a step.
    #[arg(long, default_value_t = 0.01)]
    pub false_alarm: f64,
    #[arg(long, default_value_t = 1000)]
    pub runs: usize,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Print the outcome as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Print the published table instead (BENCHMARKS.md): healthy, error and latency canaries at
    /// 2, 20 and 200 canary requests/s, with the default analysis, `--runs` per cell, `--step` each.
    #[arg(long)]
    pub table: bool,
}
