//! The stand-in's `coordination.k8s.io/v1` Leases: get, create (409 AlreadyExists when one
//! exists) and replace at the resourceVersion read (409 Conflict when it moved on), each body
//! checked as the API server's validation would: apiVersion and kind, the name and namespace of
//! the path, known spec fields only, a non-empty holder, a positive duration, transitions not
//! negative, MicroTime stamps (RFC 3339 with microseconds).

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::Shared;
use super::handlers::{conflict, not_found, refuse, status, update_version};

const SPEC_FIELDS: &[&str] = &[
    "holderIdentity",
    "leaseDurationSeconds",
    "acquireTime",
    "renewTime",
    "leaseTransitions",
];

/// What the API server would refuse in a Lease body for `key`.
pub(super) fn lease_errors(body: &Value, key: &(String, String)) -> Vec<String> {
    let mut errors = Vec::new();
    if body["apiVersion"] != "coordination.k8s.io/v1" || body["kind"] != "Lease" {
        errors.push(format!(
            "apiVersion/kind {}/{}, expected coordination.k8s.io/v1 Lease",
            body["apiVersion"], body["kind"]
        ));
    }
    if body["metadata"]["name"] != key.1.as_str() {
        errors.push(format!(
            "metadata.name {} does not match the path",
            body["metadata"]["name"]
        ));
    }
    if !body["metadata"]["namespace"].is_null() && body["metadata"]["namespace"] != key.0.as_str() {
        errors.push("metadata.namespace does not match the path".into());
    }
    let Some(spec) = body["spec"].as_object() else {
        errors.push("spec: missing".into());
        return errors;
    };
    for field in spec.keys().filter(|f| !SPEC_FIELDS.contains(&f.as_str())) {
        errors.push(format!("spec.{field}: unknown field"));
    }
    if let Some(holder) = spec.get("holderIdentity")
        && !(holder.is_null() || holder.as_str().is_some_and(|h| !h.is_empty()))
    {
        errors.push(format!(
            "spec.holderIdentity {holder}: a non-empty string or absent"
        ));
    }
    if let Some(d) = spec.get("leaseDurationSeconds")
        && d.as_i64().is_none_or(|d| d <= 0)
    {
        errors.push(format!(
            "spec.leaseDurationSeconds {d}: must be greater than 0"
        ));
    }
    if let Some(t) = spec.get("leaseTransitions")
        && t.as_i64().is_none_or(|t| t < 0)
    {
        errors.push(format!(
            "spec.leaseTransitions {t}: must be greater than or equal to 0"
        ));
    }
    for field in ["acquireTime", "renewTime"] {
        if let Some(t) = spec.get(field)
            && !t.as_str().is_some_and(micro_time)
        {
            errors.push(format!(
                "spec.{field} {t}: not a MicroTime (RFC 3339, 6 fraction digits)"
            ));
        }
    }
    errors
}

/// `2026-01-01T00:00:00.000000Z`: what a MicroTime looks like on the wire.
fn micro_time(s: &str) -> bool {
    let fraction = s
        .strip_suffix('Z')
        .and_then(|s| s.split_once('.'))
        .map(|(_, f)| f.len());
    fraction == Some(6) && s.parse::<jiff::Timestamp>().is_ok()
}

pub(super) fn get_lease(shared: &Shared, key: (String, String)) -> Response {
    match shared.lock().leases.get(&key) {
        Some(lease) => Json(lease.clone()).into_response(),
        None => not_found("leases.coordination.k8s.io", &key.1),
    }
}

pub(super) fn create_lease(
    shared: &Shared,
    ns: String,
    mut body: Value,
    wrong: &dyn Fn(Vec<String>) -> String,
) -> Response {
    let key = (
        ns,
        body["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    );
    let mut errors = lease_errors(&body, &key);
    if !body["metadata"]["resourceVersion"].is_null() {
        errors.push("metadata.resourceVersion: must not be set on create".into());
    }
    if !errors.is_empty() {
        return refuse(shared, StatusCode::UNPROCESSABLE_ENTITY, wrong(errors));
    }
    let mut world = shared.lock();
    if world.leases.contains_key(&key) {
        return status(
            StatusCode::CONFLICT,
            "AlreadyExists",
            format!("leases.coordination.k8s.io \"{}\" already exists", key.1),
        );
    }
    body["metadata"]["namespace"] = Value::String(key.0.clone());
    world.stamp_new(&mut body);
    world.leases.insert(key, body.clone());
    (StatusCode::CREATED, Json(body)).into_response()
}

pub(super) fn replace_lease(
    shared: &Shared,
    key: (String, String),
    mut body: Value,
    wrong: &dyn Fn(Vec<String>) -> String,
) -> Response {
    let errors = lease_errors(&body, &key);
    let rv = match update_version(shared, &body, errors, wrong) {
        Ok(rv) => rv,
        Err(refused) => return *refused,
    };
    let mut world = shared.lock();
    let Some(old) = world.leases.get(&key).cloned() else {
        return not_found("leases.coordination.k8s.io", &key.1);
    };
    if old["metadata"]["resourceVersion"] != rv.as_str() {
        world.lease_conflicts += 1;
        return conflict("leases.coordination.k8s.io", &key.1);
    }
    body["metadata"]["namespace"] = Value::String(key.0.clone());
    world.stamp_update(&old, &mut body);
    world.leases.insert(key, body.clone());
    Json(body).into_response()
}
