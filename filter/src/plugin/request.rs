//! The per-request context of the proxy-wasm adapter: on request headers it routes (unless the
//! root context resolved the server side) by asking the routing core and writing the chosen
//! version header; at `on_log` it reads what the request did and records it, or counts it as
//! unmeasured when the host's answers do not tell. It keeps only its own decision until the
//! request ends and never pauses or fails the request.

use std::borrow::Cow;
use std::rc::Rc;

use fledge_proto::v1::Traffic;

use super::abi;
use super::{Shared, absorb, property_string, read};
use crate::outcome::{self, Facts, Outcome, Properties};
use crate::routing::{self, Cause, HostBytes, Table};

/// One request: what was decided for it, kept until `on_log`.
pub(super) struct Request {
    shared: Option<Rc<Shared>>,
    /// The request's host as bytes: made text only if the request is recorded under it.
    destination: Option<HostBytes>,
    decided: Option<Decided>,
    /// A gRPC request (by `content-type`): only then does `response.grpc_status` count.
    grpc: bool,
}

/// A routing decision, kept as the table it was made from, the route's index and why, so that
/// nothing is copied per request (a newer table may arrive before `on_log`; this one stays).
struct Decided {
    table: Rc<Table>,
    route: usize,
    cause: Cause,
}

impl Decided {
    /// The routed host and the version written to the request (`None`: header removed).
    fn host_and_version(&self) -> Option<(&str, Option<&str>)> {
        let route = self.table.routes.get(self.route)?;
        Some((route.host.as_str(), route.version(self.cause)))
    }
}

impl Request {
    pub(super) fn new(shared: Option<Rc<Shared>>) -> Request {
        Request {
            shared,
            destination: None,
            decided: None,
            grpc: false,
        }
    }

    /// Routes a request to route `index` of `table` (the table its host was found in); the
    /// decision, if the host took it.
    fn route(shared: &Shared, table: &Rc<Table>, index: usize) -> Option<Decided> {
        let mut rng = shared.rng.try_borrow_mut().ok()?;
        let route = table.routes.get(index)?;
        let decision = route.decide(&RequestHeaders, &mut rng);
        let header = decision.route.version_header.as_str();
        // Every copy a client sent goes first: some hosts (nginx) replace only the first copy,
        // and a copy left behind would let a client pick its own version at the gateway.
        let removed = absorb(abi::remove_header(abi::REQUEST_HEADERS, header));
        let written = match decision.version {
            Some(version) => absorb(abi::replace_header(
                abi::REQUEST_HEADERS,
                header,
                version.as_bytes(),
            )),
            None => removed,
        };
        // Without it the router never saw the decision: the request is counted under the
        // version the upstream cluster names, not one it may never have reached.
        written?;
        // The router picked its route before this filter ran; make it look again. A host
        // without the function, or one that fails it, leaves the route as it was: ignored.
        if shared.config.clear_route_cache {
            read(abi::foreign_function("clear_route_cache", &[]));
        }
        shared.counts.routed.set(shared.counts.routed.get() + 1);
        Some(Decided {
            route: index,
            cause: decision.cause,
            table: Rc::clone(table),
        })
    }

    pub(super) fn on_request_headers(&mut self) {
        let Some(shared) = self.shared.as_deref() else {
            return;
        };
        // Only hosts the routing table names are measured: the rest of the mesh's traffic
        // passes with this one header read and nothing at log time. A request whose authority
        // the host does not give is still counted, under the host "unknown".
        let Ok(table) = shared.table.try_borrow() else {
            return;
        };
        let (destination, route) = match request_header(":authority") {
            Some(authority) => {
                let destination = HostBytes::from_authority(authority);
                // The route found here is the one the request is routed by (`Table::measures`
                // is this lookup).
                let Some(route) = table.route_index(&destination.host) else {
                    return;
                };
                (destination, Some(route))
            }
            None => (HostBytes::from_authority(Vec::new()), None),
        };
        self.destination = Some(destination);
        self.grpc = request_header("content-type")
            .is_some_and(|content_type| outcome::is_grpc(&content_type));
        if let Some(route) = route
            && !shared.identity.side.is_server()
            && let Some(decided) = Request::route(shared, &table, route)
        {
            self.decided = Some(decided);
        }
    }

    pub(super) fn on_log(&mut self) {
        let Some(destination) = self.destination.take() else {
            // Headers never arrived (e.g. a reset before them): nothing to attribute.
            return;
        };
        let Some(shared) = self.shared.as_deref() else {
            return;
        };
        let facts = Facts::read(&HostProperties, self.grpc);
        let traffic = if destination.shadow {
            Traffic::Shadow
        } else {
            Traffic::Live
        };
        let named;
        let (host, decided) = match self.decided.as_ref().and_then(Decided::host_and_version) {
            Some((host, version)) => (host, version),
            None => {
                named = destination.into_destination();
                (named.host.as_str(), None)
            }
        };
        // The upstream cluster only matters when the filter did not pick the version itself.
        let cluster = match decided {
            Some(version) if !version.is_empty() => None,
            _ => property_string(b"xds\0cluster_name"),
        };
        let own = shared.identity.own_version();
        let version = outcome::version_of(decided, cluster.as_deref(), own);
        let host = if host.is_empty() { "unknown" } else { host };
        let Ok(mut stats) = shared.stats.try_borrow_mut() else {
            return;
        };
        let counts = &shared.counts;
        match facts {
            Ok(facts) => {
                stats.record(host, version, traffic, &Outcome::of(&facts));
                counts.recorded.set(counts.recorded.get() + 1);
            }
            // Counted, never guessed: not a latency of 0, not a success.
            Err(_) => {
                stats.record_unmeasured(host, version, traffic);
                counts.unmeasured.set(counts.unmeasured.get() + 1);
            }
        }
    }
}

/// The first value of request header `name`, or `None` when it is absent or unreadable.
fn request_header(name: &str) -> Option<Vec<u8>> {
    read(abi::header(abi::REQUEST_HEADERS, name))
}

/// The request's headers, read one by one from the host as the routing rules ask for them.
struct RequestHeaders;

impl routing::Request for RequestHeaders {
    fn header(&self, name: &str) -> Option<Cow<'_, str>> {
        let bytes = request_header(name)?;
        Some(Cow::Owned(String::from_utf8(bytes).unwrap_or_else(|e| {
            String::from_utf8_lossy(e.as_bytes()).into_owned()
        })))
    }
}

/// The properties of the running request, as the host answers them.
struct HostProperties;

impl Properties for HostProperties {
    fn get(&self, path: &[u8]) -> Option<Vec<u8>> {
        read(abi::property(path))
    }

    fn now_ns(&self) -> Option<u64> {
        absorb(abi::current_time_ns())
    }
}
