//! Deleting a Rollout, or uninstalling fledge, leaves no fledge route behind: the agent puts its
//! finalizer on every Rollout, and when one is deleted it writes the VirtualService back without
//! the Rollout's `fledge-…` routes (the user's own byte for byte as they were), takes its host
//! out of the filters' table, and only then takes the finalizer off so the deletion completes.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use fledge_agent::controller::Controller;
use fledge_agent::metrics::Metrics;
use fledge_agent::telemetry::Hub;
use fledge_core::windows::Windows as Telemetry;
use serde_json::Value;

use super::{at, cluster, drive, kube_store};

const HOST: &str = "reviews.shop.svc.cluster.local";

fn route_names(vs: &Value) -> Vec<String> {
    vs["spec"]["http"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_rollout_leaves_no_fledge_route_and_the_users_routes_as_they_were() {
    let server = cluster().await;
    let users = server.virtual_service("shop", "reviews").unwrap();
    let telemetry = Arc::new(Mutex::new(Telemetry::new(3600, 64)));
    let hub = Hub::new();
    let kube = Controller::new(
        kube_store(&server).await,
        telemetry.clone(),
        hub.clone(),
        Arc::new(Metrics::new()),
    );
    drive(&kube, &server, &telemetry, 2, 64, async |_| {}).await;

    // Mid-rollout: fledge's routes above the user's, the finalizer on, the host in the table.
    let vs = server.virtual_service("shop", "reviews").unwrap();
    assert!(
        route_names(&vs)
            .iter()
            .any(|n| n.starts_with("fledge-reviews-")),
        "{vs:#}"
    );
    let rollout = server.rollout("shop", "reviews").unwrap();
    assert_eq!(
        rollout["metadata"]["finalizers"],
        serde_json::json!(["fledge.dev/routes"])
    );
    assert_eq!(rollout["status"]["canaryWeight"], 25);
    assert!(hub.table().routes.iter().any(|r| r.host == HOST));

    server.delete_rollout("shop", "reviews");
    let gone = tokio::time::timeout(Duration::from_secs(10), async {
        let mut s = 64;
        while server.rollout("shop", "reviews").is_some() {
            kube.tick(at(s)).await;
            s += 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(
        gone.is_ok(),
        "the deletion never completed: {:#?}",
        server.rollout("shop", "reviews")
    );

    let vs = server.virtual_service("shop", "reviews").unwrap();
    assert!(
        !route_names(&vs).iter().any(|n| n.starts_with("fledge-")),
        "{vs:#}"
    );
    assert_eq!(
        serde_json::to_string(&vs["spec"]).unwrap(),
        serde_json::to_string(&users["spec"]).unwrap(),
        "the user's routes, byte for byte"
    );
    assert!(!hub.table().routes.iter().any(|r| r.host == HOST));

    // Nothing more happens for it: no Rollout, no write.
    let calls = server.calls().len();
    kube.tick(at(100)).await;
    let writes: Vec<String> = server.calls()[calls..]
        .iter()
        .filter(|c| !c.starts_with("GET "))
        .cloned()
        .collect();
    assert!(writes.is_empty(), "{writes:?}");
    assert!(server.violations().is_empty(), "{:#?}", server.violations());
}
