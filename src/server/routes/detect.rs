//! `POST /v1/detect`: the language of texts, with no model involved.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;

use super::validate::{check_texts, one_or_many};
use crate::server::api::translate::{DetectResponse, Detection, TextsRequest};
use crate::server::api::BodyErrors;
use crate::server::errors::ApiError;
use crate::server::extract::Payload;
use crate::server::AppState;
use crate::text::detect::detect as detect_lang;

/// Detect the language of texts.
///
/// Trigram profiles of 70 languages; `code` is `null` when a text gives nothing to go on, and
/// only a guess when `reliable` is false (confidence below 0.5: short or name-heavy text).
#[utoipa::path(
    post,
    path = "/v1/detect",
    tag = "translation",
    request_body = TextsRequest,
    responses(
        (status = 200, description = "One detection for `text`, `results` for `texts`",
            body = DetectResponse),
        BodyErrors
    )
)]
pub(crate) async fn detect(
    State(state): State<Arc<AppState>>,
    Payload(req): Payload<TextsRequest>,
) -> Result<Json<DetectResponse>, ApiError> {
    let (texts, single) = one_or_many(req.text, req.texts)?;
    check_texts(&state, &texts)?;
    let mut results: Vec<Detection> = texts
        .iter()
        .map(|t| match detect_lang(t) {
            Some(d) => Detection {
                code: Some(d.lang),
                confidence: f64::from(d.confidence),
                reliable: d.reliable,
            },
            None => Detection {
                code: None,
                confidence: 0.0,
                reliable: false,
            },
        })
        .collect();
    Ok(Json(if single {
        let one = results.pop();
        DetectResponse::One(one.ok_or_else(|| ApiError::internal("no detection"))?)
    } else {
        DetectResponse::Many { results }
    }))
}
