//! The filter benchmark: the same requests through fledge's filter and through the minimal
//! fixture module (which reads one header), in one host and one run, so the ratio says what
//! fledge's filter costs on top of the host's own per-request work.
//!
//! Each request is what the sandbox mesh does per request: `on_request_headers`,
//! `on_response_headers` (`:status`) and `on_log` (duration, status, cluster), with the headers
//! an Istio sidecar sees ([`HeaderSet`]), on both of the filter's paths ([`RequestPath`]): to
//! the host a rollout routes (rule, sticky split, version header, measured) and to any other
//! host (one header read, nothing at log time). The two modules take turns in rounds so drift on
//! a shared machine hits both alike; the median round is reported. This module measures and returns numbers; printing is the caller's.
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
    /// Requests per module and path in total (spread over the rounds).
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
    /// The five the sandbox mesh's load sends: four pseudo headers and the sticky user id.
    Mesh,
    /// Eighteen, as an Istio sidecar's outbound HTTP filters see a request from an application
    /// behind it: the pseudo headers, user agent, accept headers, a 300-byte cookie, the
    /// request id, B3 and W3C trace context, `x-forwarded-proto`, Istio's peer metadata
    /// exchange headers (a 458-byte base64 value among them), and the sticky user id.
    #[default]
    Sidecar,
}

/// Which of the filter's two paths a request takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestPath {
    /// To the host the filter's routing table names (`reviews`): routed by a header rule and a
    /// sticky split, the version header written, measured at `on_log`.
    Routed,
    /// To a host no rollout concerns (`ratings`): one header read, nothing at `on_log` — most of
    /// a mesh's traffic.
    Unrouted,
}

impl RequestPath {
    pub const ALL: [RequestPath; 2] = [RequestPath::Routed, RequestPath::Unrouted];

    fn authority(self) -> &'static str {
        match self {
            RequestPath::Routed => ROUTED_HOST,
            RequestPath::Unrouted => "ratings.shop.svc.cluster.local",
        }
    }
}

/// The host [`FILTER_CONFIG`] routes.
const ROUTED_HOST: &str = "reviews.shop.svc.cluster.local";

/// Istio's metadata exchange value (`x-envoy-peer-metadata`): a base64 protobuf `Struct` of the
/// calling workload's labels, names and mesh id, of the size a Deployment's pod carries.
const PEER_METADATA: &str = "ChoKDkFQUF9DT05UQUlORVJTEggaBnJldmlld3MKGgoKQ0xVU1RFUl9JRBIMGgpLdWJlcm5ldGVzCh4KDElOU1RBTkNFX0lQUxIOGgwxMC4yNDQuMS4xNzcKGQoNSVNUSU9fVkVSU0lPThIIGgYxLjI0LjAKwQEKBkxBQkVMUxK2ASqzAQoQCgNhcHASCRoHcmV2aWV3cwohChFwb2QtdGVtcGxhdGUtaGFzaBIMGgo3ZDk1ZjZiOGM0CiQKGXNlY3VyaXR5LmlzdGlvLmlvL3Rsc01vZGUSBxoFaXN0aW8KLAofc2VydmljZS5pc3Rpby5pby9jYW5vbmljYWwtbmFtZRIJGgdyZXZpZXdzCioKI3NlcnZpY2UuaXN0aW8uaW8vY2Fub25pY2FsLXJldmlzaW9uEgMaAXYxChoKB01FU0hfSUQSDxoNY2x1c3Rlci5sb2NhbA";

