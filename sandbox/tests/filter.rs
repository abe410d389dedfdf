//! The sandbox mesh running fledge's real filter (.wasm in the proxy-wasm host): the filter's
//! version header decides the VirtualService route, sticky splits hold users, tables pushed by
//! the agent move only stable users to canary, and inbound listeners record shadow traffic.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use fledge_proto::v1::{HostRoute, Role, RoutingTable};
use fledge_sandbox::{Mesh, load};
use fledge_testkit::messages::HostRouteExt;
use fledge_testkit::telemetry::StandInAgent;
use support::{HOST, Sandbox, all_to, by_version_header, eventually, plugin_config};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_ab_rule_sends_matching_requests_to_canary_and_others_to_stable() {
    let sandbox = Sandbox::new("ab", &by_version_header(), false)
        .await
        .with_filter(plugin_config(0), None);
    let mesh = sandbox.wasm_mesh().await;
    for (beta, version) in [(Some("1"), "v2"), (Some("0"), "v1"), (None, "v1")] {
        let mut config = support::load(&mesh, 100, 500.0).users(50);
        if let Some(value) = beta {
            config = config.header("x-beta", value);
        }
        let report = load::run(&config).await.unwrap();
        assert_eq!(
            report.versions.get(version),
            Some(&100),
            "x-beta {beta:?}: {report}"
        );
    }
    let host = &mesh.filter_hosts()[0];
    assert_eq!((host.stats().requests, host.stats().traps), (300, 0));
    mesh.shutdown().await;
}

/// Each user's one version, failing if a user saw two.
fn users(report: &fledge_sandbox::LoadReport) -> BTreeMap<String, String> {
    for (user, versions) in &report.users {
        assert_eq!(versions.len(), 1, "{user} saw {versions:?}");
    }
    report
        .user_versions()
        .into_iter()
        .map(|(u, v)| (u.to_owned(), v.to_owned()))
        .collect()
}

fn table(revision: u64, canary_bp: u32) -> RoutingTable {
    HostRoute::test()
        .host(HOST)
        .version_header("x-fledge-version")
        .split("v1", "v2", canary_bp)
        .sticky_header("x-user-id")
        .table(revision)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sticky_split_holds_users_and_raising_it_only_moves_stable_users_to_canary() {
    let (agent, serving) = StandInAgent::start().await;
    let sandbox = Sandbox::new("sticky", &by_version_header(), false)
        .await
        .with_filter(plugin_config(2000), Some(serving.addr));
    let mesh = sandbox.wasm_mesh().await;
    let run = |mesh: &Mesh| support::load(mesh, 1600, 800.0).users(400);

    let before = users(&load::run(&run(&mesh)).await.unwrap());
    let canary = before.values().filter(|v| *v == "v2").count() as f64 / before.len() as f64;
    assert_eq!(before.len(), 400);
    assert!(
        (canary - 0.20).abs() < 0.07,
        "20 % split put {canary} of users on canary"
    );

    eventually("both VMs' streams", || agent.streams() == 2).await;
    assert_eq!(agent.push(table(1, 5000)), 2);
    // Routing follows the pushed table well within a second.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = users(&load::run(&run(&mesh)).await.unwrap());
    let canary_after = after.values().filter(|v| *v == "v2").count() as f64 / after.len() as f64;
    assert!(
        (canary_after - 0.50).abs() < 0.08,
        "50 % split put {canary_after} of users on canary"
    );
    let moved_back: Vec<_> = before
        .iter()
        .filter(|(user, version)| *version == "v2" && after[*user] == "v1")
        .collect();
    assert!(
        moved_back.is_empty(),
        "canary users moved back to stable: {moved_back:?}"
    );
    assert!(canary_after > canary + 0.2);
    mesh.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_listener_records_the_mirror_as_shadow_and_clients_as_live() {
    let (agent, serving) = StandInAgent::start().await;
    let http = format!(
        "{}    mirror: {{host: {HOST}, subset: v2}}\n    mirrorPercentage: {{value: 20.0}}\n",
        all_to("v1")
    );
    let sandbox = Sandbox::new("shadow", &http, true)
        .await
        .with_filter(plugin_config(0), Some(serving.addr));
    let mesh = sandbox.wasm_mesh().await;
    let report = load::run(&support::load(&mesh, 1000, 500.0).users(100))
        .await
        .unwrap();
    assert_eq!(report.versions.get("v1"), Some(&1000), "{report}");

    let mirrored = mesh.stats().mirrored;
    eventually("mirrored copies at the canary", || {
        sandbox.canary.counts().shadow == mirrored
    })
    .await;
    let share = mirrored as f64 / 1000.0;
    assert!((share - 0.20).abs() < 0.052, "mirrored {share}");
    let inbound = mesh.inbound_stats(HOST, "v2").unwrap();
    assert_eq!(inbound.requests, mirrored);

    // The client's filter counts every request as live v1; the canary's sidecar counts the
    // mirrored copies as shadow v2, and nothing else.
    let settled = || agent.live_requests("v1") == 1000 && agent.shadow_requests("v2") == mirrored;
    tokio::time::timeout(Duration::from_secs(10), async {
        while !settled() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "reports: v1 live {}, v2 shadow {} of {mirrored}",
            agent.live_requests("v1"),
            agent.shadow_requests("v2")
        )
    });
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(settled(), "counts grew past what was sent");
    assert_eq!(agent.live_requests("v2"), 0);
    assert_eq!(agent.shadow_requests("v1"), 0);
    let roles: Vec<i32> = agent.hellos().iter().map(|h| h.role).collect();
    assert!(
        roles.contains(&(Role::Server as i32)) && roles.contains(&(Role::Client as i32)),
        "{roles:?}"
    );
    let server = agent
        .hellos()
        .into_iter()
        .find(|h| h.role == Role::Server as i32)
        .unwrap();
    assert_eq!(
        (server.workload.as_str(), server.version_label.as_str()),
        ("reviews-v2", "v2")
    );
    mesh.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_filter_configuration_is_refused_with_the_filters_message() {
    let mut plugin = plugin_config(0);
    plugin["routes"][0]["split"]["canary_basis_points"] = 20_000.into();
    let sandbox = Sandbox::new("refused", &all_to("v1"), false)
        .await
        .with_filter(plugin, None);
    let error = Mesh::start(sandbox.config.clone())
        .await
        .err()
        .expect("refused")
        .to_string();
    assert!(error.starts_with("starting the filter"), "{error}");
    assert!(error.contains("canary_basis_points"), "{error}");
}
