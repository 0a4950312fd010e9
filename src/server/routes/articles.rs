//! The online grouping: `POST /v1/articles` adds one article (translated, embedded, assigned
//! to an event, stored); `GET /v1/events` and `GET /v1/events/{id}` read the events back.

use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::translate::Timing;
use super::validate::{check_article, check_beam};
use crate::app::online::OnlineError;
use crate::app::workflow::{OneError, StageError, Workflow};
use crate::engine::Generation;
use crate::server::api::articles::{
    ignored_warnings, EventDetail, EventList, IngestRequest, IngestResponse, IngestedArticle,
    OnlineThemeSummary, ThemeList,
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
    let warnings = ignored_warnings([(req.article.id.as_str(), req.article.ignored.as_slice())]);
    let article = Article::from(req.article);
    check_article(&state, &article, 0)?;
    // The grouping's lock may be held across a database wait: not on an async thread.
    let (st, id) = (state.clone(), article.id.clone());
    let already = tokio::task::spawn_blocking(move || {
        st.online
            .lock()
            .map(|o| o.event_of(&id))
            .map_err(|_| ApiError::internal("online state poisoned"))
    })
    .await
    .map_err(|e| ApiError::internal(format!("the grouping check failed: {e}")))??;
    if let Some(event) = already {
        return Err(conflict(&article.id, event));
    }
    // The article workflow's stages, with the sentence and embedding caches, on a thread of
    // their own (they wait on the engine).
    let (st, art, beam) = (state.clone(), article.clone(), req.beam);
    let done = tokio::task::spawn_blocking(move || {
        let flow = Workflow {
            engine: &st.engine,
            store: &*st.store,
            embed_source: false,
            generation: Generation::beams(beam),
            chunk: usize::MAX,
        };
        flow.process_one(&art)
    })
    .await
    .map_err(|e| ApiError::internal(format!("the article task failed: {e}")))?
    .map_err(|e| one_error(e, &article.id))?;
    let timing = Timing {
        queue: done.queue,
        inference: done.inference,
    };
    let result = done.article;
    let (lang, title_en, translation) = (
        result.lang.clone(),
        result.title_en.clone(),
        result.translation.clone(),
    );
    // "lang=model" -> the models, once each.
    let mut used: Vec<String> = result
        .models
        .iter()
        .map(|m| m.split_once('=').map_or(m.as_str(), |(_, k)| k).to_string())
        .collect();
    used.sort();
    used.dedup();
    let vector = result.embedding;
    let day = article
        .published_at
        .as_deref()
        .and_then(crate::text::article::parse_date);

    let (st, id, title) = (state.clone(), article.id.clone(), title_en.clone());
    let joined = tokio::task::spawn_blocking(move || {
        st.online
            .lock()
            .map_err(|_| ApiError::internal("online state poisoned"))?
            .add(&id, &vector, day, &title)
            .map_err(|e| match e {
                OnlineError::AlreadyGrouped { id, event } => conflict(&id, event),
                OnlineError::Store(e) => e.into(),
                other => ApiError::internal(other.to_string()),
            })
    })
    .await
    .map_err(|e| ApiError::internal(format!("grouping task failed: {e}")))??;
    let (assignment, record) = (joined.assignment, joined.event);

    let body = IngestResponse {
        article: IngestedArticle {
            confidence: f64::from(result.confidence),
            id: article.id,
            lang,
            models: used,
            title_en,
            translation,
        },
        created: assignment.created,
        event: record.map(EventDetail::from),
        similarity: f64::from(assignment.similarity),
        warnings,
    };
    Ok((StatusCode::CREATED, timing.headers(), Json(body)).into_response())
}

fn conflict(id: &str, event: i64) -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "conflict",
        format!("article {id} is already in event {event}"),
    )
}

fn one_error(e: OneError, id: &str) -> ApiError {
    match e {
        OneError::Empty => {
            ApiError::invalid(format!("article {id} has no text left after cleaning"))
        }
        OneError::Route(r) | OneError::Stage(StageError::Route(r)) => r.into(),
        OneError::Unavailable(reason) => ApiError::model_unavailable(reason),
        OneError::Stage(StageError::Engine(e)) => e.into(),
        OneError::Stage(StageError::Store(e)) => e.into(),
    }
}

