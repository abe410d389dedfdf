//! Who may send a command over HTTP. A browser will send a POST to any address a page names,
//! including `127.0.0.1`, so a web page the operator opens could otherwise promote or abort
//! through a local agent. The guard admits a mutation only when:
//!
//! - it carries no `Origin` (browsers add one to every cross-site POST; the CLI never does);
//! - its body is declared `application/json` (a page can send a form or plain text without
//!   asking, but JSON only after a CORS preflight, which this API never answers);
//! - when the API listens on a loopback address, its `Host` is a loopback name, so a page whose
//!   own name a DNS server points at 127.0.0.1 (DNS rebinding) is refused too.
//!
//! In a cluster the agent takes no commands over HTTP at all unless `--http-commands` says so:
//! they are written on the Rollout object instead (`kubectl fledge`).
//!
//! Reads change nothing, but the rollout API and `/metrics` tell what is being released where.
//! In a cluster they are served only to the agent's own pod — a peer at 127.0.0.1 or ::1, which
//! is the Istio sidecar's metrics merging and `kubectl port-forward` — unless `--http-reads`
//! says the cluster may read them. Istio's sidecar forwards other pods' requests from
//! 127.0.0.6, so they are refused like any other address. Health, readiness and `/leaderz` are
//! always open: the kubelet must reach them.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// What the guard checks, fixed when the API starts.
#[derive(Clone, Copy, Debug)]
pub struct Guard {
    /// The API listens on a loopback address: only loopback `Host` names are accepted.
    pub loopback: bool,
    /// Commands are taken over HTTP at all. In a cluster they are not (unless a flag says so):
    /// they are written on the Rollout, where Kubernetes RBAC decides who may give them.
    pub commands: bool,
    /// The rollout API's reads and `/metrics` are served to any peer. Otherwise (a cluster
    /// without `--http-reads`) only to the pod itself (127.0.0.1, ::1).
    pub reads: bool,
}

/// Why a mutation was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error(
        "this agent takes no commands over HTTP: in a cluster they go on the Rollout, where \
         Kubernetes RBAC decides who may give them (`kubectl fledge promote NAMESPACE/NAME`, \
         which needs `patch` on rollouts.fledge.dev)"
    )]
    CommandsOff,
    #[error(
        "commands are not taken from web pages (the request carries Origin {0:?}); \
         use `fledge-agent promote|abort|pause|resume` or POST without an Origin"
    )]
    CrossOrigin(String),
    #[error(
        "this agent serves rollouts and metrics over HTTP only to its own pod (got a request \
         from {0}); read Rollouts with `kubectl get rollouts` or `kubectl fledge status`, or \
         start the agent with --http-reads (FLEDGE_HTTP_READS) to serve them to the cluster"
    )]
    ReadsOff(String),
    #[error("a command's body must be JSON: send Content-Type: application/json (got {0:?})")]
    NotJson(String),
    #[error(
        "this agent listens on a loopback address and takes commands only for Host \
         localhost, 127.0.0.1 or [::1] (got {0:?})"
    )]
    ForeignHost(String),
}

impl Guard {
    /// Whether a mutation with these headers may go through.
    pub fn check(&self, headers: &HeaderMap) -> Result<(), Refusal> {
        if !self.commands {
            return Err(Refusal::CommandsOff);
        }
        let text = |name| {
            headers.get(name).map(|v| {
                String::from_utf8_lossy(v.as_bytes())
                    .chars()
                    .take(80)
                    .collect::<String>()
            })
        };
        if let Some(origin) = text(header::ORIGIN) {
            return Err(Refusal::CrossOrigin(origin));
        }
        let content_type = text(header::CONTENT_TYPE).unwrap_or_default();
        let media = content_type.split(';').next().unwrap_or("").trim();
        if !media.eq_ignore_ascii_case("application/json") {
            return Err(Refusal::NotJson(content_type));
        }
        if self.loopback {
            let host = text(header::HOST).unwrap_or_default();
            if !is_loopback_host(&host) {
                return Err(Refusal::ForeignHost(host));
            }
        }
        Ok(())
    }
}

impl Guard {
    /// Whether a read of the rollout API or the metrics may be answered to `peer` (None: not
    /// known, as in a test without a connection).
    pub fn check_read(&self, peer: Option<std::net::SocketAddr>) -> Result<(), Refusal> {
        let own_pod = |ip: std::net::IpAddr| {
            ip == std::net::IpAddr::from([127, 0, 0, 1]) || ip == std::net::Ipv6Addr::LOCALHOST
        };
        match peer {
            _ if self.reads => Ok(()),
            Some(peer) if own_pod(peer.ip()) => Ok(()),
            Some(peer) => Err(Refusal::ReadsOff(peer.ip().to_string())),
            None => Err(Refusal::ReadsOff("an unknown address".into())),
        }
    }
}

