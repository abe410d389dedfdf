//! The telemetry server against what an unfriendly or broken client sends, over real gRPC:
//! messages that do not decode or are too large end their stream with a status and a reason,
//! counted; a stream without Hello, or silent after it, times out; a report full of junk series cannot hide a
//! Rollout's own series; an old filter that reports every host is accepted and what it sends
//! beyond the Rollouts' series is counted per host; late data is counted per host.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Buf, BufMut};
use fledge_agent::metrics::Metrics;
use fledge_agent::telemetry::{Hub, TelemetryService};
use fledge_core::windows::{SeriesKey, Traffic, Windows};
use fledge_proto::v1::{self, Hello, Report, Series};
use fledge_testkit::messages::{HelloExt, ReportExt, SeriesExt};
use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::{Channel, Server};
use tonic::{Code, Status};

struct Agent {
    addr: std::net::SocketAddr,
    store: Arc<Mutex<Windows>>,
    metrics: Arc<Metrics>,
}

/// An agent that stores only reviews v1/v2 (a Rollout's series) for 60 s, with short timeouts.
async fn agent() -> Agent {
    agent_with_idle(Duration::from_secs(5)).await
}

/// [`agent`], ending a stream that sends nothing for `idle` after its Hello.
async fn agent_with_idle(idle: Duration) -> Agent {
    let mut windows = Windows::new(60, 64);
    let needed: HashSet<_> = ["v1", "v2"]
        .iter()
        .map(|v| SeriesKey::new("reviews", v, Traffic::Live))
        .collect();
    windows.keep_only(needed);
    let store = Arc::new(Mutex::new(windows));
    let metrics = Arc::new(Metrics::new());
    let service = TelemetryService::new(store.clone(), Hub::new(), metrics.clone())
        .with_timeouts(Duration::from_millis(300), idle);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        Server::builder()
            .add_service(service.into_server())
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    Agent {
        addr,
        store,
        metrics,
    }
}

/// Sends raw bytes as messages of `Connect`: what a broken client could put on the wire.
#[derive(Default)]
struct RawCodec;
struct RawEncoder;
struct AgentDecoder;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = v1::AgentMessage;
    type Encoder = RawEncoder;
    type Decoder = AgentDecoder;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> AgentDecoder {
        AgentDecoder
    }
}

impl Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for AgentDecoder {
    type Item = v1::AgentMessage;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, Status> {
        let message = v1::AgentMessage::decode(src.copy_to_bytes(src.remaining()))
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Some(message))
    }
}

/// Opens `Connect`, sends `messages` (raw bytes each), and returns the status the agent ends
/// the stream with.
async fn ends_with(addr: std::net::SocketAddr, messages: Vec<Vec<u8>>) -> Status {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel)
        .max_encoding_message_size(64 << 20)
        .max_decoding_message_size(64 << 20);
    grpc.ready().await.unwrap();
    let (tx, rx) = mpsc::channel(16);
    for m in messages {
        tx.send(m).await.unwrap();
    }
    let path = tonic::codegen::http::uri::PathAndQuery::from_static("/fledge.v1.Telemetry/Connect");
    let response = grpc
        .streaming(tonic::Request::new(ReceiverStream::new(rx)), path, RawCodec)
        .await;
    let mut replies = match response {
        Ok(r) => r.into_inner(),
        Err(status) => return status,
    };
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match replies.message().await {
                Ok(Some(_table)) => continue,
                Ok(None) => panic!("the stream ended without a status"),
                Err(status) => return status,
            }
        }
    })
    .await
    .expect("the agent ends the stream");
    drop(tx);
    ended
}

fn hello() -> Vec<u8> {
    Hello::test().message().encode_to_vec()
}

fn report(report: Report) -> Vec<u8> {
    report.message().encode_to_vec()
}

fn requests(agent: &Agent, host: &str, version: &str) -> u64 {
    let store = agent.store.lock().unwrap();
    store
        .window(&SeriesKey::new(host, version, Traffic::Live), 0, i64::MAX)
        .counts
        .requests
}

async fn metrics_show(agent: &Agent, lines: &[&str]) {
    for _ in 0..100 {
        let text = agent.metrics.render();
        if lines.iter().all(|l| text.contains(l)) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let text = agent.metrics.render();
    let missing: Vec<_> = lines.iter().filter(|l| !text.contains(**l)).collect();
    panic!("missing {missing:?} in\n{text}");
}

#[tokio::test]
async fn undecodable_and_oversized_messages_end_their_stream_with_a_reason() {
    let agent = agent().await;
    // A Report whose series' host is not UTF-8: FilterMessage.report { series { host: ff fe } }.
    let series = [0x0a, 0x02, 0xff, 0xfe];
    let mut report_bytes = vec![0x22, series.len() as u8];
    report_bytes.extend(series);
    let mut not_utf8 = vec![0x12, report_bytes.len() as u8];
    not_utf8.extend(report_bytes);
    let status = ends_with(agent.addr, vec![hello(), not_utf8]).await;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status
            .message()
            .starts_with("a message does not decode as fledge.v1.FilterMessage"),
        "{}",
        status.message()
    );

    // Framing that is not protobuf at all.
    let status = ends_with(agent.addr, vec![vec![0xff; 12]]).await;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");

    // Over the 4 MiB limit.
    let status = ends_with(agent.addr, vec![hello(), vec![0; 5 << 20]]).await;
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("4194304 bytes"),
        "{}",
        status.message()
    );

    metrics_show(
        &agent,
        &[
            "fledge_agent_reports_rejected_total{reason=\"decode\"} 2",
            "fledge_agent_reports_rejected_total{reason=\"too_large\"} 1",
        ],
    )
    .await;
}

