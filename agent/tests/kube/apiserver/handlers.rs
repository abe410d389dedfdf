//! The stand-in's one handler: recognises each call the Kubernetes store makes by method and
//! path, checks it (`checks`), and answers as the API server would.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::checks::{self, query_errors};
use super::{Access, Shared};

const ROLLOUTS: &[&str] = &["apis", "fledge.dev", "v1alpha1"];
const ISTIO: &[&str] = &["apis", "networking.istio.io", "v1"];
const EVENTS: &[&str] = &["apis", "events.k8s.io", "v1"];

/// One call the Kubernetes store makes.
#[derive(Debug)]
enum Call {
    ListRollouts { ns: Option<String> },
    WatchRollouts { ns: Option<String> },
    ApplyStatus { ns: String, name: String },
    GetVirtualService { ns: String, name: String },
    ReplaceVirtualService { ns: String, name: String },
    CreateEvent { ns: String },
    PatchEvent { ns: String, name: String },
}

impl Call {
    fn recognise(method: &Method, path: &[&str], watch: bool) -> Option<Self> {
        let s = |i: usize| path[i].to_owned();
        let under = |prefix: &[&str]| path.len() > prefix.len() && path.starts_with(prefix);
        let rest = |prefix: &[&str]| path[prefix.len()..].to_vec();
        if under(ROLLOUTS) {
            let r = rest(ROLLOUTS);
            return match (method.as_str(), r.as_slice()) {
                ("GET", ["rollouts"]) if watch => Some(Self::WatchRollouts { ns: None }),
                ("GET", ["rollouts"]) => Some(Self::ListRollouts { ns: None }),
                ("GET", ["namespaces", ns, "rollouts"]) if watch => Some(Self::WatchRollouts {
                    ns: Some(ns.to_string()),
                }),
                ("GET", ["namespaces", ns, "rollouts"]) => Some(Self::ListRollouts {
                    ns: Some(ns.to_string()),
                }),
                ("PATCH", ["namespaces", _, "rollouts", _, "status"]) => Some(Self::ApplyStatus {
                    ns: s(4),
                    name: s(6),
                }),
                _ => None,
            };
        }
        if under(ISTIO) {
            return match (method.as_str(), rest(ISTIO).as_slice()) {
                ("GET", ["namespaces", _, "virtualservices", _]) => Some(Self::GetVirtualService {
                    ns: s(4),
                    name: s(6),
                }),
                ("PUT", ["namespaces", _, "virtualservices", _]) => {
                    Some(Self::ReplaceVirtualService {
                        ns: s(4),
                        name: s(6),
                    })
                }
                _ => None,
            };
        }
        if under(EVENTS) {
            return match (method.as_str(), rest(EVENTS).as_slice()) {
                ("POST", ["namespaces", _, "events"]) => Some(Self::CreateEvent { ns: s(4) }),
                ("PATCH", ["namespaces", _, "events", _]) => Some(Self::PatchEvent {
                    ns: s(4),
                    name: s(6),
                }),
                _ => None,
            };
        }
        None
    }

    fn access(&self) -> Access {
        match self {
            Self::ListRollouts { .. } => Access::new("list", "fledge.dev", "rollouts"),
            Self::WatchRollouts { .. } => Access::new("watch", "fledge.dev", "rollouts"),
            Self::ApplyStatus { .. } => Access::new("patch", "fledge.dev", "rollouts/status"),
            Self::GetVirtualService { .. } => {
                Access::new("get", "networking.istio.io", "virtualservices")
            }
            Self::ReplaceVirtualService { .. } => {
                Access::new("update", "networking.istio.io", "virtualservices")
            }
            Self::CreateEvent { .. } => Access::new("create", "events.k8s.io", "events"),
            Self::PatchEvent { .. } => Access::new("patch", "events.k8s.io", "events"),
        }
    }

