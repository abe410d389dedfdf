//! Workloads through both stores: the same rolling update (`manifests/examples/rolling.yaml`,
//! total 10 replicas, steps 10/30/60 %) driven by the real controller with its workloads gate
//! over the stand-in API server (every Deployment call checked) and over the local store's
//! folder (Deployment files), with the test playing the Deployment controller (ready pods follow
//! `spec.replicas`, the canary's held back at first). Both must scale alike, the canary ready for
//! each weight before it gets it, the old stable down 30 s after the promotion, and a third
//! Deployment never touched. After an abort the stable has its 10 replicas back at once and the
//! canary goes to zero 30 s later.

use std::collections::BTreeMap;
use std::path::Path;

use fledge_agent::gates::{Gate, Gates};
use fledge_agent::workloads::WorkloadGate;
use fledge_agent::workloads::kube::KubeDeployments;
use fledge_agent::workloads::local::LocalDeployments;
use fledge_core::rollout::GateState;
use fledge_core::rollout::workloads::canary_replicas;

use super::*;

/// How often the gates' tasks read and scale in these tests.
const EVERY: Duration = Duration::from_millis(20);
/// The canary's pods are not ready before this second.
const CANARY_READY_FROM: i64 = 20;

fn deployment(name: &str, replicas: u64) -> Value {
    let (app, version) = name.split_once('-').unwrap();
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": "shop"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": app, "version": version}},
        },
    })
}

const DEPLOYMENTS: [(&str, u64); 3] = [("reviews-v1", 10), ("reviews-v2", 0), ("ratings-v1", 4)];

/// A stand-in holding the rolling example, its VirtualService and three Deployments.
pub async fn rolling_cluster() -> ApiServer {
    let server = ApiServer::start().await;
    server.apply_rollout(example("rolling.yaml"));
    server.create_virtual_service(example("virtualservice.yaml"));
    for (name, replicas) in DEPLOYMENTS {
        server.create_deployment(deployment(name, replicas));
    }
    server
}

/// The workloads gate over the stand-in's Deployments.
pub fn gates(server: &ApiServer) -> Gates {
    let gate = WorkloadGate::start(KubeDeployments::new(server.client()), EVERY);
    Gates::new(vec![gate as Arc<dyn Gate>])
}

fn rolling_folder() -> tempfile::TempDir {
    let dir = fledge_testkit::examples::folder(&["rolling.yaml", "virtualservice.yaml"]);
    for (name, replicas) in DEPLOYMENTS {
        let yaml = serde_norway::to_string(&deployment(name, replicas)).unwrap();
        std::fs::write(dir.path().join(format!("{name}.yaml")), yaml).unwrap();
    }
    dir
}

fn file(dir: &Path, name: &str) -> Value {
    yaml_docs(&dir.join(format!("{name}.yaml"))).remove(0)
}

/// Plays the Deployment controller on a file: `ready` pods for its current generation.
fn set_ready_in_file(dir: &Path, name: &str, ready: u64) {
    let path = dir.join(format!("{name}.yaml"));
    let mut d = file(dir, name);
    let status = json!({
        "observedGeneration": d["metadata"]["generation"].as_i64().unwrap_or(1),
        "replicas": d["spec"]["replicas"],
        "readyReplicas": ready,
        "availableReplicas": ready,
    });
    if d["status"] == status {
        return;
    }
    d["status"] = status;
    let tmp = dir.join(format!(".{name}.kubelet.tmp"));
    std::fs::write(&tmp, serde_norway::to_string(&d).unwrap()).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
}

/// (spec.replicas, ready pods) of a Deployment object; pods stay ready while the status
/// catches up with a new spec.
fn replicas(d: &Value) -> (u64, u64) {
    let ready = d["status"]["readyReplicas"].as_u64().unwrap_or(0);
    (d["spec"]["replicas"].as_u64().unwrap(), ready)
}

/// What one store showed over a rollout.
#[derive(Debug, Default, PartialEq)]
struct Seen {
    /// (phase, weight) → the replicas (canary, stable) last seen in it.
    replicas: BTreeMap<(String, u32), (u64, u64)>,
    /// When the rollout succeeded, and when the old stable reached zero.
    succeeded_at: Option<i64>,
    stable_zero_at: Option<i64>,
}

