//! `POST /v1/embed`: sentence embeddings through the engine's embedding model.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;

use super::validate::{check_texts, one_or_many};
use crate::engine::EmbedKind;
use crate::server::api::translate::{EmbedResponse, TextsRequest};
use crate::server::api::BodyErrors;
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
    let embeddings = vectors
        .into_iter()
        .map(|v| v.into_iter().map(f64::from).collect())
        .collect();
    Ok(Json(EmbedResponse {
        dim,
        embeddings,
        model,
    }))
}
