//! The HTTP surface and the CLI client against each other over a real socket, with a recording
//! control plane standing in for the agent's reconciler.

use std::sync::Mutex;
use std::time::Duration;

use serde_json::{Value, json};

use fledge_core::ObjectKey;
use fledge_core::rollout::UserCommand;

use super::*;
use crate::cli::{ApiClient, ClientError};

/// A control plane whose rollouts the test scripts and whose commands it records.
#[derive(Default)]
struct Recording {
    rollouts: Mutex<Vec<Value>>,
    problems: Vec<String>,
    commands: Mutex<Vec<(String, String, UserCommand)>>,
    ready: bool,
}

impl ControlPlane for Recording {
    fn rollouts(&self) -> Vec<Value> {
        self.rollouts.lock().map(|r| r.clone()).unwrap_or_default()
    }

    fn command(
        &self,
        namespace: &str,
        name: &str,
        command: UserCommand,
    ) -> Result<(), UnknownRollout> {
        let known = self
            .rollouts()
            .iter()
            .any(|r| r["metadata"]["namespace"] == namespace && r["metadata"]["name"] == name);
        if !known {
            return Err(UnknownRollout(ObjectKey::new(namespace, name)));
        }
        self.commands
            .lock()
            .expect("commands lock")
            .push((namespace.into(), name.into(), command));
        Ok(())
    }

    fn problems(&self) -> Vec<String> {
        self.problems.clone()
    }

    fn ready(&self) -> bool {
        self.ready
    }
}

fn rollout(ns: &str, name: &str, phase: &str) -> Value {
    json!({
        "apiVersion": "fledge.dev/v1alpha1", "kind": "Rollout",
        "metadata": {"namespace": ns, "name": name},
        "status": {"phase": phase, "reason": format!("{phase} for a test"), "currentStep": 1,
                   "totalSteps": 3, "canaryWeight": 20}
    })
}

/// A control plane holding shop/reviews, progressing.
fn progressing() -> Arc<Recording> {
    let plane = Arc::new(Recording::default());
    plane
        .rollouts
        .lock()
        .expect("lock")
        .push(rollout("shop", "reviews", "Progressing"));
    plane
}

async fn serve(plane: Arc<Recording>) -> (String, Arc<Metrics>) {
    let metrics = Arc::new(Metrics::new());
    let app = router(
        plane,
        metrics.clone(),
        Guard {
            loopback: true,
            commands: true,
            reads: true,
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), metrics)
}

