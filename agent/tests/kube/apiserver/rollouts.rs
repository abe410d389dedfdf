//! The stand-in's answers to the calls people's tools make on Rollouts (`kubectl fledge`): one
//! Rollout read, a merge patch of its metadata, and the SelfSubjectReview that tells a client who
//! it is. The patch is checked as the API server would (a stale resourceVersion is a 409, the
//! result must still be a valid Rollout) and as fledge needs (only the command annotation and
//! finalizers, the command well formed).

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use fledge_core::rollout::{COMMAND_ANNOTATION, RecordedCommand};
use serde_json::{Value, json};

use super::Shared;
use super::checks;
use super::handlers::{conflict, not_found, refuse};

pub(super) fn get_rollout(shared: &Shared, key: (String, String)) -> Response {
    let mut world = shared.lock();
    let Some(object) = world.rollouts.get(&key).cloned() else {
        return not_found("rollouts.fledge.dev", &key.1);
    };
    if let Some(times) = world.rollout_changes_after_read.get_mut(&key)
        && *times > 0
    {
        *times -= 1;
        let mut changed = object.clone();
        world.stamp_update(&object, &mut changed);
        world.log_rollout("MODIFIED", &changed);
        world.rollouts.insert(key, changed);
    }
    Json(object).into_response()
}

/// What a metadata patch of a Rollout may carry: metadata only, and in it only the
/// resourceVersion it was read at, the command annotation (a well-formed command) and finalizers.
fn patch_errors(patch: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    let Some(fields) = patch.as_object() else {
        return vec!["the patch is not an object".into()];
    };
    for field in fields.keys().filter(|f| *f != "metadata") {
        errors.push(format!("a metadata patch carries {field}"));
    }
    let Some(meta) = patch["metadata"].as_object() else {
        return vec!["the patch has no metadata object".into()];
    };
    for field in meta.keys() {
        if !["resourceVersion", "annotations", "finalizers"].contains(&field.as_str()) {
            errors.push(format!("a metadata patch carries metadata.{field}"));
        }
    }
    if let Some(annotations) = meta.get("annotations") {
        let Some(annotations) = annotations.as_object() else {
            return vec!["metadata.annotations is not an object".into()];
        };
        for (name, value) in annotations {
            if name != COMMAND_ANNOTATION {
                errors.push(format!("the patch sets annotation {name}"));
                continue;
            }
            match value.as_str().map(serde_json::from_str::<RecordedCommand>) {
                Some(Ok(c))
                    if !c.by.is_empty()
                        && c.id > 0
                        && c.command
                            .parse::<fledge_core::rollout::UserCommand>()
                            .is_ok() => {}
                other => errors.push(format!(
                    "{COMMAND_ANNOTATION} {value} is not a command: {other:?}"
                )),
            }
        }
    }
    errors
}

pub(super) fn patch_rollout(
    shared: &Shared,
    key: (String, String),
    patch: &Value,
    wrong: &dyn Fn(Vec<String>) -> String,
) -> Response {
    let errors = patch_errors(patch);
    if !errors.is_empty() {
        return refuse(shared, StatusCode::BAD_REQUEST, wrong(errors));
    }
    let mut world = shared.lock();
    let Some(old) = world.rollouts.get(&key).cloned() else {
        return not_found("rollouts.fledge.dev", &key.1);
    };
    if let Some(rv) = patch["metadata"]["resourceVersion"].as_str()
        && old["metadata"]["resourceVersion"] != rv
    {
        return conflict("rollouts.fledge.dev", &key.1);
    }
    let mut new = old.clone();
    let mut patch = patch.clone();
    if let Some(meta) = patch["metadata"].as_object_mut() {
        meta.remove("resourceVersion");
    }
    checks::merge(&mut new, &patch);
    let errors = checks::rollout_errors(&new);
    if !errors.is_empty() {
        drop(world);
        return refuse(shared, StatusCode::UNPROCESSABLE_ENTITY, wrong(errors));
    }
    world.stamp_update(&old, &mut new);
    let gone = new["metadata"]["deletionTimestamp"].is_string()
        && new["metadata"]["finalizers"]
            .as_array()
            .is_none_or(|f| f.is_empty());
    if gone {
        world.log_rollout("DELETED", &new);
        world.rollouts.remove(&key);
    } else {
        world.log_rollout("MODIFIED", &new);
        world.rollouts.insert(key, new.clone());
    }
    let rv = world.revision;
    drop(world);
    shared.changed.send_replace(rv);
    Json(new).into_response()
}

/// `POST selfsubjectreviews`: who the caller is.
pub(super) fn self_subject_review(
    shared: &Shared,
    user: &str,
    body: &Value,
    wrong: &dyn Fn(Vec<String>) -> String,
) -> Response {
    if body["apiVersion"] != "authentication.k8s.io/v1" || body["kind"] != "SelfSubjectReview" {
        return refuse(
            shared,
            StatusCode::BAD_REQUEST,
            wrong(vec![format!("body {body} is not a SelfSubjectReview")]),
        );
    }
    let answer = json!({
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "SelfSubjectReview",
        "metadata": { "creationTimestamp": null },
        "status": { "userInfo": { "username": user, "groups": ["system:authenticated"] } },
    });
    (StatusCode::CREATED, Json(answer)).into_response()
}
