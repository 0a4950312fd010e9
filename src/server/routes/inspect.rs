//! `POST /v1/inspect`: what cleaning, language detection and sentence splitting make of one
//! article: the kept paragraphs with their language and sentences, and every removed line with
//! the rule that removed it. No model runs.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;

use super::validate::check_article;
use crate::server::api::articles::ArticleInput;
use crate::server::api::jobs::{
    InspectResponse, InspectedParagraph, InspectedSentence, RemovedLine,
};
use crate::server::api::BodyErrors;
use crate::server::errors::ApiError;
use crate::server::extract::Payload;
use crate::server::AppState;
use crate::text::article::Article;
use crate::text::prepare::prepare;

/// Clean, detect and split one article, and say what was removed and why.
#[utoipa::path(
    post,
    path = "/v1/inspect",
    tag = "articles",
    request_body = ArticleInput,
    responses((status = 200, body = InspectResponse), BodyErrors)
)]
pub(crate) async fn inspect(
    State(state): State<Arc<AppState>>,
    Payload(input): Payload<ArticleInput>,
) -> Result<Json<InspectResponse>, ApiError> {
    let article = Article::from(input);
    check_article(&state, &article, 0)?;
    let p = prepare(&article);
    Ok(Json(InspectResponse {
        id: p.id,
        title: p.title,
        lang: p.lang,
        confidence: f64::from(p.confidence),
        paragraphs: p
            .paragraphs
            .into_iter()
            .map(|para| InspectedParagraph {
                text: para.text,
                lang: para.lang,
                confidence: f64::from(para.confidence),
                sentences: para
                    .sentences
                    .into_iter()
                    .map(|s| InspectedSentence {
                        start: s.start,
                        end: s.end,
                        text: s.text,
                    })
                    .collect(),
            })
            .collect(),
        removed: p
            .removed
            .into_iter()
            .map(|r| RemovedLine {
                line: r.line,
                text: r.text,
                reason: r.reason.as_str().to_string(),
            })
            .collect(),
    }))
}
