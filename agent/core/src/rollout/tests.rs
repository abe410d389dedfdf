//! The Rollout object: the examples in manifests/examples parse and validate, bad specs are
//! refused with messages naming object and field, and the CustomResourceDefinition generates.

use std::path::PathBuf;
use std::time::Duration;

use kube::CustomResourceExt;
use serde::Deserialize;

use super::plan::{End, Plan, StageKind};
use super::*;

fn examples_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../manifests/examples")
}

fn example(name: &str) -> Rollout {
    let path = examples_dir().join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{path:?}: {e}"))
}

#[test]
fn every_example_parses_validates_and_plans() {
    // (file, strategy, stage kinds, end)
    use StageKind::*;
    let cases = [
        (
            "canary.yaml",
            "canary",
            vec![Step, Step, Step],
            End::Promote,
        ),
        (
            "ab-test.yaml",
            "abTest",
            vec![Cohort, Step, Step],
            End::Promote,
        ),
        ("shadow.yaml", "shadow", vec![Shadow], End::Promote),
        ("blue-green.yaml", "blueGreen", vec![Preview], End::Promote),
        (
            "webhooks.yaml",
            "canary",
            vec![Prepare, Step, Step],
            End::Promote,
        ),
        ("cpu-gate.yaml", "canary", vec![Step, Step], End::Promote),
        (
            "delivery-kpi.yaml",
            "canary",
            vec![Step, Step],
            End::Promote,
        ),
    ];
    for (file, strategy, kinds, end) in cases {
        let r = example(file);
        r.validate().unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(r.spec.strategy.kind().map(|k| k.field()), Some(strategy));
        let plan = Plan::of(&r.spec).expect("one strategy");
        let got: Vec<_> = plan.stages.iter().map(|s| s.kind).collect();
        assert_eq!(got, kinds, "{file}");
        assert_eq!(plan.end, end, "{file}");
        // The YAML a person wrote survives a round trip through the typed object.
        let again: Rollout = serde_norway::from_str(&serde_norway::to_string(&r).unwrap()).unwrap();
        assert_eq!(again.spec, r.spec, "{file}");
    }
}

#[test]
fn example_settings_reach_the_typed_spec() {
    let r = example("canary.yaml");
    assert_eq!(r.key(), "shop/reviews");
    let steps = &r.spec.strategy.canary.as_ref().unwrap().steps;
    assert_eq!(steps[0].pause.duration, Some(Duration::from_secs(60)));
    assert!(steps[1].pause.until_analysis_passes);
    assert!(steps[2].pause.until_promoted);
    assert_eq!(r.spec.analysis.latency.max_ms, Some(500.0));
    assert_eq!(r.spec.version_header(), "x-fledge-version");
    let bg = example("blue-green.yaml");
    let s = bg.spec.strategy.blue_green.as_ref().unwrap();
    assert_eq!(s.preview_mirror_percent, Some(10.0));
    assert!(!s.auto_switch);
}

type Edit = fn(&mut Rollout);

fn steps(r: &mut Rollout) -> &mut Vec<CanaryStep> {
    &mut r.spec.strategy.canary.as_mut().unwrap().steps
}

