//! `GET /openapi.json`: the OpenAPI 3.1 document, generated from the handlers'
//! `#[utoipa::path]` attributes and the body types of [`super::api`]; and `GET /docs`, a page
//! that points to it.

use axum::response::{Html, IntoResponse, Response};
use axum::Json;
use utoipa::OpenApi;

use super::{api, libre, routes};

/// The service's OpenAPI document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "tidings",
        description = "Translate news into English with OPUS-MT models and group articles into \
            events. Every error body is {\"error\", \"type\"}. With an API key configured, send \
            it as `Authorization: Bearer KEY` or `X-API-Key` (or `api_key` in LibreTranslate \
            bodies). Sentence `start` and `end` offsets are UTF-8 byte offsets, not character \
            indices."
    ),
    paths(
        routes::translate::translate,
        routes::detect::detect,
        routes::embed::embed,
        routes::embed::tei_embed,
        routes::embed::openai_embeddings,
        routes::align::align,
        routes::jobs::create,
        routes::jobs::status,
        routes::inspect::inspect,
        routes::articles::ingest_article,
        routes::articles::events,
        routes::articles::event,
        routes::articles::themes,
        routes::models::models,
        libre::translate,
        libre::detect,
        libre::languages,
        routes::ops::health,
        routes::ops::ready,
        routes::ops::metrics,
    ),
    components(schemas(api::ErrorBody)),
    tags(
        (name = "translation", description = "Translation and language detection"),
        (name = "embedding", description = "Sentence embeddings"),
        (name = "articles", description = "Articles grouped into events"),
        (name = "models", description = "What is served and loaded"),
        (name = "libretranslate", description = "LibreTranslate-compatible endpoints"),
        (name = "operations", description = "Liveness, readiness, metrics; no key needed"),
    )
)]
pub struct ApiDoc;

/// The OpenAPI document.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

pub(crate) async fn spec() -> Json<utoipa::openapi::OpenApi> {
    Json(document())
}

pub(crate) async fn docs() -> Response {
    Html(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>tidings API</title></head>\n<body>\n\
<h1>tidings API</h1>\n<p>The OpenAPI 3.1 description is at <a href=\"/openapi.json\">/openapi.json</a>; \
load it into any OpenAPI viewer.</p>\n<ul>\n\
<li><code>POST /v1/translate</code>, <code>/v1/detect</code>, <code>/v1/embed</code>, <code>/v1/align</code>, <code>/v1/articles</code></li>\n\
<li>Embeddings in other tools' shapes: <code>POST /embed</code> (text-embeddings-inference), <code>POST /v1/embeddings</code> (OpenAI)</li>\n\
<li><code>GET /v1/events</code>, <code>/v1/events/{id}</code>, <code>/v1/themes</code>, <code>/v1/models</code></li>\n\
<li>LibreTranslate: <code>POST /translate</code>, <code>POST /detect</code>, <code>GET /languages</code></li>\n\
<li><code>GET /health</code>, <code>/ready</code>, <code>/metrics</code></li>\n</ul>\n</body></html>\n",
    )
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_describes_every_endpoint() {
        let doc = serde_json::to_value(document()).unwrap();
        assert_eq!(doc["openapi"], "3.1.0");
        assert_eq!(doc["info"]["title"], "tidings");
        for (path, method) in [
            ("/v1/translate", "post"),
            ("/v1/detect", "post"),
            ("/v1/embed", "post"),
            ("/embed", "post"),
            ("/v1/embeddings", "post"),
            ("/v1/align", "post"),
            ("/v1/articles", "post"),
            ("/v1/events", "get"),
            ("/v1/events/{id}", "get"),
            ("/v1/themes", "get"),
            ("/v1/models", "get"),
            ("/translate", "post"),
            ("/detect", "post"),
            ("/languages", "get"),
            ("/health", "get"),
            ("/ready", "get"),
            ("/metrics", "get"),
        ] {
            let op = &doc["paths"][path][method];
            assert!(op.is_object(), "{method} {path} missing");
            assert!(op["responses"].get("200").is_some() || op["responses"].get("201").is_some());
        }
        let schemas = &doc["components"]["schemas"];
        for name in [
            "ErrorBody",
            "TranslateRequest",
            "TranslateResponse",
            "AlignResponse",
        ] {
            assert!(schemas.get(name).is_some(), "schema {name} missing");
        }
        let start = &schemas["TranslatedSentence"]["properties"]["start"]["description"];
        assert!(
            start.as_str().unwrap().contains("UTF-8 byte offset"),
            "{start}"
        );
        let e = &doc["paths"]["/v1/translate"]["post"]["responses"]["422"];
        assert_eq!(
            e["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/ErrorBody"
        );
    }
}
