//! Operational endpoints: `GET /health`, `GET /ready`, `GET /metrics`, the fallback 404, and
//! the test-only panic route. They need no key and are never refused for load.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::server::api::{ErrorBody, Readiness, Status, UnavailableModel};
use crate::server::errors::ApiError;
use crate::server::AppState;

/// Liveness: answers while the process serves at all.
#[utoipa::path(
    get,
    path = "/health",
    tag = "operations",
    responses((status = 200, description = "Alive: `{\"status\": \"ok\"}`", body = Status))
)]
pub(crate) async fn health() -> Json<Status> {
    Json(Status::new("ok"))
}

/// Readiness: 503 while starting (preloading), shutting down, or when no configured
/// translation model can be loaded; otherwise 200, listing the configured models that cannot be
/// loaded (checked at start-up).
#[utoipa::path(
    get,
    path = "/ready",
    tag = "operations",
    responses(
        (status = 200, description = "Ready: `{\"status\": \"ready\", \"unavailable\": [...]}`", body = Readiness),
        (status = 503, description = "Starting, shutting down, or no translation model can be loaded", body = ErrorBody)
    )
)]
pub(crate) async fn ready(State(state): State<Arc<AppState>>) -> Response {
    if !state.ready.load(Ordering::Relaxed) {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            "the server is starting or shutting down",
        )
        .into_response();
    }
    // The store answers (a shared database may be down while this replica is up).
    let st = state.clone();
    match tokio::task::spawn_blocking(move || st.store.check()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return ApiError::from(e).into_response(),
        Err(e) => {
            return ApiError::internal(format!("the store check failed: {e}")).into_response()
        }
    }
    let unavailable: Vec<UnavailableModel> = state.unavailable.iter().map(Into::into).collect();
    let serving = state
        .languages()
        .iter()
        .any(|l| !state.unavailable.iter().any(|u| u.languages.contains(l)));
    if serving {
        Json(Readiness {
            status: "ready".into(),
            unavailable,
            store: state.store.path().to_string(),
        })
        .into_response()
    } else {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_models",
            format!(
                "no configured translation model can be loaded: {}",
                unavailable
                    .iter()
                    .map(|u| format!("{} ({})", u.model, u.reason))
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        )
        .into_response()
    }
}

/// Prometheus metrics.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses((status = 200, description = "Prometheus text format 0.0.4",
        body = String, content_type = "text/plain"))
)]
pub(crate) async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let mut resp = state.metrics.render().into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    resp
}

pub(crate) async fn not_found() -> ApiError {
    ApiError::not_found("no such endpoint; see /docs")
}

pub(crate) async fn panic_now() -> Response {
    panic!("test panic requested");
}

/// Holds its concurrency slot until the test that configured the route releases a permit.
pub(crate) async fn hold(State(state): State<Arc<AppState>>) -> Response {
    if let Some(gate) = &state.cfg.hold_route {
        if let Ok(permit) = gate.acquire().await {
            permit.forget();
        }
    }
    StatusCode::NO_CONTENT.into_response()
}
