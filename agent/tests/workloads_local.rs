//! The real local agent (`LocalAgent::start`, as `fledge-agent local` runs it) with the
//! workloads gate over a folder: the canary's Deployment file is scaled up before any request,
//! the rollout holds at no traffic while its pods are not ready (the status says why), and once
//! the test, playing the Deployment controller, reports them ready, the first step's weight
//! comes with the next step's replicas: total 4, 25 % → canary 2 (for 50 %), stable 3.

use std::path::Path;
use std::time::Duration;

use fledge_agent::local::{LocalAgent, Options};
use fledge_agent::store::LocalStore;
use fledge_core::rollout::{GateState, RolloutStatus};
use serde_json::{Value, json};

const ROLLOUT: &str = "apiVersion: fledge.dev/v1alpha1
kind: Rollout
metadata: {name: reviews, namespace: shop}
spec:
  host: reviews.shop.svc.cluster.local
  stable: v1
  canary: v2
  virtualService: {name: reviews}
  workloads: {stable: reviews-v1, canary: reviews-v2, scaleWithWeight: true}
  strategy:
    canary:
      steps:
        - {weight: 25, pause: {duration: 1m}}
        - {weight: 50, pause: {duration: 1m}}
";

fn deployment(name: &str, replicas: u64, ready: u64) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {name}, namespace: shop}}\n\
         spec: {{replicas: {replicas}}}\n\
         status: {{observedGeneration: 1, readyReplicas: {ready}, availableReplicas: {ready}}}\n"
    )
}

fn read(dir: &Path, file: &str) -> Value {
    let text = std::fs::read_to_string(dir.join(file)).unwrap();
    serde_norway::from_str(&text).unwrap()
}

fn status(dir: &Path) -> Option<RolloutStatus> {
    LocalStore::new(dir)
        .read_rollouts()
        .ok()?
        .rollouts
        .pop()?
        .status
}

/// Waits up to 10 s for `what` to hold.
async fn until<T>(mut what: impl FnMut() -> Option<T>) -> T {
    for _ in 0..200 {
        if let Some(v) = what() {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("not within 10 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_agent_scales_the_canary_up_and_ready_before_any_traffic() {
    let dir = fledge_testkit::examples::folder(&["virtualservice.yaml"]);
    let d = dir.path();
    std::fs::write(d.join("rollout.yaml"), ROLLOUT).unwrap();
    std::fs::write(d.join("reviews-v1.yaml"), deployment("reviews-v1", 4, 4)).unwrap();
    std::fs::write(d.join("reviews-v2.yaml"), deployment("reviews-v2", 0, 0)).unwrap();
    let any = "127.0.0.1:0".parse().unwrap();
    let agent = LocalAgent::start(Options {
        dir: d.to_path_buf(),
        grpc: any,
        http: any,
        tick: Duration::from_millis(100),
        prometheus: None,
    })
    .await
    .unwrap();

    // The canary gets its first pod, at no traffic, and the step waits for it.
    until(|| (read(d, "reviews-v2.yaml")["spec"]["replicas"] == 1).then_some(())).await;
    assert_eq!(read(d, "reviews-v2.yaml")["metadata"]["generation"], 2);
    let why = until(|| {
        let s = status(d)?;
        s.gates.iter().find_map(|g| match &g.state {
            GateState::Hold(why) if why.contains("ready") => Some(why.clone()),
            _ => None,
        })
    })
    .await;
    assert_eq!(why, "canary reviews-v2 0/1 ready for 25%");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let held = status(d).unwrap();
    assert_eq!((held.current_step, held.canary_weight), (Some(0), 0));

    // Its pod is ready: the first step's weight, with the replicas the next step needs.
    let mut v2 = read(d, "reviews-v2.yaml");
    v2["status"] = json!({"observedGeneration": 2, "readyReplicas": 1, "availableReplicas": 1});
    std::fs::write(
        d.join("reviews-v2.yaml"),
        serde_norway::to_string(&v2).unwrap(),
    )
    .unwrap();
    let s = until(|| status(d).filter(|s| s.canary_weight == 25)).await;
    assert_eq!(s.current_step, Some(1));
    until(|| {
        let replicas = |f| read(d, f)["spec"]["replicas"].as_u64();
        (replicas("reviews-v2.yaml") == Some(2) && replicas("reviews-v1.yaml") == Some(3))
            .then_some(())
    })
    .await;
    agent.stop();
}