    /// The content type the body must have, or None for no body.
    fn content_type(&self) -> Option<&'static str> {
        match self {
            Self::ListRollouts { .. } | Self::WatchRollouts { .. } => None,
            Self::GetVirtualService { .. } => None,
            Self::ApplyStatus { .. } => Some("application/apply-patch+yaml"),
            Self::ReplaceVirtualService { .. } | Self::CreateEvent { .. } => {
                Some("application/json")
            }
            Self::PatchEvent { .. } => Some("application/merge-patch+json"),
        }
    }
}

pub async fn handle(
    State(shared): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path: Vec<&str> = uri.path().trim_start_matches('/').split('/').collect();
    let query = uri.query().map(query_pairs).unwrap_or_default();
    shared.lock().calls.push(format!("{method} {uri}"));
    let watch = query.get("watch").is_some_and(|w| w == "true");
    let Some(call) = Call::recognise(&method, &path, watch) else {
        return refuse(
            &shared,
            StatusCode::NOT_FOUND,
            format!("unexpected call {method} {uri}"),
        );
    };
    let access = call.access();
    let rollouts = matches!(
        call,
        Call::ListRollouts { .. } | Call::WatchRollouts { .. } | Call::ApplyStatus { .. }
    );
    if rollouts && shared.lock().crd_missing {
        return status(
            StatusCode::NOT_FOUND,
            "NotFound",
            "the server could not find the requested resource".into(),
        );
    }
    {
        let mut world = shared.lock();
        world.accesses.insert(access.clone());
        if world.forbidden.contains(&access) {
            drop(world);
            return status(
                StatusCode::FORBIDDEN,
                "Forbidden",
                format!(
                    "{} is forbidden: User \"system:serviceaccount:fledge-system:fledge-agent\" cannot {} resource \"{}\" in API group \"{}\"",
                    access.resource, access.verb, access.resource, access.group
                ),
            );
        }
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    match call.content_type() {
        None if !body.is_empty() => {
            return refuse(
                &shared,
                StatusCode::BAD_REQUEST,
                format!("{method} {uri} has a body"),
            );
        }
        Some(want) if content_type != want => {
            return refuse(
                &shared,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("{method} {uri}: content-type {content_type:?}, expected {want}"),
            );
        }
        _ => {}
    }
    let body: Value = if body.is_empty() {
        Value::Null
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => {
                return refuse(
                    &shared,
                    StatusCode::BAD_REQUEST,
                    format!("{method} {uri}: body is not JSON: {e}"),
                );
            }
        }
    };
    let wrong = |errors: Vec<String>| format!("{method} {uri}: {}", errors.join("; "));
    match call {
        Call::ListRollouts { ns } => {
            let errors = if query.contains_key("resourceVersion") {
                query_errors(
                    &query,
                    &[
                        ("limit", None),
                        ("resourceVersion", Some("0")),
                        ("resourceVersionMatch", Some("NotOlderThan")),
                    ],
                )
            } else {
                query_errors(&query, &[("limit", None)])
            };
            let limit = query.get("limit").and_then(|l| l.parse::<usize>().ok());
            if !errors.is_empty() || limit.is_none_or(|l| l == 0) {
                return refuse(&shared, StatusCode::BAD_REQUEST, wrong(errors));
            }
            // The store's first check lists one object; the watcher lists pages.
            if limit != Some(1) {
                let mut open = shared.lists_open.subscribe();
                let _ = open.wait_for(|open| *open).await;
            }
            list(&shared, ns.as_deref(), limit.unwrap_or(500))
        }
        Call::WatchRollouts { ns } => {
            let errors = query_errors(
                &query,
                &[
                    ("watch", Some("true")),
                    ("resourceVersion", None),
                    ("allowWatchBookmarks", Some("true")),
                    ("timeoutSeconds", None),
                ],
            );
            let from = query
                .get("resourceVersion")
                .and_then(|v| v.parse::<u64>().ok());
            let timeout = query
                .get("timeoutSeconds")
                .and_then(|v| v.parse::<u64>().ok());
            match (errors.is_empty(), from, timeout) {
                (true, Some(from), Some(timeout)) => {
                    stream(shared, ns, from, Duration::from_secs(timeout))
                }
                _ => refuse(&shared, StatusCode::BAD_REQUEST, wrong(errors)),
            }
        }
        Call::ApplyStatus { ns, name } => {
            let mut errors = query_errors(
                &query,
                &[
                    ("fieldManager", Some("fledge-agent")),
                    ("force", Some("true")),
                ],
            );
            errors.extend(apply_body_errors(&body, &name));
            if !errors.is_empty() {
                return refuse(&shared, StatusCode::BAD_REQUEST, wrong(errors));
            }
            apply_status(&shared, (ns, name), &body, &wrong)
        }
        Call::GetVirtualService { ns, name } => {
            if !query.is_empty() {
                return refuse(
                    &shared,
                    StatusCode::BAD_REQUEST,
                    wrong(vec!["a query".into()]),
                );
            }
            get_virtual_service(&shared, (ns, name))
        }
        Call::ReplaceVirtualService { ns, name } => {
            let errors = query_errors(&query, &[("fieldManager", Some("fledge-agent"))]);
            if !errors.is_empty() {
                return refuse(&shared, StatusCode::BAD_REQUEST, wrong(errors));
            }
            replace_virtual_service(&shared, (ns, name), body, &wrong)
        }
        Call::CreateEvent { ns } => {
            let errors = query_errors(&query, &[]);
            if !errors.is_empty() {
                return refuse(&shared, StatusCode::BAD_REQUEST, wrong(errors));
            }
            create_event(&shared, ns, body, &wrong)
        }
        Call::PatchEvent { ns, name } => {
            let errors = query_errors(&query, &[]);
            if !errors.is_empty() {
                return refuse(&shared, StatusCode::BAD_REQUEST, wrong(errors));
            }
            patch_event(&shared, (ns, name), &body, &wrong)
        }
    }
}

