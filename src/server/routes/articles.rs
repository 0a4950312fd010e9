//! The online grouping: `POST /v1/articles` adds one article (translated, embedded, assigned
//! to an event, stored); `GET /v1/events` and `GET /v1/events/{id}` read the events back.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::translate::translate_by_lang;
use super::validate::{check_article, check_beam};
use crate::engine::EmbedKind;
use crate::server::api::articles::{
    EventDetail, EventList, IngestRequest, IngestResponse, IngestedArticle,
};
use crate::server::api::{BodyErrors, ErrorBody, QueryErrors};
use crate::server::errors::ApiError;
use crate::server::extract::Payload;
use crate::server::AppState;
use crate::text::article::Article;

/// Add one article to the online grouping; answers with the event it joined.
///
/// The article is cleaned, translated sentence by sentence, embedded and assigned to the
/// nearest event (or a new one); the store keeps the grouping across restarts.
#[utoipa::path(
    post,
    path = "/v1/articles",
    tag = "articles",
    request_body = IngestRequest,
    responses(
        (status = 201, description = "Grouped", body = IngestResponse,
            headers(
                ("x-queue-ms" = String, description = "milliseconds waiting for a model batch"),
                ("x-inference-ms" = String, description = "milliseconds inside model batches")
            )),
        (status = 409, description = "The article is already grouped", body = ErrorBody),
        BodyErrors
    )
)]
pub(crate) async fn ingest_article(
    State(state): State<Arc<AppState>>,
    Payload(req): Payload<IngestRequest>,
) -> Result<Response, ApiError> {
    check_beam(&state, req.beam)?;
    let article = Article {
        id: req.id,
        title: req.title,
        text: req.text,
        lang: req.lang,
        published_at: req.published_at,
        url: req.url,
    };
    check_article(&state, &article, 0)?;
    let already = state
        .online
        .lock()
        .map_err(|_| ApiError::internal("online state poisoned"))?
        .known
        .get(&article.id)
        .copied();
    if let Some(event) = already {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            format!("article {} is already in event {event}", article.id),
        ));
    }
    let a2 = article.clone();
    let prepared = tokio::task::spawn_blocking(move || crate::text::prepare::prepare(&a2))
        .await
        .map_err(|e| ApiError::internal(format!("preparing failed: {e}")))?;
    if prepared.paragraphs.is_empty() {
        return Err(ApiError::invalid(format!(
            "article {} has no text left after cleaning",
            article.id
        )));
    }
    let lang = prepared.lang.clone().unwrap_or_else(|| "und".into());
    let mut pairs = vec![(lang.clone(), prepared.title.clone())];
    for p in &prepared.paragraphs {
        let pl = p.lang.clone().unwrap_or_else(|| lang.clone());
        for s in &p.sentences {
            pairs.push((pl.clone(), s.text.clone()));
        }
    }
    let (translated, models, timing) = translate_by_lang(&state, &pairs, req.beam).await?;
    let title_en = translated[0].clone();
    let mut k = 1;
    let mut paragraphs = Vec::new();
    for p in &prepared.paragraphs {
        let n = p.sentences.len();
        paragraphs.push(translated[k..k + n].join(" "));
        k += n;
    }
    let translation = paragraphs.join("\n\n");
    let mut used: Vec<String> = models.into_iter().flatten().collect();
    used.sort();
    used.dedup();

    let text = format!("{title_en}\n{translation}");
    let (mut vectors, _) = state.engine.embed(vec![text], EmbedKind::Long).await?;
    let vector = vectors.pop().unwrap_or_default();
    let day = article
        .published_at
        .as_deref()
        .and_then(crate::text::article::parse_date);

    let st = state.clone();
    let id = article.id.clone();
    let title_for_event = title_en.clone();
    let (assignment, record) = tokio::task::spawn_blocking(move || {
        let mut online = st
            .online
            .lock()
            .map_err(|_| ApiError::internal("online state poisoned"))?;
        if let Some(event) = online.known.get(&id) {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "conflict",
                format!("article {id} is already in event {event}"),
            ));
        }
        // Assign on a copy: the state only changes once the store has it.
        let mut grouper = online.grouper.clone();
        let a = grouper
            .assign(&vector, day)
            .map_err(|e| ApiError::internal(format!("grouping failed: {e}")))?;
        let event_id = a.event as i64 + 1;
        let store_err = |e: crate::store::StoreError| ApiError::internal(e.to_string());
        online
            .store
            .record_online_assignment(event_id, &id, a.similarity, &grouper.to_json())
            .map_err(store_err)?;
        if a.created {
            let info = json!({"title": title_for_event, "first_article": id}).to_string();
            online
                .store
                .set_event_info(event_id, &info)
                .map_err(store_err)?;
        }
        online.grouper = grouper;
        online.known.insert(id, event_id);
        let record = online.store.event(event_id).map_err(store_err)?;
        Ok((a, record))
    })
    .await
    .map_err(|e| ApiError::internal(format!("grouping task failed: {e}")))??;

    let body = IngestResponse {
        article: IngestedArticle {
            confidence: f64::from(prepared.confidence),
            id: article.id,
            lang,
            models: used,
            title_en,
            translation,
        },
        created: assignment.created,
        event: record.map(EventDetail::from),
        similarity: f64::from(assignment.similarity),
    };
    Ok((StatusCode::CREATED, timing.headers(), Json(body)).into_response())
}

/// Events of the online grouping.
#[utoipa::path(
    get,
    path = "/v1/events",
    tag = "articles",
    responses((status = 200, body = EventList), QueryErrors)
)]
pub(crate) async fn events(
    State(state): State<Arc<AppState>>,
) -> Result<Json<EventList>, ApiError> {
    let list = tokio::task::spawn_blocking(move || {
        let online = state
            .online
            .lock()
            .map_err(|_| ApiError::internal("online state poisoned"))?;
        online
            .store
            .events()
            .map_err(|e| ApiError::internal(e.to_string()))
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))??;
    Ok(Json(EventList {
        events: list.into_iter().map(Into::into).collect(),
    }))
}

/// One event of the online grouping with its members.
#[utoipa::path(
    get,
    path = "/v1/events/{id}",
    tag = "articles",
    params(("id" = i64, Path, description = "The event id")),
    responses(
        (status = 200, body = EventDetail),
        (status = 404, description = "No such event", body = ErrorBody),
        QueryErrors
    )
)]
pub(crate) async fn event(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<EventDetail>, ApiError> {
    let missing = || ApiError::not_found(format!("no event {id}"));
    let Ok(n) = id.parse::<i64>() else {
        return Err(missing());
    };
    let rec = tokio::task::spawn_blocking(move || {
        let online = state
            .online
            .lock()
            .map_err(|_| ApiError::internal("online state poisoned"))?;
        online
            .store
            .event(n)
            .map_err(|e| ApiError::internal(e.to_string()))
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))??;
    rec.map(|r| Json(EventDetail::from(r))).ok_or_else(missing)
}