impl HeaderSet {
    /// The headers of request number `i` on `path` (the user id cycles over 997 users).
    pub fn request(self, path: RequestPath, i: usize) -> Vec<(String, String)> {
        let mut headers = vec![
            (":authority", path.authority().to_string()),
            (":path", format!("/reviews/{}", i % 100)),
            (":method", "GET".to_string()),
            (":scheme", "http".to_string()),
        ];
        if self == HeaderSet::Sidecar {
            let cookie = format!(
                "_ga=GA1.2.{:010}.1700000000; theme=dark; lang=en-GB; cart={:032x}; \
                 consent=analytics%3Dtrue%26ads%3Dfalse; session={:064x}; \
                 prefs=eyJ2aWV3IjoibGlzdCIsInNvcnQiOiJwcmljZSIsInBhZ2UiOjEyfQ",
                i,
                i * 7919,
                i * 104_729
            );
            let (trace, span) = (i * 31, i * 17);
            headers.extend([
                (
                    "user-agent",
                    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) \
                     Chrome/124.0 Safari/537.36"
                        .to_string(),
                ),
                ("accept", "application/json, text/plain, */*".to_string()),
                ("accept-encoding", "gzip, deflate, br".to_string()),
                ("cookie", cookie),
                ("x-forwarded-proto", "http".to_string()),
                (
                    "x-request-id",
                    format!("{i:08x}-5f3c-4b7a-9d2e-6a1b0c9d8e7f"),
                ),
                ("x-b3-traceid", format!("{trace:032x}")),
                ("x-b3-spanid", format!("{span:016x}")),
                ("x-b3-parentspanid", format!("{:016x}", span + 1)),
                ("x-b3-sampled", "1".to_string()),
                ("traceparent", format!("00-{trace:032x}-{span:016x}-01")),
                (
                    "x-envoy-peer-metadata-id",
                    "sidecar~10.244.1.177~productpage-v1-6b746f74dc-9stvs.shop~shop.svc.cluster.local"
                        .to_string(),
                ),
                ("x-envoy-peer-metadata", PEER_METADATA.to_string()),
            ]);
        }
        headers.push(("x-user-id", format!("user-{}", i % 997)));
        // Grown one header at a time, as the mesh builds a request's list: with its slack, a
        // header the filter adds does not move the whole list.
        let mut list = Vec::new();
        for (name, value) in headers {
            list.push((name.to_string(), value));
        }
        list
    }
}

impl BenchConfig {
    /// Both modules from their usual places, 200 000 requests in 10 rounds, 2 workers,
    /// sidecar headers.
    pub fn from_env() -> Result<Self> {
        Ok(Self {
            filter: filter_module()?,
            minimal: minimal_module()?,
            requests: 200_000,
            rounds: 10,
            workers: 2,
            headers: HeaderSet::Sidecar,
        })
    }
}

/// Per-request time of each module on one path, and their ratio.
#[derive(Debug, Clone, PartialEq)]
pub struct PathReport {
    /// Median over rounds of the mean ns per request through fledge's filter.
    pub filter_ns: f64,
    /// The same through the minimal fixture, with the same requests.
    pub minimal_ns: f64,
    /// `filter_ns / minimal_ns`.
    pub ratio: f64,
    /// Requests fledge's filter wrote the version header into (all of them on the routed
    /// path, none on the other).
    pub versioned: usize,
}

/// Both paths' numbers.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchReport {
    /// Requests per module and path.
    pub requests: usize,
    pub routed: PathReport,
    pub unrouted: PathReport,
    /// Callbacks that trapped during the run (should be 0).
    pub traps: u64,
    /// Property reads fledge's filter made during the requests that the host could not answer
    /// (should be 0: every routed request has its duration, code and flags; otherwise the filter
    /// measured less than it does in Envoy). Reads while configuring (an absent node label) are
    /// not counted.
    pub property_misses: u64,
}

impl BenchReport {
    pub fn path(&self, path: RequestPath) -> &PathReport {
        match path {
            RequestPath::Routed => &self.routed,
            RequestPath::Unrouted => &self.unrouted,
        }
    }
}

/// The lines the benchmark prints under its heading: each path, then traps and misses.
impl std::fmt::Display for BenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for path in RequestPath::ALL {
            let p = self.path(path);
            writeln!(
                f,
                "  {path:?}: fledge filter {:.0} ns/request, minimal module {:.0} ns/request, ratio {:.2} ({} versioned)",
                p.filter_ns, p.minimal_ns, p.ratio, p.versioned
            )?;
        }
        write!(
            f,
            "  traps {}, property misses {}",
            self.traps, self.property_misses
        )
    }
}

/// The configuration fledge's filter runs with: client role, a header rule and a sticky 10 %
/// split on the benchmark's routed host, reports every second to an agent cluster this host
/// does not know (so the stream fails to open and the filter keeps counting, as with an agent
/// down).
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

/// The header fledge's filter writes the version into (its default).
const VERSION_HEADER: &str = "x-fledge-version";

