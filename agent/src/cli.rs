//! The command-line client of a running agent: `status`, `promote`, `abort`, `pause`, `resume`,
//! `retry` and `wait`, spoken over the agent's HTTP API (`http.rs`). `wait` exits 0 when the rollout
//! succeeds and non-zero when it is rolled back, aborted or failed, so CI pipelines can gate on it.
//!
//! It only reads and posts; every decision stays in the agent.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

use fledge_core::rollout::UserCommand;

/// Why a CLI call failed; the message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("bad agent address {url:?}: {reason}")]
    BadUrl { url: String, reason: String },
    #[error(
        "cannot reach the agent at {url}: {reason} (is `fledge-agent local` running? --api/FLEDGE_API sets the address)"
    )]
    Unreachable { url: String, reason: String },
    #[error("the agent answered {status} for {url}: {message}")]
    Status {
        url: String,
        status: StatusCode,
        message: String,
    },
    #[error("the agent's answer for {url} is not the JSON expected: {reason}")]
    Decode { url: String, reason: String },
    #[error("rollout name {0:?} is not NAME or NAMESPACE/NAME")]
    BadName(String),
    #[error("gave up waiting for {rollout} after {after:?}; last phase {phase}")]
    Timeout {
        rollout: String,
        after: Duration,
        phase: String,
    },
}

pub type Result<T, E = ClientError> = std::result::Result<T, E>;

/// Phases after which a rollout never moves again.
const SUCCEEDED: &str = "Succeeded";
const FAILED_PHASES: [&str; 3] = ["RolledBack", "Aborted", "Failed"];

/// How a `wait` ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WaitOutcome {
    pub phase: String,
    pub reason: String,
}

impl WaitOutcome {
    pub fn succeeded(&self) -> bool {
        self.phase == SUCCEEDED
    }
}

/// A client of one agent's HTTP API.
#[derive(Clone)]
pub struct ApiClient {
    base: String,
    http: Client<HttpConnector, Full<Bytes>>,
}

impl ApiClient {
    /// `base` is the agent's address, e.g. `http://127.0.0.1:9091`.
    pub fn new(base: &str) -> Result<Self> {
        let base = base.trim_end_matches('/').to_owned();
        let uri: Uri =
            base.parse()
                .map_err(|e: hyper::http::uri::InvalidUri| ClientError::BadUrl {
                    url: base.clone(),
                    reason: e.to_string(),
                })?;
        if uri.scheme_str() != Some("http") || uri.authority().is_none() {
            return Err(ClientError::BadUrl {
                url: base,
                reason: "expected http://HOST:PORT".into(),
            });
        }
        Ok(Self {
            base,
            http: Client::builder(TokioExecutor::new()).build_http(),
        })
    }

    /// Every rollout the agent knows, with status.
    pub async fn list(&self) -> Result<Vec<Value>> {
        Ok(self.listing().await?.0)
    }

