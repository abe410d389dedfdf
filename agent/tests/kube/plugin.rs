//! `kubectl-fledge`, the real binary, against the stand-in API server through a kubeconfig the
//! test writes (bearer token, context namespace `shop`), with the real agent (Kubernetes store and
//! controller) ticking beside it: commands are recorded on the Rollout, taken by the agent from
//! its watch, answered in the status and in Events naming who gave them, and not taken again by a
//! restarted agent; `wait` exits 0/1/2 and prints the evidence; a refusal (403) says who may not
//! do what and how to get the right; the ClusterRole fledge-operator grants exactly what the
//! plugin uses.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fledge_agent::controller::Controller;
use fledge_agent::store::KubeStore;
use fledge_core::windows::Windows as Telemetry;
use serde_json::Value;

use super::apiserver::{Access, ApiServer};
use super::{cluster, controller, granted, kube_store, manifests, yaml_docs};

const ALICE: &str = "alice@example.com";

/// The output of one run of the plugin.
#[derive(Debug)]
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs `kubectl-fledge ARGS` as the holder of `token`, with a kubeconfig pointing at `server`.
async fn kubectl_fledge(server: &ApiServer, home: &Path, token: &str, args: &[&str]) -> Run {
    let kubeconfig = home.join(format!("{token}.kubeconfig"));
    let text = format!(
        "apiVersion: v1\nkind: Config\n\
         clusters:\n- name: stand-in\n  cluster:\n    server: {url}\n\
         users:\n- name: {token}-user\n  user:\n    token: {token}\n\
         contexts:\n- name: shop\n  context:\n    cluster: stand-in\n    user: {token}-user\n    namespace: shop\n\
         current-context: shop\n",
        url = server.url
    );
    std::fs::write(&kubeconfig, text).unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_kubectl-fledge"))
        .args(args)
        .env("KUBECONFIG", &kubeconfig)
        .env("HOME", home)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .await
        .unwrap();
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The agent, ticking every 100 ms in real time until the handle is aborted.
async fn agent(server: &ApiServer) -> (Controller<KubeStore>, tokio::task::JoinHandle<()>) {
    let telemetry = Arc::new(Mutex::new(Telemetry::new(3600, 64)));
    let kube = controller(kube_store(server).await, &telemetry);
    let (_, never) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(kube.clone().run(Duration::from_millis(100), never));
    (kube, task)
}

fn status(server: &ApiServer) -> Value {
    server.rollout("shop", "reviews").unwrap()["status"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_recorded_on_the_rollout_are_taken_once_and_answered() {
    let server = cluster().await;
    server.add_user("alice-token", ALICE);
    let home = tempfile::tempdir().unwrap();
    let (_, task) = agent(&server).await;
    let run = async |args: &[&str]| kubectl_fledge(&server, home.path(), "alice-token", args).await;

    // (command, exit code, what it prints, phase after)
    let steps: [(&[&str], i32, &str, &str); 5] = [
        (
            &["pause", "reviews"],
            0,
            "pause recorded on Rollout shop/reviews as command 1 by alice@example.com\nApplied: paused by alice@example.com (command 1) at step 1/3; `resume` or `promote` continues\n",
            "Paused",
        ),
        (
            &["pause", "reviews"],
            1,
            "pause recorded on Rollout shop/reviews as command 2 by alice@example.com\nIgnored: pause by alice@example.com (command 2) ignored: the rollout is Paused\n",
            "Paused",
        ),
        (
            &["abort", "shop/reviews"],
            0,
            "abort recorded on Rollout shop/reviews as command 3 by alice@example.com\nApplied: aborted by alice@example.com (command 3): every request goes back to v1\n",
            "Aborted",
        ),
        (
            &["retry", "reviews"],
            0,
            "retry recorded on Rollout shop/reviews as command 4 by alice@example.com\nApplied: step 1/3: 10% of requests to the canary",
            "Progressing",
        ),
        (
            &["-n", "shop", "abort", "reviews"],
            0,
            "abort recorded on Rollout shop/reviews as command 5",
            "Aborted",
        ),
    ];
    for (args, code, printed, phase) in steps {
        let out = run(args).await;
        assert_eq!(out.code, Some(code), "{args:?}: {out:#?}");
        assert!(out.stdout.starts_with(printed), "{args:?}: {out:#?}");
        assert_eq!(status(&server)["phase"], phase, "after {args:?}");
    }
    let last = &status(&server)["lastCommand"];
    assert_eq!(
        (&last["id"], &last["by"], &last["outcome"]),
        (&5.into(), &ALICE.into(), &"Applied".into())
    );

    // Every command became an Event naming who gave it.
    let notes: Vec<String> = server
        .events()
        .iter()
        .map(|e| {
            format!(
                "{}: {}",
                e["reason"].as_str().unwrap(),
                e["note"].as_str().unwrap()
            )
        })
        .collect();
    for expected in [
        "Paused: paused by alice@example.com (command 1) at step 1/3",
        "CommandIgnored: pause by alice@example.com (command 2) ignored: the rollout is Paused",
        "Aborted: aborted by alice@example.com (command 3): every request goes back to v1",
        "Retried: retried by alice@example.com (command 4) after it was Aborted: step 1/3",
    ] {
        assert!(
            notes.iter().any(|n| n.starts_with(expected)),
            "{expected} in {notes:#?}"
        );
    }

    // get, status and wait read the same object.
    let get = run(&["get"]).await;
    assert_eq!(get.code, Some(0), "{get:#?}");
    assert_eq!(
        get.stdout,
        "NAME      PHASE     STEP   CANARY%   VERDICT   LAST COMMAND\n\
         reviews   Aborted   1/3    0         -         abort (command 5) by alice@example.com: Applied\n"
    );
    let shown = run(&["status", "reviews"]).await;
    assert!(
        shown.stdout.contains("last command: abort (command 5) by alice@example.com: Applied: aborted by alice@example.com (command 5)"),
        "{shown:#?}"
    );
    let waited = run(&["wait", "reviews", "--every", "100ms"]).await;
    assert_eq!(waited.code, Some(1), "{waited:#?}");
    assert!(
        waited.stderr.starts_with("shop/reviews ended Aborted: aborted by alice@example.com (command 5): every request goes back to v1\nrecent decisions:\n"),
        "{waited:#?}"
    );

    // A restarted agent reads the taken id from the status and does not apply it again.
    task.abort();
    let events = server.events().len();
    let before = status(&server);
    let (_, again) = agent(&server).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    again.abort();
    assert_eq!(status(&server)["lastCommand"], before["lastCommand"]);
    assert_eq!(status(&server)["phase"], "Aborted");
    assert_eq!(server.events().len(), events, "nothing decided again");

    // The plugin used exactly what the fledge-operator ClusterRole grants (and the
    // SelfSubjectReview every authenticated user may make).
    let role = yaml_docs(&manifests().join("install/base/operator.yaml")).remove(0);
    let mut used = server.accesses_of(ALICE);
    assert!(used.remove(&Access::new(
        "create",
        "authentication.k8s.io",
        "selfsubjectreviews"
    )));
    assert_eq!(used, granted(&role));
    assert!(server.violations().is_empty(), "{:#?}", server.violations());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_exits_by_how_the_rollout_ended_or_gives_up() {
    let server = cluster().await;
    server.add_user("alice-token", ALICE);
    let home = tempfile::tempdir().unwrap();
    let run = async |args: &[&str]| kubectl_fledge(&server, home.path(), "alice-token", args).await;
    // No agent runs: the Rollout stays as it is.
    let out = run(&["wait", "reviews", "--timeout", "300ms", "--every", "100ms"]).await;
    assert_eq!(out.code, Some(2), "{out:#?}");
    assert!(
        out.stderr.starts_with(
            "kubectl fledge: gave up waiting for shop/reviews after 300ms; it is shop/reviews  -"
        ),
        "{out:#?}"
    );
    // A command nobody takes stays recorded; the next one waits for it.
    let out = run(&["promote", "reviews", "--ack-timeout", "300ms"]).await;
    assert_eq!(out.code, Some(2), "{out:#?}");
    assert!(
        out.stderr
            .contains("the agent has not taken command 1 within 300ms; it stays recorded"),
        "{out:#?}"
    );
    let out = run(&["abort", "reviews"]).await;
    assert_eq!(out.code, Some(3), "{out:#?}");
    assert!(
        out.stderr.starts_with("kubectl fledge: Rollout shop/reviews has a command the agent has not taken yet: promote (command 1) by alice@example.com at "),
        "{out:#?}"
    );

    // Once the agent runs, it takes the promote (the first step's gate passes) and the rollout
    // goes on; a promote per gate takes it to the end, and wait exits 0. One more is ignored.
    let (_, task) = agent(&server).await;
    tokio::time::timeout(Duration::from_secs(10), async {
        while status(&server)["lastCommand"]["id"] != 1 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the agent takes the command");
    assert_eq!(status(&server)["step"], "2/3");
    for _ in 0..2 {
        let out = run(&["promote", "reviews"]).await;
        assert_eq!(out.code, Some(0), "{out:#?}");
    }
    let out = run(&["wait", "reviews", "--every", "100ms", "--timeout", "10s"]).await;
    assert_eq!(out.code, Some(0), "{out:#?}");
    assert!(
        out.stdout.ends_with(
            "Succeeded  step 3/3  canary 100%  v2 is the new stable: every request goes to it\n"
        ),
        "{out:#?}"
    );
    let out = run(&["promote", "reviews"]).await;
    assert_eq!(out.code, Some(1), "{out:#?}");
    assert!(
        out.stdout.ends_with(
            "Ignored: promote by alice@example.com (command 4) ignored: the rollout is Succeeded\n"
        ),
        "{out:#?}"
    );
    task.abort();
    assert!(server.violations().is_empty(), "{:#?}", server.violations());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_says_who_may_not_do_what_and_how_to_get_the_right() {
    let server = cluster().await;
    server.add_user("alice-token", ALICE);
    server.add_user("bob-token", "bob");
    server.add_user("carol-token", "carol");
    let home = tempfile::tempdir().unwrap();
    server.forbid_for(ALICE, Access::new("patch", "fledge.dev", "rollouts"));
    server.forbid_for("bob", Access::new("get", "fledge.dev", "rollouts"));
    server.forbid_for(
        "bob",
        Access::new("create", "authentication.k8s.io", "selfsubjectreviews"),
    );

    let out = kubectl_fledge(&server, home.path(), "alice-token", &["promote", "reviews"]).await;
    assert_eq!(out.code, Some(3), "{out:#?}");
    assert!(
        out.stderr.starts_with(
            "kubectl fledge: you (alice@example.com) may not patch rollouts.fledge.dev in namespace shop: \
             ask for a Role granting patch on rollouts.fledge.dev in namespace shop; the ClusterRole \
             fledge-operator in manifests/install/base/operator.yaml grants what kubectl fledge needs, \
             e.g. `kubectl create rolebinding fledge-operator-alice-example-com -n shop \
             --clusterrole=fledge-operator --user=alice@example.com` (the API server said: \
             rollouts is forbidden: User \"alice@example.com\" cannot patch"
        ),
        "{out:#?}"
    );
    assert!(
        server.rollout("shop", "reviews").unwrap()["metadata"]["annotations"].is_null(),
        "nothing recorded"
    );

    // Bob may not even ask who he is: he is named as his kubeconfig names him.
    let out = kubectl_fledge(&server, home.path(), "bob-token", &["status", "reviews"]).await;
    assert_eq!(out.code, Some(3), "{out:#?}");
    assert!(
        out.stderr.starts_with(
            "kubectl fledge: you (bob-token-user) may not get rollouts.fledge.dev in namespace shop"
        ),
        "{out:#?}"
    );

    // A Rollout that changes between the read and the patch (409) is read again, a few times.
    let patches = |server: &ApiServer| {
        server
            .calls()
            .iter()
            .filter(|c| c.starts_with("PATCH "))
            .count()
    };
    server.change_rollout_after_reads("shop", "reviews", 3);
    let out = kubectl_fledge(&server, home.path(), "carol-token", &["resume", "reviews"]).await;
    assert_eq!(out.code, Some(3), "{out:#?}");
    assert!(
        out.stderr.starts_with("kubectl fledge: Rollout shop/reviews changed while the command was being recorded (409 Conflict), so nothing was written: run the command again"),
        "{out:#?}"
    );
    server.change_rollout_after_reads("shop", "reviews", 1);
    let before = patches(&server);
    let recorded = kubectl_fledge(
        &server,
        home.path(),
        "carol-token",
        &["pause", "reviews", "--ack-timeout", "0s"],
    )
    .await;
    assert_eq!(recorded.code, Some(0), "{recorded:#?}");
    assert_eq!(patches(&server) - before, 2, "one refused, one written");

    // Not found, and an unknown token, in words too.
    let out = kubectl_fledge(&server, home.path(), "alice-token", &["status", "ratings"]).await;
    assert_eq!(
        (out.code, out.stderr.as_str()),
        (
            Some(3),
            "kubectl fledge: Rollout shop/ratings not found: `kubectl fledge get -n shop` lists the Rollouts there\n"
        )
    );
    let out = kubectl_fledge(&server, home.path(), "stolen-token", &["get"]).await;
    assert_eq!(out.code, Some(3), "{out:#?}");
    assert!(
        out.stderr
            .starts_with("kubectl fledge: the API server did not accept your credentials (401)"),
        "{out:#?}"
    );
    assert!(server.violations().is_empty(), "{:#?}", server.violations());
}

#[tokio::test]
async fn without_a_kubeconfig_it_says_where_it_looked() {
    let home = tempfile::tempdir().unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_kubectl-fledge"))
        .args(["get"])
        .env("KUBECONFIG", home.path().join("no-such-kubeconfig"))
        .env("HOME", home.path())
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("KUBERNETES_SERVICE_PORT")
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.starts_with("kubectl fledge: no Kubernetes configuration found: ")
            && stderr
                .contains("(kubectl-fledge reads KUBECONFIG or ~/.kube/config, as kubectl does)"),
        "{stderr}"
    );
}
