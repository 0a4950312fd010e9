//! The layers around every handler: request id, tracing span, latency metric and panic
//! containment ([`track`]); load shedding ([`limit`]); the API key for `/v1` ([`auth`]).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

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

/// Paths that are never refused for load and need no key.
fn is_operational(path: &str) -> bool {
    matches!(
        path,
        "/health" | "/ready" | "/metrics" | "/openapi.json" | "/docs"
    )
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

/// Load shedding: more than `max_concurrent_requests` at once are answered 429 at once.
pub(crate) async fn limit(
    State(state): State<Arc<AppState>>,
    req: Request,
    next: Next,
) -> Response {
    if is_operational(req.uri().path()) {
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

/// `/v1/*` needs the API key (when one is set) in a header.
pub(crate) async fn auth(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    if !state.authorized(req.headers(), None) {
        return ApiError::unauthorized().into_response();
    }
    next.run(req).await
}
