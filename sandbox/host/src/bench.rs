//! The filter benchmark: the same requests through fledge's filter and through the minimal
//! fixture module (which reads one header), in one host and one run, so the ratio says what
//! fledge's filter costs on top of the host's own per-request work.
//!
//! Each request is what the sandbox mesh does per request: `on_request_headers` (a routed host,
//! a sticky user id), `on_response_headers` (`:status`) and `on_log` (duration, status, cluster).
//! The two modules take turns in rounds so drift on a shared machine hits both alike; the median
//! round is reported. This module measures and returns numbers; printing is the caller's.
//! Not here: the mesh's own HTTP cost, or anything statistical about the filter's output.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::{FilterHost, HostConfig, HostError, LogInfo, Result};

/// Environment variable naming fledge's filter module.
pub const FILTER_WASM_ENV: &str = "FLEDGE_FILTER_WASM";
/// Environment variable naming the minimal fixture module.
pub const MINIMAL_WASM_ENV: &str = "FLEDGE_MINIMAL_WASM";

/// fledge's filter module: `$FLEDGE_FILTER_WASM`, else the workspace's
/// `target/wasm32-wasip1/wasm/fledge_filter.wasm`. An error (saying to run `./dev wasm`) when
/// the file is not there.
pub fn filter_module() -> Result<PathBuf> {
    module(FILTER_WASM_ENV, "fledge_filter.wasm")
}

/// The minimal fixture module: `$FLEDGE_MINIMAL_WASM`, else the workspace's
/// `target/wasm32-wasip1/wasm/fledge_minimal_filter.wasm`.
pub fn minimal_module() -> Result<PathBuf> {
    module(MINIMAL_WASM_ENV, "fledge_minimal_filter.wasm")
}

fn module(env: &'static str, file: &str) -> Result<PathBuf> {
    let path = match std::env::var_os(env) {
        Some(path) if !path.is_empty() => PathBuf::from(path),
        _ => Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../target/wasm32-wasip1/wasm")
            .join(file),
    };
    if path.is_file() {
        Ok(path)
    } else {
        Err(HostError::ModuleMissing { path, env })
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    pub filter: PathBuf,
    pub minimal: PathBuf,
    /// Requests per module in total (spread over the rounds).
    pub requests: usize,
    /// Alternating rounds per module; the median round is reported.
    pub rounds: usize,
    /// VMs per host (requests go round robin, as in the mesh).
    pub workers: usize,
}

impl BenchConfig {
    /// Both modules from their usual places, 200 000 requests in 10 rounds, 2 workers.
    pub fn from_env() -> Result<Self> {
        Ok(Self {
            filter: filter_module()?,
            minimal: minimal_module()?,
            requests: 200_000,
            rounds: 10,
            workers: 2,
        })
    }
}

/// Per-request time of each module, and their ratio.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchReport {
    pub requests: usize,
    /// Median over rounds of the mean ns per request through fledge's filter.
    pub filter_ns: f64,
    /// The same through the minimal fixture.
    pub minimal_ns: f64,
    /// `filter_ns / minimal_ns`.
    pub ratio: f64,
    /// Callbacks that trapped during the run (should be 0).
    pub traps: u64,
    /// Property reads fledge's filter made during the requests that the host could not answer
    /// (should be 0: every request has its duration, code and flags; otherwise the filter
    /// measured less than it does in Envoy). Reads while configuring (an absent node label) are
    /// not counted.
    pub property_misses: u64,
}

/// The configuration fledge's filter runs with: client role, a header rule and a sticky 10 %
/// split on the benchmark's host, reports every second to an agent cluster this host does not
/// know (so the stream fails to open and the filter keeps counting, as with an agent down).
pub const FILTER_CONFIG: &str = r#"{
  "agent": {"cluster": "outbound|9090||fledge-agent.fledge-system.svc.cluster.local"},
  "role": "client",
  "report_interval_ms": 1000,
  "routes": [{
    "host": "reviews.shop.svc.cluster.local",
    "rules": [{"header": {"name": "x-beta", "exact": "1"}, "version": "v2"}],
    "split": {"stable": "v1", "canary": "v2", "canary_basis_points": 1000},
    "sticky_key": {"header": "x-user-id"}
  }]
}"#;

