//! An open-loop load generator: requests leave at a set rate whatever the answers do (so a slow
//! version cannot slow its own load down), optionally each with a user id header from a fixed
//! set of users (for sticky routing) and extra headers. The report gives the achieved sending
//! rate, answers by version (from the backends' [`VERSION_HEADER`]) and status, latency
//! quantiles, and which versions each user saw.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde::Serialize;
use tokio::task::JoinSet;

pub use crate::backend::VERSION_HEADER;
use crate::{Error, Result};

/// Requests in flight beyond which the generator skips a send (and counts it) rather than
/// pile up without bound.
const MAX_IN_FLIGHT: usize = 8192;

/// What to send.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// Where to connect (the mesh's proxy).
    pub target: SocketAddr,
    /// The Host / `:authority` of every request (the service being called).
    pub authority: String,
    pub path: String,
    /// Requests per second.
    pub rate: f64,
    pub duration: Duration,
    /// Number of distinct users; 0 sends no user header.
    pub users: u32,
    pub user_header: String,
    pub headers: Vec<(String, String)>,
    /// HTTP/2 with prior knowledge instead of HTTP/1.1.
    pub http2: bool,
    pub timeout: Duration,
}

impl LoadConfig {
    pub fn new(
        target: SocketAddr,
        authority: impl Into<String>,
        rate: f64,
        duration: Duration,
    ) -> LoadConfig {
        LoadConfig {
            target,
            authority: authority.into(),
            path: "/".into(),
            rate,
            duration,
            users: 0,
            user_header: "x-user-id".into(),
            headers: Vec::new(),
            http2: false,
            timeout: Duration::from_secs(10),
        }
    }

    pub fn users(mut self, users: u32) -> LoadConfig {
        self.users = users;
        self
    }

    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> LoadConfig {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// What came back.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LoadReport {
    pub sent: u64,
    /// Sends skipped because too many requests were in flight.
    pub skipped: u64,
    /// Requests that got no HTTP response (connection error or client timeout).
    pub failed: u64,
    /// Requests per second actually sent.
    pub achieved_rate: f64,
    pub elapsed: Duration,
    /// Responses by the version header (`"none"` when absent).
    pub versions: BTreeMap<String, u64>,
    pub statuses: BTreeMap<u16, u64>,
    pub p50: Duration,
    pub p99: Duration,
    /// Per user, responses by version.
    pub users: BTreeMap<String, BTreeMap<String, u64>>,
}

struct Answer {
    user: Option<String>,
    status: Option<u16>,
    version: Option<String>,
    latency: Duration,
}

/// Runs the load and waits for every answer.
pub async fn run(config: &LoadConfig) -> Result<LoadReport> {
    if !(config.rate > 0.0 && config.rate.is_finite()) {
        return Err(Error::Load(format!(
            "rate {} is not a positive number",
            config.rate
        )));
    }
    let total = (config.rate * config.duration.as_secs_f64()).round() as u64;
    let period = Duration::from_secs_f64(1.0 / config.rate);
    let client = Sender::connect(config).await?;
    let mut report = LoadReport::default();
    let mut latencies = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3)
        .map_err(|e| Error::Load(format!("histogram: {e}")))?;
    let mut in_flight = JoinSet::new();
    let start = tokio::time::Instant::now();
    let mut last_send = start;
    for i in 0..total {
        let due = start + period.mul_f64(i as f64);
        tokio::time::sleep_until(due).await;
        while let Some(done) = in_flight.try_join_next() {
            record(&mut report, &mut latencies, done);
        }
        if in_flight.len() >= MAX_IN_FLIGHT {
            report.skipped += 1;
            continue;
        }
        let user = (config.users > 0).then(|| format!("user-{}", i % u64::from(config.users)));
        let request = build(config, user.as_deref())?;
        let client = client.clone();
        let timeout = config.timeout;
        in_flight.spawn(async move {
            let began = Instant::now();
            let outcome = tokio::time::timeout(timeout, async {
                let response = client.send(request).await?;
                let status = response.status().as_u16();
                let version = response
                    .headers()
                    .get(VERSION_HEADER)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                response.into_body().collect().await.ok()?;
                Some((status, version))
            })
            .await
            .ok()
            .flatten();
            Answer {
                user,
                status: outcome.as_ref().map(|(s, _)| *s),
                version: outcome.and_then(|(_, v)| v),
                latency: began.elapsed(),
            }
        });
        report.sent += 1;
        last_send = tokio::time::Instant::now();
    }
    let send_window = (last_send - start + period).as_secs_f64();
    report.achieved_rate = report.sent as f64 / send_window;
    while let Some(done) = in_flight.join_next().await {
        record(&mut report, &mut latencies, done);
    }
    report.elapsed = start.elapsed();
    report.p50 = Duration::from_micros(latencies.value_at_quantile(0.5));
    report.p99 = Duration::from_micros(latencies.value_at_quantile(0.99));
    Ok(report)
}