#[tokio::test]
async fn a_stream_without_hello_times_out_counted() {
    let agent = agent().await;
    let status = ends_with(agent.addr, vec![]).await;
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(
        status.message().starts_with("no Hello within"),
        "{}",
        status.message()
    );
    metrics_show(
        &agent,
        &["fledge_agent_reports_rejected_total{reason=\"hello_timeout\"} 1"],
    )
    .await;
}

#[tokio::test]
async fn a_stream_that_goes_quiet_after_hello_is_ended_counted() {
    let agent = agent_with_idle(Duration::from_millis(300)).await;
    let status = ends_with(agent.addr, vec![hello()]).await;
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(
        status.message().starts_with("nothing sent for"),
        "{}",
        status.message()
    );
    metrics_show(
        &agent,
        &["fledge_agent_reports_rejected_total{reason=\"idle\"} 1"],
    )
    .await;
}

#[tokio::test]
async fn a_replayed_report_is_refused_and_counted_once() {
    let agent = agent().await;
    let first = Report::test().seq(7).requests(10).latency_us(2000);
    let status = ends_with(
        agent.addr,
        vec![hello(), report(first.clone()), report(first)],
    )
    .await;
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("seq must grow"),
        "{}",
        status.message()
    );
    assert_eq!(requests(&agent, "reviews", "v2"), 10);
    metrics_show(
        &agent,
        &[
            "fledge_agent_reports_received_total 1\n",
            "fledge_agent_reports_rejected_total{reason=\"seq\"} 1",
        ],
    )
    .await;
}

/// An old filter reports every host it sees: the report is accepted, the Rollout's series kept,
/// the rest counted per host — even 4,000 junk series cannot fill a cap and hide the Rollout's.
#[tokio::test]
async fn an_old_filter_sending_every_host_is_accepted_and_counted() {
    let agent = agent().await;
    let junk: Vec<Series> = (0..4000)
        .map(|i| {
            Series::test()
                .host(&format!("junk-{i}.example"))
                .requests(3)
                .latency_us(900)
        })
        .collect();
    let first = Report::test().seq(1).with_series(junk);
    let second = Report::test().seq(2).with_series(vec![
        Series::test().version("v2").requests(20).latency_us(2000),
        Series::test().version("v1").requests(180).latency_us(2000),
        Series::test().host("ratings").requests(5).latency_us(2000),
    ]);
    // Older than the store's retention (60 s) but within the clock limit: late.
    let now = fledge_testkit::messages::now_unix_ms();
    let late = Report::test()
        .seq(3)
        .window_ms(now - 91_000, now - 90_000)
        .with_series(vec![
            Series::test().version("v2").requests(4).latency_us(2000),
        ]);
    let status = tokio::time::timeout(
        Duration::from_secs(2),
        ends_with(
            agent.addr,
            vec![hello(), report(first), report(second), report(late)],
        ),
    )
    .await;
    // The stream stays open (nothing was refused) until its idle timeout; not waited for here.
    assert!(status.is_err(), "the stream was refused: {status:?}");
    assert_eq!(requests(&agent, "reviews", "v2"), 20);
    assert_eq!(requests(&agent, "reviews", "v1"), 180);
    assert_eq!(
        requests(&agent, "ratings", "v2"),
        0,
        "no Rollout reads ratings"
    );
    {
        let store = agent.store.lock().unwrap();
        assert_eq!(store.series().len(), 2);
        // Hosts are counted by name up to a bound; the rest together.
        assert_eq!(store.ignored().len(), 1025);
        assert_eq!(store.ignored()["(other hosts)"].series, 4000 + 1 - 1024);
    }
    metrics_show(
        &agent,
        &[
            "fledge_agent_reports_received_total 3\n",
            "fledge_agent_ignored_series_total{host=\"junk-17.example\"} 1",
            "fledge_agent_ignored_requests_total{host=\"junk-17.example\"} 3",
            "fledge_agent_ignored_series_total{host=\"(other hosts)\"} 2977",
            "fledge_agent_late_requests_total{host=\"reviews\"} 4",
            "fledge_agent_over_cap_requests_total 0",
        ],
    )
    .await;
}