async fn get_status(base: &str, path: &str) -> (u16, String) {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<bytes::Bytes>>();
    let response = client
        .get(format!("{base}{path}").parse().expect("uri"))
        .await
        .expect("request");
    let status = response.status().as_u16();
    let body = http_body_util::BodyExt::collect(response.into_body())
        .await
        .expect("body")
        .to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn health_readiness_and_metrics() {
    let (base, metrics) = serve(Arc::new(Recording::default())).await;
    metrics.reports_received.inc();
    assert_eq!(get_status(&base, "/healthz").await.0, 200);
    assert_eq!(get_status(&base, "/readyz").await.0, 503, "not ready yet");
    let (code, text) = get_status(&base, "/metrics").await;
    assert_eq!(code, 200);
    assert!(
        text.contains("fledge_agent_reports_received_total 1"),
        "{text}"
    );

    let ready = Arc::new(Recording {
        ready: true,
        ..Recording::default()
    });
    let (base, _) = serve(ready).await;
    assert_eq!(get_status(&base, "/readyz").await.0, 200);
}

#[tokio::test]
async fn client_lists_gets_and_commands() {
    let problem =
        "Rollout shop/a_b in x.yaml cannot be read: metadata.name \"a_b\" may hold only …";
    let plane = Arc::new(Recording {
        problems: vec![problem.into()],
        ..Recording::default()
    });
    plane.rollouts.lock().expect("lock").extend([
        rollout("shop", "reviews", "Progressing"),
        rollout("default", "web", "Paused"),
    ]);
    let (base, _) = serve(plane.clone()).await;
    let client = ApiClient::new(&base).expect("client");

    let (items, problems) = client.listing().await.expect("list");
    assert_eq!(items.len(), 2);
    assert_eq!(
        problems,
        [problem],
        "what cannot be read is shown, not only logged"
    );
    let one = client.get("shop/reviews", "default").await.expect("get");
    assert_eq!(one["status"]["phase"], "Progressing");
    let web = client
        .get("web", "default")
        .await
        .expect("get in default ns");
    assert_eq!(web["metadata"]["name"], "web");

    for command in UserCommand::ALL {
        client
            .command("shop/reviews", "default", command)
            .await
            .expect("command accepted");
    }
    let seen: Vec<UserCommand> = plane
        .commands
        .lock()
        .expect("lock")
        .iter()
        .map(|(ns, name, c)| {
            assert_eq!((ns.as_str(), name.as_str()), ("shop", "reviews"));
            *c
        })
        .collect();
    assert_eq!(seen, UserCommand::ALL.to_vec());
}

#[tokio::test]
async fn errors_name_what_was_wrong() {
    let (base, _) = serve(Arc::new(Recording::default())).await;
    let client = ApiClient::new(&base).expect("client");
    match client.get("shop/missing", "default").await {
        Err(ClientError::Status {
            status, message, ..
        }) => {
            assert_eq!(status, 404);
            assert_eq!(message, "Rollout shop/missing not found");
        }
        other => panic!("expected 404, got {other:?}"),
    }
    let (code, body) = get_status(&base, "/api/v1/rollouts/shop/reviews").await;
    assert_eq!(code, 404, "{body}");
    match client
        .command("Shop Reviews", "default", UserCommand::Abort)
        .await
    {
        Err(ClientError::BadName(name)) => assert_eq!(name, "Shop Reviews"),
        other => panic!("expected a bad name, got {other:?}"),
    }
    assert!(matches!(
        ApiClient::new("127.0.0.1:9091"),
        Err(ClientError::BadUrl { .. })
    ));
    // Nothing listens on port 9 of loopback: the error says where it tried and what to check.
    let down = ApiClient::new("http://127.0.0.1:9").expect("client");
    let err = down.list().await.expect_err("agent is down").to_string();
    assert!(
        err.contains("cannot reach the agent at http://127.0.0.1:9"),
        "{err}"
    );
}

/// A POST with the given headers and body, answered as (status, JSON body).
async fn post(
    base: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &'static str,
) -> (u16, Value) {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    let mut request = hyper::Request::post(format!("{base}{path}"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request
        .body(http_body_util::Full::new(bytes::Bytes::from_static(
            body.as_bytes(),
        )))
        .expect("request");
    let response = client.request(request).await.expect("response");
    let status = response.status().as_u16();
    let body = http_body_util::BodyExt::collect(response.into_body())
        .await
        .expect("body")
        .to_bytes();
    (status, serde_json::from_slice(&body).expect("json"))
}

#[tokio::test]
async fn unknown_command_is_a_bad_request() {
    let plane = progressing();
    let (base, _) = serve(plane).await;
    let json = [("content-type", "application/json")];
    let (status, body) = post(&base, "/api/v1/rollouts/shop/reviews/restart", &json, "{}").await;
    assert_eq!(status, 400);
    assert_eq!(
        body["error"],
        "unknown command \"restart\": expected one of promote, abort, pause, resume, retry"
    );
}

#[tokio::test]
async fn commands_from_web_pages_forms_and_foreign_hosts_are_refused() {
    let plane = progressing();
    let (base, _) = serve(plane.clone()).await;
    let path = "/api/v1/rollouts/shop/reviews/abort";
    type Case<'a> = (&'a [(&'a str, &'a str)], &'a str, u16, &'a str);
    let cases: [Case; 4] = [
        (
            &[
                ("content-type", "application/json"),
                ("origin", "http://evil.example"),
            ],
            "{}",
            403,
            "commands are not taken from web pages",
        ),
        (
            &[("content-type", "application/x-www-form-urlencoded")],
            "a=1",
            415,
            "a command's body must be JSON",
        ),
        (&[("content-type", "text/plain")], "{}", 415, "must be JSON"),
        (
            &[
                ("content-type", "application/json"),
                ("host", "evil.example:9091"),
            ],
            "{}",
            403,
            "takes commands only for Host localhost",
        ),
    ];
    for (headers, body, expected, needle) in cases {
        let (status, answer) = post(&base, path, headers, body).await;
        assert_eq!(status, expected, "{headers:?}: {answer}");
        let message = answer["error"].as_str().unwrap_or_default();
        assert!(message.contains(needle), "{message:?} lacks {needle:?}");
    }
    assert!(
        plane.commands.lock().expect("lock").is_empty(),
        "no command got through"
    );

    let json = [("content-type", "application/json")];
    assert_eq!(post(&base, path, &json, "{}").await.0, 202);
    assert_eq!(plane.commands.lock().expect("lock").len(), 1);
}

#[tokio::test]
async fn wait_ends_on_final_phases() {
    for (phase, succeeded) in [
        ("Succeeded", true),
        ("RolledBack", false),
        ("Aborted", false),
        ("Failed", false),
    ] {
        let plane = progressing();
        let (base, _) = serve(plane.clone()).await;
        let client = ApiClient::new(&base).expect("client");
        let flip = plane.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(150)).await;
            flip.rollouts.lock().expect("lock")[0] = rollout("shop", "reviews", phase);
        });
        let mut lines = Vec::new();
        let outcome = client
            .wait(
                "shop/reviews",
                "default",
                Duration::from_millis(20),
                Duration::from_secs(10),
                |l| lines.push(l.to_owned()),
            )
            .await
            .expect("wait");
        assert_eq!(outcome.phase, phase);
        assert_eq!(outcome.succeeded(), succeeded, "{phase}");
        assert_eq!(lines.len(), 2, "one line per change: {lines:?}");
        assert!(lines[0].starts_with("shop/reviews  Progressing  step 2/3  canary 20%"));
    }

    let plane = progressing();
    let (base, _) = serve(plane).await;
    let client = ApiClient::new(&base).expect("client");
    let err = client
        .wait(
            "shop/reviews",
            "default",
            Duration::from_millis(10),
            Duration::from_millis(50),
            |_| {},
        )
        .await
        .expect_err("never finishes");
    assert!(matches!(err, ClientError::Timeout { ref phase, .. } if phase == "Progressing"));
}

