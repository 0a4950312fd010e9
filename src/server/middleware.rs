//! The layers around every handler, outermost first: request id, tracing span, latency metric
//! and panic containment ([`track`]); reading the whole body under a time and size limit
//! ([`read_body`]); load shedding ([`limit`]); the API key for `/v1` ([`auth`]).
//!
//! A slow client therefore never holds a concurrency slot: the slot is taken once the request
//! is read and its key checked, and released when the answer is ready.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::Instrument;

use super::errors::ApiError;
use super::metrics::Metrics;
use super::AppState;

/// Polls a future, turning a panic inside it into an error instead of unwinding further.
struct CatchUnwind<F> {
    inner: Pin<Box<F>>,
}

impl<F: Future> Future for CatchUnwind<F> {
    type Output = Result<F::Output, String>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = self.inner.as_mut();
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(p) => Poll::Ready(Err(if let Some(s) = p.downcast_ref::<&str>() {
                (*s).to_string()
            } else if let Some(s) = p.downcast_ref::<String>() {
                s.clone()
            } else {
                "panic".into()
            })),
        }
    }
}

/// Paths that are never refused for load and need no key (the page asks for the key itself).
fn is_operational(path: &str) -> bool {
    matches!(
        path,
        "/health" | "/ready" | "/metrics" | "/openapi.json" | "/docs" | "/"
    ) || path.starts_with("/assets/")
}

static REQUEST_COUNTER: AtomicU64 = AtomicU64::new(0);

fn new_request_id() -> String {
    let n = REQUEST_COUNTER.fetch_add(1, Ordering::Relaxed);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or(0);
    format!("{:x}-{:x}-{n}", t, std::process::id())
}

/// Outermost layer: request id, tracing span, latency metric, panic containment.
pub(crate) async fn track(
    State(state): State<Arc<AppState>>,
    req: Request,
    next: Next,
) -> Response {
    let start = Instant::now();
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128)
        .map(str::to_string)
        .unwrap_or_else(new_request_id);
    // The route's pattern, as the router matched it (`/v1/events/{id}`): bounded cardinality
    // for metrics, and never out of step with the routes; "other" where nothing matched.
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("other", MatchedPath::as_str)
        .to_string();
    let method = req.method().clone();
    let span = tracing::info_span!("request", id = %id, method = %req.method(), route = %route);
    let fut = CatchUnwind {
        inner: Box::pin(next.run(req)),
    };
    let mut resp = match fut.instrument(span.clone()).await {
        Ok(r) => r,
        Err(msg) => {
            state.metrics.panics.fetch_add(1, Ordering::Relaxed);
            span.in_scope(|| tracing::error!("handler panicked: {msg}"));
            ApiError::internal("internal error while serving the request").into_response()
        }
    };
    if resp.status() == StatusCode::METHOD_NOT_ALLOWED
        && !resp.headers().contains_key(header::CONTENT_TYPE)
    {
        // The router's own 405 has no body: answer it in the API's shape, `Allow` kept.
        let allow = resp.headers().get(header::ALLOW).cloned();
        let allowed = allow.as_ref().and_then(|v| v.to_str().ok());
        resp = ApiError::method_not_allowed(method.as_str(), allowed).into_response();
        if let Some(a) = allow {
            resp.headers_mut().insert(header::ALLOW, a);
        }
    }
    let elapsed = start.elapsed();
    state
        .metrics
        .observe_request(&route, resp.status().as_u16(), elapsed.as_secs_f64());
    span.in_scope(|| {
        tracing::info!(
            status = resp.status().as_u16(),
            ms = elapsed.as_secs_f64() * 1e3,
            "answered"
        )
    });
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    resp
}

/// Decrements the in-flight gauge however the request ends (answered or dropped).
struct InFlight(Arc<Metrics>);
impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The body of a request, read whole by [`read_body`] (also left in the request's extensions,
/// so later layers can look into it without reading it again).
#[derive(Clone)]
pub(crate) struct ReadBody(pub Bytes);

/// Counts a request as being read for as long as this lives.
struct Reading(Arc<Metrics>);
impl Drop for Reading {
    fn drop(&mut self) {
        self.0.reading.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Reads the whole body within `--read-timeout` and `--max-body-bytes`, before any slot is
/// taken: 408 when it does not arrive in time, 413 when it is too large, and the connection is
/// closed after either (the rest of the body is never read).
pub(crate) async fn read_body(
    State(state): State<Arc<AppState>>,
    req: Request,
    next: Next,
) -> Response {
    // The API's own routes take their key in a header: one without it is refused before its
    // body is read (LibreTranslate's routes may carry the key in the body, so theirs is read).
    let path = req.uri().path();
    if (path.starts_with("/v1/") || path == "/embed") && !state.authorized(req.headers(), None) {
        return closing(ApiError::unauthorized().into_response());
    }
    let limit = state.cfg.max_body_bytes;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return closing(ApiError::payload_too_large(limit).into_response());
    }
    let (parts, body) = req.into_parts();
    state.metrics.reading.fetch_add(1, Ordering::Relaxed);
    let reading = Reading(state.metrics.clone());
    let read = tokio::time::timeout(
        state.cfg.read_timeout,
        http_body_util::BodyExt::collect(http_body_util::Limited::new(body, limit)),
    )
    .await;
    drop(reading);
    let bytes = match read {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            return closing(ApiError::payload_too_large(limit).into_response())
        }
        Ok(Err(_)) => {
            return closing(
                ApiError::malformed("the request body could not be read").into_response(),
            )
        }
        Err(_) => {
            return closing(
                ApiError::request_timeout("body", state.cfg.read_timeout).into_response(),
            )
        }
    };
    let mut req = Request::from_parts(parts, Body::from(bytes.clone()));
    req.extensions_mut().insert(ReadBody(bytes));
    next.run(req).await
}

/// Marks a response as the connection's last.
fn closing(mut resp: Response) -> Response {
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
}

/// Load shedding: more than `max_concurrent_requests` at once are answered 429 at once.
/// Requests without a valid key take no slot: they are refused further in, at no cost.
pub(crate) async fn limit(
    State(state): State<Arc<AppState>>,
    req: Request,
    next: Next,
) -> Response {
    if is_operational(req.uri().path()) || !keyed(&state, &req) {
        return next.run(req).await;
    }
    let Ok(permit) = state.limiter.clone().try_acquire_owned() else {
        return ApiError::overloaded(state.cfg.max_concurrent_requests).into_response();
    };
    state.metrics.in_flight.fetch_add(1, Ordering::Relaxed);
    let _guard = InFlight(state.metrics.clone());
    let resp = next.run(req).await;
    drop(permit);
    resp
}

/// Whether a request carries the API key (when one is set): in a header, or as LibreTranslate
/// clients send it, in the body.
fn keyed(state: &AppState, req: &Request) -> bool {
    if state.authorized(req.headers(), None) {
        return true;
    }
    let key = req
        .extensions()
        .get::<ReadBody>()
        .and_then(|b| super::extract::body_api_key(req.headers(), &b.0));
    state.authorized(req.headers(), key.as_deref())
}

/// `/v1/*` needs the API key (when one is set) in a header.
pub(crate) async fn auth(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    if !state.authorized(req.headers(), None) {
        return ApiError::unauthorized().into_response();
    }
    next.run(req).await
}
