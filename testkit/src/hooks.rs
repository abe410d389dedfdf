//! A stand-in for the servers fledge's webhooks call (a pipeline's hook, an approval service, a
//! chat's incoming webhook): a bare HTTP/1.1 server on a loopback port that records every
//! request (path, `Idempotency-Key` header, JSON body) and answers each path with the status the
//! test set (200 unless told otherwise), closing the connection after each answer.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One request the server received.
#[derive(Clone, Debug)]
pub struct Received {
    pub path: String,
    pub idempotency_key: Option<String>,
    /// The body as JSON (`Null` when it was not JSON).
    pub body: serde_json::Value,
    /// The status it was answered with.
    pub status: u16,
    pub at: Instant,
}

#[derive(Default)]
struct State {
    answers: HashMap<String, u16>,
    received: Vec<Received>,
}

/// The running server; it stops when the test's runtime ends.
pub struct HookServer {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
}

impl HookServer {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port for the hook server");
        let addr = listener.local_addr().expect("a bound address");
        let state = Arc::new(Mutex::new(State::default()));
        let shared = state.clone();
        tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                tokio::spawn(serve(conn, shared.clone()));
            }
        });
        Self { addr, state }
    }

    /// `http://127.0.0.1:PORT/path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}/{}", self.addr, path.trim_start_matches('/'))
    }

    /// Answers requests to `path` with `status` from now on.
    pub fn answer(&self, path: &str, status: u16) {
        let path = format!("/{}", path.trim_start_matches('/'));
        self.lock().answers.insert(path, status);
    }

    /// Every request to `path` so far, in order.
    pub fn received(&self, path: &str) -> Vec<Received> {
        let path = format!("/{}", path.trim_start_matches('/'));
        let state = self.lock();
        state
            .received
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }

    /// Waits until `path` received at least `n` requests (panics after `within`).
    pub async fn wait_for(&self, path: &str, n: usize, within: Duration) -> Vec<Received> {
        let end = Instant::now() + within;
        loop {
            let got = self.received(path);
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < end,
                "{path} received {} requests within {within:?}, wanted {n}: {got:#?}",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

async fn serve(mut conn: TcpStream, state: Arc<Mutex<State>>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        match conn.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.lines();
    let path = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("/")
        .to_owned();
    let header = |name: &str| {
        head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_owned())
        })
    };
    let length: usize = header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + length {
        match conn.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let body = serde_json::from_slice(&buf[head_end..head_end + length]).unwrap_or_default();
    let status = {
        let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
        let status = s.answers.get(&path).copied().unwrap_or(200);
        s.received.push(Received {
            path,
            idempotency_key: header("idempotency-key"),
            body,
            status,
            at: Instant::now(),
        });
        status
    };
    let answer = format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
    let _ = conn.write_all(answer.as_bytes()).await;
    let _ = conn.shutdown().await;
}