/// Runs the benchmark. Needs a tokio runtime (the hosts' ticks).
pub async fn run(config: &BenchConfig) -> Result<BenchReport> {
    let host_config = |module: &Path, plugin: &str| HostConfig {
        workers: config.workers.max(1),
        ..HostConfig::new(module, plugin)
    };
    let filter = FilterHost::start(host_config(&config.filter, FILTER_CONFIG)).await?;
    let minimal = FilterHost::start(host_config(&config.minimal, "")).await?;
    let misses_before = filter.stats().property_misses;
    let rounds = config.rounds.max(1);
    let per_round = (config.requests / rounds).max(1);
    // Warm both (first-touch memory, branch predictors) before measuring.
    requests(&filter, per_round.min(1000));
    requests(&minimal, per_round.min(1000));
    let (mut filter_rounds, mut minimal_rounds) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        filter_rounds.push(per_request(requests(&filter, per_round), per_round));
        minimal_rounds.push(per_request(requests(&minimal, per_round), per_round));
        // Let the tick tasks run between rounds, as a proxy's event loop would.
        tokio::task::yield_now().await;
    }
    let traps = filter.stats().traps + minimal.stats().traps;
    let property_misses = filter.stats().property_misses - misses_before;
    filter.shutdown().await;
    minimal.shutdown().await;
    let (filter_ns, minimal_ns) = (median(filter_rounds), median(minimal_rounds));
    Ok(BenchReport {
        requests: per_round * rounds,
        filter_ns,
        minimal_ns,
        ratio: filter_ns / minimal_ns,
        traps,
        property_misses,
    })
}

/// Which module [`profile`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Module {
    Filter,
    Minimal,
}

/// Runs `requests` requests through one module only (no rounds, no warm-up) and returns the
/// mean ns per request: the loop to put under `valgrind --tool=callgrind
/// --toggle-collect='*bench::requests*'`, which then counts instructions per request of that
/// module alone.
pub async fn profile(config: &BenchConfig, module: Module, requests: usize) -> Result<f64> {
    let (path, plugin) = match module {
        Module::Filter => (&config.filter, FILTER_CONFIG),
        Module::Minimal => (&config.minimal, ""),
    };
    let host = FilterHost::start(HostConfig {
        workers: config.workers.max(1),
        ..HostConfig::new(path, plugin)
    })
    .await?;
    let n = requests.max(1);
    let elapsed = self::requests(&host, n);
    host.shutdown().await;
    Ok(per_request(elapsed, n))
}

/// Runs `n` requests through `host` as the mesh does and returns the time the host calls took
/// (the request headers are built before the clock starts).
fn requests(host: &FilterHost, n: usize) -> Duration {
    let mut batch: Vec<Vec<(String, String)>> = (0..n)
        .map(|i| {
            vec![
                (
                    ":authority".to_string(),
                    "reviews.shop.svc.cluster.local".to_string(),
                ),
                (":path".to_string(), "/reviews/1".to_string()),
                (":method".to_string(), "GET".to_string()),
                (":scheme".to_string(), "http".to_string()),
                ("x-user-id".to_string(), format!("user-{}", i % 997)),
            ]
        })
        .collect();
    let mut responses = vec![vec![(":status".to_string(), "200".to_string())]; n];
    let started = Instant::now();
    for (i, (headers, response)) in batch.iter_mut().zip(&mut responses).enumerate() {
        let mut request = host.on_request_headers(headers);
        request.on_response_headers(response);
        request.on_log(LogInfo {
            duration: Duration::from_micros(1200 + (i % 50) as u64),
            response_code: Some(200),
            response_flags: 0,
            grpc_status: None,
            cluster_name: "outbound|9080|v1|reviews.shop.svc.cluster.local".into(),
        });
    }
    started.elapsed()
}

fn per_request(elapsed: Duration, n: usize) -> f64 {
    elapsed.as_nanos() as f64 / n as f64
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}