/// Runs the benchmark on both paths. Needs a tokio runtime (the hosts' ticks).
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
    let headers = config.headers;
    // Warm both (first-touch memory, branch predictors) before measuring.
    for path in RequestPath::ALL {
        requests(&filter, &mut batch(per_round.min(1000), headers, path));
        requests(&minimal, &mut batch(per_round.min(1000), headers, path));
    }
    let mut rounds_of = [[Vec::new(), Vec::new()], [Vec::new(), Vec::new()]];
    let mut versioned = [0, 0];
    for _ in 0..rounds {
        for (p, path) in RequestPath::ALL.into_iter().enumerate() {
            let mut requests_of = batch(per_round, headers, path);
            let elapsed = requests(&filter, &mut requests_of);
            rounds_of[p][0].push(per_request(elapsed, per_round));
            versioned[p] += requests_of.versioned();
            let elapsed = requests(&minimal, &mut batch(per_round, headers, path));
            rounds_of[p][1].push(per_request(elapsed, per_round));
        }
        // Let the tick tasks run between rounds, as a proxy's event loop would.
        tokio::task::yield_now().await;
    }
    let traps = filter.stats().traps + minimal.stats().traps;
    let property_misses = filter.stats().property_misses - misses_before;
    filter.shutdown().await;
    minimal.shutdown().await;
    let [routed, unrouted] = rounds_of.map(|[filter, minimal]| (median(filter), median(minimal)));
    let report = |(filter_ns, minimal_ns): (f64, f64), versioned| PathReport {
        filter_ns,
        minimal_ns,
        ratio: filter_ns / minimal_ns,
        versioned,
    };
    Ok(BenchReport {
        requests: per_round * rounds,
        routed: report(routed, versioned[0]),
        unrouted: report(unrouted, versioned[1]),
        traps,
        property_misses,
    })
}

/// The minimal fixture's plugin configuration for the floor `calls` (its `CALLS`; a test checks
/// the fixture takes it: every request then leaves with the version header).
const MINIMAL_CALLS: &str = "calls";
/// The minimal fixture's plugin configuration for the floor `pairs` (its `PAIRS`).
const MINIMAL_PAIRS: &str = "pairs";

/// Which module [`profile`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Module {
    Filter,
    Minimal,
    /// The minimal fixture making only the host calls of fledge's routed request (its floor).
    Calls,
    /// The minimal fixture making the fewest host calls a routing, measuring filter could.
    Pairs,
}

/// What [`profile`] measured and checked of one module's requests.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Profiled {
    /// Mean wall-clock ns per request.
    pub ns: f64,
    /// Requests that left the module with the version header.
    pub versioned: usize,
    pub traps: u64,
    /// Property reads the host could not answer.
    pub property_misses: u64,
}

/// Runs `requests` requests on `path` through one module only (no rounds, no warm-up): the
/// loop to put under `valgrind --tool=callgrind --toggle-collect='*bench::requests*'`, which
/// then counts instructions per request of that module alone.
pub async fn profile(
    config: &BenchConfig,
    module: Module,
    path: RequestPath,
    requests: usize,
) -> Result<Profiled> {
    let (module, plugin) = match module {
        Module::Filter => (&config.filter, FILTER_CONFIG),
        Module::Minimal => (&config.minimal, ""),
        Module::Calls => (&config.minimal, MINIMAL_CALLS),
        Module::Pairs => (&config.minimal, MINIMAL_PAIRS),
    };
    let host = FilterHost::start(HostConfig {
        workers: config.workers.max(1),
        ..HostConfig::new(module, plugin)
    })
    .await?;
    // What the module read at its start (node metadata a host may not have) is not a request's.
    let misses_before = host.stats().property_misses;
    let n = requests.max(1);
    let mut batch = batch(n, config.headers, path);
    let elapsed = self::requests(&host, &mut batch);
    let stats = host.stats();
    host.shutdown().await;
    Ok(Profiled {
        ns: per_request(elapsed, n),
        versioned: batch.versioned(),
        traps: stats.traps,
        property_misses: stats.property_misses - misses_before,
    })
}

/// The request and response headers of `n` requests on `path`, built before any clock starts.
fn batch(n: usize, headers: HeaderSet, path: RequestPath) -> Batch {
    let requests = (0..n).map(|i| headers.request(path, i)).collect();
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

impl Batch {
    /// Requests that left the filter with a version header.
    fn versioned(&self) -> usize {
        self.requests
            .iter()
            .filter(|headers| headers.iter().any(|(name, _)| name == VERSION_HEADER))
            .count()
    }
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
