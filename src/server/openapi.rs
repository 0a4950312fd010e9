//! `GET /openapi.json` (OpenAPI 3.1, written by hand) and `GET /docs`.

use axum::response::{Html, IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

fn error_responses() -> Value {
    let e = json!({"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}});
    let mut m = serde_json::Map::new();
    for (code, what) in [
        ("400", "malformed JSON"),
        ("401", "missing or wrong API key"),
        ("413", "body too large"),
        ("422", "valid JSON with values that cannot be accepted"),
        ("429", "too many requests in flight (see Retry-After)"),
        ("503", "a model is not available (named in the error)"),
    ] {
        let mut r = e.clone();
        r["description"] = json!(what);
        m.insert(code.into(), r);
    }
    Value::Object(m)
}

fn op(summary: &str, request: Option<Value>, response: Value) -> Value {
    let mut responses = error_responses();
    responses["200"] =
        json!({"description": "OK", "content": {"application/json": {"schema": response}}});
    let mut o = json!({"summary": summary, "responses": responses});
    if let Some(schema) = request {
        o["requestBody"] =
            json!({"required": true, "content": {"application/json": {"schema": schema}}});
    }
    o
}

/// The OpenAPI document.
pub fn document() -> Value {
    let texts = json!({
        "type": "object",
        "properties": {
            "text": {"type": "string"},
            "texts": {"type": "array", "items": {"type": "string"}}
        },
        "description": "exactly one of text and texts"
    });
    let translate_req = json!({
        "type": "object",
        "properties": {
            "text": {"type": "string"},
            "texts": {"type": "array", "items": {"type": "string"}},
            "source": {"type": "string", "default": "auto", "description": "ISO 639-1 code or auto (detect per text)"},
            "target": {"type": "string", "default": "en", "enum": ["en"]},
            "beam": {"type": "integer", "minimum": 1},
            "return_sentences": {"type": "boolean", "default": false}
        }
    });
    let item = json!({
        "type": "object",
        "properties": {
            "text": {"type": "string"},
            "source_language": {"type": "string"},
            "detected_language": {"type": ["object", "null"], "properties": {"code": {"type": "string"}, "confidence": {"type": "number"}}},
            "model": {"type": ["string", "null"]},
            "sentences": {"type": "array", "items": {"type": "object", "properties": {
                "paragraph": {"type": "integer"}, "start": {"type": "integer"}, "end": {"type": "integer"},
                "source": {"type": "string"}, "translation": {"type": "string"}}}}
        }
    });
    let article = json!({
        "type": "object", "required": ["id", "text"],
        "properties": {"id": {"type": "string"}, "text": {"type": "string"}, "title": {"type": "string"},
            "lang": {"type": "string"}, "published_at": {"type": "string"}, "url": {"type": "string"}}
    });
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "tidings",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Translate news into English with OPUS-MT models and group articles into events. Every error body is {\"error\", \"type\"}. With an API key configured, send it as `Authorization: Bearer KEY` or `X-API-Key` (or `api_key` in LibreTranslate bodies)."
        },
        "paths": {
            "/v1/translate": {"post": op("Translate one text or many into English", Some(translate_req),
                json!({"oneOf": [item, {"type": "object", "properties": {"results": {"type": "array", "items": item}}}]}))},
            "/v1/detect": {"post": op("Detect the language of texts", Some(texts.clone()), json!({"type": "object"}))},
            "/v1/embed": {"post": op("Sentence embeddings of English texts", Some(texts),
                json!({"type": "object", "properties": {"model": {"type": "string"}, "dim": {"type": "integer"},
                    "embeddings": {"type": "array", "items": {"type": "array", "items": {"type": "number"}}}}}))},
            "/v1/align": {"post": op("Translate articles and group them into events (the output of tidings align)",
                Some(json!({"type": "object", "properties": {"articles": {"type": "array", "items": article}}})),
                json!({"type": "object", "properties": {"events": {"type": "array"}, "articles": {"type": "array"}, "skipped": {"type": "array"}}}))},
            "/v1/articles": {"post": op("Add one article to the online grouping; answers with the event it joined", Some(article),
                json!({"type": "object", "properties": {"article": {"type": "object"}, "event": {"type": "object"}, "similarity": {"type": "number"}, "created": {"type": "boolean"}}}))},
            "/v1/events": {"get": op("Events of the online grouping", None, json!({"type": "object"}))},
            "/v1/events/{id}": {"get": {
                "summary": "One event with its members",
                "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "integer"}}],
                "responses": {"200": {"description": "OK"}, "404": {"description": "no such event"}}
            }},
            "/v1/models": {"get": op("Models: id, revision, languages, license, loaded", None, json!({"type": "object"}))},
            "/translate": {"post": op("LibreTranslate-compatible translation", Some(json!({"type": "object", "required": ["q", "target"], "properties": {
                "q": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
                "source": {"type": "string", "default": "auto"}, "target": {"type": "string"}, "format": {"type": "string", "enum": ["text"]}, "api_key": {"type": "string"}}})),
                json!({"type": "object", "properties": {"translatedText": {}, "detectedLanguage": {}}}))},
            "/detect": {"post": op("LibreTranslate-compatible detection", Some(json!({"type": "object", "properties": {"q": {"type": "string"}, "api_key": {"type": "string"}}})),
                json!({"type": "array", "items": {"type": "object", "properties": {"language": {"type": "string"}, "confidence": {"type": "number"}}}}))},
            "/languages": {"get": op("LibreTranslate-compatible language list", None, json!({"type": "array"}))},
            "/health": {"get": {"summary": "Liveness", "responses": {"200": {"description": "alive"}}}},
            "/ready": {"get": {"summary": "Readiness", "responses": {"200": {"description": "ready"}, "503": {"description": "starting or shutting down"}}}},
            "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {"200": {"description": "text format 0.0.4"}}}}
        },
        "components": {"schemas": {"Error": {"type": "object", "required": ["error", "type"],
            "properties": {"error": {"type": "string"}, "type": {"type": "string"}}}}}
    })
}

pub async fn spec() -> Json<Value> {
    Json(document())
}

pub async fn docs() -> Response {
    Html(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>tidings API</title></head>\n<body>\n\
<h1>tidings API</h1>\n<p>The OpenAPI 3.1 description is at <a href=\"/openapi.json\">/openapi.json</a>; \
load it into any OpenAPI viewer.</p>\n<ul>\n\
<li><code>POST /v1/translate</code>, <code>/v1/detect</code>, <code>/v1/embed</code>, <code>/v1/align</code>, <code>/v1/articles</code></li>\n\
<li><code>GET /v1/events</code>, <code>/v1/events/{id}</code>, <code>/v1/models</code></li>\n\
<li>LibreTranslate: <code>POST /translate</code>, <code>POST /detect</code>, <code>GET /languages</code></li>\n\
<li><code>GET /health</code>, <code>/ready</code>, <code>/metrics</code></li>\n</ul>\n</body></html>\n",
    )
    .into_response()
}
