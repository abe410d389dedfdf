//! The sandbox mesh without a filter: VirtualService routing, weights, mirrors, reloads and
//! Envoy's answers when an upstream fails, over real HTTP to real backends.

mod support;

use std::time::Duration;

use fledge_sandbox::{Behaviour, Filters, Latency, load};
use support::{HOST, Sandbox, all_to, closed_port, eventually, write_atomically};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_match_sends_to_canary_and_the_rest_to_stable() {
    let http = format!(
        "  - name: canary-testers\n    match:\n    - headers: {{x-canary: {{exact: \"1\"}}}}\n    route:\n    - destination: {{host: {HOST}, subset: v2}}\n{}",
        all_to("v1")
    );
    let sandbox = Sandbox::new("header", &http, false).await;
    let mesh = sandbox.mesh(Filters::default()).await;
    for (header, version) in [(Some("1"), "v2"), (Some("0"), "v1"), (None, "v1")] {
        let mut config = support::load(&mesh, 50, 500.0);
        if let Some(value) = header {
            config = config.header("x-canary", value);
        }
        let report = load::run(&config).await.unwrap();
        assert_eq!(
            report.versions.get(version),
            Some(&50),
            "x-canary {header:?}: {report}"
        );
        assert_eq!(report.statuses.get(&200), Some(&50), "{report}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_are_roughly_honoured_over_http1_and_h2c() {
    let http = format!(
        "  - name: split\n    route:\n    - destination: {{host: {HOST}, subset: v1}}\n      weight: 80\n    - destination: {{host: {HOST}, subset: v2}}\n      weight: 20\n"
    );
    let sandbox = Sandbox::new("weights", &http, false).await;
    let mesh = sandbox.mesh(Filters::default()).await;
    for http2 in [false, true] {
        let mut config = support::load(&mesh, 1000, 1000.0);
        config.http2 = http2;
        let report = load::run(&config).await.unwrap();
        assert_eq!(report.answered(), 1000, "{report}");
        // 1000 draws at 20 %: one standard deviation is 1.3 points; allow four.
        let share = report.share("v2");
        assert!(
            (share - 0.20).abs() < 0.052,
            "http2 {http2}: canary share {share}\n{report}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirror_sends_shadow_copies_while_clients_see_only_stable() {
    let http = format!(
        "{}    mirror: {{host: {HOST}, subset: v2}}\n    mirrorPercentage: {{value: 20.0}}\n",
        all_to("v1")
    );
    let sandbox = Sandbox::new("mirror", &http, false).await;
    let mesh = sandbox.mesh(Filters::default()).await;
    // A failing, slow canary must not reach any client.
    sandbox.set_canary(Behaviour::new(
        Latency::fixed(Duration::from_millis(30)),
        1.0,
    ));
    let report = load::run(&support::load(&mesh, 1000, 1000.0))
        .await
        .unwrap();
    assert_eq!(report.versions.get("v1"), Some(&1000), "{report}");
    assert_eq!(report.statuses.get(&200), Some(&1000), "{report}");
    let mirrored = mesh.stats().mirrored;
    eventually("the mirrored copies to arrive", || {
        sandbox.canary.counts().shadow == mirrored
    })
    .await;
    let canary = sandbox.canary.counts();
    assert_eq!(canary.live, 0, "{canary:?}");
    let share = canary.shadow as f64 / 1000.0;
    assert!((share - 0.20).abs() < 0.052, "shadow share {share}");
    assert_eq!(sandbox.stable.counts().shadow, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_file_changes_routing_and_a_bad_one_keeps_the_last_routes() {
    let sandbox = Sandbox::new("reload", &all_to("v1"), false).await;
    let mesh = sandbox.mesh(Filters::default()).await;
    let report = load::run(&support::load(&mesh, 20, 200.0)).await.unwrap();
    assert_eq!(report.versions.get("v1"), Some(&20), "{report}");

    write_atomically(&sandbox.vs_path, &support::virtual_service(&all_to("v2")));
    eventually("the reload", || mesh.routes().reloads() == 1).await;
    let report = load::run(&support::load(&mesh, 20, 200.0)).await.unwrap();
    assert_eq!(report.versions.get("v2"), Some(&20), "{report}");

    let broken = support::virtual_service(&all_to("v1"))
        .replace("subset: v1}\n", "subset: v1}\n      weight: 300\n");
    write_atomically(&sandbox.vs_path, &broken);
    eventually("the failed reload", || mesh.routes().failed_reloads() == 1).await;
    let error = mesh.routes().last_error().unwrap();
    assert!(
        error.contains("spec.http[0].route[0].weight: 300 is over 100"),
        "{error}"
    );
    let report = load::run(&support::load(&mesh, 20, 200.0)).await.unwrap();
    assert_eq!(report.versions.get("v2"), Some(&20), "{report}");
    assert_eq!(mesh.routes().reloads(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_get_envoys_status_and_flags() {
    let http = format!(
        "  - name: slow\n    match:\n    - uri: {{prefix: /slow}}\n    route:\n    - destination: {{host: {HOST}, subset: v2}}\n    timeout: 0.1s\n  - name: gone\n    match:\n    - uri: {{prefix: /gone}}\n    route:\n    - destination: {{host: {HOST}, subset: v3}}\n{}",
        all_to("v1")
    );
    let mut sandbox = Sandbox::new("failures", &http, false).await;
    sandbox.config.destinations[0].subsets.insert(
        "v1".into(),
        fledge_sandbox::config::SubsetSpec::Address(closed_port()),
    );
    sandbox.set_canary(Behaviour::new(
        Latency::fixed(Duration::from_millis(400)),
        0.0,
    ));
    let mesh = sandbox.mesh(Filters::default()).await;
    let cases = [
        ("/", HOST, 503, "connect_failures"),
        ("/slow", HOST, 504, "timeouts"),
        ("/gone", HOST, 503, "no_upstream"),
        ("/", "ratings.shop", 404, "no_route"),
    ];
    for (path, authority, status, counter) in cases {
        let mut config = support::load(&mesh, 10, 200.0);
        config.path = path.into();
        config.authority = authority.into();
        let report = load::run(&config).await.unwrap();
        assert_eq!(
            report.statuses.get(&status),
            Some(&10),
            "{path} {authority}: {report}"
        );
        let stats = serde_json::to_value(mesh.stats()).unwrap();
        assert_eq!(stats[counter], 10, "{path}: {stats}");
    }
    assert_eq!(mesh.stats().requests, 40);
}
