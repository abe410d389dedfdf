//! Deployments (`apps/v1`) in the stand-in: `get` answers the object (404 when absent), and
//! `patch` on the scale subresource takes exactly a merge patch of `spec.replicas` — any other
//! field, a negative or non-integer count, or a missing field manager is refused as a violation.
//! A changed spec bumps the generation, as the real server does; the Deployment controller's
//! part (the status: ready pods for a generation) is the test's, through `ApiServer::set_ready`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::handlers::{not_found, refuse};
use super::{ApiServer, Key, Shared, key_of};

pub(super) fn get(shared: &Shared, key: Key) -> Response {
    match shared.lock().deployments.get(&key) {
        Some(d) => Json(d.clone()).into_response(),
        None => not_found("deployments.apps", &key.1),
    }
}

/// The Scale object the real server answers for a Deployment.
fn scale_of(d: &Value) -> Value {
    json!({
        "apiVersion": "autoscaling/v1",
        "kind": "Scale",
        "metadata": {
            "name": d["metadata"]["name"],
            "namespace": d["metadata"]["namespace"],
            "uid": d["metadata"]["uid"],
            "resourceVersion": d["metadata"]["resourceVersion"],
        },
        "spec": { "replicas": d["spec"]["replicas"] },
        "status": { "replicas": d["status"]["replicas"].as_u64().unwrap_or(0) },
    })
}

pub(super) fn patch_scale(
    shared: &Shared,
    key: Key,
    body: &Value,
    wrong: &dyn Fn(Vec<String>) -> String,
) -> Response {
    let replicas = body["spec"]["replicas"].as_u64();
    let only_replicas = body.as_object().is_some_and(|o| o.len() == 1)
        && body["spec"].as_object().is_some_and(|s| s.len() == 1);
    if replicas.is_none() || !only_replicas {
        return refuse(
            shared,
            StatusCode::UNPROCESSABLE_ENTITY,
            wrong(vec![format!(
                "a scale patch must set only spec.replicas to a count, got {body}"
            )]),
        );
    }
    let mut world = shared.lock();
    let Some(old) = world.deployments.get(&key).cloned() else {
        return not_found("deployments.apps", &key.1);
    };
    let mut new = old.clone();
    new["spec"]["replicas"] = json!(replicas);
    world.stamp_update(&old, &mut new);
    world.deployments.insert(key, new.clone());
    Json(scale_of(&new)).into_response()
}

impl ApiServer {
    /// Creates a Deployment (no pod ready yet).
    pub fn create_deployment(&self, mut object: Value) {
        assert_eq!(object["apiVersion"], "apps/v1");
        assert_eq!(object["kind"], "Deployment");
        let mut world = self.lock();
        world.stamp_new(&mut object);
        world.deployments.insert(key_of(&object), object);
    }

    pub fn deployment(&self, ns: &str, name: &str) -> Option<Value> {
        self.lock()
            .deployments
            .get(&(ns.into(), name.into()))
            .cloned()
    }

    /// Plays the Deployment controller: `ready` pods (ready and available) for the current spec.
    pub fn set_ready(&self, ns: &str, name: &str, ready: u64) {
        let mut world = self.lock();
        let key = (ns.to_owned(), name.to_owned());
        let Some(mut d) = world.deployments.get(&key).cloned() else {
            panic!("no Deployment {ns}/{name}");
        };
        let status = json!({
            "observedGeneration": d["metadata"]["generation"],
            "replicas": d["spec"]["replicas"],
            "readyReplicas": ready,
            "availableReplicas": ready,
        });
        if d["status"] == status {
            return;
        }
        d["status"] = status;
        let rv = world.next_revision();
        d["metadata"]["resourceVersion"] = json!(rv.to_string());
        world.deployments.insert(key, d);
    }
}