fn query_pairs(query: &str) -> BTreeMap<String, String> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(k), decode(v))
        })
        .collect()
}

/// Percent-decoding, enough for the names and values the store sends.
fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                out.push(u8::from_str_radix(hex, 16).unwrap_or(b'?'));
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A `Status` answer, as the API server sends for failures.
fn status(code: StatusCode, reason: &str, message: String) -> Response {
    let body = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code.as_u16(),
    });
    (code, Json(body)).into_response()
}

/// Refuses a call that breaks a rule, and records it as a violation.
fn refuse(shared: &Shared, code: StatusCode, message: String) -> Response {
    shared.lock().violation(message.clone());
    let reason = match code {
        StatusCode::UNPROCESSABLE_ENTITY => "Invalid",
        StatusCode::NOT_FOUND => "NotFound",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "UnsupportedMediaType",
        _ => "BadRequest",
    };
    status(code, reason, message)
}

fn not_found(resource: &str, name: &str) -> Response {
    status(
        StatusCode::NOT_FOUND,
        "NotFound",
        format!("{resource} \"{name}\" not found"),
    )
}

fn list(shared: &Shared, ns: Option<&str>, limit: usize) -> Response {
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
fn stream(shared: Shared, ns: Option<String>, from: u64, timeout: Duration) -> Response {
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
fn apply_body_errors(body: &Value, name: &str) -> Vec<String> {
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

fn apply_status(
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

fn get_virtual_service(shared: &Shared, key: (String, String)) -> Response {
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

fn replace_virtual_service(
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
    let Some(rv) = body["metadata"]["resourceVersion"]
        .as_str()
        .map(str::to_owned)
    else {
        errors.push("metadata.resourceVersion: must be specified for an update".into());
        return refuse(shared, StatusCode::UNPROCESSABLE_ENTITY, wrong(errors));
    };
    if !errors.is_empty() {
        return refuse(shared, StatusCode::UNPROCESSABLE_ENTITY, wrong(errors));
    }
    let mut world = shared.lock();
    let Some(old) = world.virtual_services.get(&key).cloned() else {
        return not_found("virtualservices.networking.istio.io", &key.1);
    };
    if old["metadata"]["resourceVersion"] != rv.as_str() {
        return status(
            StatusCode::CONFLICT,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on virtualservices.networking.istio.io \"{}\": the object has been modified; please apply your changes to the latest version and try again",
                key.1
            ),
        );
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

fn create_event(
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

fn patch_event(
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
