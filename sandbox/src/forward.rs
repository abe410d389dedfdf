//! The upstream side of the sandbox proxy: sends a request to a backend over HTTP/1.1 (pooled
//! connections) and reads its whole response, turning failures into what Envoy would answer
//! and flag (connection failure → 503 `UF`, reset → 503 `UR`, route timeout → 504 `UT`). Also
//! the `-shadow` authority of mirrored copies and the hop-by-hop headers a proxy drops.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::filter::{GRPC_STATUS, flags};

/// A pooled HTTP/1.1 client to the backends.
pub type Upstream = Client<HttpConnector, Full<Bytes>>;

/// A request as the proxy forwards it.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub method: Method,
    /// Path and query.
    pub path: String,
    pub authority: String,
    /// Regular headers (no pseudo headers, no hop-by-hop headers, no Host).
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

/// A complete upstream response.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub grpc_status: Option<i32>,
}

/// A response the proxy makes itself, with the flags that explain it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalReply {
    pub status: u16,
    pub flags: u64,
    pub message: String,
}

pub fn upstream_client() -> Upstream {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_secs(5)));
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build(connector)
}

/// Sends `outgoing` to `address` and reads the whole answer, within `timeout` if set.
pub async fn send(
    client: &Upstream,
    address: SocketAddr,
    outgoing: &Outgoing,
    timeout: Option<Duration>,
) -> Result<Answer, LocalReply> {
    let exchange = exchange(client, address, outgoing);
    match timeout {
        Some(limit) => tokio::time::timeout(limit, exchange)
            .await
            .unwrap_or_else(|_| {
                Err(LocalReply {
                    status: 504,
                    flags: flags::UPSTREAM_REQUEST_TIMEOUT,
                    message: "upstream request timeout".into(),
                })
            }),
        None => exchange.await,
    }
}

async fn exchange(
    client: &Upstream,
    address: SocketAddr,
    outgoing: &Outgoing,
) -> Result<Answer, LocalReply> {
    let request = build(address, outgoing).map_err(|message| LocalReply {
        status: 400,
        flags: 0,
        message,
    })?;
    let response = client.request(request).await.map_err(|e| {
        if e.is_connect() {
            LocalReply {
                status: 503,
                flags: flags::UPSTREAM_CONNECTION_FAILURE,
                message: format!(
                    "upstream connect error or disconnect/reset before headers. reset reason: connection failure ({address})"
                ),
            }
        } else {
            reset(&e)
        }
    })?;
    let (parts, body) = response.into_parts();
    let collected = body.collect().await.map_err(|e| reset(&e))?;
    let trailers = collected.trailers().cloned();
    let body = collected.to_bytes();
    let grpc_status = [Some(&parts.headers), trailers.as_ref()]
        .into_iter()
        .flatten()
        .find_map(|h| h.get(GRPC_STATUS)?.to_str().ok()?.parse().ok());
    Ok(Answer {
        status: parts.status,
        headers: parts.headers,
        body,
        grpc_status,
    })
}

fn reset(e: &dyn std::fmt::Display) -> LocalReply {
    LocalReply {
        status: 503,
        flags: flags::UPSTREAM_REMOTE_RESET,
        message: format!(
            "upstream connect error or disconnect/reset before headers. reset reason: remote reset ({e})"
        ),
    }
}

fn build(address: SocketAddr, outgoing: &Outgoing) -> Result<Request<Full<Bytes>>, String> {
    let mut request = Request::builder()
        .method(outgoing.method.clone())
        .uri(format!("http://{address}{}", outgoing.path))
        .version(Version::HTTP_11)
        .body(Full::new(outgoing.body.clone()))
        .map_err(|e| format!("bad request line: {e}"))?;
    let headers = request.headers_mut();
    for (name, value) in &outgoing.headers {
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) else {
            return Err(format!("bad header {name:?}"));
        };
        headers.append(name, value);
    }
    let host = HeaderValue::from_str(&outgoing.authority)
        .map_err(|_| format!("bad authority {:?}", outgoing.authority))?;
    headers.insert(http::header::HOST, host);
    Ok(request)
}

/// The authority of a mirrored copy, as Envoy writes it: `-shadow` after the host, before any
/// port (`reviews:9080` → `reviews-shadow:9080`).
pub fn shadow_authority(authority: &str) -> String {
    if authority.starts_with('[') {
        return match authority.split_once(']') {
            Some((host, rest)) => format!("{host}]-shadow{rest}"),
            None => format!("{authority}-shadow"),
        };
    }
    match authority.rsplit_once(':') {
        Some((host, port)) => format!("{host}-shadow:{port}"),
        None => format!("{authority}-shadow"),
    }
}

/// Connection-scoped headers a proxy never forwards.
pub fn is_hop_by_hop(name: &str) -> bool {
    const HOP: [&str; 9] = [
        "connection",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "upgrade",
        "te",
        "trailer",
        "proxy-authenticate",
        "proxy-authorization",
    ];
    HOP.iter().any(|h| name.eq_ignore_ascii_case(h))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shadow_authorities_follow_envoy() {
        for (authority, shadow) in [
            ("reviews", "reviews-shadow"),
            ("reviews:9080", "reviews-shadow:9080"),
            (
                "reviews.shop.svc.cluster.local",
                "reviews.shop.svc.cluster.local-shadow",
            ),
            ("127.0.0.1:80", "127.0.0.1-shadow:80"),
        ] {
            assert_eq!(shadow_authority(authority), shadow);
        }
    }

    #[test]
    fn hop_by_hop_headers_are_known() {
        for (name, hop) in [
            ("Connection", true),
            ("te", true),
            ("x-user-id", false),
            ("host", false),
        ] {
            assert_eq!(is_hop_by_hop(name), hop, "{name}");
        }
    }
}
