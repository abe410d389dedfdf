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
    /// The request headers each request carries.
    pub headers: HeaderSet,
}

/// Which request headers each benchmark request carries (the response and log are the same).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum HeaderSet {
    /// The five the sandbox mesh sends: four pseudo headers and the sticky user id.
    #[default]
    Mesh,
    /// Fifteen, as a browser's request through a mesh carries them: the same five plus
    /// user agent, accept headers, a 300-byte cookie, request id and B3 tracing headers.
    Realistic,
}

impl HeaderSet {
    /// The headers of request number `i` (the user id cycles over 997 users).
    fn request(self, i: usize) -> Vec<(String, String)> {
        let mut headers = vec![
            (":authority", "reviews.shop.svc.cluster.local".to_string()),
            (":path", "/reviews/1".to_string()),
            (":method", "GET".to_string()),
            (":scheme", "http".to_string()),
        ];
        if self == HeaderSet::Realistic {
            let cookie = format!(
                "_ga=GA1.2.{:010}.1700000000; theme=dark; lang=en-GB; cart={:032x}; \
                 consent=analytics%3Dtrue%26ads%3Dfalse; session={:064x}; \
                 prefs=eyJ2aWV3IjoibGlzdCIsInNvcnQiOiJwcmljZSIsInBhZ2UiOjEyfQ",
                i,
                i * 7919,
                i * 104_729
            );
            headers.extend([
                (
                    "user-agent",
                    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) \
                     Chrome/124.0 Safari/537.36"
                        .to_string(),
                ),
                (
                    "accept",
                    "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8".to_string(),
                ),
                ("accept-encoding", "gzip, deflate, br".to_string()),
                ("accept-language", "en-GB,en;q=0.9".to_string()),
                ("cookie", cookie),
                ("x-forwarded-proto", "https".to_string()),
                (
                    "x-request-id",
                    format!("{i:08x}-5f3c-4b7a-9d2e-6a1b0c9d8e7f"),
                ),
                ("x-b3-traceid", format!("{:032x}", i * 31)),
                ("x-b3-spanid", format!("{:016x}", i * 17)),
                ("x-b3-sampled", "1".to_string()),
            ]);
        }
        headers.push(("x-user-id", format!("user-{}", i % 997)));
        headers
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect()
    }
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
            headers: HeaderSet::Mesh,
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
    let headers = config.headers;
    requests(&filter, &mut batch(per_round.min(1000), headers));
    requests(&minimal, &mut batch(per_round.min(1000), headers));
    let (mut filter_rounds, mut minimal_rounds) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let elapsed = requests(&filter, &mut batch(per_round, headers));
        filter_rounds.push(per_request(elapsed, per_round));
        let elapsed = requests(&minimal, &mut batch(per_round, headers));
        minimal_rounds.push(per_request(elapsed, per_round));
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
    let elapsed = self::requests(&host, &mut batch(n, config.headers));
    host.shutdown().await;
    Ok(per_request(elapsed, n))
}

/// The request and response headers of `n` requests, built before any clock starts.
fn batch(n: usize, headers: HeaderSet) -> Batch {
    let requests = (0..n).map(|i| headers.request(i)).collect();
    let responses = vec![vec![(":status".to_string(), "200".to_string())]; n];
    Batch {
        requests,
        responses,
    }
}

struct Batch {
    requests: Vec<Vec<(String, String)>>,
    responses: Vec<Vec<(String, String)>>,
}

/// Runs the batch's requests through `host` as the mesh does and returns the time the host
/// calls took. Never inlined: it is the function callgrind's `--toggle-collect` names, so the
/// counts cover the host calls only, as the clock does.
#[inline(never)]
fn requests(host: &FilterHost, batch: &mut Batch) -> Duration {
    let started = Instant::now();
    let pairs = batch.requests.iter_mut().zip(&mut batch.responses);
    for (i, (headers, response)) in pairs.enumerate() {
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
