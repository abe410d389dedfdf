//! The local store on a real temporary folder: Rollouts read with generations, status persisted
//! and resumed by a fresh store (a restarted agent), VirtualServices rewritten atomically with
//! their neighbours kept, and broken files reported without hiding good ones. The last test runs
//! a whole canary through machine, routes and store, restarting the store at every tick.

use std::fs;
use std::path::Path;

use jiff::Timestamp;
use serde_json::json;

use super::*;
use fledge_core::rollout::UserCommand;
use fledge_core::rollout::{self, Action, Phase, Verdict};
use fledge_core::routes;

/// A folder with the canary example and its VirtualService.
fn folder() -> tempfile::TempDir {
    fledge_testkit::examples::folder(&["canary.yaml", "virtualservice.yaml"])
}

fn at(secs: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + secs).unwrap()
}

fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn status_survives_a_restart_and_spec_edits_bump_the_generation() {
    let dir = folder();
    let store = LocalStore::new(dir.path());
    let listing = store.rollouts().await.unwrap();
    assert!(listing.problems.is_empty(), "{:?}", listing.problems);
    let [r] = listing.rollouts.as_slice() else {
        panic!("one rollout expected: {listing:?}")
    };
    assert_eq!(ObjectKey::of(r).to_string(), "shop/reviews");
    assert_eq!((r.metadata.generation, r.status.is_none()), (Some(1), true));

    let (status, _) = rollout::step(r, None, &[], &[], at(0));
    store.write_status(r, &status).await.unwrap();
    let rollout_text = fs::read_to_string(dir.path().join("canary.yaml")).unwrap();

    // A new store over the same folder: what a restarted agent sees.
    let again = LocalStore::new(dir.path()).rollouts().await.unwrap();
    let r2 = &again.rollouts[0];
    assert_eq!(r2.status.as_ref(), Some(&status));
    assert_eq!(r2.metadata.generation, Some(1));
    assert_eq!(
        fs::read_to_string(dir.path().join("canary.yaml")).unwrap(),
        rollout_text,
        "the person's Rollout file is never written"
    );
    let status_file = fs::read_to_string(dir.path().join("status/shop_reviews.yaml")).unwrap();
    assert!(status_file.starts_with("# The fledge agent's record of Rollout shop/reviews"));
    assert!(status_file.contains("phase: Progressing"), "{status_file}");

    // Editing the spec gives the next generation; the status stays until the machine moves.
    fs::write(
        dir.path().join("canary.yaml"),
        rollout_text.replace("weight: 25", "weight: 30"),
    )
    .unwrap();
    let edited = LocalStore::new(dir.path()).rollouts().await.unwrap();
    assert_eq!(edited.rollouts[0].metadata.generation, Some(2));
    assert_eq!(edited.rollouts[0].status.as_ref(), Some(&status));
}

#[tokio::test]
async fn virtual_services_are_replaced_atomically_keeping_their_neighbours() {
    let dir = folder();
    // A DestinationRule in the same file must survive the rewrite.
    let vs_path = dir.path().join("virtualservice.yaml");
    let mut text = fs::read_to_string(&vs_path).unwrap();
    text.push_str("---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: reviews, namespace: shop}\nspec: {host: reviews, subsets: [{name: v1, labels: {version: v1}}]}\n");
    fs::write(&vs_path, text).unwrap();

    let store = LocalStore::new(dir.path());
    let key = ObjectKey::new("shop", "reviews");
    let user = store.virtual_service(&key).await.unwrap();
    assert_eq!(user["spec"]["http"][0]["name"], "default");

    let r = &store.rollouts().await.unwrap().rollouts[0];
    let (status, actions) = rollout::step(r, None, &[], &[], at(0));
    let Some(Action::SetRouting(intent)) = actions.first() else {
        panic!("routing expected first: {actions:?}")
    };
    assert_eq!(status.routing_revision, 1);
    let vs = routes::virtual_service(intent, &user).unwrap();
    store.write_virtual_service(&vs).await.unwrap();

    let back = LocalStore::new(dir.path())
        .virtual_service(&key)
        .await
        .unwrap();
    assert_eq!(back, vs);
    assert_eq!(
        back["spec"]["http"][3], user["spec"]["http"][0],
        "user's route kept"
    );
    let docs: Vec<serde_json::Value> =
        serde_norway::Deserializer::from_str(&fs::read_to_string(&vs_path).unwrap())
            .map(|d| serde::Deserialize::deserialize(d).unwrap())
            .collect();
    assert_eq!(docs.len(), 2);
    assert_eq!(docs[1]["kind"], "DestinationRule");
    assert_eq!(docs[1]["spec"]["subsets"][0]["name"], "v1");
    assert_eq!(
        files(dir.path()),
        ["canary.yaml", "virtualservice.yaml"],
        "no temp files left"
    );

    let missing = store
        .virtual_service(&ObjectKey::new("shop", "ratings"))
        .await
        .unwrap_err();
    assert!(
        missing
            .to_string()
            .starts_with("VirtualService shop/ratings not found in the YAML files of"),
        "{missing}"
    );
    let mut stray = vs.clone();
    stray["metadata"]["name"] = json!("ratings");
    assert!(store.write_virtual_service(&stray).await.is_err());
}

