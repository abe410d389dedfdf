//! The per-request context of the proxy-wasm adapter: on request headers it routes (unless the
//! root context resolved the server side) by asking the routing core and writing the chosen
//! version header; at `on_log` it reads what the request did and records it. It keeps only its
//! own decision until the request ends and never pauses or fails the request.

use std::rc::Rc;
use std::time::UNIX_EPOCH;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, MapType};

use fledge_proto::v1::Traffic;

use super::reads::{self, RequestHeaders};
use super::{Shared, property_i64, property_string};
use crate::outcome::{self, Facts, Outcome};
use crate::routing::{Cause, Destination, Table};

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
        let _ = hostcalls::set_map_value_bytes(
            MapType::HttpRequestHeaders,
            header,
            decision.version.map(str::as_bytes),
        );
        // The router picked its route before this filter ran; make it look again.
        let _ = hostcalls::call_foreign_function("clear_route_cache", None);
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
                let now = hostcalls::get_current_time().ok()?;
                let now = i64::try_from(now.duration_since(UNIX_EPOCH).ok()?.as_nanos()).ok()?;
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
}

impl Context for Request {}

impl HttpContext for Request {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let Some(shared) = self.shared.clone() else {
            return Action::Continue;
        };
        let authority = reads::request_header(":authority").unwrap_or_default();
        self.destination = Some(Destination::from_authority_bytes(authority));
        self.grpc = reads::request_header("content-type")
            .is_some_and(|content_type| outcome::is_grpc(&content_type));
        if !shared.identity.side.is_server() {
            self.route(&shared);
        }
        Action::Continue
    }

    fn on_log(&mut self) {
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