/// Default and largest page of `GET /v1/events`.
const EVENTS_LIMIT: usize = 100;
const EVENTS_MAX_LIMIT: usize = 1000;

/// `limit` and `offset` from a query string, or a 422 that says which is wrong.
fn page(query: Option<&str>) -> Result<(usize, usize), ApiError> {
    let (mut limit, mut offset) = (EVENTS_LIMIT, 0);
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let slot = match k {
            "limit" => &mut limit,
            "offset" => &mut offset,
            other => {
                return Err(ApiError::invalid(format!(
                "unknown query parameter \"{other}\"; the parameters are \"limit\" and \"offset\""
            )))
            }
        };
        *slot = v.parse().map_err(|_| {
            ApiError::invalid(format!(
                "\"{k}\" must be a whole number, 0 or more, not \"{v}\""
            ))
        })?;
    }
    if limit == 0 || limit > EVENTS_MAX_LIMIT {
        return Err(ApiError::invalid(format!(
            "\"limit\" must be between 1 and {EVENTS_MAX_LIMIT}"
        )));
    }
    Ok((limit, offset))
}

/// Events of the online grouping, a page at a time.
#[utoipa::path(
    get,
    path = "/v1/events",
    tag = "articles",
    params(
        ("limit" = Option<usize>, Query, description = "Events per page: 1 to 1000, default 100"),
        ("offset" = Option<usize>, Query, description = "Events to skip, default 0")
    ),
    responses(
        (status = 200, body = EventList),
        (status = 422, description = "A bad `limit` or `offset`", body = ErrorBody),
        QueryErrors
    )
)]
pub(crate) async fn events(
    State(state): State<Arc<AppState>>,
    RawQuery(query): RawQuery,
) -> Result<Json<EventList>, ApiError> {
    let (limit, offset) = page(query.as_deref())?;
    // Reads need no lock: the store is shared and every write is committed whole.
    let list = tokio::task::spawn_blocking(move || state.store.events().map_err(ApiError::from))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))??;
    let total = list.len();
    Ok(Json(EventList {
        events: list
            .into_iter()
            .skip(offset)
            .take(limit)
            .map(Into::into)
            .collect(),
        total,
    }))
}

/// Themes of the online grouping: its newest events (at most 2,000 still inside the time
/// window) gathered by their centroids at the theme threshold.
#[utoipa::path(
    get,
    path = "/v1/themes",
    tag = "articles",
    responses(
        (status = 200, body = ThemeList),
        QueryErrors
    )
)]
pub(crate) async fn themes(
    State(state): State<Arc<AppState>>,
) -> Result<Json<ThemeList>, ApiError> {
    let list = tokio::task::spawn_blocking(move || -> Result<ThemeList, ApiError> {
        let found = state
            .online
            .lock()
            .map_err(|_| ApiError::internal("online state poisoned"))?
            .themes()
            .map_err(|e| ApiError::internal(e.to_string()))?;
        let titles: std::collections::HashMap<i64, Option<String>> = state
            .store
            .events()
            .map_err(ApiError::from)?
            .into_iter()
            .map(|e| (e.id, e.info.and_then(|i| i.title)))
            .collect();
        Ok(ThemeList {
            themes: found
                .themes
                .into_iter()
                .map(|t| OnlineThemeSummary {
                    id: format!("t{}", t.events[0]),
                    title: titles.get(&t.events[0]).cloned().flatten(),
                    events: t.events,
                    articles: t.articles,
                })
                .collect(),
            events_considered: found.considered,
            total_events: found.total_events,
        })
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))??;
    Ok(Json(list))
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
    let rec = tokio::task::spawn_blocking(move || state.store.event(n).map_err(ApiError::from))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))??;
    rec.map(|r| Json(EventDetail::from(r))).ok_or_else(missing)
}
