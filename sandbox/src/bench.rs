//! The mesh benchmark: what one proxy hop of the sandbox mesh costs in CPU per request with no
//! filter, with the minimal proxy-wasm module, and with fledge's filter (on a host no rollout
//! concerns, and on the routed host), so fledge's cost can be told as a share of a whole hop.
//!
//! The proxy runs as its own process (`fledge-sandbox proxy`, the binary named in
//! [`MeshBenchConfig::proxy`]), so its CPU time — user and system, every thread, from
//! `/proc/<pid>/stat` — is the hop's alone; the backend and the open-loop load run in the calling
//! process. Each setup gets a warm-up, then `requests` requests at a fixed rate with an Istio
//! sidecar's request headers; setups take turns over the rounds and the median round is kept.
//! Linux only (it reads `/proc`). This module measures and returns numbers; printing is the
//! caller's.

use std::fmt;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fledge_sandbox_host::bench::{FILTER_CONFIG, HeaderSet, RequestPath};

use crate::{Backend, BackendConfig, Error, LoadConfig, Result, load};

/// The host the load calls; fledge's routed setup routes it, the unrouted one routes another.
const HOST: &str = "reviews.shop.svc.cluster.local";

/// Linux's unit for the CPU times in `/proc/<pid>/stat` (USER_HZ), fixed at 100 by its ABI.
const TICKS_PER_SECOND: f64 = 100.0;

/// What one hop runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setup {
    /// No filter: the mesh's own HTTP proxying and routing.
    NoFilter,
    /// The minimal module (reads one header) in the proxy-wasm host.
    Minimal,
    /// fledge's filter, its routing table naming another host: the fast path.
    FledgeUnrouted,
    /// fledge's filter routing the called host (rule, sticky split, measured).
    FledgeRouted,
}

impl Setup {
    pub const ALL: [Setup; 4] = [
        Setup::NoFilter,
        Setup::Minimal,
        Setup::FledgeUnrouted,
        Setup::FledgeRouted,
    ];
}

impl fmt::Display for Setup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Setup::NoFilter => "no filter",
            Setup::Minimal => "minimal module",
            Setup::FledgeUnrouted => "fledge, no rollout",
            Setup::FledgeRouted => "fledge, routed",
        })
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct MeshBenchConfig {
    /// The `fledge-sandbox` binary that runs the proxy.
    pub proxy: PathBuf,
    pub filter: PathBuf,
    pub minimal: PathBuf,
    /// Requests per second.
    pub rate: f64,
    /// Requests measured per setup and round.
    pub requests: u64,
    /// Requests sent before measuring (connections, first-touch memory, compiled modules).
    pub warmup: u64,
    pub rounds: usize,
    /// Where the configuration files are written.
    pub dir: PathBuf,
}

/// One setup's numbers (the median round by CPU per request).
#[derive(Debug, Clone, PartialEq)]
pub struct MeshRow {
    pub setup: Setup,
    /// The proxy process's CPU time (user + system) per request, in microseconds.
    pub cpu_us: f64,
    /// Requests sent and answered 200 in that round.
    pub sent: u64,
    pub ok: u64,
}

/// Runs every setup `rounds` times, in turns. Needs a multi-threaded tokio runtime.
pub async fn run(config: &MeshBenchConfig) -> Result<Vec<MeshRow>> {
    let backend = Backend::start(BackendConfig::new("v1")).await?;
    std::fs::create_dir_all(&config.dir).map_err(|e| io(&config.dir, e))?;
    let mut rounds: Vec<Vec<MeshRow>> = vec![Vec::new(); Setup::ALL.len()];
    for _ in 0..config.rounds.max(1) {
        for (i, setup) in Setup::ALL.into_iter().enumerate() {
            rounds[i].push(one(config, setup, backend.addr()).await?);
        }
    }
    Ok(rounds
        .into_iter()
        .filter_map(|mut rows| {
            rows.sort_by(|a, b| a.cpu_us.total_cmp(&b.cpu_us));
            let middle = rows.len() / 2;
            rows.into_iter().nth(middle)
        })
        .collect())
}

/// One setup, one round: a proxy process started, warmed, measured and stopped.
async fn one(config: &MeshBenchConfig, setup: Setup, backend: SocketAddr) -> Result<MeshRow> {
    let file = write_config(config, setup, backend)?;
    let proxy = Proxy::start(&config.proxy, &file)?;
    let measured = async {
        let load = |requests: u64| LoadConfig {
            users: 997,
            headers: sidecar_headers(),
            ..LoadConfig::new(
                proxy.addr,
                HOST,
                config.rate,
                Duration::from_secs_f64(requests as f64 / config.rate),
            )
        };
        load::run(&load(config.warmup)).await?;
        let before = proxy.cpu_ticks()?;
        let report = load::run(&load(config.requests)).await?;
        let after = proxy.cpu_ticks()?;
        let seconds = after.saturating_sub(before) as f64 / TICKS_PER_SECOND;
        Ok(MeshRow {
            setup,
            cpu_us: seconds * 1e6 / report.sent.max(1) as f64,
            sent: report.sent,
            ok: report.statuses.get(&200).copied().unwrap_or(0),
        })
    }
    .await;
    proxy.stop();
    measured
}