#[test]
fn bad_specs_are_refused_naming_object_and_field() {
    let cases: [(Edit, &str); 12] = [
        (
            |r| steps(r)[2].weight = 120,
            "Rollout shop/reviews: spec.strategy.canary.steps[2].weight 120 is over 100",
        ),
        (
            |r| steps(r)[0].pause = Pause::default(),
            "Rollout shop/reviews: spec.strategy.canary.steps[0].pause sets none of duration, untilAnalysisPasses, untilPromoted",
        ),
        (
            |r| steps(r).clear(),
            "Rollout shop/reviews: spec.strategy.canary.steps is empty: give at least one step",
        ),
        (
            |r| r.spec.strategy.canary = None,
            "Rollout shop/reviews: spec.strategy sets none of canary, abTest, shadow, blueGreen; set exactly one",
        ),
        (
            |r| {
                r.spec.strategy.blue_green = Some(BlueGreenStrategy {
                    preview_mirror_percent: None,
                    duration: Duration::from_secs(1),
                    auto_switch: true,
                })
            },
            "Rollout shop/reviews: spec.strategy sets canary and blueGreen; set exactly one",
        ),
        (
            |r| r.spec.canary = "v1".into(),
            "Rollout shop/reviews: spec.canary \"v1\" is the same subset as spec.stable",
        ),
        (
            |r| r.spec.host = "http://Reviews:80".into(),
            "Rollout shop/reviews: spec.host \"http://Reviews:80\" is not a lower-case host name without scheme, port or path",
        ),
        (
            |r| r.spec.sticky.cookie = Some("session".into()),
            "Rollout shop/reviews: spec.sticky sets both header and cookie; set at most one",
        ),
        (
            |r| r.spec.version_header = Some("x fledge".into()),
            "Rollout shop/reviews: spec.versionHeader \"x fledge\" is not a valid header name",
        ),
        (
            |r| r.spec.analysis.false_alarm = 0.9,
            "Rollout shop/reviews: spec.analysis.falseAlarm 0.9 is not in (0, 0.5]",
        ),
        (
            |r| r.spec.virtual_service.name.clear(),
            "Rollout shop/reviews: spec.virtualService.name is empty",
        ),
        (
            |r| {
                steps(r)[1].weight = 101;
                r.spec.stable.clear();
            },
            "Rollout shop/reviews: spec.stable is empty; spec.strategy.canary.steps[1].weight 101 is over 100",
        ),
    ];
    for (edit, expected) in cases {
        let mut r = example("canary.yaml");
        edit(&mut r);
        let err = r.validate().expect_err(expected);
        assert_eq!(err.to_string(), expected);
    }
}

#[test]
fn bad_strategy_details_are_refused() {
    let cases: [(&str, Edit, &str); 5] = [
        (
            "ab-test.yaml",
            |r| {
                r.spec.strategy.ab_test.as_mut().unwrap().rules[0].cookie =
                    Some(CookieRule::default())
            },
            "spec.strategy.abTest.rules[0] must set exactly one of header, cookie",
        ),
        (
            "ab-test.yaml",
            |r| {
                r.spec.strategy.ab_test.as_mut().unwrap().rules[0]
                    .header
                    .as_mut()
                    .unwrap()
                    .prefix = Some("t".into())
            },
            "spec.strategy.abTest.rules[0].header must set exactly one of exact, prefix, present",
        ),
        (
            "ab-test.yaml",
            |r| r.spec.strategy.ab_test.as_mut().unwrap().steps.clear(),
            "spec.strategy.abTest.steps is empty: give at least one step",
        ),
        (
            "shadow.yaml",
            |r| r.spec.strategy.shadow.as_mut().unwrap().mirror_percent = 0.0,
            "spec.strategy.shadow.mirrorPercent 0 is not in (0, 100]",
        ),
        (
            "shadow.yaml",
            |r| {
                let s = r.spec.strategy.shadow.as_mut().unwrap();
                s.steps = vec![CanaryStep {
                    weight: 5,
                    pause: Pause::default(),
                }];
            },
            "spec.strategy.shadow.steps are only used when `then` is handOverToCanary",
        ),
    ];
    for (file, edit, expected) in cases {
        let mut r = example(file);
        edit(&mut r);
        let err = r.validate().expect_err(expected);
        assert_eq!(err.problems.len(), 1, "{err}");
        assert_eq!(err.problems[0].to_string(), expected);
    }
}

#[test]
fn misspelt_fields_are_refused_when_read() {
    let text = std::fs::read_to_string(examples_dir().join("canary.yaml"))
        .unwrap()
        .replace("untilAnalysisPasses", "untilAnalysisPass");
    let err = serde_norway::from_str::<Rollout>(&text)
        .unwrap_err()
        .to_string();
    assert!(err.contains("untilAnalysisPass"), "{err}");
}

