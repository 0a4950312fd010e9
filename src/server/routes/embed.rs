//! Sentence embeddings through the engine's embedding model: `POST /v1/embed` (ours), `POST
//! /embed` (text-embeddings-inference's) and `POST /v1/embeddings` (OpenAI's).

use std::sync::Arc;

use axum::extract::State;
use axum::Json;

use super::validate::{check_texts, one_or_many};
use crate::engine::EmbedKind;
use crate::group::normalize;
use crate::server::api::embeddings::{
    OpenAiEmbedding, OpenAiEmbeddingsRequest, OpenAiEmbeddingsResponse, OpenAiUsage,
    TeiEmbedRequest,
};
use crate::server::api::translate::{EmbedResponse, TextsRequest};
use crate::server::api::{BodyErrors, ErrorBody};
use crate::server::errors::ApiError;
use crate::server::extract::Payload;
use crate::server::AppState;

/// Sentence embeddings of English texts.
///
/// One vector per text, in order, from the configured sentence-transformers model.
#[utoipa::path(
    post,
    path = "/v1/embed",
    tag = "embedding",
    request_body = TextsRequest,
    responses((status = 200, body = EmbedResponse), BodyErrors)
)]
pub(crate) async fn embed(
    State(state): State<Arc<AppState>>,
    Payload(req): Payload<TextsRequest>,
) -> Result<Json<EmbedResponse>, ApiError> {
    let (texts, _) = one_or_many(req.text, req.texts)?;
    check_texts(&state, &texts)?;
    let (vectors, model) = state.engine.embed(texts, EmbedKind::Sentences).await?;
    let dim = vectors.first().map_or(0, Vec::len);
    let embeddings = vectors.into_iter().map(wire).collect();
    Ok(Json(EmbedResponse {
        dim,
        embeddings,
        model,
    }))
}

/// text-embeddings-inference's `/embed`: vectors as a list of lists, in order.
///
/// A text longer than the model reads is refused (413) unless `truncate` is true.
#[utoipa::path(
    post,
    path = "/embed",
    tag = "embedding",
    request_body = TeiEmbedRequest,
    responses(
        (status = 200, description = "One vector per input", body = Vec<Vec<f64>>),
        (status = 413, description = "An input is longer than the model reads", body = ErrorBody),
        BodyErrors
    )
)]
pub(crate) async fn tei_embed(
    State(state): State<Arc<AppState>>,
    Payload(req): Payload<TeiEmbedRequest>,
) -> Result<Json<Vec<Vec<f64>>>, ApiError> {
    let (texts, _) = req.inputs.into_texts();
    check_texts(&state, &texts)?;
    let kind = if req.truncate {
        EmbedKind::Sentences
    } else {
        EmbedKind::Strict
    };
    let (vectors, _) = state.engine.embed(texts, kind).await?;
    Ok(Json(
        vectors
            .into_iter()
            .map(|v| wire(if req.normalize { normalize(&v) } else { v }))
            .collect(),
    ))
}

/// OpenAI's `/v1/embeddings`: `{"object": "list", "data": [{"object": "embedding", "index",
/// "embedding"}], "model", "usage"}`.
///
/// A text longer than the model reads is refused (413), as OpenAI refuses one over its
/// context; `encoding_format` other than `float` and `dimensions` are refused (422).
#[utoipa::path(
    post,
    path = "/v1/embeddings",
    tag = "embedding",
    request_body = OpenAiEmbeddingsRequest,
    responses(
        (status = 200, body = OpenAiEmbeddingsResponse),
        (status = 413, description = "An input is longer than the model reads", body = ErrorBody),
        BodyErrors
    )
)]
pub(crate) async fn openai_embeddings(
    State(state): State<Arc<AppState>>,
    Payload(req): Payload<OpenAiEmbeddingsRequest>,
) -> Result<Json<OpenAiEmbeddingsResponse>, ApiError> {
    if let Some(format) = req.encoding_format.as_deref().filter(|f| *f != "float") {
        return Err(ApiError::invalid(format!(
            "\"encoding_format\" {format:?} is not supported; use \"float\""
        )));
    }
    if req.dimensions.is_some() {
        return Err(ApiError::invalid(
            "\"dimensions\" is not supported: the model's own dimension is returned",
        ));
    }
    let (texts, _) = req.input.into_texts();
    check_texts(&state, &texts)?;
    let (embedded, model) = state.engine.embed_counted(texts, EmbedKind::Strict).await?;
    let data = embedded
        .vectors
        .into_iter()
        .enumerate()
        .map(|(index, v)| OpenAiEmbedding {
            object: "embedding".into(),
            index,
            embedding: wire(v),
        })
        .collect();
    Ok(Json(OpenAiEmbeddingsResponse {
        object: "list".into(),
        data,
        model,
        usage: OpenAiUsage {
            prompt_tokens: embedded.tokens,
            total_tokens: embedded.tokens,
        },
    }))
}

fn wire(v: Vec<f32>) -> Vec<f64> {
    v.into_iter().map(f64::from).collect()
}
