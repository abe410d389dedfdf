//! One sandbox listener's request path, in Envoy's order: request headers through the filter,
//! the route (picked again if the filter cleared the route cache, so the version header it
//! wrote decides), mirrors sent fire-and-forget, the upstream exchange, response headers
//! through the filter, then the filter's log with duration, code, flags and cluster name.
//! Outbound listeners route by the VirtualServices; an inbound listener sends everything to its
//! one backend, as a pod's sidecar does. The filter never fails a request: without one, or
//! whatever it does, the request is forwarded.

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::request::Parts;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde::Serialize;

use crate::config::SandboxConfig;
use crate::filter::{Completion, Filter, flags};
use crate::forward::{self, Outgoing, Upstream, is_hop_by_hop, shadow_authority};
use crate::listener::{authority_of, text};
use crate::route::{Target, header};
use crate::watch::Routes;

/// Where a listener sends requests.
pub(crate) enum Mode {
    /// Route by the VirtualServices to the configured subsets (or their inbound listeners).
    Outbound {
        routes: Arc<Routes>,
        config: Arc<SandboxConfig>,
        /// Inbound listener addresses by (destination host, subset).
        inbound: HashMap<(String, String), SocketAddr>,
    },
    /// Everything to one backend.
    Inbound {
        upstream: SocketAddr,
        cluster_name: String,
    },
}

/// Counters of one listener.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ProxyStats {
    pub requests: u64,
    /// Responses by status code (including the proxy's own).
    pub statuses: BTreeMap<u16, u64>,
    /// 404 `NR`: no VirtualService or route matched.
    pub no_route: u64,
    /// 503 `UH`: the route's subset has no backend.
    pub no_upstream: u64,
    /// 503 `UF`.
    pub connect_failures: u64,
    /// 503 `UR`.
    pub resets: u64,
    /// 504 `UT`.
    pub timeouts: u64,
    /// Mirrored copies sent, and those that got no response.
    pub mirrored: u64,
    pub mirror_failures: u64,
}

pub(crate) struct Proxy {
    mode: Mode,
    filter: Option<Arc<dyn Filter>>,
    client: Upstream,
    rng: Mutex<StdRng>,
    requests: AtomicU64,
    mirrored: Arc<AtomicU64>,
    mirror_failures: Arc<AtomicU64>,
    outcomes: Mutex<ProxyStats>,
}

/// Where one request goes.
struct Plan {
    upstream: SocketAddr,
    cluster_name: String,
    timeout: Option<Duration>,
    mirrors: Vec<SocketAddr>,
}

impl Proxy {
    pub(crate) fn new(mode: Mode, filter: Option<Arc<dyn Filter>>, seed: u64) -> Proxy {
        Proxy {
            mode,
            filter,
            client: forward::upstream_client(),
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
            requests: AtomicU64::new(0),
            mirrored: Arc::new(AtomicU64::new(0)),
            mirror_failures: Arc::new(AtomicU64::new(0)),
            outcomes: Mutex::new(ProxyStats::default()),
        }
    }

    pub(crate) fn stats(&self) -> ProxyStats {
        let mut stats = self
            .outcomes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        stats.requests = self.requests.load(Ordering::Relaxed);
        stats.mirrored = self.mirrored.load(Ordering::Relaxed);
        stats.mirror_failures = self.mirror_failures.load(Ordering::Relaxed);
        stats
    }