/// `manifests/install/base/crd.yaml` is what `fledge-agent crd` prints today.
#[test]
fn the_committed_crd_manifest_is_current() {
    let path = examples_dir().join("../install/base/crd.yaml");
    let committed = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    assert!(
        committed == crd_yaml(),
        "{path:?} is stale: regenerate it with `cargo run -p fledge-agent -- crd > manifests/install/base/crd.yaml`"
    );
}

/// Every example Rollout is accepted by the CRD's own schema, as the API server would check it
/// on `kubectl apply` (not only by the agent's parser).
#[test]
fn every_example_passes_the_crd_schema() {
    let crd = serde_json::to_value(Rollout::crd()).unwrap();
    let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
    let validator = jsonschema::validator_for(schema).expect("a usable schema");
    let mut checked = 0;
    for entry in std::fs::read_dir(examples_dir()).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        for doc in serde_norway::Deserializer::from_str(&text) {
            let value = serde_json::Value::deserialize(doc).unwrap();
            if value["kind"] != "Rollout" {
                continue;
            }
            let errors: Vec<String> = validator
                .iter_errors(&value)
                .map(|e| e.to_string())
                .collect();
            assert!(errors.is_empty(), "{path:?}: {errors:?}");
            checked += 1;
        }
    }
    assert!(checked >= 4, "only {checked} example Rollouts found");
    // The schema is not a rubber stamp: a misspelt strategy field is refused.
    let mut bad = serde_json::to_value(example("canary.yaml")).unwrap();
    bad["spec"]["strategy"]["canary"]["steps"] = serde_json::json!("all at once");
    assert!(!validator.is_valid(&bad));
}

#[test]
fn the_custom_resource_definition_generates() {
    let crd = serde_json::to_value(Rollout::crd()).unwrap();
    assert_eq!(crd["metadata"]["name"], "rollouts.fledge.dev");
    assert_eq!(crd["spec"]["scope"], "Namespaced");
    let version = &crd["spec"]["versions"][0];
    assert_eq!(version["name"], "v1alpha1");
    assert_eq!(version["subresources"]["status"], serde_json::json!({}));
    let spec = &version["schema"]["openAPIV3Schema"]["properties"]["spec"];
    let required: Vec<_> = spec["required"].as_array().unwrap().iter().collect();
    for field in ["host", "stable", "canary", "virtualService", "strategy"] {
        assert!(required.contains(&&serde_json::json!(field)), "{field}");
    }
    let status = &version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"];
    for field in [
        "phase",
        "reason",
        "currentStep",
        "totalSteps",
        "canaryWeight",
    ] {
        assert!(status.get(field).is_some(), "status.{field} missing");
    }
}

#[test]
fn metric_gates_of_the_examples_reach_the_typed_spec_and_bad_ones_are_refused() {
    let cpu = example("cpu-gate.yaml");
    let gate = &cpu.spec.analysis.metrics[0];
    assert_eq!(gate.name, "cpu");
    assert_eq!((gate.max, gate.max_ratio_to_stable), (Some(0.7), Some(1.5)));
    assert_eq!(gate.fail_after, Duration::from_secs(120));
    let kpi = example("delivery-kpi.yaml");
    let gate = &kpi.spec.analysis.metrics[0];
    assert_eq!((gate.min, gate.max_below_stable), (Some(0.99), Some(0.005)));
    assert!(gate.stable_query.is_some() && gate.address.is_none());

    let mut bad = cpu.clone();
    bad.spec.analysis.metrics[0].query = Some("cpu{v=\"{{version}}\",c=\"{{cannary}}\"}".into());
    let err = bad.validate().expect_err("an unknown placeholder");
    assert_eq!(err.problems.len(), 1, "{err}");
    assert!(
        err.to_string().starts_with(
            "Rollout shop/reviews: spec.analysis.metrics[0].query \"cpu{v=\\\"{{version}}\\\",c=\\\"{{cannary}}\\\"}\" has the unknown placeholder {{cannary}}"
        ),
        "{err}"
    );
}