/// `GET path` from a socket bound to `from`, as a request another pod's sidecar forwards (from
/// 127.0.0.6) or the pod's own sidecar makes (from 127.0.0.1): the status and the body.
async fn get_from(from: [u8; 4], addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind(std::net::SocketAddr::from((from, 0)))
        .expect("bind the client");
    let mut stream = socket.connect(addr).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: agent\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.expect("read");
    let code = answer
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, answer)
}

#[tokio::test]
async fn without_reads_on_the_cluster_only_the_pod_itself_reads_rollouts_and_metrics() {
    let app = router(
        progressing(),
        Arc::new(Metrics::new()),
        Guard {
            loopback: false,
            commands: false,
            reads: false,
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let service = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
    tokio::spawn(async move { axum::serve(listener, service).await });
    let own_pod = [127, 0, 0, 1];
    let sidecar_forwarded = [127, 0, 0, 6];
    for (from, path, expected) in [
        (own_pod, "/metrics", 200),
        (own_pod, "/api/v1/rollouts", 200),
        (own_pod, "/api/v1/rollouts/shop/reviews", 200),
        (sidecar_forwarded, "/metrics", 403),
        (sidecar_forwarded, "/api/v1/rollouts", 403),
        (sidecar_forwarded, "/api/v1/rollouts/shop/reviews", 403),
        // The kubelet's probes are always answered.
        (sidecar_forwarded, "/healthz", 200),
        (sidecar_forwarded, "/readyz", 503),
        (sidecar_forwarded, "/leaderz", 200),
    ] {
        let (code, answer) = get_from(from, addr, path).await;
        assert_eq!(code, expected, "{path} from {from:?}: {answer}");
        if code == 403 {
            assert!(answer.contains("--http-reads"), "{answer}");
        }
    }
}
