//! The stand-in's one handler: recognises each call the Kubernetes store makes by method and
//! path, checks it (`checks`), and answers as the API server would.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::answers::{
    apply_body_errors, apply_status, create_event, get_virtual_service, list, patch_event,
    replace_virtual_service, stream,
};
use super::checks::query_errors;
use super::deployments;
use super::leases::{create_lease, get_lease, replace_lease};
use super::rollouts::{get_rollout, patch_rollout, self_subject_review};
use super::{AGENT, Access, Shared};

const ROLLOUTS: &[&str] = &["apis", "fledge.dev", "v1alpha1"];
const ISTIO: &[&str] = &["apis", "networking.istio.io", "v1"];
const EVENTS: &[&str] = &["apis", "events.k8s.io", "v1"];
const AUTHENTICATION: &[&str] = &["apis", "authentication.k8s.io", "v1"];
const COORDINATION: &[&str] = &["apis", "coordination.k8s.io", "v1"];
const APPS: &[&str] = &["apis", "apps", "v1"];

/// One call the Kubernetes store makes.
#[derive(Debug)]
enum Call {
    ListRollouts { ns: Option<String> },
    WatchRollouts { ns: Option<String> },
    ApplyStatus { ns: String, name: String },
    GetRollout { ns: String, name: String },
    PatchRollout { ns: String, name: String },
    SelfSubjectReview,
    GetVirtualService { ns: String, name: String },
    ReplaceVirtualService { ns: String, name: String },
    CreateEvent { ns: String },
    PatchEvent { ns: String, name: String },
    GetLease { ns: String, name: String },
    CreateLease { ns: String },
    ReplaceLease { ns: String, name: String },
    GetDeployment { ns: String, name: String },
    ScaleDeployment { ns: String, name: String },
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
                ("GET", ["namespaces", _, "rollouts", _]) => Some(Self::GetRollout {
                    ns: s(4),
                    name: s(6),
                }),
                ("PATCH", ["namespaces", _, "rollouts", _]) => Some(Self::PatchRollout {
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
        if under(APPS) {
            return match (method.as_str(), rest(APPS).as_slice()) {
                ("GET", ["namespaces", _, "deployments", _]) => Some(Self::GetDeployment {
                    ns: s(4),
                    name: s(6),
                }),
                ("PATCH", ["namespaces", _, "deployments", _, "scale"]) => {
                    Some(Self::ScaleDeployment {
                        ns: s(4),
                        name: s(6),
                    })
                }
                _ => None,
            };
        }
        if under(AUTHENTICATION) {
            return match (method.as_str(), rest(AUTHENTICATION).as_slice()) {
                ("POST", ["selfsubjectreviews"]) => Some(Self::SelfSubjectReview),
                _ => None,
            };
        }
        if under(COORDINATION) {
            return match (method.as_str(), rest(COORDINATION).as_slice()) {
                ("GET", ["namespaces", _, "leases", _]) => Some(Self::GetLease {
                    ns: s(4),
                    name: s(6),
                }),
                ("POST", ["namespaces", _, "leases"]) => Some(Self::CreateLease { ns: s(4) }),
                ("PUT", ["namespaces", _, "leases", _]) => Some(Self::ReplaceLease {
                    ns: s(4),
                    name: s(6),
                }),
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
            Self::GetRollout { .. } => Access::new("get", "fledge.dev", "rollouts"),
            Self::PatchRollout { .. } => Access::new("patch", "fledge.dev", "rollouts"),
            Self::SelfSubjectReview => {
                Access::new("create", "authentication.k8s.io", "selfsubjectreviews")
            }
            Self::GetVirtualService { .. } => {
                Access::new("get", "networking.istio.io", "virtualservices")
            }
            Self::ReplaceVirtualService { .. } => {
                Access::new("update", "networking.istio.io", "virtualservices")
            }
            Self::CreateEvent { .. } => Access::new("create", "events.k8s.io", "events"),
            Self::PatchEvent { .. } => Access::new("patch", "events.k8s.io", "events"),
            Self::GetLease { .. } => Access::new("get", "coordination.k8s.io", "leases"),
            Self::CreateLease { .. } => Access::new("create", "coordination.k8s.io", "leases"),
            Self::ReplaceLease { .. } => Access::new("update", "coordination.k8s.io", "leases"),
            Self::GetDeployment { .. } => Access::new("get", "apps", "deployments"),
            Self::ScaleDeployment { .. } => Access::new("patch", "apps", "deployments/scale"),
        }
    }

    /// The content type the body must have, or None for no body.
    fn content_type(&self) -> Option<&'static str> {
        match self {
            Self::ListRollouts { .. } | Self::WatchRollouts { .. } => None,
            Self::GetVirtualService { .. } | Self::GetRollout { .. } | Self::GetLease { .. } => {
                None
            }
            Self::CreateLease { .. } | Self::ReplaceLease { .. } => Some("application/json"),
            Self::GetDeployment { .. } => None,
            Self::ApplyStatus { .. } => Some("application/apply-patch+yaml"),
            Self::ReplaceVirtualService { .. }
            | Self::CreateEvent { .. }
            | Self::SelfSubjectReview => Some("application/json"),
            Self::PatchEvent { .. } | Self::PatchRollout { .. } | Self::ScaleDeployment { .. } => {
                Some("application/merge-patch+json")
            }
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
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let user = match bearer {
        None => AGENT.to_owned(),
        Some(token) => match shared.lock().tokens.get(token) {
            Some(user) => user.clone(),
            None => {
                return status(
                    StatusCode::UNAUTHORIZED,
                    "Unauthorized",
                    "Unauthorized".into(),
                );
            }
        },
    };
    let rollouts = matches!(
        call,
        Call::ListRollouts { .. }
            | Call::WatchRollouts { .. }
            | Call::ApplyStatus { .. }
            | Call::GetRollout { .. }
            | Call::PatchRollout { .. }
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
        world
            .accesses
            .entry(user.clone())
            .or_default()
            .insert(access.clone());
        if world.forbidden.contains(&access)
            || world
                .forbidden_for
                .contains(&(user.clone(), access.clone()))
        {
            drop(world);
            let scope = match &call {
                Call::GetRollout { ns, .. } | Call::PatchRollout { ns, .. } => {
                    format!(" in the namespace \"{ns}\"")
                }
                _ => String::new(),
            };
            return status(
                StatusCode::FORBIDDEN,
                "Forbidden",
                format!(
                    "{} is forbidden: User \"{user}\" cannot {} resource \"{}\" in API group \"{}\"{scope}",
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
    let writes = call.writes();
    let token = bearer.map(str::to_owned);
    let written = body.clone();
    let vs_replace = matches!(call, Call::ReplaceVirtualService { .. });
    let answer = answer(&shared, call, &query, body, &user, &wrong).await;
    let code = answer.status();
    let mut world = shared.lock();
    if let Some(what) = writes
        && code.is_success()
    {
        world.writes.push(super::Write {
            user,
            token,
            what,
            body: written,
            at: std::time::Instant::now(),
        });
    }
    if vs_replace && code == StatusCode::CONFLICT {
        world.vs_conflicts += 1;
    }
    drop(world);
    answer
}

impl Call {
    /// What a successful call of this kind writes, if it writes.
    fn writes(&self) -> Option<String> {
        match self {
            Self::ApplyStatus { ns, name } => Some(format!("status {ns}/{name}")),
            Self::PatchRollout { ns, name } => Some(format!("rollout {ns}/{name}")),
            Self::ReplaceVirtualService { ns, name } => Some(format!("virtualservice {ns}/{name}")),
            Self::CreateEvent { ns } => Some(format!("event {ns}")),
            Self::PatchEvent { ns, name } => Some(format!("event {ns}/{name}")),
            Self::CreateLease { ns } => Some(format!("lease {ns}")),
            Self::ReplaceLease { ns, name } => Some(format!("lease {ns}/{name}")),
            _ => None,
        }
    }
}

/// The answer to a recognised, authorised call with an acceptable content type.
async fn answer(
    shared: &Shared,
    call: Call,
    query: &BTreeMap<String, String>,
    body: Value,
    user: &str,
    wrong: &(dyn Fn(Vec<String>) -> String + Sync),
) -> Response {
    let shared = shared.clone();
    match call {
        Call::ListRollouts { ns } => {
            let errors = if query.contains_key("resourceVersion") {
                query_errors(
                    query,
                    &[
                        ("limit", None),
                        ("resourceVersion", Some("0")),
                        ("resourceVersionMatch", Some("NotOlderThan")),
                    ],
                )
            } else {
                query_errors(query, &[("limit", None)])
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
                query,
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
                query,
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
        Call::GetRollout { ns, name } => {
            if !query.is_empty() {
                return refuse(
                    &shared,
                    StatusCode::BAD_REQUEST,
                    wrong(vec!["a query".into()]),
                );
            }
            get_rollout(&shared, (ns, name))
        }
        Call::PatchRollout { ns, name } => {
            let manager = if user == AGENT {
                "fledge-agent"
            } else {
                "kubectl-fledge"
            };
            let errors = query_errors(query, &[("fieldManager", Some(manager))]);
            if !errors.is_empty() {
                return refuse(&shared, StatusCode::BAD_REQUEST, wrong(errors));
            }
            patch_rollout(&shared, (ns, name), &body, &wrong)
        }
        Call::SelfSubjectReview => {
            let errors = query_errors(query, &[]);
            if !errors.is_empty() {
                return refuse(&shared, StatusCode::BAD_REQUEST, wrong(errors));
            }
            self_subject_review(&shared, user, &body, &wrong)
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
            let errors = query_errors(query, &[("fieldManager", Some("fledge-agent"))]);
            if !errors.is_empty() {
                return refuse(&shared, StatusCode::BAD_REQUEST, wrong(errors));
            }
            replace_virtual_service(&shared, (ns, name), body, &wrong)
        }
        Call::CreateEvent { ns } => {
            let errors = query_errors(query, &[]);
            if !errors.is_empty() {
                return refuse(&shared, StatusCode::BAD_REQUEST, wrong(errors));
            }
            create_event(&shared, ns, body, &wrong)
        }
        Call::GetDeployment { ns, name } => {
            if !query.is_empty() {
                return refuse(
                    &shared,
                    StatusCode::BAD_REQUEST,
                    wrong(vec!["a query".into()]),
                );
            }
            deployments::get(&shared, (ns, name))
        }
        Call::ScaleDeployment { ns, name } => {
            let errors = query_errors(query, &[("fieldManager", Some("fledge-agent"))]);
            if !errors.is_empty() {
                return refuse(&shared, StatusCode::BAD_REQUEST, wrong(errors));
            }
            deployments::patch_scale(&shared, (ns, name), &body, &wrong)
        }
        Call::PatchEvent { ns, name } => {
            let errors = query_errors(query, &[]);
            if !errors.is_empty() {
                return refuse(&shared, StatusCode::BAD_REQUEST, wrong(errors));
            }
            patch_event(&shared, (ns, name), &body, &wrong)
        }
        Call::GetLease { ns, name } => {
            if !query.is_empty() {
                return refuse(
                    &shared,
                    StatusCode::BAD_REQUEST,
                    wrong(vec!["a query".into()]),
                );
            }
            get_lease(&shared, (ns, name))
        }
        Call::CreateLease { ns } => {
            let errors = query_errors(query, &[("fieldManager", Some("fledge-agent"))]);
            if !errors.is_empty() {
                return refuse(&shared, StatusCode::BAD_REQUEST, wrong(errors));
            }
            create_lease(&shared, ns, body, &wrong)
        }
        Call::ReplaceLease { ns, name } => {
            let errors = query_errors(query, &[("fieldManager", Some("fledge-agent"))]);
            if !errors.is_empty() {
                return refuse(&shared, StatusCode::BAD_REQUEST, wrong(errors));
            }
            replace_lease(&shared, (ns, name), body, &wrong)
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
pub(super) fn status(code: StatusCode, reason: &str, message: String) -> Response {
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
pub(super) fn refuse(shared: &Shared, code: StatusCode, message: String) -> Response {
    shared.lock().violation(message.clone());
    let reason = match code {
        StatusCode::UNPROCESSABLE_ENTITY => "Invalid",
        StatusCode::NOT_FOUND => "NotFound",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "UnsupportedMediaType",
        _ => "BadRequest",
    };
    status(code, reason, message)
}

pub(super) fn not_found(resource: &str, name: &str) -> Response {
    status(
        StatusCode::NOT_FOUND,
        "NotFound",
        format!("{resource} \"{name}\" not found"),
    )
}

/// The 409 for a write at a resourceVersion that has moved on.
pub(super) fn conflict(resource: &str, name: &str) -> Response {
    status(
        StatusCode::CONFLICT,
        "Conflict",
        format!(
            "Operation cannot be fulfilled on {resource} \"{name}\": the object has been modified; please apply your changes to the latest version and try again"
        ),
    )
}

/// The resourceVersion an update names, or — when it names none or `errors` has any — the
/// refusal that says so (a violation).
pub(super) fn update_version(
    shared: &Shared,
    body: &Value,
    mut errors: Vec<String>,
    wrong: &dyn Fn(Vec<String>) -> String,
) -> Result<String, Box<Response>> {
    let rv = body["metadata"]["resourceVersion"]
        .as_str()
        .map(str::to_owned);
    if rv.is_none() {
        errors.push("metadata.resourceVersion: must be specified for an update".into());
    }
    match rv {
        Some(rv) if errors.is_empty() => Ok(rv),
        _ => Err(Box::new(refuse(
            shared,
            StatusCode::UNPROCESSABLE_ENTITY,
            wrong(errors),
        ))),
    }
}
