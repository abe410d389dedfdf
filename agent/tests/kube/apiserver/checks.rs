//! The rules the stand-in applies to request bodies and queries, as the real API server (and
//! Istio's and our CRD schemas) would: each function returns what is wrong, empty when nothing.

use std::collections::BTreeMap;

use serde_json::Value;

use super::{istio_schema, rollout_schema};

/// Schema errors of a whole Rollout object.
pub fn rollout_errors(object: &Value) -> Vec<String> {
    let mut errors: Vec<String> = rollout_schema()
        .iter_errors(object)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    if object["apiVersion"] != "fledge.dev/v1alpha1" || object["kind"] != "Rollout" {
        errors.push(format!(
            "apiVersion/kind are {}/{}",
            object["apiVersion"], object["kind"]
        ));
    }
    errors
}

/// Schema errors of a whole VirtualService object (Istio's `networking.istio.io/v1` schema).
pub fn virtual_service_errors(object: &Value) -> Vec<String> {
    let mut errors: Vec<String> = istio_schema()
        .iter_errors(object)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    if object["apiVersion"] != "networking.istio.io/v1" || object["kind"] != "VirtualService" {
        errors.push(format!(
            "apiVersion/kind are {}/{}",
            object["apiVersion"], object["kind"]
        ));
    }
    errors
}

/// The query is exactly `expected` (name → value; `None` accepts any value), nothing else.
pub fn query_errors(
    query: &BTreeMap<String, String>,
    expected: &[(&str, Option<&str>)],
) -> Vec<String> {
    let mut errors = Vec::new();
    for (name, value) in query {
        match expected.iter().find(|(n, _)| n == name) {
            None => errors.push(format!("unexpected query parameter {name}={value}")),
            Some((_, Some(want))) if want != value => {
                errors.push(format!("query {name}={value}, expected {want}"))
            }
            Some(_) => {}
        }
    }
    for (name, _) in expected {
        if !query.contains_key(*name) {
            errors.push(format!("query parameter {name} missing"));
        }
    }
    errors
}

/// An events.k8s.io/v1 Event as `ValidateEventCreate` checks it, about a Rollout that exists
/// (`rollout`) in namespace `ns`.
pub fn event_errors(event: &Value, ns: &str, rollout: Option<&Value>) -> Vec<String> {
    let mut errors = Vec::new();
    let mut need = |ok: bool, what: String| {
        if !ok {
            errors.push(what);
        }
    };
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    need(
        event["apiVersion"] == "events.k8s.io/v1" && event["kind"] == "Event",
        format!("apiVersion/kind {}/{}", event["apiVersion"], event["kind"]),
    );
    need(
        !text(&event["metadata"]["name"]).is_empty(),
        "metadata.name is required".into(),
    );
    need(
        event["metadata"]["namespace"] == ns,
        format!(
            "metadata.namespace {} is not {ns}",
            event["metadata"]["namespace"]
        ),
    );
    need(
        event["eventTime"].is_string(),
        "eventTime is required".into(),
    );
    need(
        event["reportingController"] == "fledge-agent",
        format!("reportingController {}", event["reportingController"]),
    );
    let instance = text(&event["reportingInstance"]);
    need(
        !instance.is_empty() && instance.len() <= 128,
        format!("reportingInstance {instance:?}"),
    );
    let action = text(&event["action"]);
    need(
        !action.is_empty() && action.len() <= 128,
        format!("action {action:?} must be 1-128 characters"),
    );
    let reason = text(&event["reason"]);
    need(
        !reason.is_empty() && reason.len() <= 128,
        format!("reason {reason:?} must be 1-128 characters"),
    );
    need(
        text(&event["note"]).len() <= 1024,
        "note must be at most 1 KiB".into(),
    );
    need(
        event["type"] == "Normal" || event["type"] == "Warning",
        format!("type {} must be Normal or Warning", event["type"]),
    );
    let regarding = &event["regarding"];
    need(
        regarding["apiVersion"] == "fledge.dev/v1alpha1"
            && regarding["kind"] == "Rollout"
            && regarding["namespace"] == ns,
        format!("regarding {regarding} is not a Rollout in {ns}"),
    );
    match rollout {
        Some(r) => need(
            regarding["name"] == r["metadata"]["name"] && regarding["uid"] == r["metadata"]["uid"],
            format!("regarding {regarding} does not name the Rollout's uid"),
        ),
        None => need(false, format!("regarding {regarding}: no such Rollout")),
    }
    errors
}

/// RFC 7386 JSON merge patch.
pub fn merge(target: &mut Value, patch: &Value) {
    let Some(fields) = patch.as_object() else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Default::default());
    }
    let object = target.as_object_mut().unwrap();
    for (name, value) in fields {
        if value.is_null() {
            object.remove(name);
        } else {
            merge(object.entry(name.clone()).or_insert(Value::Null), value);
        }
    }
}
