//! Two agents against one API server, one Lease: only the leader writes; killed mid-step at
//! seeded-random moments, the standby takes over within the lease duration, two retries and a
//! tick, resumes from the persisted status and moves nothing backward; stopped gracefully, it
//! gives the Lease back and the standby takes over at once; a holder whose clock is far behind
//! keeps the Lease while it renews. Telemetry comes from a filter stand-in over real
//! gRPC that behaves as the filter does: it reconnects (to either agent, as the Service would
//! send it) when a stream ends, keeps the deltas a send could not hand over, and a standby
//! refuses it with UNAVAILABLE.
//!
//! The agents run in this process, each with its own client and bearer token (two pods of one
//! ServiceAccount), so the stand-in can say who made every write. A kill is `Agent::stop`:
//! every task aborted where it stands, a write in flight included, nothing flushed. Two tests
//! run the real binary instead: SIGTERM (the Lease handed over) and SIGKILL (three leaders
//! killed mid-canary).

mod fixtures;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use rand::{Rng, SeedableRng};

use self::fixtures::*;
use super::apiserver::{AGENT, Write};
use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_leaders_are_replaced_within_the_lease_and_nothing_moves_backward() {
    let server = ApiServer::start().await;
    server.apply_rollout(rollout(12));
    server.create_virtual_service(example("virtualservice.yaml"));
    let timing = timing();
    let bound = fledge_agent::leader::takeover_bound(&timing) + TICK;

    let mut replicas = vec![
        replica(&server, "agent-0").await,
        replica(&server, "agent-1").await,
    ];
    let addrs = Arc::new(Mutex::new(
        replicas
            .iter()
            .map(|r| r.agent.grpc_addr)
            .collect::<Vec<_>>(),
    ));
    let sent = Arc::new(Sent::default());
    let stop = Arc::new(AtomicBool::new(false));
    let feeding = tokio::spawn(filter(addrs.clone(), sent.clone(), stop.clone()));

    let first = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Some(h) = holder(&server) {
                return h;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("one agent takes the Lease");

    let mut rng = rand::rngs::StdRng::seed_from_u64(12);
    let mut leader = first;
    let mut takeovers = Vec::new();
    let mut received_by_dead = 0;
    for kill in 0..20 {
        // A seeded-random moment in the leader's term: mid-step, mid-write, or just after.
        tokio::time::sleep(Duration::from_millis(rng.random_range(200..3000))).await;
        let at = replicas.iter().position(|r| r.name == leader).unwrap();
        let dead = replicas.remove(at);
        // Only the leader answers readiness for leadership; the standby does not.
        assert_eq!(http_status(dead.agent.http_addr, "/leaderz").await, 200);
        assert_eq!(
            http_status(replicas[0].agent.http_addr, "/leaderz").await,
            503
        );
        received_by_dead += dead.agent.metrics.reports_received.get();
        let killed = Instant::now();
        dead.agent.stop();
        let survivor = replicas[0].name.clone();
        until_held_by(&server, &survivor, bound + Duration::from_secs(1)).await;
        let took = killed.elapsed();
        // The killed pod comes back as the new standby; the Service sends filters to both.
        let fresh = replica(&server, &format!("agent-{}", kill + 2)).await;
        replicas.push(fresh);
        *addrs.lock().unwrap() = replicas.iter().map(|r| r.agent.grpc_addr).collect();
        takeovers.push(took);
        assert!(
            took <= bound + Duration::from_millis(100),
            "kill {kill}: {survivor} took over after {took:?}, more than {bound:?}"
        );
        leader = survivor;
    }

    // Let the last leader finish the rollout.
    until_succeeded(&server, &stop, feeding).await;
    let status_writes = assert_led_in_turns(&server, 12, 3);
    let routes = history(&server.writes()).1.len();

    // Telemetry: no report counted twice; a killed agent loses at most what was on its
    // way to it when it died (one report per kill at most).
    let received = received_by_dead
        + replicas
            .iter()
            .map(|r| r.agent.metrics.reports_received.get())
            .sum::<u64>();
    let handed = sent.reports.load(Ordering::SeqCst);
    assert!(
        received <= handed,
        "received {received} of {handed} reports sent"
    );
    assert!(
        handed - received <= 20,
        "lost {} reports over 20 kills",
        handed - received
    );
    assert!(
        sent.refused.load(Ordering::SeqCst) > 0,
        "standbys refused streams"
    );
    let slowest = takeovers.iter().max().unwrap();
    println!(
        "20 kills: takeover slowest {slowest:?} (bound {bound:?}); {status_writes} status writes, {routes} VirtualService writes; reports sent {handed}, received {received}"
    );
    for r in replicas {
        r.agent.stop();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_shut_down_gives_the_lease_back_and_the_standby_takes_over_at_once() {
    let server = ApiServer::start().await;
    server.apply_rollout(rollout(4));
    server.create_virtual_service(example("virtualservice.yaml"));
    let a = replica(&server, "agent-a").await;
    until_held_by(&server, "agent-a", Duration::from_secs(5)).await;
    let b = replica(&server, "agent-b").await;
    let addrs = Arc::new(Mutex::new(vec![a.agent.grpc_addr, b.agent.grpc_addr]));
    let sent = Arc::new(Sent::default());
    let stop = Arc::new(AtomicBool::new(false));
    let feeding = tokio::spawn(filter(addrs.clone(), sent.clone(), stop.clone()));

    // The leader moves the rollout; the standby writes nothing and takes no stream.
    tokio::time::timeout(Duration::from_secs(30), async {
        while kube_status(&server).is_none_or(|s| s.current_step != Some(1)) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the leader advances a step");
    assert_eq!(http_status(a.agent.http_addr, "/leaderz").await, 200);
    assert_eq!(http_status(b.agent.http_addr, "/leaderz").await, 503);
    // Both are ready (the standby could take over), so a rolling update of the agents proceeds.
    assert_eq!(
        http_status(b.agent.http_addr, "/readyz").await,
        200,
        "a standby is ready"
    );
    assert!(
        server
            .writes()
            .iter()
            .all(|w| w.token.as_deref() == Some("agent-a")),
        "only the leader wrote"
    );

    let a_metrics = a.agent.metrics.clone();
    let stopped = Instant::now();
    a.agent.shut_down().await;
    let took = until_held_by(&server, "agent-b", Duration::from_secs(5)).await + stopped.elapsed();
    assert!(
        took < timing().lease_duration,
        "the standby took over after {took:?}: the Lease was not given back"
    );
    let lease = server.lease("fledge-system", "fledge-agent").unwrap();
    assert_eq!(lease["spec"]["leaseTransitions"], 1, "{lease:#}");

    // The new leader finishes what the old one started.
    tokio::time::timeout(Duration::from_secs(60), async {
        while !kube_status(&server).is_some_and(|s| s.phase == Phase::Succeeded) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the new leader finishes the rollout");
    stop.store(true, Ordering::SeqCst);
    // Let the report of this second arrive before counting.
    tokio::time::sleep(Duration::from_millis(300)).await;
    feeding.abort();

    let (statuses, routes) = history(&server.writes());
    assert_forward(&statuses, &routes);
    assert_written_while_leading(&server.writes());
    // Each leader's first tick read the Rollouts from the API server (a list, a quorum read),
    // not only from its watch cache, which may lag behind the last status written: two lists
    // beyond the two that start the agents' watches.
    let lists = server
        .calls()
        .iter()
        .filter(|c| *c == "GET /apis/fledge.dev/v1alpha1/rollouts?&limit=500")
        .count();
    assert_eq!(lists, 2 + 2, "{:#?}", server.calls());
    // Graceful: every report handed to a stream was counted once, by one agent or the other.
    let received = a_metrics.reports_received.get() + b.agent.metrics.reports_received.get();
    assert_eq!(
        received,
        sent.reports.load(Ordering::SeqCst),
        "reports counted across a graceful handover"
    );
    assert!(server.violations().is_empty(), "{:#?}", server.violations());
    b.agent.stop();

    // The Role in the install grants exactly the Lease calls made (create, get, update), in the
    // namespace they were made in; the rest of what the agents did is the ClusterRole's.
    let docs = yaml_docs(&manifests().join("install/base/agent.yaml"));
    let role = docs.iter().find(|d| d["kind"] == "Role").unwrap();
    assert_eq!(role["metadata"]["namespace"], "fledge-system");
    let cluster_role = docs.iter().find(|d| d["kind"] == "ClusterRole").unwrap();
    let used = server.accesses();
    let (leases, rest): (BTreeSet<Access>, BTreeSet<Access>) = used
        .into_iter()
        .partition(|a| a.group == "coordination.k8s.io");
    assert_eq!(leases, granted(role), "the Lease calls and the Role");
    let cluster_granted = granted(cluster_role);
    let missing: Vec<_> = rest.difference(&cluster_granted).collect();
    assert!(missing.is_empty(), "used but not granted: {missing:#?}");
}

/// The real `fledge-agent kube` binary as leader, stopped with SIGTERM: it gives the Lease back
/// and exits 0, and the standby takes over at once, long before the lease would have expired.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_to_the_leading_binary_hands_the_lease_over_at_once() {
    let server = ApiServer::start().await;
    server.apply_rollout(rollout(4));
    server.create_virtual_service(example("virtualservice.yaml"));
    let home = tempfile::tempdir().unwrap();
    // A lease long enough that a takeover by expiry could not pass for a release.
    let timing = fledge_core::lease::Timing {
        lease_duration: Duration::from_secs(20),
        renew_deadline: Duration::from_secs(10),
        retry_period: Duration::from_millis(250),
    };
    let mut binary = process_with(&server, home.path(), "agent-bin", timing).child;
    until_held_by(&server, "agent-bin", Duration::from_secs(20)).await;
    let standby = replica(&server, "agent-b").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        holder(&server).as_deref(),
        Some("agent-bin"),
        "the standby waits"
    );

    let pid = binary.id().unwrap().to_string();
    let signalled = Instant::now();
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(kill.success());
    let exit = tokio::time::timeout(Duration::from_secs(15), binary.wait())
        .await
        .expect("the binary stops")
        .unwrap();
    assert!(exit.success(), "{exit:?}");
    until_held_by(&server, "agent-b", Duration::from_secs(5)).await;
    let took = signalled.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "the standby took over {took:?} after SIGTERM: the Lease was not given back"
    );
    // The binary wrote the Lease back without a holder before the standby took it.
    let writes = server.writes();
    let released = writes.iter().any(|w| {
        w.token.as_deref() == Some("agent-bin")
            && w.what == "lease fledge-system/fledge-agent"
            && w.body["spec"]["holderIdentity"].is_null()
    });
    assert!(released, "no release among {writes:#?}");
    assert!(server.violations().is_empty(), "{:#?}", server.violations());
    standby.agent.stop();
}

/// A leader that cannot renew (here: the API server refuses its Lease updates) stops writing
/// within its renew deadline, before the Lease could expire for anyone else; once it renews
/// again, it writes again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_cannot_renew_stops_writing_within_its_renew_deadline() {
    let server = ApiServer::start().await;
    server.apply_rollout(rollout(30));
    server.create_virtual_service(example("virtualservice.yaml"));
    let a = replica(&server, "agent-a").await;
    until_held_by(&server, "agent-a", Duration::from_secs(5)).await;
    let addrs = Arc::new(Mutex::new(vec![a.agent.grpc_addr]));
    let sent = Arc::new(Sent::default());
    let stop = Arc::new(AtomicBool::new(false));
    let feeding = tokio::spawn(filter(addrs, sent, stop.clone()));
    let step = |n: u32| {
        let server = &server;
        async move {
            tokio::time::timeout(Duration::from_secs(30), async {
                while kube_status(server).is_none_or(|s| s.current_step < Some(n)) {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            })
            .await
            .unwrap_or_else(|_| panic!("step {n} not reached: {:#?}", kube_status(server)));
        }
    };
    step(1).await;

    server.forbid(Access::new("update", "coordination.k8s.io", "leases"));
    let forbidden = Instant::now();
    let deadline = timing().renew_deadline;
    tokio::time::sleep(deadline + Duration::from_millis(300)).await;
    assert_eq!(http_status(a.agent.http_addr, "/leaderz").await, 503);
    let writes_then = server.writes().len();
    let step_then = kube_status(&server).unwrap().current_step;
    // Telemetry keeps coming, the analysis would pass step after step: nothing is written.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let after: Vec<Write> = server.writes().split_off(writes_then);
    assert!(after.is_empty(), "written without the Lease: {after:#?}");
    assert_eq!(kube_status(&server).unwrap().current_step, step_then);
    let last = server.writes().last().unwrap().at;
    assert!(
        last <= forbidden + deadline + Duration::from_millis(200),
        "the last write came {:?} after renewals stopped",
        last.duration_since(forbidden)
    );

    // Renewing again (nobody took the Lease), it leads and writes again.
    server.permit(Access::new("update", "coordination.k8s.io", "leases"));
    step(step_then.unwrap_or(0) + 1).await;
    assert_written_while_leading(&server.writes());
    stop.store(true, Ordering::SeqCst);
    feeding.abort();
    a.agent.stop();
}

/// Another agent holds the Lease and renews it on time, but its clock runs an hour behind ours,
/// so every renewTime it writes looks long expired. Expiry is what this agent saw change, on its
/// own clock, so it stands by as long as the renewals come (two lease durations here, writing
/// nothing), and takes the Lease within the takeover bound once they stop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_whose_clock_runs_an_hour_behind_keeps_the_lease_while_it_renews() {
    use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
    use kube::api::{Api, ObjectMeta, PostParams};

    let server = ApiServer::start().await;
    server.apply_rollout(rollout(4));
    server.create_virtual_service(example("virtualservice.yaml"));
    server.add_user("agent-behind", AGENT);
    let leases: Api<Lease> = Api::namespaced(server.client_as("agent-behind"), "fledge-system");
    fn behind() -> MicroTime {
        MicroTime(Timestamp::now() - jiff::SignedDuration::from_hours(1))
    }
    let spec = |acquired: MicroTime| LeaseSpec {
        holder_identity: Some("agent-behind".into()),
        lease_duration_seconds: Some(timing().lease_duration.as_secs() as i32),
        acquire_time: Some(acquired),
        renew_time: Some(behind()),
        lease_transitions: Some(0),
        ..LeaseSpec::default()
    };
    let lease = Lease {
        metadata: ObjectMeta {
            name: Some("fledge-agent".into()),
            namespace: Some("fledge-system".into()),
            ..ObjectMeta::default()
        },
        spec: Some(spec(behind())),
    };
    let params = PostParams {
        field_manager: Some(fledge_agent::store::FIELD_MANAGER.into()),
        ..PostParams::default()
    };
    leases
        .create(&params, &lease)
        .await
        .expect("the Lease is created");
    let renewing = Arc::new(AtomicBool::new(true));
    let renewer = tokio::spawn({
        let (leases, renewing, params) = (leases.clone(), renewing.clone(), params.clone());
        async move {
            while renewing.load(Ordering::SeqCst) {
                let mut read = leases.get("fledge-agent").await.expect("the Lease reads");
                let acquired = read.spec.as_ref().and_then(|s| s.acquire_time.clone());
                read.spec = Some(spec(acquired.unwrap_or_else(behind)));
                leases
                    .replace("fledge-agent", &params, &read)
                    .await
                    .expect("the holder renews");
                tokio::time::sleep(timing().retry_period).await;
            }
        }
    });

    let a = replica(&server, "agent-a").await;
    tokio::time::sleep(2 * timing().lease_duration).await;
    assert_eq!(holder(&server).as_deref(), Some("agent-behind"));
    assert_eq!(http_status(a.agent.http_addr, "/leaderz").await, 503);
    let by_a: Vec<Write> = server
        .writes()
        .into_iter()
        .filter(|w| w.token.as_deref() == Some("agent-a"))
        .collect();
    assert!(by_a.is_empty(), "a standby wrote: {by_a:#?}");

    renewing.store(false, Ordering::SeqCst);
    renewer.await.unwrap();
    // The last renewal was written before this moment: the bound counts from it.
    let took = until_held_by(&server, "agent-a", Duration::from_secs(10)).await;
    let bound = fledge_agent::leader::takeover_bound(&timing());
    assert!(
        took <= bound + Duration::from_millis(100),
        "took over {took:?} after the renewals stopped; bound {bound:?}"
    );
    a.agent.stop();
}

/// The same as the in-process kills, with real processes and SIGKILL: two `fledge-agent kube`
/// binaries; the leading one killed at seeded-random moments mid-canary and started again as
/// the Deployment would; the other takes over within the bound, and the rollout goes forward
/// to the end with only leaders writing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leading_processes_killed_with_sigkill_are_replaced_and_nothing_moves_backward() {
    let server = ApiServer::start().await;
    server.apply_rollout(rollout(6));
    server.create_virtual_service(example("virtualservice.yaml"));
    let home = tempfile::tempdir().unwrap();
    let bound = fledge_agent::leader::takeover_bound(&timing());
    let mut processes = vec![
        process(&server, home.path(), "bin-0"),
        process(&server, home.path(), "bin-1"),
    ];
    let addrs = Arc::new(Mutex::new(
        processes.iter().map(|p| p.grpc).collect::<Vec<_>>(),
    ));
    let sent = Arc::new(Sent::default());
    let stop = Arc::new(AtomicBool::new(false));
    let feeding = tokio::spawn(filter(addrs.clone(), sent.clone(), stop.clone()));
    tokio::time::timeout(Duration::from_secs(20), async {
        while holder(&server).is_none() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("one process takes the Lease");

    let mut rng = rand::rngs::StdRng::seed_from_u64(9);
    let mut takeovers = Vec::new();
    for kill in 0..3 {
        tokio::time::sleep(Duration::from_millis(rng.random_range(1000..4000))).await;
        let leader = holder(&server).expect("a holder");
        let at = processes.iter().position(|p| p.name == leader).unwrap();
        let mut dead = processes.remove(at);
        let killed = Instant::now();
        dead.child.start_kill().expect("SIGKILL");
        let status = dead.child.wait().await.unwrap();
        assert!(!status.success(), "{leader} was killed: {status:?}");
        let survivor = processes[0].name.clone();
        until_held_by(&server, &survivor, bound + Duration::from_secs(2)).await;
        // From the kill (the Lease's last renewal came before it) to seeing the new holder.
        let took = killed.elapsed();
        assert!(
            took <= bound + Duration::from_millis(200),
            "kill {kill}: {survivor} took over {took:?} after SIGKILL to {leader}; bound {bound:?}"
        );
        takeovers.push(took);
        processes.push(process(&server, home.path(), &format!("bin-{}", kill + 2)));
        *addrs.lock().unwrap() = processes.iter().map(|p| p.grpc).collect();
    }

    until_succeeded(&server, &stop, feeding).await;
    let status_writes = assert_led_in_turns(&server, 6, 2);
    println!(
        "3 SIGKILLs: takeovers {takeovers:?} (bound {bound:?}); {status_writes} status writes"
    );
    for mut p in processes {
        let _ = p.child.start_kill();
        let _ = p.child.wait().await;
    }
}