impl Seen {
    fn observe(
        &mut self,
        s: i64,
        status: &RolloutStatus,
        canary: (u64, u64),
        stable: (u64, u64),
        store: &str,
    ) {
        let w = status.canary_weight;
        if matches!(status.phase, Phase::Progressing | Phase::Succeeded) && w > 0 {
            assert!(
                canary.1 >= u64::from(canary_replicas(10, w)),
                "{store} at {s}s: the canary gets {w}% with {} pods ready",
                canary.1
            );
        }
        if s < CANARY_READY_FROM {
            assert_eq!(
                (status.current_step, w),
                (Some(0), 0),
                "{store} at {s}s: no traffic before the canary is ready"
            );
        }
        if status.phase == Phase::Succeeded {
            self.succeeded_at.get_or_insert(s);
            if stable.0 == 0 {
                self.stable_zero_at.get_or_insert(s);
            }
        }
        self.replicas
            .insert((status.phase.to_string(), w), (canary.0, stable.0));
    }
}

/// The workloads gate's report about the current step, as the status keeps it.
fn held_reason(status: &RolloutStatus) -> Option<String> {
    status
        .gates
        .iter()
        .find(|g| g.name == "workloads")
        .and_then(|g| match &g.state {
            GateState::Hold(why) => Some(why.clone()),
            _ => None,
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_follow_the_weight_through_the_api_server_as_through_the_local_store() {
    let server = rolling_cluster().await;
    let dir = rolling_folder();
    // One telemetry store per controller: a controller keeps only the series its own rollouts
    // need, so one that finished first would starve the other of what it still judges.
    let telemetry = Arc::new(Mutex::new(Telemetry::new(3600, 64)));
    let local_telemetry = Arc::new(Mutex::new(Telemetry::new(3600, 64)));
    let kube = controller(kube_store(&server).await, &telemetry).with_gates(gates(&server));
    let local_gate = WorkloadGate::start(LocalDeployments::new(dir.path()), EVERY);
    let local = controller(LocalStore::new(dir.path()), &local_telemetry)
        .with_gates(Gates::new(vec![local_gate as Arc<dyn Gate>]));
    let reader = LocalStore::new(dir.path());
    let (mut kube_seen, mut local_seen) = (Seen::default(), Seen::default());
    let mut held = Vec::new();
    for s in (2..600).step_by(2) {
        for telemetry in [&telemetry, &local_telemetry] {
            feed(telemetry, s - 2);
            feed(telemetry, s - 1);
        }
        kube.tick(at(s)).await;
        local.tick(at(s)).await;
        // The gates' tasks read and scale on their own time.
        tokio::time::sleep(EVERY * 4).await;

        let status = kube_status(&server).unwrap();
        let side = |name| replicas(&server.deployment("shop", name).unwrap());
        kube_seen.observe(s, &status, side("reviews-v2"), side("reviews-v1"), "kube");
        held.extend(held_reason(&status));
        let local_status = reader.read_rollouts().unwrap().rollouts[0]
            .status
            .clone()
            .unwrap();
        let side = |name| replicas(&file(dir.path(), name));
        local_seen.observe(
            s,
            &local_status,
            side("reviews-v2"),
            side("reviews-v1"),
            "local",
        );
        if kube_seen.stable_zero_at.is_some() && local_seen.stable_zero_at.is_some() {
            break;
        }

        // The Deployment controller: every pod of the spec ready, the canary's only later.
        for (name, _) in DEPLOYMENTS {
            let held_back = name == "reviews-v2" && s + 2 < CANARY_READY_FROM;
            let want = |d: &Value| if held_back { 0 } else { replicas(d).0 };
            server.set_ready(
                "shop",
                name,
                want(&server.deployment("shop", name).unwrap()),
            );
            set_ready_in_file(dir.path(), name, want(&file(dir.path(), name)));
        }
    }

    let expected: BTreeMap<(String, u32), (u64, u64)> = [
        (("Progressing", 0), (1, 10)),
        (("Progressing", 10), (3, 9)),
        (("Progressing", 30), (6, 7)),
        (("Progressing", 60), (10, 4)),
        (("Succeeded", 100), (10, 0)),
    ]
    .into_iter()
    .map(|((p, w), r)| ((p.to_string(), w), r))
    .collect();
    for seen in [&kube_seen, &local_seen] {
        let mut got = seen.replicas.clone();
        got.remove(&("Promoting".to_string(), 100));
        assert_eq!(
            got,
            expected,
            "(canary, stable) replicas per phase and weight; {:#?}",
            kube_status(&server).map(|s| (s.reason, s.gates))
        );
        let (done, zero) = (seen.succeeded_at.unwrap(), seen.stable_zero_at.unwrap());
        assert!(
            (30..=34).contains(&(zero - done)),
            "the old stable went to zero {}s after the promotion",
            zero - done
        );
    }
    assert!(
        held.iter()
            .any(|h| h == "canary reviews-v2 0/1 ready for 10%"),
        "{held:?}"
    );

    // The total is in the status; no Deployment but the two named was touched.
    let status = kube_status(&server).unwrap();
    let gate = status.gates.iter().find(|g| g.name == "workloads").unwrap();
    assert_eq!(gate.evidence["totalReplicas"], 10);
    assert_eq!(
        replicas(&server.deployment("shop", "ratings-v1").unwrap()).0,
        4
    );
    assert_eq!(
        file(dir.path(), "ratings-v1")["metadata"].get("generation"),
        None
    );
    assert!(
        !server.calls().iter().any(|c| c.contains("ratings")),
        "{:#?}",
        server.calls()
    );
    let deployments: BTreeSet<Access> = server
        .accesses()
        .into_iter()
        .filter(|a| a.group == "apps")
        .collect();
    assert_eq!(
        deployments,
        BTreeSet::from([
            Access::new("get", "apps", "deployments"),
            Access::new("patch", "apps", "deployments/scale"),
        ])
    );
    assert!(server.violations().is_empty(), "{:#?}", server.violations());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abort_gives_the_stable_its_replicas_back_and_the_canary_goes_after_the_delay() {
    let server = rolling_cluster().await;
    let dir = rolling_folder();
    // One telemetry store per controller: a controller keeps only the series its own rollouts
    // need, so one that finished first would starve the other of what it still judges.
    let telemetry = Arc::new(Mutex::new(Telemetry::new(3600, 64)));
    let local_telemetry = Arc::new(Mutex::new(Telemetry::new(3600, 64)));
    let kube = controller(kube_store(&server).await, &telemetry).with_gates(gates(&server));
    let local_gate = WorkloadGate::start(LocalDeployments::new(dir.path()), EVERY);
    let local = controller(LocalStore::new(dir.path()), &local_telemetry)
        .with_gates(Gates::new(vec![local_gate as Arc<dyn Gate>]));
    let reader = LocalStore::new(dir.path());
    // Per store: when it was aborted, when the stable had 10 again, when the canary had 0.
    let mut times: [(Option<i64>, Option<i64>, Option<i64>); 2] = Default::default();
    for s in (2..300).step_by(2) {
        for telemetry in [&telemetry, &local_telemetry] {
            feed(telemetry, s - 2);
            feed(telemetry, s - 1);
        }
        kube.tick(at(s)).await;
        local.tick(at(s)).await;
        tokio::time::sleep(EVERY * 4).await;
        let statuses = [
            kube_status(&server).unwrap(),
            reader.read_rollouts().unwrap().rollouts[0]
                .status
                .clone()
                .unwrap(),
        ];
        // (canary, stable) spec.replicas per store.
        let sides = [
            ["reviews-v2", "reviews-v1"]
                .map(|n| replicas(&server.deployment("shop", n).unwrap()).0),
            ["reviews-v2", "reviews-v1"].map(|n| replicas(&file(dir.path(), n)).0),
        ];
        for (i, status) in statuses.iter().enumerate() {
            let (aborted, stable_back, canary_gone) = &mut times[i];
            if status.phase == Phase::Aborted {
                aborted.get_or_insert(s);
                if sides[i][1] == 10 {
                    stable_back.get_or_insert(s);
                }
                if sides[i][0] == 0 {
                    canary_gone.get_or_insert(s);
                }
            }
        }
        if statuses[0].canary_weight == 30 && times[0].0.is_none() {
            kube.command("shop", "reviews", UserCommand::Abort).unwrap();
        }
        if statuses[1].canary_weight == 30 && times[1].0.is_none() {
            local
                .command("shop", "reviews", UserCommand::Abort)
                .unwrap();
        }
        if times.iter().all(|t| t.2.is_some()) {
            break;
        }
        for (name, _) in DEPLOYMENTS {
            let ready = |d: &Value| replicas(d).0;
            server.set_ready(
                "shop",
                name,
                ready(&server.deployment("shop", name).unwrap()),
            );
            set_ready_in_file(dir.path(), name, ready(&file(dir.path(), name)));
        }
    }
    for (store, (aborted, stable_back, canary_gone)) in ["kube", "local"].iter().zip(times) {
        let aborted = aborted.unwrap_or_else(|| panic!("{store}: never aborted"));
        assert!(
            stable_back.is_some_and(|back| back - aborted <= 2),
            "{store}: the stable's 10 back at {stable_back:?}, aborted at {aborted}"
        );
        let gone = canary_gone.unwrap_or_else(|| panic!("{store}: the canary stayed"));
        assert!(
            (30..=34).contains(&(gone - aborted)),
            "{store}: the canary went {}s after the abort",
            gone - aborted
        );
    }
    assert!(server.violations().is_empty(), "{:#?}", server.violations());
}
