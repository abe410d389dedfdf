//! The `approval` scenario's release-approval service and chat: one tiny HTTP server on a
//! loopback port that the Rollout's webhooks call. `/approve` answers 403 (not yet) until a set
//! time has passed since it was first asked, then 200, as a person approving the release would;
//! `/chat` takes the Slack-style messages (`{"text": …}`). Every request is kept, with a line
//! for the demo to print.
//!
//! It stands for the user's pipeline; it decides nothing about the rollout.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One request the service received, and its answer.
#[derive(Debug, Clone)]
pub struct HookRequest {
    pub path: String,
    pub status: u16,
    pub body: Value,
    pub at: Instant,
}

struct State {
    /// Approve this long after the first ask.
    after: Duration,
    first_asked: Option<Instant>,
    received: Vec<HookRequest>,
    /// Lines not yet printed.
    lines: Vec<String>,
}

/// The running service; it stops with the runtime it was started on.
pub struct Approval {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
}

impl Approval {
    /// Starts the service; it approves `after` its first ask.
    pub async fn start(after: Duration) -> std::io::Result<Approval> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(Mutex::new(State {
            after,
            first_asked: None,
            received: Vec::new(),
            lines: Vec::new(),
        }));
        let shared = state.clone();
        tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                tokio::spawn(answer(conn, shared.clone()));
            }
        });
        Ok(Approval { addr, state })
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}/{path}", self.addr)
    }

    /// The lines about requests since the last call.
    pub fn take_lines(&self) -> Vec<String> {
        std::mem::take(&mut lock(&self.state).lines)
    }

    /// Every request so far.
    pub fn received(&self) -> Vec<HookRequest> {
        lock(&self.state).received.clone()
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

/// Reads one request, answers it and closes the connection.
async fn answer(mut conn: TcpStream, state: Arc<Mutex<State>>) {
    let Some((path, body)) = read(&mut conn).await else {
        return;
    };
    let status = {
        let mut s = lock(&state);
        let now = Instant::now();
        let (status, line) = if path == "/approve" {
            let first = *s.first_asked.get_or_insert(now);
            let left = s.after.saturating_sub(now - first);
            let asked = format!(
                "approval service: {} asks to promote {}/{} (step {} of {})",
                body["hook"]["name"].as_str().unwrap_or("a hook"),
                body["rollout"]["namespace"].as_str().unwrap_or(""),
                body["rollout"]["name"].as_str().unwrap_or(""),
                body["step"]["index"].as_u64().map_or(0, |i| i + 1),
                body["step"]["of"].as_u64().unwrap_or(0),
            );
            if left.is_zero() {
                (200, format!("{asked} → 200, approved"))
            } else {
                let secs = left.as_secs_f64().ceil();
                (403, format!("{asked} → 403, not yet (approved in {secs}s)"))
            }
        } else {
            let text = body["text"].as_str().unwrap_or("(no text)");
            (200, format!("chat: {text}"))
        };
        s.lines.push(line);
        s.received.push(HookRequest {
            path,
            status,
            body,
            at: now,
        });
        status
    };
    let reply = format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
    let _ = conn.write_all(reply.as_bytes()).await;
    let _ = conn.shutdown().await;
}

/// The path and JSON body of one HTTP/1.1 request (None when the peer went away first).
async fn read(conn: &mut TcpStream) -> Option<(String, Value)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = conn.read(&mut chunk).await.ok().filter(|n| *n > 0)?;
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let path = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
    let length: usize = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + length {
        let n = conn.read(&mut chunk).await.ok().filter(|n| *n > 0)?;
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = serde_json::from_slice(&buf[head_end..head_end + length]).unwrap_or_default();
    Some((path, body))
}