#[tokio::test]
async fn broken_files_are_reported_without_hiding_good_ones() {
    let dir = folder();
    let canary = fs::read_to_string(dir.path().join("canary.yaml")).unwrap();
    let write = |name: &str, text: String| fs::write(dir.path().join(name), text).unwrap();
    write(
        "a-typo.yaml",
        canary
            .replace("name: reviews\n  namespace", "name: typo\n  namespace")
            .replace("weight: 10", "wieght: 10"),
    );
    write("b-twice.yaml", canary.clone());
    write("c-broken.yaml", "apiVersion: [unclosed\n".into());
    write(
        "d-old.yaml",
        canary
            .replace("name: reviews\n  namespace", "name: old\n  namespace")
            .replace("fledge.dev/v1alpha1", "fledge.dev/v0"),
    );
    write(".hidden.yaml", "not: [read\n".into());
    write("notes.txt", "not yaml".into());

    let listing = LocalStore::new(dir.path()).rollouts().await.unwrap();
    let keys: Vec<_> = listing.rollouts.iter().map(|r| r.key()).collect();
    assert_eq!(keys, ["shop/reviews"]);
    let problems: Vec<String> = listing.problems.iter().map(ToString::to_string).collect();
    assert_eq!(problems.len(), 4, "{problems:#?}");
    let has = |needle: &str| problems.iter().any(|p| p.contains(needle));
    assert!(has("c-broken.yaml"), "{problems:#?}");
    assert!(has("Rollout shop/typo in "), "{problems:#?}");
    assert!(
        has("spec.strategy.canary.steps[0].wieght: unknown field `wieght`"),
        "{problems:#?}"
    );
    assert!(
        has("Rollout shop/old in ") && has("not fledge.dev/v1alpha1"),
        "{problems:#?}"
    );
    assert!(
        has("Rollout shop/reviews is defined twice"),
        "{problems:#?}"
    );

    // A status file that cannot be read keeps its Rollout out rather than restarting it.
    let dir = folder();
    fs::create_dir(dir.path().join("status")).unwrap();
    fs::write(dir.path().join("status/shop_reviews.yaml"), "phase: [").unwrap();
    let listing = LocalStore::new(dir.path()).rollouts().await.unwrap();
    assert!(listing.rollouts.is_empty());
    assert!(
        listing.problems[0]
            .to_string()
            .starts_with("status of Rollout shop/reviews in")
    );
}

