//! The mesh's side of the filter contract, with a small Rust filter standing in for the .wasm:
//! the route is picked again only when the filter clears the route cache, the log carries
//! Envoy's code, flags and cluster name, and inbound listeners name their inbound cluster.

mod support;

use std::sync::{Arc, Mutex};

use fledge_sandbox::config::SubsetSpec;
use fledge_sandbox::filter::{Completion, Filter, FilterRequest, flags};
use fledge_sandbox::{Filters, load};
use support::{HOST, Sandbox, by_version_header, closed_port};

/// Writes `x-fledge-version: v2` on every request, clearing the route cache or not; records
/// the authority it saw and every completion.
#[derive(Default)]
struct PinToCanary {
    clear_route_cache: bool,
    seen: Arc<Mutex<Vec<(String, Completion)>>>,
}

struct Context {
    cleared: bool,
    authority: String,
    seen: Arc<Mutex<Vec<(String, Completion)>>>,
}

impl Filter for PinToCanary {
    fn on_request_headers(&self, headers: &mut Vec<(String, String)>) -> Box<dyn FilterRequest> {
        let authority = headers
            .iter()
            .find(|(k, _)| k == ":authority")
            .map(|(_, v)| v.clone());
        headers.push(("x-fledge-version".into(), "v2".into()));
        Box::new(Context {
            cleared: self.clear_route_cache,
            authority: authority.unwrap_or_default(),
            seen: Arc::clone(&self.seen),
        })
    }
}

impl FilterRequest for Context {
    fn route_cache_cleared(&self) -> bool {
        self.cleared
    }

    fn on_response_headers(&mut self, headers: &mut Vec<(String, String)>) {
        assert_eq!(headers[0].0, ":status");
        headers.push(("x-seen-by-filter".into(), "1".into()));
    }

    fn on_log(self: Box<Self>, done: Completion) {
        self.seen.lock().unwrap().push((self.authority, done));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_route_follows_the_filters_header_only_after_clear_route_cache() {
    for (clear, version, cluster) in [
        (true, "v2", "outbound|9080|v2|"),
        (false, "v1", "outbound|9080|v1|"),
    ] {
        let sandbox = Sandbox::new("order", &by_version_header(), false).await;
        let filter = PinToCanary {
            clear_route_cache: clear,
            ..Default::default()
        };
        let seen = Arc::clone(&filter.seen);
        let mesh = sandbox
            .mesh(Filters {
                outbound: Some(Arc::new(filter)),
                ..Default::default()
            })
            .await;
        let report = load::run(&support::load(&mesh, 20, 200.0)).await.unwrap();
        assert_eq!(
            report.versions.get(version),
            Some(&20),
            "clear {clear}: {report}"
        );
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 20);
        for (_, done) in seen.iter() {
            assert_eq!(done.cluster_name, format!("{cluster}{HOST}"));
            assert_eq!((done.response_code, done.response_flags), (Some(200), 0));
            assert!(!done.duration.is_zero());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_carries_envoys_flags_and_inbound_listeners_their_cluster() {
    let mut sandbox = Sandbox::new("flags", &by_version_header(), true).await;
    let canary_port = sandbox.canary.addr().port();
    let outbound = PinToCanary {
        clear_route_cache: true,
        ..Default::default()
    };
    let inbound = PinToCanary::default();
    let (out_seen, in_seen) = (Arc::clone(&outbound.seen), Arc::clone(&inbound.seen));
    let filters = Filters {
        outbound: Some(Arc::new(outbound)),
        inbound: [(
            (HOST.to_owned(), "v2".to_owned()),
            Arc::new(inbound) as Arc<dyn Filter>,
        )]
        .into(),
    };
    let mesh = sandbox.mesh(filters.clone()).await;
    let report = load::run(&support::load(&mesh, 10, 200.0)).await.unwrap();
    assert_eq!(report.versions.get("v2"), Some(&10), "{report}");
    {
        let inbound = in_seen.lock().unwrap();
        assert_eq!(inbound.len(), 10);
        for (authority, done) in inbound.iter() {
            assert_eq!(authority, HOST);
            assert_eq!(done.cluster_name, format!("inbound|{canary_port}||"));
        }
    }
    drop(mesh);

    // The canary's backend gone: 503 with UF to the filter, as Envoy reports it.
    sandbox.config.destinations[0]
        .subsets
        .insert("v2".into(), SubsetSpec::Address(closed_port()));
    out_seen.lock().unwrap().clear();
    let mesh = sandbox
        .mesh(Filters {
            outbound: filters.outbound.clone(),
            ..Default::default()
        })
        .await;
    let report = load::run(&support::load(&mesh, 10, 200.0)).await.unwrap();
    assert_eq!(report.statuses.get(&503), Some(&10), "{report}");
    assert_eq!(mesh.stats().connect_failures, 10);
    let out = out_seen.lock().unwrap();
    assert_eq!(out.len(), 10);
    for (_, done) in out.iter() {
        assert_eq!(
            (done.response_code, done.response_flags),
            (Some(503), flags::UPSTREAM_CONNECTION_FAILURE)
        );
        assert_eq!(done.cluster_name, format!("outbound|9080|v2|{HOST}"));
    }
}
