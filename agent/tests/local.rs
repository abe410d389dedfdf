//! `LocalAgent::stop` leaves nothing attached: a filter's open stream ends with UNAVAILABLE, its
//! connection closes (so a retry cannot land on the stopped agent's still-open connection), and
//! the ports are free for the next agent on the same folder. One connection carries at most
//! [`MAX_STREAMS_PER_CONNECTION`] streams; more wait for a free slot.

use std::net::SocketAddr;
use std::time::Duration;

use fledge_agent::local::{LocalAgent, Options};
use fledge_agent::serve::MAX_STREAMS_PER_CONNECTION;
use fledge_proto::v1::telemetry_client::TelemetryClient;
use fledge_proto::v1::{self, FilterMessage, filter_message};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

fn options(dir: &std::path::Path, grpc: SocketAddr, http: SocketAddr) -> Options {
    Options {
        dir: dir.to_path_buf(),
        grpc,
        http,
        tick: Duration::from_millis(200),
    }
}

fn hello() -> FilterMessage {
    FilterMessage {
        msg: Some(filter_message::Msg::Hello(v1::Hello {
            proxy_id: "sidecar~10.0.0.1~web-1.shop".into(),
            ..Default::default()
        })),
    }
}

/// Opens a stream on `channel` and says Hello; the sender must stay alive to keep it open.
async fn open(
    channel: Channel,
) -> Result<
    (
        mpsc::Sender<FilterMessage>,
        tonic::Streaming<v1::AgentMessage>,
    ),
    tonic::Status,
> {
    let (tx, rx) = mpsc::channel(4);
    tx.send(hello()).await.unwrap();
    let replies = TelemetryClient::new(channel)
        .connect(ReceiverStream::new(rx))
        .await?
        .into_inner();
    Ok((tx, replies))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_ends_every_stream_and_connection_and_frees_the_ports() {
    let dir = tempfile::tempdir().unwrap();
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let agent = LocalAgent::start(options(dir.path(), any, any))
        .await
        .unwrap();
    let (grpc, http) = (agent.grpc_addr, agent.http_addr);
    let hub = agent.hub.clone();
    let channel = Channel::from_shared(format!("http://{grpc}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let (_tx, mut replies) = open(channel.clone()).await.unwrap();
    // The agent sees the filter before it stops.
    let seen = tokio::time::timeout(Duration::from_secs(5), async {
        while hub.streams().is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(seen.is_ok(), "the stream never registered");

    agent.stop();

    // The open stream ends, with UNAVAILABLE, promptly.
    let ended = tokio::time::timeout(Duration::from_secs(3), async {
        loop {
            match replies.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => return None,
                Err(status) => return Some(status.code()),
            }
        }
    })
    .await
    .expect("the stream outlived the agent");
    assert_eq!(ended, Some(tonic::Code::Unavailable));
    assert!(hub.streams().is_empty(), "{:?}", hub.streams());

    // A new stream on the same channel does not reach the stopped agent.
    let retry = tokio::time::timeout(Duration::from_secs(3), open(channel)).await;
    match retry {
        Ok(Ok((_tx, mut replies))) => {
            // Accepted only to be ended at once: nothing serves it.
            let next = tokio::time::timeout(Duration::from_secs(3), replies.message()).await;
            assert!(
                matches!(next, Ok(Err(_)) | Ok(Ok(None))),
                "a stream was served by the stopped agent: {next:?}"
            );
        }
        Ok(Err(_)) => {}
        Err(_) => panic!("opening a stream on the stopped agent hung"),
    }
    assert!(hub.streams().is_empty());

    // The same ports take the next agent (after the telemetry server's grace period at most).
    let mut restarted = None;
    for _ in 0..40 {
        match LocalAgent::start(options(dir.path(), grpc, http)).await {
            Ok(agent) => {
                restarted = Some(agent);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let restarted = restarted.expect("the ports stayed taken after stop");
    let channel = Channel::from_shared(format!("http://{grpc}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let (_tx, _replies) = open(channel).await.unwrap();
    restarted.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_connection_carries_at_most_the_bounded_number_of_streams() {
    let dir = tempfile::tempdir().unwrap();
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let agent = LocalAgent::start(options(dir.path(), any, any))
        .await
        .unwrap();
    let hub = agent.hub.clone();
    let channel = Channel::from_shared(format!("http://{}", agent.grpc_addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let bound = MAX_STREAMS_PER_CONNECTION as usize;
    let mut streams = Vec::new();
    for _ in 0..bound {
        streams.push(open(channel.clone()).await.unwrap());
    }
    let registered = |n: usize| {
        let hub = hub.clone();
        async move {
            tokio::time::timeout(Duration::from_secs(5), async {
                while hub.streams().len() != n {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
            .await
            .is_ok()
        }
    };
    assert!(registered(bound).await, "{bound} streams never registered");
    // One more on the same connection waits for a free slot; it is not served meanwhile.
    let extra = tokio::spawn(open(channel.clone()));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!extra.is_finished(), "stream {} opened", bound + 1);
    assert_eq!(hub.streams().len(), bound);
    // A stream that ends frees its slot for the waiting one.
    streams.pop();
    let (_tx, _replies) = tokio::time::timeout(Duration::from_secs(5), extra)
        .await
        .expect("the waiting stream opens once a slot is free")
        .unwrap()
        .unwrap();
    agent.stop();
}