/// The middleware for reads: 403 and a JSON reason for a peer the guard refuses.
pub async fn reads(State(guard): State<Guard>, request: Request, next: Next) -> Response {
    let peer = request
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0);
    match guard.check_read(peer) {
        Ok(()) => next.run(request).await,
        Err(refusal) => {
            let body = axum::Json(serde_json::json!({ "error": refusal.to_string() }));
            (StatusCode::FORBIDDEN, body).into_response()
        }
    }
}

/// `localhost`, `127.x.y.z` or `[::1]`, with or without a port.
fn is_loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The middleware: refuses with 403 (415 for a body that is not JSON) and a JSON reason.
pub async fn mutations(State(guard): State<Guard>, request: Request, next: Next) -> Response {
    match guard.check(request.headers()) {
        Ok(()) => next.run(request).await,
        Err(refusal) => {
            let status = match refusal {
                Refusal::NotJson(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
                Refusal::CommandsOff
                | Refusal::CrossOrigin(_)
                | Refusal::ForeignHost(_)
                | Refusal::ReadsOff(_) => StatusCode::FORBIDDEN,
            };
            tracing::warn!(reason = %refusal, "command refused");
            let body = axum::Json(serde_json::json!({ "error": refusal.to_string() }));
            (status, body).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_command_passes_when_commands_are_off() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
        let guard = Guard {
            loopback: false,
            commands: false,
            reads: false,
        };
        assert_eq!(guard.check(&headers), Err(Refusal::CommandsOff));
    }

    #[test]
    fn reads_reach_the_cluster_only_when_allowed() {
        let peer = |s: &str| Some(s.parse::<std::net::SocketAddr>().unwrap());
        for (reads, from, allowed) in [
            (true, peer("10.1.2.3:4000"), true),
            (true, None, true),
            (false, peer("127.0.0.1:4000"), true),
            (false, peer("[::1]:4000"), true),
            // The sidecar's inbound forwarding: another pod's request.
            (false, peer("127.0.0.6:4000"), false),
            (false, peer("10.1.2.3:4000"), false),
            (false, None, false),
        ] {
            let guard = Guard {
                loopback: false,
                commands: false,
                reads,
            };
            let got = guard.check_read(from);
            assert_eq!(
                got.is_ok(),
                allowed,
                "reads {reads}, from {from:?}: {got:?}"
            );
            if let Err(e) = got {
                assert!(e.to_string().contains("--http-reads"), "{e}");
            }
        }
    }

    #[test]
    fn mutations_from_pages_forms_and_foreign_hosts_are_refused() {
        // Listening on loopback; Origin, Content-Type and Host sent; what the guard says.
        type Case<'a> = (
            bool,
            Option<&'a str>,
            Option<&'a str>,
            Option<&'a str>,
            Result<(), &'a str>,
        );
        let json = Some("application/json");
        let cases: [Case; 10] = [
            (true, None, json, Some("127.0.0.1:9091"), Ok(())),
            (true, None, json, Some("localhost:9091"), Ok(())),
            (true, None, json, Some("[::1]:9091"), Ok(())),
            (
                true,
                None,
                Some("application/json; charset=utf-8"),
                Some("localhost"),
                Ok(()),
            ),
            (
                false,
                None,
                json,
                Some("fledge.fledge-system.svc:9091"),
                Ok(()),
            ),
            (
                true,
                Some("https://evil.example"),
                json,
                Some("127.0.0.1:9091"),
                Err("Origin"),
            ),
            (
                true,
                None,
                Some("application/x-www-form-urlencoded"),
                Some("127.0.0.1"),
                Err("JSON"),
            ),
            (true, None, None, Some("127.0.0.1"), Err("JSON")),
            (
                true,
                None,
                json,
                Some("evil.example:9091"),
                Err("evil.example"),
            ),
            (true, None, json, None, Err("Host")),
        ];
        for (loopback, origin, content_type, host, expected) in cases {
            let mut headers = HeaderMap::new();
            for (name, value) in [
                (header::ORIGIN, origin),
                (header::CONTENT_TYPE, content_type),
                (header::HOST, host),
            ] {
                if let Some(v) = value {
                    headers.insert(name, v.parse().expect("header value"));
                }
            }
            let guard = Guard {
                loopback,
                commands: true,
                reads: true,
            };
            let got = guard.check(&headers).map_err(|e| e.to_string());
            match expected {
                Ok(()) => assert_eq!(got, Ok(()), "{origin:?} {content_type:?} {host:?}"),
                Err(needle) => {
                    let message = got.expect_err(needle);
                    assert!(message.contains(needle), "{message:?} lacks {needle:?}");
                }
            }
        }
    }
}
