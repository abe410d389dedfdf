//! The stand-in's answers to each recognised call, once `handlers` has checked its method,
//! path, query and content type: lists, watches, the status apply, VirtualService reads and
//! replaces, Event creates and patches, each with the API server's own rules.

use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::Shared;
use super::checks;
use super::handlers::{conflict, not_found, refuse, status, update_version};

pub(super) fn list(shared: &Shared, ns: Option<&str>, limit: usize) -> Response {
    let world = shared.lock();
    let items: Vec<Value> = world
        .rollouts
        .iter()
        .filter(|((n, _), _)| ns.is_none_or(|ns| ns == n))
        .map(|(_, o)| o.clone())
        .collect();
    let mut metadata = json!({ "resourceVersion": world.revision.to_string() });
    let more = items.len().saturating_sub(limit);
    if more > 0 {
        metadata["continue"] = json!("next-page");
        metadata["remainingItemCount"] = json!(more);
    }
    let items: Vec<Value> = items.into_iter().take(limit).collect();
    Json(json!({
        "apiVersion": "fledge.dev/v1alpha1",
        "kind": "RolloutList",
        "metadata": metadata,
        "items": items,
    }))
    .into_response()
}

/// A watch from resourceVersion `from`: a bookmark, then every later change as it happens, one
/// JSON watch event per line, until `timeout`.
pub(super) fn stream(shared: Shared, ns: Option<String>, from: u64, timeout: Duration) -> Response {
    let changed = shared.changed.subscribe();
    let deadline = tokio::time::Instant::now() + timeout;
    let bookmark = json!({
        "type": "BOOKMARK",
        "object": {
            "apiVersion": "fledge.dev/v1alpha1",
            "kind": "Rollout",
            "metadata": { "resourceVersion": from.to_string() },
        },
    });
    let first = format!("{bookmark}\n");
    let state = (shared, changed, from, ns, Some(first));
    let events = futures::stream::unfold(
        state,
        move |(shared, mut changed, mut cursor, ns, mut first)| async move {
            loop {
                changed.borrow_and_update();
                let mut lines = first.take().unwrap_or_default();
                {
                    let world = shared.lock();
                    let since = cursor;
                    for (rv, kind, object) in
                        world.rollout_log.iter().filter(|(rv, ..)| *rv > since)
                    {
                        cursor = *rv;
                        if ns
                            .as_deref()
                            .is_none_or(|ns| object["metadata"]["namespace"] == ns)
                        {
                            lines.push_str(&json!({ "type": kind, "object": object }).to_string());
                            lines.push('\n');
                        }
                    }
                }
                if !lines.is_empty() {
                    let item: Result<Bytes, Infallible> = Ok(Bytes::from(lines));
                    return Some((item, (shared, changed, cursor, ns, None)));
                }
                tokio::select! {
                    sent = changed.changed() => if sent.is_err() { return None },
                    _ = tokio::time::sleep_until(deadline) => return None,
                }
            }
        },
    );
    Response::builder()
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(events))
        .unwrap()
}

/// What a server-side apply of the status may hold: apiVersion, kind, metadata naming the
/// object, and the status; never the spec.
pub(super) fn apply_body_errors(body: &Value, name: &str) -> Vec<String> {
    let mut errors = Vec::new();
    let Some(fields) = body.as_object() else {
        return vec!["the body is not an object".into()];
    };
    for field in fields.keys() {
        if !["apiVersion", "kind", "metadata", "status"].contains(&field.as_str()) {
            errors.push(format!("a status apply carries {field}"));
        }
    }
    if body["apiVersion"] != "fledge.dev/v1alpha1" || body["kind"] != "Rollout" {
        errors.push("apply needs apiVersion fledge.dev/v1alpha1 and kind Rollout".into());
    }
    if let Some(n) = body["metadata"]["name"].as_str()
        && n != name
    {
        errors.push(format!("metadata.name {n} is not {name}"));
    }
    if !body["status"].is_object() {
        errors.push("no status object".into());
    }
    errors
}

pub(super) fn apply_status(
    shared: &Shared,
    key: (String, String),
    body: &Value,
    wrong: &dyn Fn(Vec<String>) -> String,
) -> Response {
    let mut world = shared.lock();
    let Some(old) = world.rollouts.get(&key).cloned() else {
        return not_found("rollouts.fledge.dev", &key.1);
    };
    let mut new = old.clone();
    new["status"] = body["status"].clone();
    let errors = checks::rollout_errors(&new);
    if !errors.is_empty() {
        drop(world);
        return refuse(shared, StatusCode::UNPROCESSABLE_ENTITY, wrong(errors));
    }
    world.stamp_update(&old, &mut new);
    world.log_rollout("MODIFIED", &new);
    world.rollouts.insert(key, new.clone());
    let rv = world.revision;
    drop(world);
    shared.changed.send_replace(rv);
    Json(new).into_response()
}

