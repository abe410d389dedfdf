//! The per-request context of the proxy-wasm adapter: on request headers it routes (unless the
//! root context resolved the server side) by asking the routing core and writing the chosen
//! version header; at `on_log` it reads what the request did and records it. It keeps only its
//! own decision until the request ends and never pauses or fails the request.

use std::borrow::Cow;
use std::rc::Rc;

use fledge_proto::v1::Traffic;

use super::abi;
use super::{Shared, absorb, property_i64, property_string, read};
use crate::outcome::{self, Facts, Outcome};
use crate::routing::{self, Cause, Destination, Table};

/// One request: what was decided for it, kept until `on_log`.
pub(super) struct Request {
    shared: Option<Rc<Shared>>,
    destination: Option<Destination>,
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

    fn route(&mut self, shared: &Shared) {
        let Some(destination) = &self.destination else {
            return;
        };
        let table = match shared.table.try_borrow() {
            Ok(table) => Rc::clone(&table),
            Err(_) => return,
        };
        let Ok(mut rng) = shared.rng.try_borrow_mut() else {
            return;
        };
        let Some((index, decision)) = table.decide(&destination.host, &RequestHeaders, &mut rng)
        else {
            return;
        };
        let header = decision.route.version_header.as_str();
        absorb(match decision.version {
            Some(version) => abi::replace_header(abi::REQUEST_HEADERS, header, version.as_bytes()),
            None => abi::remove_header(abi::REQUEST_HEADERS, header),
        });
        // The router picked its route before this filter ran; make it look again.
        read(abi::foreign_function("clear_route_cache", &[]));
        shared.counts.routed.set(shared.counts.routed.get() + 1);
        self.decided = Some(Decided {
            route: index,
            cause: decision.cause,
            table: Rc::clone(&table),
        });
    }

    fn facts(&self) -> Facts {
        let duration_ns = property_i64(b"request\0duration")
            .or_else(|| {
                let start = property_i64(b"request\0time")?;
                let now = i64::try_from(absorb(abi::current_time_ns())?).ok()?;
                Some(now - start)
            })
            .and_then(|ns| u64::try_from(ns).ok());
        Facts {
            duration_ns,
            response_code: property_i64(b"response\0code")
                .and_then(|c| u16::try_from(c).ok())
                .filter(|&c| c != 0),
            response_flags: property_i64(b"response\0flags")
                .map_or(0, |f| u64::from_le_bytes(f.to_le_bytes())),
            grpc_status: if self.grpc {
                property_i64(b"response\0grpc_status").and_then(|s| i32::try_from(s).ok())
            } else {
                None
            },
        }
    }

    pub(super) fn on_request_headers(&mut self) {
        let Some(shared) = self.shared.clone() else {
            return;
        };
        let authority = request_header(":authority").unwrap_or_default();
        self.destination = Some(Destination::from_authority_bytes(authority));
        self.grpc = request_header("content-type")
            .is_some_and(|content_type| outcome::is_grpc(&content_type));
        if !shared.identity.side.is_server() {
            self.route(&shared);
        }
    }

    pub(super) fn on_log(&mut self) {
        let Some(shared) = self.shared.clone() else {
            return;
        };
        let Some(destination) = self.destination.take() else {
            // Headers never arrived (e.g. a reset before them): nothing to attribute.
            return;
        };
        let outcome = Outcome::of(&self.facts());
        let (host, decided) = match self.decided.as_ref().and_then(Decided::host_and_version) {
            Some((host, version)) => (host, version),
            None => (destination.host.as_str(), None),
        };
        // The upstream cluster only matters when the filter did not pick the version itself.
        let cluster = match decided {
            Some(version) if !version.is_empty() => None,
            _ => property_string(b"xds\0cluster_name"),
        };
        let own = shared.identity.own_version();
        let version = outcome::version_of(decided, cluster.as_deref(), own);
        let host = if host.is_empty() { "unknown" } else { host };
        let traffic = if destination.shadow {
            Traffic::Shadow
        } else {
            Traffic::Live
        };
        if let Ok(mut stats) = shared.stats.try_borrow_mut() {
            stats.record(host, version, traffic, &outcome);
            shared.counts.recorded.set(shared.counts.recorded.get() + 1);
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