    pub(crate) async fn handle(
        self: Arc<Self>,
        request: Request<Incoming>,
    ) -> Response<Full<Bytes>> {
        let start = Instant::now();
        self.requests.fetch_add(1, Ordering::Relaxed);
        let authority = authority_of(&request);
        let (parts, body) = request.into_parts();
        let body = match body.collect().await {
            Ok(body) => body.to_bytes(),
            Err(e) => return self.count(text(400, format!("reading the request body: {e}\n")), 0),
        };
        let mut headers = request_headers(&parts, &authority);
        let original = self.filter.as_ref().map(|_| headers.clone());
        let mut context = self
            .filter
            .as_ref()
            .map(|f| f.on_request_headers(&mut headers));
        // Envoy picked the route before the filter ran; it picks again only if asked.
        let route_by = match (&context, &original) {
            (Some(context), Some(original)) if !context.route_cache_cleared() => original,
            _ => &headers,
        };
        let (result, cluster_name) = match self.plan(route_by) {
            Ok(plan) => {
                let outgoing = outgoing(&parts, &headers, body);
                self.mirror(&plan, &outgoing);
                let answer =
                    forward::send(&self.client, plan.upstream, &outgoing, plan.timeout).await;
                (answer, plan.cluster_name)
            }
            Err((reply, cluster_name)) => (Err(reply), cluster_name),
        };
        let (mut response_headers, body, code, flags, grpc_status) = match result {
            Ok(answer) => {
                let mut list = vec![(":status".to_owned(), answer.status.as_u16().to_string())];
                for (name, value) in &answer.headers {
                    if !is_hop_by_hop(name.as_str()) {
                        list.push((
                            name.as_str().to_owned(),
                            String::from_utf8_lossy(value.as_bytes()).into_owned(),
                        ));
                    }
                }
                (
                    list,
                    answer.body,
                    answer.status.as_u16(),
                    0,
                    answer.grpc_status,
                )
            }
            Err(reply) => {
                tracing::debug!(status = reply.status, flags = reply.flags, message = %reply.message, "local reply");
                let list = vec![
                    (":status".to_owned(), reply.status.to_string()),
                    ("content-type".to_owned(), "text/plain".to_owned()),
                ];
                (
                    list,
                    Bytes::from(reply.message + "\n"),
                    reply.status,
                    reply.flags,
                    None,
                )
            }
        };
        if let Some(context) = &mut context {
            context.on_response_headers(&mut response_headers);
        }
        let response = response(&response_headers, code, body);
        if let Some(context) = context {
            context.on_log(Completion {
                duration: start.elapsed(),
                response_code: Some(code),
                response_flags: flags,
                grpc_status,
                cluster_name,
            });
        }
        self.count(response, flags)
    }

    fn plan(&self, headers: &[(String, String)]) -> Result<Plan, (forward::LocalReply, String)> {
        let (routes, config, inbound) = match &self.mode {
            Mode::Inbound {
                upstream,
                cluster_name,
            } => {
                return Ok(Plan {
                    upstream: *upstream,
                    cluster_name: cluster_name.clone(),
                    timeout: None,
                    mirrors: Vec::new(),
                });
            }
            Mode::Outbound {
                routes,
                config,
                inbound,
            } => (routes, config, inbound),
        };
        let table = routes.current();
        let (target, mirrors, timeout) = {
            let mut rng = self.rng.lock().unwrap_or_else(|e| e.into_inner());
            let Some(selection) = table.select(headers, &mut *rng) else {
                let authority = header(headers, ":authority").unwrap_or_default();
                return Err((
                    local(
                        404,
                        flags::NO_ROUTE_FOUND,
                        format!("no route for {authority}"),
                    ),
                    String::new(),
                ));
            };
            let mirrors: Vec<Target> = selection.mirrors.iter().map(|t| (*t).clone()).collect();
            (selection.target.clone(), mirrors, selection.timeout)
        };
        let address = |target: &Target| {
            let resolved = config.resolve(target)?;
            let key = (resolved.host.to_owned(), resolved.subset.to_owned());
            let address = inbound.get(&key).copied().unwrap_or(resolved.address);
            Some((address, resolved.cluster_name))
        };
        let Some((upstream, cluster_name)) = address(&target) else {
            return Err((
                local(
                    503,
                    flags::NO_HEALTHY_UPSTREAM,
                    format!("no healthy upstream for {target}"),
                ),
                String::new(),
            ));
        };
        let mirrors = mirrors
            .iter()
            .filter_map(|m| {
                let found = address(m);
                if found.is_none() {
                    tracing::warn!(mirror = %m, "mirror destination has no backend; not mirrored");
                }
                found.map(|(a, _)| a)
            })
            .collect();
        Ok(Plan {
            upstream,
            cluster_name,
            timeout,
            mirrors,
        })
    }

