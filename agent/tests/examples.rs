//! The sample app in manifests/examples/app.yaml, which the README's cluster walk-through
//! deploys: for the canary, A/B and shadow example Rollouts it holds two Deployments labelled
//! with the Rollout's stable and canary versions, a Service, a DestinationRule with those two
//! subsets, and (with virtualservice.yaml) the VirtualService each Rollout names. Istio objects
//! pass Istio's CRD schemas (`FLEDGE_ISTIO_CRDS`), the others `kubernetes-validate --strict`.

use std::path::PathBuf;

use serde::Deserialize;
use serde_json::Value;

fn examples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../manifests/examples")
}

fn docs(name: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(examples().join(name)).unwrap();
    serde_norway::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).unwrap())
        .filter(|d| !d.is_null())
        .collect()
}

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in app.yaml"))
}

#[test]
fn the_sample_app_serves_the_canary_ab_and_shadow_examples() {
    let app = docs("app.yaml");
    let mut with_vs = app.clone();
    with_vs.extend(docs("virtualservice.yaml"));
    for example in ["canary.yaml", "ab-test.yaml", "shadow.yaml"] {
        let rollout = docs(example).remove(0);
        let spec = &rollout["spec"];
        let host = spec["host"].as_str().unwrap();
        let short = host.split('.').next().unwrap();
        let versions = [
            spec["stable"].as_str().unwrap(),
            spec["canary"].as_str().unwrap(),
        ];
        let rule = find(&app, "DestinationRule", short);
        for (subset, version) in rule["spec"]["subsets"]
            .as_array()
            .unwrap()
            .iter()
            .zip(versions)
        {
            assert_eq!(subset["name"], version, "{example}");
            assert_eq!(subset["labels"]["version"], version, "{example}");
            let deployment = find(&app, "Deployment", &format!("{short}-{version}"));
            let labels = &deployment["spec"]["template"]["metadata"]["labels"];
            assert_eq!(
                (&labels["app"], &labels["version"]),
                (&short.into(), &version.into())
            );
        }
        assert_eq!(
            find(&app, "Service", short)["spec"]["selector"]["app"],
            short
        );
        let vs = find(
            &with_vs,
            "VirtualService",
            spec["virtualService"]["name"].as_str().unwrap(),
        );
        assert_eq!(vs["spec"]["hosts"][0], short, "{example}");
    }

    let (istio, kubernetes): (Vec<&Value>, Vec<&Value>) = app
        .iter()
        .partition(|o| o["apiVersion"].as_str().unwrap().contains(".istio.io/"));
    for object in &istio {
        let schema = match object["kind"].as_str().unwrap() {
            "VirtualService" => fledge_testkit::istio::virtual_service(),
            "DestinationRule" => {
                fledge_testkit::istio::schema("destinationrules.networking.istio.io", "v1")
            }
            other => panic!("unexpected {other}"),
        };
        let errors: Vec<String> = schema.iter_errors(object).map(|e| e.to_string()).collect();
        assert!(
            errors.is_empty(),
            "{}: {errors:?}",
            object["metadata"]["name"]
        );
    }
    if let Err(said) = fledge_testkit::kubernetes::validate(&kubernetes) {
        panic!("kubernetes-validate --strict: {said}");
    }
    assert_eq!(kubernetes.len(), 9, "three Services and six Deployments");
}