fn build(config: &LoadConfig, user: Option<&str>) -> Result<http::Request<Empty<Bytes>>> {
    let mut builder =
        http::Request::builder().uri(format!("http://{}{}", config.target, config.path));
    if config.http2 {
        // One h2c connection to the target; the URI carries the `:authority`.
        builder = builder
            .version(http::Version::HTTP_2)
            .uri(format!("http://{}{}", config.authority, config.path));
    } else {
        builder = builder.header(http::header::HOST, &config.authority);
    }
    if let Some(user) = user {
        builder = builder.header(&config.user_header, user);
    }
    for (name, value) in &config.headers {
        builder = builder.header(name, value);
    }
    builder
        .body(Empty::new())
        .map_err(|e| Error::Load(format!("building the request: {e}")))
}

/// HTTP/1.1 through a connection pool, or HTTP/2 multiplexed on one connection.
#[derive(Clone)]
enum Sender {
    Http1(Box<Client<HttpConnector, Empty<Bytes>>>),
    Http2(hyper::client::conn::http2::SendRequest<Empty<Bytes>>),
}

impl Sender {
    async fn connect(config: &LoadConfig) -> Result<Sender> {
        if !config.http2 {
            let mut connector = HttpConnector::new();
            connector.set_nodelay(true);
            return Ok(Sender::Http1(Box::new(
                Client::builder(TokioExecutor::new()).build(connector),
            )));
        }
        let stream = tokio::net::TcpStream::connect(config.target)
            .await
            .map_err(|e| Error::Load(format!("connecting to {}: {e}", config.target)))?;
        let _ = stream.set_nodelay(true);
        let (sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .map_err(|e| {
                    Error::Load(format!("HTTP/2 handshake with {}: {e}", config.target))
                })?;
        tokio::spawn(connection);
        Ok(Sender::Http2(sender))
    }

    async fn send(
        &self,
        request: http::Request<Empty<Bytes>>,
    ) -> Option<http::Response<hyper::body::Incoming>> {
        match self {
            Sender::Http1(client) => client.request(request).await.ok(),
            Sender::Http2(sender) => sender.clone().send_request(request).await.ok(),
        }
    }
}

fn record(
    report: &mut LoadReport,
    latencies: &mut Histogram<u64>,
    done: std::result::Result<Answer, tokio::task::JoinError>,
) {
    let Ok(answer) = done else {
        report.failed += 1;
        return;
    };
    let Some(status) = answer.status else {
        report.failed += 1;
        return;
    };
    *report.statuses.entry(status).or_default() += 1;
    let version = answer.version.unwrap_or_else(|| "none".into());
    if let Some(user) = answer.user {
        *report
            .users
            .entry(user)
            .or_default()
            .entry(version.clone())
            .or_default() += 1;
    }
    *report.versions.entry(version).or_default() += 1;
    let micros = u64::try_from(answer.latency.as_micros())
        .unwrap_or(u64::MAX)
        .max(1);
    latencies.saturating_record(micros);
}

impl LoadReport {
    /// Responses answered (with any status).
    pub fn answered(&self) -> u64 {
        self.statuses.values().sum()
    }

    /// The share of answered requests served by `version`.
    pub fn share(&self, version: &str) -> f64 {
        let answered = self.answered();
        if answered == 0 {
            return 0.0;
        }
        self.versions.get(version).copied().unwrap_or(0) as f64 / answered as f64
    }

    /// The version each user saw, for users who saw exactly one.
    pub fn user_versions(&self) -> BTreeMap<&str, &str> {
        self.users
            .iter()
            .filter(|(_, versions)| versions.len() == 1)
            .filter_map(|(user, versions)| Some((user.as_str(), versions.keys().next()?.as_str())))
            .collect()
    }
}

impl fmt::Display for LoadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "sent {} in {:.1}s ({:.1}/s), answered {}, failed {}, skipped {}",
            self.sent,
            self.elapsed.as_secs_f64(),
            self.achieved_rate,
            self.answered(),
            self.failed,
            self.skipped
        )?;
        writeln!(
            f,
            "latency p50 {:.2}ms p99 {:.2}ms",
            self.p50.as_secs_f64() * 1e3,
            self.p99.as_secs_f64() * 1e3
        )?;
        for (version, count) in &self.versions {
            writeln!(
                f,
                "version {version}: {count} ({:.1}%)",
                self.share(version) * 100.0
            )?;
        }
        for (status, count) in &self.statuses {
            writeln!(f, "status {status}: {count}")?;
        }
        Ok(())
    }
}
