//! The telemetry server over real gRPC: reports merged, bad ones refused with their reason on
//! their own stream only, routing tables pushed to connected filters, streams bound to the mesh
//! identity their `x-forwarded-client-cert` names.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use fledge_agent::metrics::Metrics;
use fledge_agent::telemetry::{Hub, TelemetryService};
use fledge_core::windows::{SeriesKey, Side, Traffic, Windows};
use fledge_proto::v1::{
    self, FilterMessage, Hello, HostRoute, Report, agent_message, telemetry_client::TelemetryClient,
};
use fledge_testkit::messages::{HelloExt, HostRouteExt, ReportExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::transport::{Channel, Server};

struct Agent {
    addr: std::net::SocketAddr,
    store: Arc<Mutex<Windows>>,
    hub: Arc<Hub>,
    metrics: Arc<Metrics>,
}

async fn agent() -> Agent {
    agent_requiring_identity(false).await
}

async fn agent_requiring_identity(required: bool) -> Agent {
    let store = Arc::new(Mutex::new(Windows::new(300, 64)));
    let hub = Hub::new();
    let metrics = Arc::new(Metrics::new());
    let service = TelemetryService::new(store.clone(), hub.clone(), metrics.clone())
        .requiring_peer_identity(required);
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
        hub,
        metrics,
    }
}

/// One filter stream: what we send, and the replies.
struct Filter {
    tx: mpsc::Sender<FilterMessage>,
    replies: tonic::Streaming<v1::AgentMessage>,
}

async fn connect(addr: std::net::SocketAddr) -> Filter {
    connect_as(addr, None).await
}

/// A stream carrying `xfcc` as the agent's sidecar would set it.
async fn connect_as(addr: std::net::SocketAddr, xfcc: Option<&str>) -> Filter {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let (tx, rx) = mpsc::channel(16);
    let mut request = tonic::Request::new(ReceiverStream::new(rx));
    if let Some(xfcc) = xfcc {
        let value = xfcc.parse().unwrap();
        request
            .metadata_mut()
            .insert("x-forwarded-client-cert", value);
    }
    let replies = TelemetryClient::new(channel)
        .connect(request)
        .await
        .unwrap()
        .into_inner();
    Filter { tx, replies }
}

/// The status a stream ends with, skipping the routing tables sent before it.
async fn refusal(filter: &mut Filter) -> tonic::Status {
    loop {
        match filter.replies.message().await {
            Ok(Some(m)) => assert!(
                matches!(m.msg, Some(agent_message::Msg::RoutingTable(_))),
                "{m:?}"
            ),
            Ok(None) => panic!("stream closed without a status"),
            Err(status) => return status,
        }
    }
}

fn hello(revision: u64) -> FilterMessage {
    Hello::test().revision(revision).message()
}

fn total(agent: &Agent, version: &str) -> (u64, u64) {
    let store = agent.store.lock().unwrap();
    let w = store.window(
        &SeriesKey::new("reviews", version, Traffic::Live),
        0,
        i64::MAX,
    );
    (w.counts.requests, w.counts.failures)
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..100 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test]
async fn reports_merge_and_a_bad_stream_is_refused_alone() {
    let agent = agent().await;
    let good = connect(agent.addr).await;
    good.tx.send(hello(0)).await.unwrap();
    let first = Report::test().seq(1).errors(3, 100).latency_us(2000);
    good.tx.send(first.message()).await.unwrap();

    let mut early = connect(agent.addr).await;
    let before_hello = Report::test().seq(1).requests(5).latency_us(2000);
    early.tx.send(before_hello.message()).await.unwrap();
    let status = early.replies.message().await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert_eq!(
        status.message(),
        "report 1 came before Hello; send Hello first"
    );

    let mut garbled = connect(agent.addr).await;
    garbled.tx.send(hello(0)).await.unwrap();
    let mut bad = Report::test().seq(4).requests(10).latency_us(2000);
    bad.series[0].latency_us_hdr.truncate(5);
    garbled.tx.send(bad.message()).await.unwrap();
    // The agent's current routing table may come first (the stream said Hello); then the refusal.
    let status = loop {
        match garbled.replies.message().await {
            Ok(Some(m)) => assert!(
                matches!(m.msg, Some(agent_message::Msg::RoutingTable(_))),
                "{m:?}"
            ),
            Ok(None) => panic!("stream closed without a status"),
            Err(status) => break status,
        }
    };
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status
            .message()
            .starts_with("report 4: series[0] reviews v2: latency_us_hdr does not decode"),
        "{}",
        status.message()
    );

    // The good stream never noticed.
    let second = Report::test().seq(2).errors(1, 50).latency_us(3000);
    let third = Report::test()
        .seq(3)
        .version("v1")
        .requests(400)
        .latency_us(1000);
    good.tx.send(second.message()).await.unwrap();
    good.tx.send(third.message()).await.unwrap();
    eventually("all good reports merged", || {
        total(&agent, "v2") == (150, 4) && total(&agent, "v1") == (400, 0)
    })
    .await;
    let metrics = agent.metrics.render();
    for line in [
        "fledge_agent_reports_received_total 3",
        "fledge_agent_reports_rejected_total{reason=\"before_hello\"} 1",
        "fledge_agent_reports_rejected_total{reason=\"histogram\"} 1",
    ] {
        assert!(metrics.contains(line), "missing {line:?} in\n{metrics}");
    }
    let streams = agent.hub.streams();
    assert_eq!(streams.len(), 1, "{streams:?}");
    assert_eq!(streams[0].reports, 3);
    assert_eq!(agent.hub.streams_for_host("reviews").len(), 1);
    // The good stream's Hello named no role: its series count on the callers' side only.
    let server_side = agent.store.lock().unwrap().window(
        &SeriesKey::new("reviews", "v2", Traffic::Live).on(Side::Server),
        0,
        i64::MAX,
    );
    assert_eq!(server_side.counts.requests, 0);
    // The refused streams are closed: only the good one is still counted as open.
    eventually("refused streams closed", || {
        agent
            .metrics
            .render()
            .contains("fledge_agent_streams_connected 1\n")
    })
    .await;
}

