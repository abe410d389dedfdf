//! Calls the agent makes to servers of the user's (Prometheus, webhooks, chat): one HTTP/1.1
//! client for `http://` and `https://` (the system's root certificates), each call bounded by a
//! timeout and an answer size, every failure an [`OutboundError`] that names the URL and what
//! went wrong.
//!
//! Only the transport: what to ask and what an answer means is the caller's.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// The largest answer read; a longer one is an error, not a truncated answer.
pub const MAX_ANSWER_BYTES: usize = 4 << 20;

#[derive(Debug, thiserror::Error)]
pub enum OutboundError {
    #[error("{url} is not a usable URL: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("{url} did not answer within {timeout:?}")]
    Timeout { url: String, timeout: Duration },
    #[error("{url} could not be reached: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("{url} answered with more than {MAX_ANSWER_BYTES} bytes")]
    TooLarge { url: String },
    #[error("TLS cannot be set up for calls out: {0}")]
    Tls(String),
}

/// A server's answer: its status and body.
#[derive(Clone, Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub body: Bytes,
}

/// The client; cheap to clone (connections are pooled and shared).
#[derive(Clone)]
pub struct Outbound {
    http: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl Outbound {
    /// A client trusting the system's root certificates for `https://` (none are needed for
    /// `http://`; without any, `https://` calls fail and say so).
    pub fn new() -> Result<Self, OutboundError> {
        let native = rustls_native_certs::load_native_certs();
        let mut roots = rustls::RootCertStore::empty();
        let (added, _) = roots.add_parsable_certificates(native.certs);
        if added == 0 {
            tracing::warn!(errors = ?native.errors, "no system root certificates: https calls out will fail");
        }
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| OutboundError::Tls(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .build();
        Ok(Self {
            http: Client::builder(TokioExecutor::new()).build(connector),
        })
    }

    /// GETs `url`.
    pub async fn get(&self, url: &str, timeout: Duration) -> Result<Answer, OutboundError> {
        self.send(Method::GET, url, None, &[], timeout).await
    }

    /// POSTs `body` as JSON to `url`.
    pub async fn post_json(
        &self,
        url: &str,
        body: &serde_json::Value,
        timeout: Duration,
    ) -> Result<Answer, OutboundError> {
        self.post_json_with(url, body, &[], timeout).await
    }

    /// POSTs `body` as JSON to `url` with these extra headers (name, value).
    pub async fn post_json_with(
        &self,
        url: &str,
        body: &serde_json::Value,
        headers: &[(&str, &str)],
        timeout: Duration,
    ) -> Result<Answer, OutboundError> {
        let bytes = serde_json::to_vec(body).unwrap_or_default();
        self.send(Method::POST, url, Some(bytes), headers, timeout)
            .await
    }

    async fn send(
        &self,
        method: Method,
        url: &str,
        body: Option<Vec<u8>>,
        headers: &[(&str, &str)],
        timeout: Duration,
    ) -> Result<Answer, OutboundError> {
        let bad = |reason: String| OutboundError::BadUrl {
            url: url.to_owned(),
            reason,
        };
        let uri: Uri = url.parse().map_err(|e| bad(format!("{e}")))?;
        match uri.scheme_str() {
            Some("http" | "https") => {}
            other => {
                return Err(bad(format!(
                    "the scheme must be http or https, not {other:?}"
                )));
            }
        }
        let mut request = Request::builder()
            .method(method)
            .uri(uri)
            .header(hyper::header::USER_AGENT, "fledge-agent");
        if body.is_some() {
            request = request.header(hyper::header::CONTENT_TYPE, "application/json");
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| bad(e.to_string()))?;
        let call = async {
            let response =
                self.http
                    .request(request)
                    .await
                    .map_err(|e| OutboundError::Unreachable {
                        url: url.to_owned(),
                        reason: error_chain(&e),
                    })?;
            let status = response.status();
            let body = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
                .collect()
                .await
                .map_err(|e| {
                    if e.downcast_ref::<http_body_util::LengthLimitError>()
                        .is_some()
                    {
                        OutboundError::TooLarge {
                            url: url.to_owned(),
                        }
                    } else {
                        OutboundError::Unreachable {
                            url: url.to_owned(),
                            reason: e.to_string(),
                        }
                    }
                })?
                .to_bytes();
            Ok(Answer { status, body })
        };
        tokio::time::timeout(timeout, call)
            .await
            .map_err(|_| OutboundError::Timeout {
                url: url.to_owned(),
                timeout,
            })?
    }
}

/// An error and its sources, `: `-joined (hyper's own message alone says little).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut words = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        words.push_str(": ");
        words.push_str(&s.to_string());
        source = s.source();
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A one-connection server that answers every request with `answer` after `delay`.
    async fn server(answer: Vec<u8>, delay: Duration) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("binds");
        let addr = listener.local_addr().expect("an address");
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let answer = answer.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0; 4096];
                    let _ = conn.read(&mut buf).await;
                    tokio::time::sleep(delay).await;
                    let _ = conn.write_all(&answer).await;
                });
            }
        });
        format!("http://{addr}/hook")
    }

    fn http(status: &str, body: &[u8]) -> Vec<u8> {
        let mut out = format!(
            "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            body.len()
        )
        .into_bytes();
        out.extend_from_slice(body);
        out
    }

    #[tokio::test]
    async fn answers_and_failures_name_the_url() {
        let client = Outbound::new().expect("a client");
        let second = Duration::from_secs(1);

        let ok = server(http("200 OK", b"{\"ok\":true}"), Duration::ZERO).await;
        let answer = client
            .post_json(&ok, &serde_json::json!({"text": "hi"}), second)
            .await
            .expect("answers");
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(&answer.body[..], b"{\"ok\":true}");

        let refused = server(http("503 Service Unavailable", b"busy"), Duration::ZERO).await;
        let answer = client.get(&refused, second).await.expect("answers");
        assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);

        let slow = server(http("200 OK", b""), Duration::from_secs(5)).await;
        let e = client
            .get(&slow, Duration::from_millis(200))
            .await
            .expect_err("too slow");
        assert!(matches!(e, OutboundError::Timeout { .. }), "{e}");
        assert!(e.to_string().contains(&slow), "{e}");

        let big = vec![b'x'; MAX_ANSWER_BYTES + 1];
        let large = server(http("200 OK", &big), Duration::ZERO).await;
        let e = client.get(&large, second * 5).await.expect_err("too large");
        assert!(matches!(e, OutboundError::TooLarge { .. }), "{e}");

        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("binds");
            format!("http://{}/", l.local_addr().expect("an address"))
        };
        let e = client
            .get(&closed, second)
            .await
            .expect_err("nobody listens");
        assert!(matches!(e, OutboundError::Unreachable { .. }), "{e}");

        for url in ["ftp://example.com/x", "not a url", "/relative"] {
            let e = client.get(url, second).await.expect_err(url);
            assert!(matches!(e, OutboundError::BadUrl { .. }), "{url}: {e}");
            assert!(e.to_string().contains(url), "{e}");
        }
    }
}
