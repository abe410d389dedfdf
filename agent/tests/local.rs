//! `LocalAgent::stop` (and the binary on SIGTERM, after the tick in progress) leaves nothing
//! attached: a filter's open stream ends with UNAVAILABLE, its
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
        prometheus: None,
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

/// The agent binary on `dir`, and its telemetry address once it says it runs.
fn spawn_agent(dir: &std::path::Path) -> (std::process::Child, SocketAddr) {
    use std::io::BufRead;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_fledge-agent"))
        .args([
            "local",
            "--grpc",
            "127.0.0.1:0",
            "--http",
            "127.0.0.1:0",
            "--dir",
        ])
        .arg(dir)
        .env("RUST_LOG", "info")
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("the agent binary starts");
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = loop {
        let line = lines
            .next()
            .expect("the agent logs that it runs")
            .expect("a log line");
        if line.contains("fledge agent running") {
            let log: serde_json::Value = serde_json::from_str(&line).expect("a JSON log line");
            break log["fields"]["grpc_addr"]
                .as_str()
                .or(log["grpc_addr"].as_str())
                .expect("grpc_addr in the log")
                .parse()
                .unwrap();
        }
    };
    // Keep reading so the agent never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    (child, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_the_tick_ends_every_stream_and_exits() {
    let dir = fledge_testkit::examples::folder(&["canary.yaml", "virtualservice.yaml"]);
    let (mut child, grpc) = spawn_agent(dir.path());
    let channel = Channel::from_shared(format!("http://{grpc}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let (_tx, mut replies) = open(channel).await.expect("the stream opens");
    // The routing table arrives once the first tick routed the canary: the agent is working.
    let first = tokio::time::timeout(Duration::from_secs(10), replies.message())
        .await
        .expect("a table within 10 s")
        .expect("a table, not an error");
    assert!(first.is_some());

    let killed = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match replies.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("the stream ended without a status"),
                Err(status) => return status,
            }
        }
    })
    .await
    .expect("the stream ends within 10 s of SIGTERM");
    assert_eq!(ended.code(), tonic::Code::Unavailable, "{ended:?}");
    assert_eq!(ended.message(), fledge_proto::REFUSED_STOPPING);

    let exited = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(exited.success(), "{exited:?}");
    // What it wrote is whole: the status and the VirtualService read back.
    let store = fledge_agent::store::LocalStore::new(dir.path());
    let listing = store.read_rollouts().unwrap();
    assert!(listing.problems.is_empty(), "{:?}", listing.problems);
    let status = listing.rollouts[0].status.as_ref().expect("a status");
    assert_eq!(status.canary_weight, 10);
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