#[tokio::test]
async fn routing_tables_reach_connected_filters_and_newcomers() {
    let agent = agent().await;
    let mut first = connect(agent.addr).await;
    first.tx.send(hello(0)).await.unwrap();
    eventually("stream registered", || agent.hub.streams().len() == 1).await;
    // The agent's initial (empty) table is newer than revision 0, so it comes first.
    let initial = first.replies.message().await.unwrap().unwrap();
    let Some(agent_message::Msg::RoutingTable(initial)) = initial.msg else {
        panic!("expected a table")
    };
    assert!(initial.routes.is_empty());

    let route = HostRoute::test().host("reviews").split("v1", "v2", 500);
    let revision = agent.hub.set_route("reviews", Some(route.clone()));
    assert!(revision > initial.revision);
    let pushed = first.replies.message().await.unwrap().unwrap();
    let Some(agent_message::Msg::RoutingTable(pushed)) = pushed.msg else {
        panic!("expected a table")
    };
    assert_eq!(
        (pushed.revision, pushed.routes.clone()),
        (revision, vec![route.clone()])
    );

    // A filter that already holds this revision gets nothing; one that holds an older one gets it.
    let mut current = connect(agent.addr).await;
    current.tx.send(hello(revision)).await.unwrap();
    let mut stale = connect(agent.addr).await;
    stale.tx.send(hello(revision - 1)).await.unwrap();
    let got = stale.replies.message().await.unwrap().unwrap();
    assert!(matches!(got.msg, Some(agent_message::Msg::RoutingTable(t)) if t.revision == revision));
    let nothing = tokio::time::timeout(Duration::from_millis(300), current.replies.message()).await;
    assert!(
        nothing.is_err(),
        "a filter at the current revision was sent a table: {nothing:?}"
    );
    eventually("revisions recorded", || {
        let streams = agent.hub.streams();
        streams.len() == 3 && streams.iter().all(|s| s.sent_revision == revision)
    })
    .await;
}

#[tokio::test]
async fn a_stream_that_lies_about_its_namespace_is_refused_and_an_honest_one_is_not() {
    let agent = agent_requiring_identity(true).await;
    let shop = "By=spiffe://cluster.local/ns/fledge-system/sa/fledge-agent;Hash=9f;Subject=\"\";URI=spiffe://cluster.local/ns/shop/sa/web";
    let hello_in = |namespace: &str| {
        let mut hello = Hello::test();
        hello.namespace = namespace.into();
        hello.message()
    };
    let honest = connect_as(agent.addr, Some(shop)).await;
    honest.tx.send(hello_in("shop")).await.unwrap();
    let first = Report::test().seq(1).errors(2, 100).latency_us(2000);
    honest.tx.send(first.message()).await.unwrap();

    let mut liar = connect_as(agent.addr, Some(shop)).await;
    liar.tx.send(hello_in("payments")).await.unwrap();
    let status = refusal(&mut liar).await;
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert_eq!(
        status.message(),
        "Hello says namespace \"payments\" but the stream's mesh identity is spiffe://cluster.local/ns/shop/sa/web; a proxy reports only for its own namespace"
    );

    let mut outsider = connect_as(agent.addr, None).await;
    outsider.tx.send(hello_in("shop")).await.unwrap();
    let status = refusal(&mut outsider).await;
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status
            .message()
            .starts_with("the stream carries no mesh identity"),
        "{}",
        status.message()
    );

    // The honest stream never noticed, and says who it is.
    let second = Report::test().seq(2).errors(1, 50).latency_us(3000);
    honest.tx.send(second.message()).await.unwrap();
    eventually("the honest reports merged", || {
        total(&agent, "v2") == (150, 3)
    })
    .await;
    let streams = agent.hub.streams();
    assert_eq!(streams.len(), 1, "{streams:?}");
    assert_eq!(streams[0].peer, "spiffe://cluster.local/ns/shop/sa/web");
    let metrics = agent.metrics.render();
    for line in [
        "fledge_agent_reports_rejected_total{reason=\"peer_namespace\"} 1",
        "fledge_agent_reports_rejected_total{reason=\"peer_identity\"} 1",
    ] {
        assert!(metrics.contains(line), "missing {line:?} in\n{metrics}");
    }
}

#[tokio::test]
async fn unmeasured_requests_are_counted_by_host() {
    let agent = agent().await;
    let filter = connect(agent.addr).await;
    filter.tx.send(hello(0)).await.unwrap();
    let report = Report::test()
        .seq(1)
        .errors(2, 100)
        .latency_us(2000)
        .unmeasured(4);
    filter.tx.send(report.message()).await.unwrap();
    eventually("the report merged", || total(&agent, "v2") == (100, 2)).await;
    let metrics = agent.metrics.render();
    let line = "fledge_agent_unmeasured_requests_total{host=\"reviews\"} 4";
    assert!(metrics.contains(line), "missing {line:?} in\n{metrics}");
}
