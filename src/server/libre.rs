//! LibreTranslate-compatible endpoints (`POST /translate`, `POST /detect`, `GET /languages`)
//! with LibreTranslate's request and response shapes, so its clients work unchanged.
//! Confidence is 0–100 here, as LibreTranslate reports it. The bodies are in
//! [`super::api::libre`]; the translation is the `/v1/translate` core.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::api::libre::{
    LibreDetectRequest, LibreDetection, LibreError, LibreLanguage, LibreTranslateRequest,
    LibreTranslateResponse,
};
use super::api::{BodyErrors, ErrorBody};
use super::errors::ApiError;
use super::extract::Payload;
use super::routes::translate::translate_texts;
use super::routes::validate::{check_target, check_texts, parse_source};
use super::AppState;
use crate::text::detect::detect as detect_lang;

/// LibreTranslate-compatible translation.
///
/// JSON or form bodies (urlencoded or multipart); the API key may also come as `api_key` in
/// the body. A missing or wrong key is answered 403 `{"error": "..."}`, as LibreTranslate does.
#[utoipa::path(
    post,
    path = "/translate",
    tag = "libretranslate",
    request_body(content(
        (LibreTranslateRequest = "application/json"),
        (LibreTranslateRequest = "application/x-www-form-urlencoded"),
        (LibreTranslateRequest = "multipart/form-data")
    )),
    responses(
        (status = 200, body = LibreTranslateResponse,
            headers(
                ("x-queue-ms" = String, description = "milliseconds waiting for a model batch"),
                ("x-inference-ms" = String, description = "milliseconds inside model batches")
            )),
        (status = 403, description = "Missing or wrong API key", body = LibreError),
        BodyErrors
    )
)]
pub(crate) async fn translate(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Payload(req): Payload<LibreTranslateRequest>,
) -> Result<Response, ApiError> {
    if !state.authorized(&headers, req.api_key.as_deref()) {
        return Ok(forbidden());
    }
    match req.format.as_deref() {
        None | Some("text") => {}
        Some(other) => {
            return Err(ApiError::invalid(format!(
                "format \"{other}\" is not supported; only \"text\""
            )))
        }
    }
    let (texts, single) = req.q.into_texts();
    check_texts(&state, &texts)?;
    check_target(&req.target)?;
    let source = parse_source(&state, &req.source)?;
    let auto = source.is_none();
    let (items, timing) = translate_texts(&state, &texts, source.as_deref(), None).await?;
    let mut detected: Vec<LibreDetection> = items
        .iter()
        .map(|i| {
            let confidence = i
                .detected_language
                .as_ref()
                .filter(|d| d.code == i.source_language)
                .map_or(0.0, |d| d.confidence * 100.0);
            LibreDetection {
                confidence: (confidence * 10.0).round() / 10.0,
                language: i.source_language.clone(),
            }
        })
        .collect();
    let mut translated: Vec<String> = items.into_iter().map(|i| i.text).collect();
    let body = if single {
        LibreTranslateResponse::One {
            detected_language: if auto { detected.pop() } else { None },
            translated_text: translated.pop().unwrap_or_default(),
        }
    } else {
        LibreTranslateResponse::Many {
            detected_language: auto.then_some(detected),
            translated_text: translated,
        }
    };
    Ok((timing.headers(), Json(body)).into_response())
}

/// LibreTranslate-compatible detection: a list with the best guess, empty when undetectable.
#[utoipa::path(
    post,
    path = "/detect",
    tag = "libretranslate",
    request_body(content(
        (LibreDetectRequest = "application/json"),
        (LibreDetectRequest = "application/x-www-form-urlencoded"),
        (LibreDetectRequest = "multipart/form-data")
    )),
    responses(
        (status = 200, body = Vec<LibreDetection>),
        (status = 403, description = "Missing or wrong API key", body = LibreError),
        BodyErrors
    )
)]
pub(crate) async fn detect(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Payload(req): Payload<LibreDetectRequest>,
) -> Result<Response, ApiError> {
    if !state.authorized(&headers, req.api_key.as_deref()) {
        return Ok(forbidden());
    }
    check_texts(&state, std::slice::from_ref(&req.q))?;
    let out = match detect_lang(&req.q) {
        Some(d) => vec![LibreDetection {
            confidence: (f64::from(d.confidence) * 1000.0).round() / 10.0,
            language: d.lang,
        }],
        None => Vec::new(),
    };
    Ok(Json(out).into_response())
}

/// A missing or wrong key, as LibreTranslate answers it: 403 with `{"error": "..."}`.
fn forbidden() -> Response {
    let body = LibreError {
        error: "Invalid API key".into(),
    };
    (StatusCode::FORBIDDEN, Json(body)).into_response()
}

/// LibreTranslate-compatible language list: English, then every served source language.
#[utoipa::path(
    get,
    path = "/languages",
    tag = "libretranslate",
    responses(
        (status = 200, body = Vec<LibreLanguage>),
        (status = 429, description = "Too many requests in flight", body = ErrorBody)
    )
)]
pub(crate) async fn languages(State(state): State<Arc<AppState>>) -> Json<Vec<LibreLanguage>> {
    let name = |code: &str| {
        state
            .cfg
            .manifest
            .exact(code)
            .map(|e| e.name.clone())
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| code.to_string())
    };
    let entry = |code: String, name: String| LibreLanguage {
        code,
        name,
        targets: vec!["en".into()],
    };
    let mut list = vec![entry("en".into(), "English".into())];
    for code in state.languages() {
        if code != "en" {
            let n = name(&code);
            list.push(entry(code, n));
        }
    }
    Json(list)
}