    /// Every rollout the agent knows, and the objects it cannot read (each with the reason).
    pub async fn listing(&self) -> Result<(Vec<Value>, Vec<String>)> {
        let body = self.call(Method::GET, "/api/v1/rollouts").await?;
        let Some(items) = body.get("items").and_then(Value::as_array) else {
            return Err(ClientError::Decode {
                url: format!("{}/api/v1/rollouts", self.base),
                reason: "no `items` array".into(),
            });
        };
        let problems = body
            .get("problems")
            .and_then(Value::as_array)
            .map(|p| {
                p.iter()
                    .filter_map(Value::as_str)
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default();
        Ok((items.clone(), problems))
    }

    /// One rollout, named `NAME` (in `default_ns`) or `NAMESPACE/NAME`.
    pub async fn get(&self, name: &str, default_ns: &str) -> Result<Value> {
        let (ns, name) = split_name(name, default_ns)?;
        self.call(Method::GET, &format!("/api/v1/rollouts/{ns}/{name}"))
            .await
    }

    /// Sends a command; the agent applies it at its next reconcile.
    pub async fn command(&self, name: &str, default_ns: &str, command: UserCommand) -> Result<()> {
        let (ns, name) = split_name(name, default_ns)?;
        self.call(
            Method::POST,
            &format!("/api/v1/rollouts/{ns}/{name}/{command}"),
        )
        .await
        .map(drop)
    }

    /// Polls until the rollout reaches a final phase, printing each change of phase or step
    /// through `progress`.
    pub async fn wait(
        &self,
        name: &str,
        default_ns: &str,
        every: Duration,
        timeout: Duration,
        mut progress: impl FnMut(&str),
    ) -> Result<WaitOutcome> {
        let started = tokio::time::Instant::now();
        let mut last = String::new();
        loop {
            let rollout = self.get(name, default_ns).await?;
            let line = summary_line(&rollout);
            if line != last {
                progress(&line);
                last = line;
            }
            let phase = text(&rollout["status"]["phase"]);
            if phase == SUCCEEDED || FAILED_PHASES.contains(&phase.as_str()) {
                return Ok(WaitOutcome {
                    phase,
                    reason: text(&rollout["status"]["reason"]),
                });
            }
            if started.elapsed() >= timeout {
                return Err(ClientError::Timeout {
                    rollout: name.to_owned(),
                    after: timeout,
                    phase,
                });
            }
            tokio::time::sleep(every).await;
        }
    }

    async fn call(&self, method: Method, path: &str) -> Result<Value> {
        let url = format!("{}{path}", self.base);
        let unreachable = |reason: String| ClientError::Unreachable {
            url: url.clone(),
            reason,
        };
        // A command is a POST with a JSON body: the API refuses any other kind (see http::guard).
        let (body, content_type) = if method == Method::POST {
            (Bytes::from_static(b"{}"), Some("application/json"))
        } else {
            (Bytes::new(), None)
        };
        let mut request = Request::builder().method(method).uri(&url);
        if let Some(content_type) = content_type {
            request = request.header(hyper::header::CONTENT_TYPE, content_type);
        }
        let request = request
            .body(Full::new(body))
            .map_err(|e| ClientError::BadUrl {
                url: url.clone(),
                reason: e.to_string(),
            })?;
        let response = self
            .http
            .request(request)
            .await
            .map_err(|e| unreachable(error_chain(&e)))?;
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| unreachable(e.to_string()))?
            .to_bytes();
        let body: Value = serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode {
            url: url.clone(),
            reason: e.to_string(),
        })?;
        if !status.is_success() {
            return Err(ClientError::Status {
                url,
                status,
                message: text(&body["error"]),
            });
        }
        Ok(body)
    }
}

/// `NAME` or `NAMESPACE/NAME`.
pub fn split_name<'a>(name: &'a str, default_ns: &'a str) -> Result<(&'a str, &'a str)> {
    let (ns, n) = match name.split_once('/') {
        Some((ns, n)) => (ns, n),
        None => (default_ns, name),
    };
    let valid = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
    };
    if valid(ns) && valid(n) {
        Ok((ns, n))
    } else {
        Err(ClientError::BadName(name.to_owned()))
    }
}

/// One line a person can read: `shop/reviews  Progressing  step 2/4  canary 25%  <reason>`.
pub fn summary_line(rollout: &Value) -> String {
    let meta = &rollout["metadata"];
    let status = &rollout["status"];
    let mut line = format!(
        "{}/{}  {}",
        text(&meta["namespace"]),
        text(&meta["name"]),
        or_dash(text(&status["phase"]))
    );
    if let Some(step) = status["currentStep"].as_u64() {
        line.push_str(&format!("  step {}", step + 1));
        if let Some(total) = status["totalSteps"].as_u64() {
            line.push_str(&format!("/{total}"));
        }
    }
    if let Some(weight) = status["canaryWeight"].as_u64() {
        line.push_str(&format!("  canary {weight}%"));
    }
    let reason = text(&status["reason"]);
    if !reason.is_empty() {
        line.push_str("  ");
        line.push_str(&reason);
    }
    line
}

fn text(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_owned()
}

fn or_dash(s: String) -> String {
    if s.is_empty() { "-".into() } else { s }
}

/// An error and its sources, joined by `: `, for a message a person reads.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