#[tokio::test]
async fn names_that_could_collide_or_escape_the_folder_are_refused() {
    let dir = folder();
    let canary = fs::read_to_string(dir.path().join("canary.yaml")).unwrap();
    let named = |namespace: &str, name: &str| {
        canary.replace(
            "name: reviews\n  namespace: shop",
            &format!("name: {name}\n  namespace: {namespace}"),
        )
    };
    // Both would have been `status/a_b_c.yaml`; the third would have written outside the folder.
    fs::write(dir.path().join("x1.yaml"), named("a_b", "c")).unwrap();
    fs::write(dir.path().join("x2.yaml"), named("a", "b_c")).unwrap();
    fs::write(dir.path().join("x3.yaml"), named("../../../escaped", "x")).unwrap();

    let store = LocalStore::new(dir.path());
    let listing = store.rollouts().await.unwrap();
    let keys: Vec<_> = listing.rollouts.iter().map(|r| r.key()).collect();
    assert_eq!(keys, ["shop/reviews"]);
    let problems: Vec<String> = listing.problems.iter().map(ToString::to_string).collect();
    assert_eq!(problems.len(), 3, "{problems:#?}");
    for needle in [
        "Rollout a_b/c in ",
        "metadata.namespace \"a_b\" may hold only lower-case letters, digits and '-'",
        "Rollout a/b_c in ",
        "metadata.name \"b_c\" may hold only",
        "metadata.namespace \"../../../escaped\" may hold only",
    ] {
        assert!(
            problems.iter().any(|p| p.contains(needle)),
            "{needle}: {problems:#?}"
        );
    }
    let r = &listing.rollouts[0];
    store
        .write_status(r, &rollout::step(r, None, &[], &[], at(0)).0)
        .await
        .unwrap();
    assert_eq!(files(&dir.path().join("status")), ["shop_reviews.yaml"]);
    let parent = dir.path().parent().unwrap();
    assert!(!parent.join("escaped_x.yaml").exists());
}

#[tokio::test]
async fn damaged_files_that_still_parse_are_refused_with_the_reason() {
    // A status that has started but lost its observedGeneration would restart the rollout.
    let dir = folder();
    let store = LocalStore::new(dir.path());
    let r = store.rollouts().await.unwrap().rollouts.remove(0);
    let (status, _) = rollout::step(&r, None, &[], &[UserCommand::Abort], at(0));
    assert_eq!(status.phase, Phase::Aborted);
    store.write_status(&r, &status).await.unwrap();
    let path = dir.path().join("status/shop_reviews.yaml");
    let text = fs::read_to_string(&path).unwrap();
    assert!(text.contains("observedGeneration: 1"), "{text}");
    fs::write(&path, text.replace("  observedGeneration: 1\n", "")).unwrap();
    let listing = LocalStore::new(dir.path()).rollouts().await.unwrap();
    assert!(
        listing.rollouts.is_empty(),
        "the Rollout is left alone, not restarted"
    );
    let problem = listing.problems[0].to_string();
    assert!(
        problem.contains("status.observedGeneration is missing from a Aborted status"),
        "{problem}"
    );

    // Two objects without the `---` between them are one mapping with every key twice: refused,
    // not read as the second object alone.
    let dir = folder();
    let vs = fs::read_to_string(dir.path().join("virtualservice.yaml")).unwrap();
    let canary = fs::read_to_string(dir.path().join("canary.yaml")).unwrap();
    fs::write(
        dir.path().join("canary.yaml"),
        format!("{}\n{canary}", vs.trim_start_matches("---\n")),
    )
    .unwrap();
    let listing = LocalStore::new(dir.path()).rollouts().await.unwrap();
    assert!(listing.rollouts.is_empty());
    let problem = listing.problems[0].to_string();
    assert!(
        problem.contains("duplicate entry with key \"apiVersion\""),
        "{problem}"
    );
    assert!(problem.contains("canary.yaml"), "{problem}");

    // The temporary file of a write cut short by a kill is removed; the object it was to replace
    // is intact.
    let dir = folder();
    let stale = dir.path().join(".virtualservice.yaml.4242424-7.tmp");
    fs::write(&stale, "half a fi").unwrap();
    fs::create_dir(dir.path().join("status")).unwrap();
    let stale_status = dir.path().join("status/.shop_reviews.yaml.4242424-8.tmp");
    fs::write(&stale_status, "phase: Progr").unwrap();
    let listing = LocalStore::new(dir.path()).rollouts().await.unwrap();
    assert_eq!(listing.rollouts.len(), 1, "{:?}", listing.problems);
    assert!(!stale.exists() && !stale_status.exists());
    assert!(dir.path().join("virtualservice.yaml").exists());
}