    /// Sends each mirrored copy on its own; its response is read and dropped.
    fn mirror(&self, plan: &Plan, outgoing: &Outgoing) {
        for &address in &plan.mirrors {
            let mut copy = outgoing.clone();
            copy.authority = shadow_authority(&copy.authority);
            let client = self.client.clone();
            let timeout = plan.timeout.or(Some(Duration::from_secs(30)));
            let (sent, failures) = (
                Arc::clone(&self.mirrored),
                Arc::clone(&self.mirror_failures),
            );
            sent.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(async move {
                if forward::send(&client, address, &copy, timeout)
                    .await
                    .is_err()
                {
                    failures.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
    }

    fn count(&self, response: Response<Full<Bytes>>, flags: u64) -> Response<Full<Bytes>> {
        let mut guard = self.outcomes.lock().unwrap_or_else(|e| e.into_inner());
        let stats = &mut *guard;
        *stats
            .statuses
            .entry(response.status().as_u16())
            .or_default() += 1;
        for (bit, counter) in [
            (flags::NO_ROUTE_FOUND, &mut stats.no_route),
            (flags::NO_HEALTHY_UPSTREAM, &mut stats.no_upstream),
            (
                flags::UPSTREAM_CONNECTION_FAILURE,
                &mut stats.connect_failures,
            ),
            (flags::UPSTREAM_REMOTE_RESET, &mut stats.resets),
            (flags::UPSTREAM_REQUEST_TIMEOUT, &mut stats.timeouts),
        ] {
            if flags & bit != 0 {
                *counter += 1;
            }
        }
        drop(guard);
        response
    }
}

fn local(status: u16, flags: u64, message: String) -> forward::LocalReply {
    forward::LocalReply {
        status,
        flags,
        message,
    }
}

/// The request's headers as a filter sees them: pseudo headers first, names lower case, no
/// hop-by-hop headers, and `Host` folded into `:authority`.
fn request_headers(parts: &Parts, authority: &str) -> Vec<(String, String)> {
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut headers = vec![
        (":authority".to_owned(), authority.to_owned()),
        (":path".to_owned(), path.to_owned()),
        (":method".to_owned(), parts.method.as_str().to_owned()),
        (
            ":scheme".to_owned(),
            parts.uri.scheme_str().unwrap_or("http").to_owned(),
        ),
    ];
    for (name, value) in &parts.headers {
        if name != http::header::HOST && !is_hop_by_hop(name.as_str()) {
            headers.push((
                name.as_str().to_owned(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            ));
        }
    }
    headers
}

/// The upstream request from the (possibly rewritten) filter headers.
fn outgoing(parts: &Parts, headers: &[(String, String)], body: Bytes) -> Outgoing {
    let pseudo = |name: &str| header(headers, name).map(str::to_owned);
    Outgoing {
        method: pseudo(":method")
            .and_then(|m| m.parse().ok())
            .unwrap_or_else(|| parts.method.clone()),
        path: pseudo(":path").unwrap_or_else(|| "/".into()),
        authority: pseudo(":authority").unwrap_or_default(),
        headers: headers
            .iter()
            .filter(|(k, _)| !k.starts_with(':'))
            .cloned()
            .collect(),
        body,
    }
}

fn response(headers: &[(String, String)], code: u16, body: Bytes) -> Response<Full<Bytes>> {
    let mut response = text(code, body);
    response.headers_mut().clear();
    for (name, value) in headers.iter().filter(|(k, _)| !k.starts_with(':')) {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(name.as_bytes()),
            http::HeaderValue::from_str(value),
        ) {
            response.headers_mut().append(name, value);
        }
    }
    response
}
