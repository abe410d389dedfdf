//! `fledge-agent bench streams`: many filter streams over real gRPC against the agent's real
//! telemetry server, run as a child process (`fledge-agent local` over an empty temporary
//! folder) so its CPU time and resident set can be read from `/proc/<pid>`. Each stream says
//! Hello and then reports once a second (one series, as an old filter that reports every host
//! would: no Rollout reads it, so the agent counts it as ignored); the streams share HTTP/2
//! connections up to the agent's per-connection bound. At the end every report sent must have
//! been counted by the agent (`fledge_agent_reports_received_total`) and none refused. A run
//! whose connections would not fit the open-files limit is refused up front, saying the limit
//! it needs.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use fledge_proto::v1::{self, FilterMessage, filter_message, telemetry_client::TelemetryClient};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

use crate::serve::MAX_STREAMS_PER_CONNECTION;

/// What to run.
#[derive(Clone, Debug)]
pub struct StreamsOptions {
    pub streams: usize,
    pub seconds: u64,
    /// Streams per HTTP/2 connection (at most the agent's bound).
    pub per_connection: usize,
    /// How often the agent's CPU and memory are sampled.
    pub sample_every: Duration,
    /// Samples before this are the warm-up (streams opening, buffers growing).
    pub warm_up: Duration,
}

impl StreamsOptions {
    /// `streams` for `seconds`; `quick`: 500 streams for 10 s, sampled more often.
    pub fn new(streams: usize, seconds: u64, per_connection: usize, quick: bool) -> Self {
        let (streams, seconds) = if quick { (500, 10) } else { (streams, seconds) };
        let sample_every = Duration::from_secs(if seconds >= 30 { 10 } else { 2 });
        Self {
            streams,
            seconds,
            per_connection: per_connection.clamp(1, MAX_STREAMS_PER_CONNECTION as usize),
            sample_every,
            warm_up: sample_every * 2,
        }
    }
}

/// One reading of the agent process.
#[derive(Clone, Debug)]
pub struct Sample {
    pub at: Duration,
    /// Share of one core since the previous sample.
    pub cpu: f64,
    pub rss_kib: u64,
    pub sent: u64,
    pub counted: u64,
}

/// What `bench streams` measured.
#[derive(Clone, Debug)]
pub struct StreamsResult {
    pub streams: usize,
    pub connections: usize,
    pub samples: Vec<Sample>,
    /// Share of one core over the whole run after the warm-up.
    pub cpu_after_warm_up: f64,
    /// Resident set at the first and the last sample after the warm-up, in KiB.
    pub rss_after_warm_up: (u64, u64),
    pub sent: u64,
    pub counted: u64,
    pub refused: u64,
}

impl StreamsResult {
    pub fn lost(&self) -> u64 {
        self.sent.saturating_sub(self.counted)
    }
}

/// The agent under test: a child process, killed when dropped.
struct AgentProcess {
    child: Child,
    dir: PathBuf,
    http: std::net::SocketAddr,
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A free port on the loopback interface (free when asked; the agent binds it right after).
fn free_port() -> anyhow::Result<std::net::SocketAddr> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("find a free port")?;
    Ok(listener.local_addr()?)
}

