//! The per-request context of the proxy-wasm adapter: on request headers it routes (client
//! role) by asking the routing core and writing the chosen version header; at `on_log` it reads
//! what the request did and records it. It keeps only its own decision until the request ends
//! and never pauses or fails the request.

use std::rc::Rc;
use std::time::UNIX_EPOCH;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, MapType};

use fledge_proto::v1::Traffic;

use super::{HostHeaders, Metrics, Shared, inbound, property_i64, property_string};
use crate::config::Role;
use crate::outcome::{self, Facts, Outcome};
use crate::routing::Destination;

/// One request: what was decided for it, kept until `on_log`.
pub(super) struct Request {
    shared: Option<Rc<Shared>>,
    destination: Option<Destination>,
    /// The routed host and the version written to the request (`None`: header removed).
    decided: Option<(String, Option<String>)>,
    server: bool,
}

impl Request {
    pub(super) fn new(shared: Option<Rc<Shared>>) -> Request {
        Request {
            shared,
            destination: None,
            decided: None,
            server: false,
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
        let Some(decision) = table.decide(&destination.host, &HostHeaders, &mut rng) else {
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
        Metrics::add(shared.metrics.routed, 1);
        self.decided = Some((
            decision.route.host.clone(),
            decision.version.map(str::to_owned),
        ));
    }

    fn facts() -> Facts {
        let duration_ns = property_i64(&["request", "duration"])
            .or_else(|| {
                let start = property_i64(&["request", "time"])?;
                let now = hostcalls::get_current_time().ok()?;
                let now = i64::try_from(now.duration_since(UNIX_EPOCH).ok()?.as_nanos()).ok()?;
                Some(now - start)
            })
            .and_then(|ns| u64::try_from(ns).ok());
        Facts {
            duration_ns,
            response_code: property_i64(&["response", "code"])
                .and_then(|c| u16::try_from(c).ok())
                .filter(|&c| c != 0),
            response_flags: property_i64(&["response", "flags"])
                .map_or(0, |f| u64::from_le_bytes(f.to_le_bytes())),
            grpc_status: property_i64(&["response", "grpc_status"])
                .and_then(|s| i32::try_from(s).ok()),
        }
    }
}

impl Context for Request {}

impl HttpContext for Request {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let Some(shared) = self.shared.clone() else {
            return Action::Continue;
        };
        self.server = match shared.config.role {
            Role::Client => false,
            Role::Server => true,
            Role::Auto => inbound().unwrap_or(false),
        };
        let authority = hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, ":authority")
            .ok()
            .flatten()
            .unwrap_or_default();
        self.destination = Some(Destination::from_authority(&String::from_utf8_lossy(
            &authority,
        )));
        if !self.server {
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
        let outcome = Outcome::of(&Self::facts());
        let cluster = property_string(&["xds", "cluster_name"]);
        let (host, decided) = match &self.decided {
            Some((host, version)) => (host.as_str(), version.as_deref()),
            None => (destination.host.as_str(), None),
        };
        let own = if self.server {
            shared.own_version.as_deref()
        } else {
            None
        };
        let version = outcome::version_of(decided, cluster.as_deref(), own);
        let host = if host.is_empty() { "unknown" } else { host };
        let traffic = if destination.shadow {
            Traffic::Shadow
        } else {
            Traffic::Live
        };
        if let Ok(mut stats) = shared.stats.try_borrow_mut() {
            stats.record(host, version, traffic, &outcome);
            Metrics::add(shared.metrics.recorded, 1);
        }
    }
}