pub(super) fn get_virtual_service(shared: &Shared, key: (String, String)) -> Response {
    let mut world = shared.lock();
    let Some(object) = world.virtual_services.get(&key).cloned() else {
        return not_found("virtualservices.networking.istio.io", &key.1);
    };
    if let Some(edit) = world.edit_after_read.remove(&key) {
        let mut edited = object.clone();
        edit(&mut edited);
        world.stamp_update(&object, &mut edited);
        world.virtual_services.insert(key, edited);
    }
    Json(object).into_response()
}

pub(super) fn replace_virtual_service(
    shared: &Shared,
    key: (String, String),
    mut body: Value,
    wrong: &dyn Fn(Vec<String>) -> String,
) -> Response {
    let mut errors = checks::virtual_service_errors(&body);
    if body["metadata"]["name"] != key.1.as_str() {
        errors.push(format!(
            "metadata.name {} does not match the path",
            body["metadata"]["name"]
        ));
    }
    if !body["metadata"]["namespace"].is_null() && body["metadata"]["namespace"] != key.0.as_str() {
        errors.push("metadata.namespace does not match the path".into());
    }
    let rv = match update_version(shared, &body, errors, wrong) {
        Ok(rv) => rv,
        Err(refused) => return *refused,
    };
    let mut world = shared.lock();
    let Some(old) = world.virtual_services.get(&key).cloned() else {
        return not_found("virtualservices.networking.istio.io", &key.1);
    };
    if old["metadata"]["resourceVersion"] != rv.as_str() {
        return conflict("virtualservices.networking.istio.io", &key.1);
    }
    if !body["metadata"]["uid"].is_null() && body["metadata"]["uid"] != old["metadata"]["uid"] {
        drop(world);
        return refuse(
            shared,
            StatusCode::CONFLICT,
            wrong(vec!["uid differs".into()]),
        );
    }
    world.stamp_update(&old, &mut body);
    world.virtual_services.insert(key, body.clone());
    Json(body).into_response()
}

pub(super) fn create_event(
    shared: &Shared,
    ns: String,
    mut body: Value,
    wrong: &dyn Fn(Vec<String>) -> String,
) -> Response {
    let mut world = shared.lock();
    let regarding = (
        ns.clone(),
        body["regarding"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    );
    let errors = checks::event_errors(&body, &ns, world.rollouts.get(&regarding));
    if !errors.is_empty() {
        drop(world);
        return refuse(shared, StatusCode::UNPROCESSABLE_ENTITY, wrong(errors));
    }
    let key = (
        ns,
        body["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    );
    if world.events.contains_key(&key) {
        return status(
            StatusCode::CONFLICT,
            "AlreadyExists",
            format!("events.events.k8s.io \"{}\" already exists", key.1),
        );
    }
    world.stamp_new(&mut body);
    world.events.insert(key, body.clone());
    (StatusCode::CREATED, Json(body)).into_response()
}

pub(super) fn patch_event(
    shared: &Shared,
    key: (String, String),
    patch: &Value,
    wrong: &dyn Fn(Vec<String>) -> String,
) -> Response {
    let mut world = shared.lock();
    let Some(old) = world.events.get(&key).cloned() else {
        return not_found("events.events.k8s.io", &key.1);
    };
    let mut new = old.clone();
    checks::merge(&mut new, patch);
    let regarding = (
        key.0.clone(),
        new["regarding"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    );
    let mut errors = checks::event_errors(&new, &key.0, world.rollouts.get(&regarding));
    let series = &new["series"];
    if !(series["count"].as_u64().is_some_and(|c| c >= 2) && series["lastObservedTime"].is_string())
    {
        errors.push(format!(
            "series {series} needs count >= 2 and lastObservedTime"
        ));
    }
    if !errors.is_empty() {
        drop(world);
        return refuse(shared, StatusCode::UNPROCESSABLE_ENTITY, wrong(errors));
    }
    world.stamp_update(&old, &mut new);
    world.events.insert(key, new.clone());
    Json(new).into_response()
}
