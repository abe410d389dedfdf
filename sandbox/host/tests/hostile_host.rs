//! fledge's real filter in a host that answers as no proxy here does ([`HostQuirks`]): every
//! status the ABI allows for each host call in turn, numbers as ASCII text or with the wrong
//! size, and header replaces that keep later copies (as nginx with ngx_wasm_module). Whatever the
//! host answers, the filter must never trap and must serve every request: no request may need
//! the host's fail-open.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::*;
use fledge_sandbox_host::{FilterHost, HostConfig, HostError, HostQuirks, PropertyForm};
use fledge_testkit::telemetry::StandInAgent;

/// Starting points of the status sequences: the longest (`proxy_grpc_stream`: five failures,
/// each after an Ok) has ten entries, so these start every call at every place of its sequence.
const OFFSETS: usize = 10;
const BATCHES: usize = 3;
const PER_BATCH: usize = 60;
/// How long each request is held open before it completes.
const HELD: Duration = Duration::from_millis(250);
const REPORT_MS: u64 = 100;

fn hostile(offset: usize) -> HostQuirks {
    HostQuirks {
        every_status: Some(offset),
        properties: PropertyForm::Mixed,
        replace_keeps_duplicates: true,
    }
}

/// A client on `reviews`: `x-beta: 1` goes to v2 (which answers 503), everyone else to v1 (200).
fn config(agent: std::net::SocketAddr) -> HostConfig {
    HostConfig {
        clusters: HashMap::from([(AGENT_CLUSTER.to_string(), agent)]),
        ..HostConfig::new(filter_wasm(), client_config(0, REPORT_MS))
    }
}

/// Runs batches of concurrent requests, each held open for [`HELD`], half of them to v2.
async fn drive(host: &FilterHost, offset: usize) {
    for batch in 0..BATCHES {
        let begun = Instant::now();
        let handles: Vec<_> = (0..PER_BATCH)
            .map(|i| {
                let beta = i % 2 == 0;
                let user = format!("user-{batch}-{i}");
                let extra = [
                    ("x-beta", if beta { "1" } else { "0" }),
                    ("x-user-id", &user),
                ];
                (beta, route(host, &extra).1)
            })
            .collect();
        // Each request is inside the filter (its context lives), none passed it by.
        assert_eq!(
            host.stats().open_contexts,
            PER_BATCH,
            "offset {offset} batch {batch}"
        );
        tokio::time::sleep(HELD).await;
        for (beta, handle) in handles {
            let (version, status) = if beta { ("v2", 503) } else { ("v1", 200) };
            complete(handle, version, begun.elapsed(), status);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_status_the_abi_allows_never_traps_and_every_request_is_served() {
    let mut started = 0;
    for offset in 0..OFFSETS {
        let (_agent, server) = StandInAgent::start().await;
        let host = match FilterHost::start_with(config(server.addr), hostile(offset)).await {
            Ok(host) => host,
            // The host refused the plugin its configuration buffer: the filter declines to start
            // (Envoy then runs the listener without it); it did not trap.
            Err(HostError::Refused { callback, .. }) => {
                assert_eq!(callback, "proxy_on_configure", "offset {offset}");
                server.stop().await;
                continue;
            }
            Err(e) => panic!("offset {offset}: {e}"),
        };
        started += 1;
        drive(&host, offset).await;
        // Ticks, reports, failed sends and reconnects.
        tokio::time::sleep(Duration::from_millis(10 * REPORT_MS)).await;
        let stats = host.stats();
        assert_eq!(
            (stats.traps, stats.vm_restarts, stats.open_contexts),
            (0, 0, 0),
            "offset {offset}: {stats:?}"
        );
        assert_eq!(stats.requests, (BATCHES * PER_BATCH) as u64);
        assert!(
            stats.injected_statuses > 0,
            "offset {offset}: no call failed"
        );
        host.shutdown().await;
        server.stop().await;
    }
    assert!(
        started >= OFFSETS / 2,
        "only {started} of {OFFSETS} starts got past the configuration"
    );
}