/// The request headers an Istio sidecar sees, less the pseudo headers (the load writes those)
/// and the user id (the load varies it).
fn sidecar_headers() -> Vec<(String, String)> {
    HeaderSet::Sidecar
        .request(RequestPath::Routed, 0)
        .into_iter()
        .filter(|(name, _)| !name.starts_with(':') && name != "x-user-id")
        .collect()
}

/// The sandbox config (and its VirtualService) for `setup`, written into the config's folder.
fn write_config(config: &MeshBenchConfig, setup: Setup, backend: SocketAddr) -> Result<PathBuf> {
    let vs = config.dir.join("reviews-vs.yaml");
    let vs_text = format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: reviews, namespace: shop}}\nspec:\n  hosts: [{HOST}]\n  http:\n  - name: canary\n    match:\n    - headers:\n        x-fledge-version: {{exact: v2}}\n    route:\n    - destination: {{host: {HOST}, subset: v2}}\n  - name: stable\n    route:\n    - destination: {{host: {HOST}, subset: v1}}\n"
    );
    std::fs::write(&vs, vs_text).map_err(|e| io(&vs, e))?;
    let filter = match setup {
        Setup::NoFilter => String::new(),
        Setup::Minimal => filter_section(&config.minimal, "{}"),
        Setup::FledgeRouted => filter_section(&config.filter, FILTER_CONFIG),
        Setup::FledgeUnrouted => filter_section(
            &config.filter,
            &FILTER_CONFIG.replace(HOST, "ratings.shop.svc.cluster.local"),
        ),
    };
    let text = format!(
        "listen: 127.0.0.1:0\nvirtualService: {vs}\n{filter}destinations:\n- host: {HOST}\n  port: 9080\n  subsets:\n    v1: {backend}\n    v2: {backend}\n",
        vs = vs.display()
    );
    let file = config.dir.join("sandbox.yaml");
    std::fs::write(&file, text).map_err(|e| io(&file, e))?;
    Ok(file)
}

fn filter_section(module: &Path, plugin: &str) -> String {
    // JSON is YAML: the plugin configuration goes in as a flow mapping on one line.
    let plugin: String = plugin.split_whitespace().collect::<Vec<_>>().join(" ");
    format!(
        "filter:\n  module: {}\n  workers: 2\n  config: {plugin}\n",
        module.display()
    )
}

fn io(path: &Path, e: std::io::Error) -> Error {
    Error::Load(format!("{}: {e}", path.display()))
}

/// A running `fledge-sandbox proxy` process.
struct Proxy {
    child: Child,
    addr: SocketAddr,
}

impl Proxy {
    /// Starts the proxy and waits for the line naming its address.
    fn start(binary: &Path, config: &Path) -> Result<Proxy> {
        let mut child = Command::new(binary)
            .arg("proxy")
            .arg("--config")
            .arg(config)
            .env("RUST_LOG", "error")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| io(binary, e))?;
        let mut line = String::new();
        if let Some(stdout) = child.stdout.take() {
            let _ = BufReader::new(stdout).read_line(&mut line);
        }
        let addr = line
            .trim()
            .rsplit(' ')
            .next()
            .and_then(|addr| addr.parse().ok());
        match addr {
            Some(addr) => Ok(Proxy { child, addr }),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                Err(Error::Load(format!(
                    "{} proxy --config {} did not say where it listens (it printed {line:?})",
                    binary.display(),
                    config.display()
                )))
            }
        }
    }

    /// User + system CPU time of every thread of the process so far, in clock ticks.
    fn cpu_ticks(&self) -> Result<u64> {
        let path = PathBuf::from(format!("/proc/{}/stat", self.child.id()));
        let stat = std::fs::read_to_string(&path).map_err(|e| io(&path, e))?;
        // Fields after the command name (which may hold spaces): state is the first, utime
        // the 12th and stime the 13th (proc(5)'s fields 14 and 15).
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        let field = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok());
        match (field(11), field(12)) {
            (Some(user), Some(system)) => Ok(user + system),
            _ => Err(Error::Load(format!(
                "{}: no CPU times in {stat:?}",
                path.display()
            ))),
        }
    }

    fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
