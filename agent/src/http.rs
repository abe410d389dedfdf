//! The agent's HTTP surface (axum): health, readiness, Prometheus metrics, and the rollout API
//! the CLI and people use — `GET /api/v1/rollouts[/{ns}/{name}]` for objects with their status
//! and evidence, `POST /api/v1/rollouts/{ns}/{name}/{promote|abort|pause|resume}` for commands.
//!
//! An adapter only: it converts HTTP to calls on a [`ControlPlane`] and back. What a command
//! does is the rollout state machine's business, not this module's.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};

use crate::metrics::Metrics;

/// A person's command to one rollout, as typed on the CLI or posted to the API.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UserCommand {
    /// Pass the current gate (a pause "until promoted", or the whole rollout when it is done).
    Promote,
    /// Stop now and send every request back to stable.
    Abort,
    /// Hold the current step: no analysis verdict moves it forward until resumed.
    Pause,
    /// Undo a pause.
    Resume,
}

impl UserCommand {
    pub const ALL: [UserCommand; 4] = [Self::Promote, Self::Abort, Self::Pause, Self::Resume];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Promote => "promote",
            Self::Abort => "abort",
            Self::Pause => "pause",
            Self::Resume => "resume",
        }
    }
}

impl fmt::Display for UserCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for UserCommand {
    type Err = ApiError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| {
                ApiError::Invalid(format!(
                    "unknown command {s:?}: expected one of promote, abort, pause, resume"
                ))
            })
    }
}

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

/// What the HTTP surface needs from the running agent.
pub trait ControlPlane: Send + Sync + 'static {
    /// Every Rollout with its status, as the JSON objects the API serves (Kubernetes shape:
    /// apiVersion, kind, metadata, spec, status).
    fn rollouts(&self) -> Vec<serde_json::Value>;
    /// Queues `command` for one rollout; it takes effect at the next reconcile.
    fn command(&self, namespace: &str, name: &str, command: UserCommand) -> Result<(), ApiError>;
    /// Whether the agent has loaded its rollouts and serves telemetry.
    fn ready(&self) -> bool;
}

#[derive(Clone)]
struct AppState {
    plane: Arc<dyn ControlPlane>,
    metrics: Arc<Metrics>,
}

/// The agent's HTTP routes.
pub fn router(plane: Arc<dyn ControlPlane>, metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .route("/api/v1/rollouts", get(list))
        .route("/api/v1/rollouts/{namespace}/{name}", get(one))
        .route(
            "/api/v1/rollouts/{namespace}/{name}/{command}",
            post(command),
        )
        .with_state(AppState { plane, metrics })
}

async fn readyz(State(state): State<AppState>) -> Response {
    if state.plane.ready() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
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
    Json(serde_json::json!({ "items": state.plane.rollouts() }))
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

#[cfg(test)]
mod tests;