#[tokio::test]
async fn a_virtual_service_is_found_again_after_it_moved_to_another_file() {
    let dir = folder();
    let store = LocalStore::new(dir.path());
    store.rollouts().await.unwrap();
    let key = ObjectKey::new("shop", "reviews");
    let vs = store.read_virtual_service(&key).unwrap();
    // Moved by a person between two ticks: the remembered file no longer holds it.
    let text = fs::read_to_string(dir.path().join("virtualservice.yaml")).unwrap();
    fs::remove_file(dir.path().join("virtualservice.yaml")).unwrap();
    fs::write(dir.path().join("z-moved.yaml"), text).unwrap();
    assert_eq!(store.read_virtual_service(&key).unwrap(), vs);
    let mut edited = vs.clone();
    edited["spec"]["http"][0]["timeout"] = json!("5s");
    store.write_virtual_service(&edited).await.unwrap();
    let moved = fs::read_to_string(dir.path().join("z-moved.yaml")).unwrap();
    assert!(moved.contains("timeout: 5s"), "{moved}");
    assert_eq!(files(dir.path()), ["canary.yaml", "z-moved.yaml"]);
}

/// One agent tick against the store, as the reconcile loop will do it: read, step, write the
/// routes, persist the status. A new store each time: the agent restarts between every tick.
async fn tick(dir: &Path, secs: i64, verdict: Option<Verdict>, commands: &[UserCommand]) -> Phase {
    let store = LocalStore::new(dir);
    let r = store.rollouts().await.unwrap().rollouts.remove(0);
    let analysis = verdict.map(|v| rollout::AnalysisOutcome {
        verdict: v,
        reason: format!("{v:?}"),
        evidence: json!({}),
        hold: None,
    });
    let (status, actions) = rollout::step(&r, analysis.as_ref(), &[], commands, at(secs));
    for action in &actions {
        if let Action::SetRouting(intent) = action {
            let key = ObjectKey::virtual_service_of(&r);
            let vs = routes::virtual_service(intent, &store.virtual_service(&key).await.unwrap())
                .unwrap();
            store.write_virtual_service(&vs).await.unwrap();
        }
    }
    store.write_status(&r, &status).await.unwrap();
    status.phase
}

#[tokio::test]
async fn a_canary_runs_to_promotion_through_the_store_across_restarts() {
    let dir = folder();
    let original = LocalStore::new(dir.path())
        .read_virtual_service(&ObjectKey::new("shop", "reviews"))
        .unwrap();
    let weights = |dir: &Path| {
        let vs = LocalStore::new(dir)
            .read_virtual_service(&ObjectKey::new("shop", "reviews"))
            .unwrap();
        let split = vs["spec"]["http"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == "fledge-reviews-split")
            .map(|r| r["route"][1]["weight"].as_u64().unwrap());
        (split, vs)
    };
    let p = dir.path();
    assert_eq!(tick(p, 0, None, &[]).await, Phase::Progressing);
    assert_eq!(weights(p).0, Some(10));
    assert_eq!(
        tick(p, 60, Some(Verdict::Pass), &[]).await,
        Phase::Progressing
    );
    assert_eq!(weights(p).0, Some(25));
    assert_eq!(
        tick(p, 62, Some(Verdict::Pass), &[]).await,
        Phase::Progressing
    );
    assert_eq!(weights(p).0, Some(50));
    // Step 3 holds for two minutes and for a person.
    assert_eq!(
        tick(p, 300, Some(Verdict::Pass), &[]).await,
        Phase::Progressing
    );
    assert_eq!(
        tick(p, 302, None, &[UserCommand::Promote]).await,
        Phase::Promoting
    );
    assert_eq!(weights(p).0, Some(100));
    assert_eq!(tick(p, 304, None, &[]).await, Phase::Succeeded);
    let (split, vs) = weights(p);
    assert_eq!(split, None, "fledge's routes are gone");
    let mut expected = original;
    expected["spec"]["http"][0]["route"][0]["destination"]["subset"] = json!("v2");
    assert_eq!(vs, expected, "a clean VirtualService on the new stable");
}
