//! LibreTranslate-compatible endpoints (`POST /translate`, `POST /detect`, `GET /languages`)
//! with LibreTranslate's request and response shapes, so its clients work unchanged.
//! Confidence is 0–100 here, as LibreTranslate reports it.

use std::sync::Arc;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::errors::ApiError;
use super::extract::Payload;
use super::routes::{check_target, check_texts, parse_source, translate_texts};
use super::AppState;
use crate::text::detect::detect as detect_lang;

/// `q`: one string or a list.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

fn default_auto() -> String {
    "auto".into()
}

#[derive(Debug, Deserialize)]
pub struct TranslateRequest {
    q: OneOrMany,
    #[serde(default = "default_auto")]
    source: String,
    target: String,
    #[serde(default)]
    format: Option<String>,
    #[serde(default)]
    api_key: Option<String>,
}

pub async fn translate(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Payload(req): Payload<TranslateRequest>,
) -> Result<Response, ApiError> {
    if !state.authorized(&headers, req.api_key.as_deref()) {
        return Err(ApiError::unauthorized());
    }
    match req.format.as_deref() {
        None | Some("text") => {}
        Some(other) => {
            return Err(ApiError::invalid(format!(
                "format \"{other}\" is not supported; only \"text\""
            )))
        }
    }
    let (texts, single) = match req.q {
        OneOrMany::One(s) => (vec![s], true),
        OneOrMany::Many(v) => (v, false),
    };
    check_texts(&state, &texts)?;
    check_target(&req.target)?;
    let source = parse_source(&state, &req.source)?;
    let auto = source.is_none();
    let (items, timing) = translate_texts(&state, &texts, source.as_deref(), None).await?;
    let detected: Vec<Value> = items
        .iter()
        .map(|i| {
            let confidence = i
                .detected_language
                .as_ref()
                .filter(|d| d.code == i.source_language)
                .map_or(0.0, |d| f64::from(d.confidence) * 100.0);
            json!({"confidence": (confidence * 10.0).round() / 10.0, "language": i.source_language})
        })
        .collect();
    let translated: Vec<String> = items.into_iter().map(|i| i.text).collect();
    let mut body = serde_json::Map::new();
    if single {
        body.insert("translatedText".into(), json!(translated[0]));
        if auto {
            body.insert("detectedLanguage".into(), detected[0].clone());
        }
    } else {
        body.insert("translatedText".into(), json!(translated));
        if auto {
            body.insert("detectedLanguage".into(), json!(detected));
        }
    }
    Ok((timing.headers(), Json(Value::Object(body))).into_response())
}

#[derive(Debug, Deserialize)]
pub struct DetectRequest {
    q: String,
    #[serde(default)]
    api_key: Option<String>,
}

pub async fn detect(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Payload(req): Payload<DetectRequest>,
) -> Result<Json<Value>, ApiError> {
    if !state.authorized(&headers, req.api_key.as_deref()) {
        return Err(ApiError::unauthorized());
    }
    check_texts(&state, std::slice::from_ref(&req.q))?;
    let out = match detect_lang(&req.q) {
        Some(d) => json!([{
            "confidence": (f64::from(d.confidence) * 1000.0).round() / 10.0,
            "language": d.lang,
        }]),
        None => json!([]),
    };
    Ok(Json(out))
}

pub async fn languages(State(state): State<Arc<AppState>>) -> Json<Value> {
    let name = |code: &str| {
        state
            .cfg
            .manifest
            .exact(code)
            .map(|e| e.name.clone())
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| code.to_string())
    };
    let mut list = vec![json!({"code": "en", "name": "English", "targets": ["en"]})];
    for code in state.languages() {
        if code != "en" {
            list.push(json!({"code": code, "name": name(&code), "targets": ["en"]}));
        }
    }
    Json(Value::Array(list))
}