async fn start_agent() -> anyhow::Result<(AgentProcess, std::net::SocketAddr)> {
    let dir = std::env::temp_dir().join(format!("fledge-bench-streams-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    let (grpc, http) = (free_port()?, free_port()?);
    let exe = std::env::current_exe().context("find the fledge-agent binary")?;
    let child = Command::new(exe)
        .args(["local", "--dir"])
        .arg(&dir)
        .args(["--grpc", &grpc.to_string(), "--http", &http.to_string()])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .context("start `fledge-agent local`")?;
    let agent = AgentProcess { child, dir, http };
    let deadline = Instant::now() + Duration::from_secs(20);
    while http_get(http, "/healthz").await.is_err() {
        if Instant::now() > deadline {
            bail!("the agent did not answer /healthz on {http} within 20 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok((agent, grpc))
}

/// The body of `GET path` on the agent's HTTP API.
async fn http_get(addr: std::net::SocketAddr, path: &str) -> anyhow::Result<String> {
    let mut conn = tokio::net::TcpStream::connect(addr).await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    conn.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    conn.read_to_string(&mut response).await?;
    match response.split_once("\r\n\r\n") {
        Some((head, body)) if head.starts_with("HTTP/1.1 200") => Ok(body.to_string()),
        _ => bail!(
            "GET {path}: unexpected answer {:?}",
            crate::telemetry::validate::quote(&response)
        ),
    }
}

/// The sum of the samples of `metric` (any labels) in a Prometheus text exposition.
fn metric_sum(text: &str, metric: &str) -> u64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(metric)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

/// (CPU time in clock ticks, resident set in KiB) of process `pid`.
fn proc_usage(pid: u32) -> anyhow::Result<(u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces): state is field 3, utime 14, stime 15.
    let after = stat.rsplit_once(')').map(|(_, s)| s).unwrap_or_default();
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i - 3).and_then(|f| f.parse::<u64>().ok());
    let cpu = ticks(14)
        .zip(ticks(15))
        .map(|(u, s)| u + s)
        .context("read utime and stime")?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .context("read VmRSS")?;
    Ok((cpu, rss))
}

/// Clock ticks per second (`getconf CLK_TCK`; 100, Linux's USER_HZ, if that cannot run).
fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse().ok())
        .unwrap_or(100.0)
}

/// `latency_us_hdr` as the filter encodes one request of 20 ms.
fn one_request_histogram() -> Vec<u8> {
    use hdrhistogram::serialization::{Serializer, V2Serializer};
    let mut histogram = fledge_core::analysis::latency::new_histogram();
    histogram.saturating_record(20_000);
    let mut bytes = Vec::new();
    V2Serializer::new()
        .serialize(&histogram, &mut bytes)
        .expect("in-memory encoding");
    bytes
}

/// One series' report, as a filter that sees one request a second to `host` sends it.
fn report(seq: u64, host: &str, histogram: &[u8]) -> FilterMessage {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    FilterMessage {
        msg: Some(filter_message::Msg::Report(v1::Report {
            seq,
            window_start_unix_ms: now - 1000,
            window_end_unix_ms: now,
            series: vec![v1::Series {
                host: host.to_string(),
                version: "v1".into(),
                traffic: v1::Traffic::Live as i32,
                counts: Some(v1::Counts {
                    requests: 1,
                    ..Default::default()
                }),
                latency_us_hdr: histogram.to_vec(),
            }],
            dropped: 0,
        })),
    }
}

/// One filter stream: Hello, then a report every second from `start` until `end`.
async fn run_stream(
    channel: Channel,
    index: usize,
    start: tokio::time::Instant,
    end: tokio::time::Instant,
    histogram: Arc<Vec<u8>>,
    sent: Arc<AtomicU64>,
) -> anyhow::Result<()> {
    let (tx, rx) = mpsc::channel(4);
    tx.send(FilterMessage {
        msg: Some(filter_message::Msg::Hello(v1::Hello {
            proxy_id: format!("sidecar~10.0.{}.{}~bench.shop", index / 250, index % 250),
            role: v1::Role::Client as i32,
            filter_build: "fledge-bench".into(),
            ..Default::default()
        })),
    })
    .await?;
    let mut replies = TelemetryClient::new(channel)
        .connect(ReceiverStream::new(rx))
        .await?
        .into_inner();
    let host = format!("svc-{}.shop.svc.cluster.local", index % 200);
    let mut ticks = tokio::time::interval_at(start, Duration::from_secs(1));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seq = 0;
    loop {
        tokio::select! {
            at = ticks.tick() => {
                if at >= end {
                    return Ok(());
                }
                seq += 1;
                tx.send(report(seq, &host, &histogram)).await?;
                sent.fetch_add(1, Ordering::Relaxed);
            }
            reply = replies.message() => match reply {
                Ok(Some(_table)) => {}
                Ok(None) => bail!("stream {index}: the agent ended it"),
                Err(status) => bail!("stream {index}: {status}"),
            }
        }
    }
}

/// The soft limit on open files of this process (and of the agent it starts), from /proc.
fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// Runs the benchmark, printing a line per sample.
pub async fn streams(options: StreamsOptions) -> anyhow::Result<StreamsResult> {
    let per_connection = options.per_connection;
    let connections = options.streams.div_ceil(per_connection);
    // Each connection takes a descriptor here and one in the agent, which inherits the limit.
    let needed = connections as u64 + 256;
    if let Some(limit) = open_files_limit()
        && limit < needed
    {
        bail!(
            "{connections} connections need about {needed} open files, and this process may open {limit}: raise the limit (`ulimit -n {needed}`) or put more streams on a connection (--per-connection)"
        );
    }
    let (agent, grpc) = start_agent().await?;
    let pid = agent.child.id();
    let ticks_per_sec = clock_ticks();
    let histogram = Arc::new(one_request_histogram());
    let sent = Arc::new(AtomicU64::new(0));

    // Open the connections, then the streams, spread over the first second of reporting so
    // they report at different moments, as filters do.
    let mut channels = Vec::with_capacity(connections);
    for _ in 0..connections {
        let channel = Channel::from_shared(format!("http://{grpc}"))?
            .connect()
            .await
            .with_context(|| format!("connect to the agent's telemetry server at {grpc}"))?;
        channels.push(channel);
    }
    let began = tokio::time::Instant::now();
    let first_report = began + Duration::from_secs(2);
    let end = first_report + Duration::from_secs(options.seconds);
    let mut tasks = tokio::task::JoinSet::new();
    for index in 0..options.streams {
        let offset = Duration::from_secs(1) * index as u32 / options.streams.max(1) as u32;
        tasks.spawn(run_stream(
            channels[index / per_connection].clone(),
            index,
            first_report + offset,
            end + offset,
            histogram.clone(),
            sent.clone(),
        ));
    }
    drop(channels);

    let mut samples = Vec::new();
    let (mut cpu_before, _) = proc_usage(pid)?;
    let mut last = Instant::now();
    // (when, CPU ticks, index of the sample) at the end of the warm-up and at the last sample.
    let mut warm = None;
    let mut latest = (last, cpu_before);
    while tokio::time::Instant::now() + options.sample_every <= end + Duration::from_millis(500) {
        tokio::time::sleep(options.sample_every).await;
        let (cpu, rss_kib) = proc_usage(pid)?;
        let metrics = http_get(agent.http, "/metrics").await?;
        let elapsed = last.elapsed().as_secs_f64();
        last = Instant::now();
        let sample = Sample {
            at: began.elapsed(),
            cpu: (cpu - cpu_before) as f64 / ticks_per_sec / elapsed,
            rss_kib,
            sent: sent.load(Ordering::Relaxed),
            counted: metric_sum(&metrics, "fledge_agent_reports_received_total"),
        };
        cpu_before = cpu;
        latest = (last, cpu);
        println!(
            "  {:>4.0} s: agent {:>5.1} % of a core, RSS {:>6.1} MiB; reports sent {}, counted {}",
            sample.at.as_secs_f64(),
            sample.cpu * 100.0,
            sample.rss_kib as f64 / 1024.0,
            sample.sent,
            sample.counted
        );
        if warm.is_none() && sample.at >= options.warm_up {
            warm = Some((last, cpu, samples.len()));
        }
        samples.push(sample);
    }
    let mut failed = 0;
    while let Some(done) = tasks.join_next().await {
        if let Ok(Err(e)) | Err(e) = done.map_err(anyhow::Error::from) {
            failed += 1;
            if failed <= 3 {
                eprintln!("bench streams: {e:#}");
            }
        }
    }
    // Reports in flight reach the agent within a moment.
    let sent = sent.load(Ordering::Relaxed);
    let mut metrics = String::new();
    for _ in 0..50 {
        metrics = http_get(agent.http, "/metrics").await?;
        if metric_sum(&metrics, "fledge_agent_reports_received_total") >= sent {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (warm_at, warm_cpu, warm_index) = warm.context("the run ended before the warm-up did")?;
    let after: Vec<_> = samples[warm_index..].iter().map(|s| s.rss_kib).collect();
    let cpu_after_warm_up =
        (latest.1 - warm_cpu) as f64 / ticks_per_sec / (latest.0 - warm_at).as_secs_f64().max(1e-3);
    drop(agent);
    if failed > 0 {
        bail!("{failed} of {} streams failed", options.streams);
    }
    Ok(StreamsResult {
        streams: options.streams,
        connections,
        cpu_after_warm_up,
        rss_after_warm_up: (after[0], *after.last().unwrap_or(&after[0])),
        samples,
        sent,
        counted: metric_sum(&metrics, "fledge_agent_reports_received_total"),
        refused: metric_sum(&metrics, "fledge_agent_reports_rejected_total"),
    })
}
