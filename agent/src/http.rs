//! The agent's HTTP surface (axum): health, readiness, leadership (`/leaderz`), Prometheus metrics, and the rollout API
//! the CLI and people use — `GET /api/v1/rollouts[/{ns}/{name}]` for objects with their status
//! and evidence (the list also names the objects that cannot be read, under `problems`), `POST /api/v1/rollouts/{ns}/{name}/{promote|abort|pause|resume}` for commands.
//!
//! An adapter only: it converts HTTP to calls on a [`ControlPlane`] and back. What a command
//! does is the rollout state machine's business, not this module's; who may send one over HTTP
//! is [`guard`]'s (no web page, JSON only, loopback names on a loopback listener), and so is who
//! may read the rollouts and metrics in a cluster.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use fledge_core::rollout::{UnknownCommand, UserCommand};

pub use self::guard::Guard;
use crate::metrics::Metrics;
use crate::plane::{ControlPlane, UnknownRollout};

/// What went wrong with an API call, with the status it maps to.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("Rollout {namespace}/{name} not found")]
    NotFound { namespace: String, name: String },
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Unavailable(String),
}

impl From<UnknownCommand> for ApiError {
    fn from(e: UnknownCommand) -> Self {
        Self::Invalid(e.to_string())
    }
}

impl From<UnknownRollout> for ApiError {
    fn from(UnknownRollout(key): UnknownRollout) -> Self {
        Self::NotFound {
            namespace: key.namespace,
            name: key.name,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match self {
            Self::NotFound { .. } => StatusCode::NOT_FOUND,
            Self::Invalid(_) => StatusCode::BAD_REQUEST,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        (
            status,
            Json(serde_json::json!({ "error": self.to_string() })),
        )
            .into_response()
    }
}

#[derive(Clone)]
struct AppState {
    plane: Arc<dyn ControlPlane>,
    metrics: Arc<Metrics>,
}

/// The agent's HTTP routes; commands and reads pass `guard` first (serve it with
/// `into_make_service_with_connect_info::<SocketAddr>` so the guard sees who asks).
pub fn router(plane: Arc<dyn ControlPlane>, metrics: Arc<Metrics>, guard: Guard) -> Router {
    let commands = Router::new()
        .route(
            "/api/v1/rollouts/{namespace}/{name}/{command}",
            post(command),
        )
        .route_layer(middleware::from_fn_with_state(guard, guard::mutations));
    let reads = Router::new()
        .route("/metrics", get(metrics_text))
        .route("/api/v1/rollouts", get(list))
        .route("/api/v1/rollouts/{namespace}/{name}", get(one))
        .route_layer(middleware::from_fn_with_state(guard, guard::reads));
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/leaderz", get(leaderz))
        .merge(reads)
        .merge(commands)
        .with_state(AppState { plane, metrics })
}

async fn readyz(State(state): State<AppState>) -> Response {
    if state.plane.ready() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
    }
}

/// 200 only on the agent that leads (the one that reconciles and takes telemetry); 503 on a
/// standby. For people and monitoring: the pods' readiness stays `/readyz`, true on a standby
/// too, so a rolling update of the agents can proceed.
async fn leaderz(State(state): State<AppState>) -> Response {
    if state.plane.leading() {
        (StatusCode::OK, "leading\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "standing by\n").into_response()
    }
}

async fn metrics_text(State(state): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}

async fn list(State(state): State<AppState>) -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "items": state.plane.rollouts(),
        "problems": state.plane.problems(),
    }))
}

async fn one(
    State(state): State<AppState>,
    Path((namespace, name)): Path<(String, String)>,
) -> Result<Json<serde_json::Value>, ApiError> {
    state
        .plane
        .rollouts()
        .into_iter()
        .find(|r| {
            r["metadata"]["namespace"].as_str() == Some(namespace.as_str())
                && r["metadata"]["name"].as_str() == Some(name.as_str())
        })
        .map(Json)
        .ok_or(ApiError::NotFound { namespace, name })
}

async fn command(
    State(state): State<AppState>,
    Path((namespace, name, command)): Path<(String, String, String)>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let command: UserCommand = command.parse()?;
    state.plane.command(&namespace, &name, command)?;
    tracing::info!(rollout = %format!("{namespace}/{name}"), %command, "command accepted");
    Ok((
        StatusCode::ACCEPTED,
        Json(serde_json::json!({ "accepted": command, "rollout": format!("{namespace}/{name}") })),
    ))
}

pub mod guard;

#[cfg(test)]
mod tests;
