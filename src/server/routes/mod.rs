//! The endpoints, one file per resource, and the router that wires them with the middleware.
//!
//! Handlers only validate input ([`validate`]), call the inference core (the
//! [`Engine`](crate::engine::Engine), the align workflow, the store) and fill the typed bodies
//! of [`crate::server::api`]; each carries the `#[utoipa::path]` its part of the OpenAPI
//! document is generated from.

pub(crate) mod align;
pub(crate) mod articles;
pub(crate) mod detect;
pub(crate) mod embed;
pub(crate) mod inspect;
pub(crate) mod jobs;
pub(crate) mod models;
pub(crate) mod ops;
pub(crate) mod translate;
pub(crate) mod validate;
pub(crate) mod web;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::middleware::from_fn_with_state;
use axum::routing::{get, post};
use axum::Router;

use super::{libre, middleware, openapi, AppState};

/// Every route, behind the request tracking, body reading, load shedding and (for `/v1`) key
/// layers (the last `.layer` is the outermost).
pub(crate) fn router(state: Arc<AppState>) -> Router {
    let mut v1 = Router::new()
        .route("/v1/translate", post(translate::translate))
        .route("/v1/detect", post(detect::detect))
        .route("/v1/embed", post(embed::embed))
        .route("/v1/embeddings", post(embed::openai_embeddings))
        // text-embeddings-inference's path; behind the key like the rest of the API.
        .route("/embed", post(embed::tei_embed))
        .route("/v1/align", post(align::align))
        .route("/v1/align/jobs", post(jobs::create))
        .route("/v1/align/jobs/{id}", get(jobs::status))
        .route("/v1/inspect", post(inspect::inspect))
        .route("/v1/articles", post(articles::ingest_article))
        .route("/v1/events", get(articles::events))
        .route("/v1/events/{id}", get(articles::event))
        .route("/v1/themes", get(articles::themes))
        .route("/v1/models", get(models::models));
    if state.cfg.panic_route {
        v1 = v1.route("/v1/_panic", get(ops::panic_now));
    }
    if state.cfg.hold_route.is_some() {
        v1 = v1.route("/v1/_hold", get(ops::hold));
    }
    let v1 = v1.route_layer(from_fn_with_state(state.clone(), middleware::auth));
    Router::new()
        .merge(v1)
        .route("/translate", post(libre::translate))
        .route("/detect", post(libre::detect))
        .route("/languages", get(libre::languages))
        .route("/", get(web::index))
        .route("/assets/app.js", get(web::script))
        .route("/assets/style.css", get(web::style))
        .route("/health", get(ops::health))
        .route("/ready", get(ops::ready))
        .route("/metrics", get(ops::metrics))
        .route("/openapi.json", get(openapi::spec))
        .route("/docs", get(openapi::docs))
        .fallback(ops::not_found)
        .layer(DefaultBodyLimit::max(state.cfg.max_body_bytes))
        .layer(from_fn_with_state(state.clone(), middleware::limit))
        .layer(from_fn_with_state(state.clone(), middleware::read_body))
        .layer(from_fn_with_state(state.clone(), middleware::track))
        .with_state(state)
}

/// The CORS layer for `origins` (`*`: any), or `None` when there are none.
pub(crate) fn cors_layer(
    origins: &[String],
) -> Result<Option<tower_http::cors::CorsLayer>, super::ServerError> {
    use axum::http::{header, HeaderName, HeaderValue, Method};
    use tower_http::cors::{AllowOrigin, CorsLayer};
    if origins.is_empty() {
        return Ok(None);
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        let list = origins
            .iter()
            .map(|o| {
                HeaderValue::from_str(o.trim_end_matches('/')).map_err(|_| {
                    super::ServerError::Config(format!("\"{o}\" is not a valid CORS origin"))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        AllowOrigin::list(list)
    };
    Ok(Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
            .allow_headers([
                header::CONTENT_TYPE,
                header::AUTHORIZATION,
                HeaderName::from_static("x-api-key"),
                HeaderName::from_static("x-request-id"),
            ])
            .expose_headers([
                HeaderName::from_static("x-request-id"),
                HeaderName::from_static("x-queue-ms"),
                HeaderName::from_static("x-inference-ms"),
                header::RETRY_AFTER,
            ])
            .max_age(std::time::Duration::from_secs(3600)),
    ))
}
