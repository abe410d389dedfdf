//! A command works the same in the local store: the annotation `fledge.dev/command` written into
//! the Rollout's YAML file is taken once, answered in the persisted status, logged as an event
//! naming who gave it, and not taken again by a restarted agent. Editing an annotation is not a
//! spec change, so the generation stays.

use std::sync::{Arc, Mutex};

use fledge_agent::store::LocalStore;
use fledge_core::rollout::Phase;
use fledge_core::windows::Windows as Telemetry;

use super::{at, controller};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_in_the_rollouts_file_is_taken_once() {
    let dir = fledge_testkit::examples::folder(&["canary.yaml", "virtualservice.yaml"]);
    let telemetry = Arc::new(Mutex::new(Telemetry::new(3600, 64)));
    let reader = LocalStore::new(dir.path());
    let status = || reader.read_rollouts().unwrap().rollouts.remove(0);
    let local = controller(LocalStore::new(dir.path()), &telemetry);
    local.tick(at(0)).await;
    assert_eq!(status().status.unwrap().phase, Phase::Progressing);

    let file = dir.path().join("canary.yaml");
    let text = std::fs::read_to_string(&file).unwrap().replace(
        "  namespace: shop\n",
        "  namespace: shop\n  annotations:\n    fledge.dev/command: '{\"command\":\"abort\",\"id\":1,\"by\":\"dana\",\"at\":\"2027-01-15T08:00:00Z\"}'\n",
    );
    std::fs::write(&file, text).unwrap();
    local.tick(at(2)).await;
    let rollout = status();
    let s = rollout.status.unwrap();
    assert_eq!(s.phase, Phase::Aborted);
    assert_eq!(rollout.metadata.generation, Some(1), "not a spec change");
    let last = s.last_command.unwrap();
    assert_eq!((last.id, last.by.as_str()), (1, "dana"));
    let events =
        std::fs::read_to_string(dir.path().join("status/shop_reviews.events.jsonl")).unwrap();
    assert!(
        events.contains("aborted by dana (command 1): every request goes back to v1"),
        "{events}"
    );

    // A new agent on the same folder: the command was taken, nothing happens again.
    let again = controller(LocalStore::new(dir.path()), &telemetry);
    again.tick(at(4)).await;
    again.tick(at(6)).await;
    assert_eq!(
        std::fs::read_to_string(dir.path().join("status/shop_reviews.events.jsonl")).unwrap(),
        events
    );
    assert_eq!(status().status.unwrap().phase, Phase::Aborted);
}
