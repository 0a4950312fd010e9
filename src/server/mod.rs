//! `tidings serve`: the HTTP service.
//!
//! [`serve`] runs the service on a bound listener until its [`Shutdown`] is triggered, then
//! stops accepting connections and finishes the requests in flight. The process's
//! [`Engine`](crate::engine::Engine) owns the models (translation, embedding, and those of align
//! jobs): one worker thread per loaded model, fed by a queue that merges work from all requests
//! into batches; the HTTP layer ([`routes`], [`libre`]) validates input, asks the engine's
//! router which model serves a language, and shapes answers.

pub mod api;
pub mod errors;
mod extract;
pub mod libre;
pub mod metrics;
pub mod openapi;
pub mod routes;

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use candle_core::Device;
use tokio::sync::{watch, Semaphore};
use tracing::Instrument;

use crate::engine::manifest::Manifest;
use crate::engine::{Engine, EngineConfig};
use crate::group::cluster::{ClusterOptions, OnlineGrouper};
use crate::model::hub::{HubOptions, ModelSource};
use crate::store::Store;
use errors::ApiError;
use metrics::Metrics;

/// Everything the service is configured with.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub manifest: Manifest,
    /// Source languages served; `None` serves every manifest language, the `--model`
    /// languages, and everything else through the manifest's fallback model.
    pub languages: Option<Vec<String>>,
    /// Per-language model overrides, over the manifest.
    pub models: BTreeMap<String, ModelSource>,
    pub embed_model: ModelSource,
    /// Load the served languages' models (up to `max_loaded_models`) and the embedding
    /// model before accepting requests.
    pub preload: bool,
    pub max_loaded_models: usize,
    pub max_batch_tokens: usize,
    pub max_concurrent_requests: usize,
    pub max_body_bytes: usize,
    /// Characters per text (and per article), at most.
    pub max_chars: usize,
    /// Texts per request, at most.
    pub max_items: usize,
    /// Largest beam a request may ask for.
    pub max_beam: usize,
    pub api_key: Option<String>,
    /// SQLite store for the online grouping; `None` keeps it in memory.
    pub store: Option<PathBuf>,
    pub device: Device,
    /// How translation models store their layers (int8: CPU only).
    pub compute_type: crate::model::marian::WeightFormat,
    pub hub: HubOptions,
    pub cluster: ClusterOptions,
    /// Adds `GET /v1/_panic`, which panics, to test that a panic costs one request only.
    #[doc(hidden)]
    pub panic_route: bool,
}

impl ServerConfig {
    /// Defaults for everything but the models.
    pub fn new(manifest: Manifest, embed_model: ModelSource) -> Self {
        Self {
            manifest,
            languages: None,
            models: BTreeMap::new(),
            embed_model,
            preload: false,
            max_loaded_models: 4,
            max_batch_tokens: 8192,
            max_concurrent_requests: 64,
            max_body_bytes: 1 << 20,
            max_chars: 20_000,
            max_items: 128,
            max_beam: 8,
            api_key: None,
            store: None,
            device: Device::Cpu,
            compute_type: Default::default(),
            hub: HubOptions::default(),
            cluster: ClusterOptions::default(),
            panic_route: false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("the stored online grouping state is unreadable: {0}")]
    State(#[from] crate::group::cluster::ClusterError),
    #[error("cannot preload {0}")]
    Preload(String),
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("the server failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Tells a running [`serve`] to stop accepting connections and finish what is in flight.
#[derive(Debug, Clone)]
pub struct Shutdown(Arc<watch::Sender<bool>>);

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl Shutdown {
    pub fn new() -> Self {
        Self(Arc::new(watch::channel(false).0))
    }

    pub fn trigger(&self) {
        self.0.send_replace(true);
    }

    pub fn is_triggered(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves once [`Shutdown::trigger`] was called.
    pub async fn wait(&self) {
        let mut rx = self.0.subscribe();
        // An error means the sender is gone, which cannot happen while `self` holds it.
        let _ = rx.wait_for(|v| *v).await;
    }
}

/// The online grouping: grouper state and store, behind one lock so they never disagree.
pub(crate) struct Online {
    pub store: Store,
    pub grouper: OnlineGrouper,
    /// Article id -> event id, for articles already grouped.
    pub known: HashMap<String, i64>,
}

/// Shared by every handler.
pub struct AppState {
    pub(crate) cfg: ServerConfig,
    pub(crate) engine: Engine,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) online: Mutex<Online>,
    pub(crate) align: routes::AlignWorker,
    limiter: Arc<Semaphore>,
    ready: AtomicBool,
}

impl AppState {
    /// The model for a source language, or 422 when the language is not served.
    pub(crate) fn source_for(&self, lang: &str) -> Result<ModelSource, ApiError> {
        self.engine
            .router()
            .source_for(lang)
            .map_err(ApiError::from)
    }

    /// Source languages with a model of their own, sorted.
    pub(crate) fn languages(&self) -> Vec<String> {
        self.engine.router().languages()
    }

    /// Checks the API key given in a header (`Authorization: Bearer`, `X-API-Key`) or body.
    pub(crate) fn authorized(
        &self,
        headers: &axum::http::HeaderMap,
        body_key: Option<&str>,
    ) -> bool {
        let Some(expected) = &self.cfg.api_key else {
            return true;
        };
        let bearer = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let header_key = headers.get("x-api-key").and_then(|v| v.to_str().ok());
        [bearer, header_key, body_key]
            .into_iter()
            .flatten()
            .any(|k| constant_time_eq(k.trim().as_bytes(), expected.as_bytes()))
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

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

/// A route label with bounded cardinality for metrics.
fn route_label(path: &str) -> &'static str {
    const ROUTES: &[&str] = &[
        "/v1/translate",
        "/v1/detect",
        "/v1/embed",
        "/v1/align",
        "/v1/articles",
        "/v1/events",
        "/v1/models",
        "/health",
        "/ready",
        "/metrics",
        "/openapi.json",
        "/docs",
        "/translate",
        "/detect",
        "/languages",
    ];
    if let Some(r) = ROUTES.iter().find(|r| **r == path) {
        return r;
    }
    if path.starts_with("/v1/events/") {
        return "/v1/events/{id}";
    }
    "other"
}

/// Paths that are never refused for load and need no key.
fn is_operational(path: &str) -> bool {
    matches!(
        path,
        "/health" | "/ready" | "/metrics" | "/openapi.json" | "/docs"
    )
}

static REQUEST_COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn new_request_id() -> String {
    let n = REQUEST_COUNTER.fetch_add(1, Ordering::Relaxed);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or(0);
    format!("{:x}-{:x}-{n}", t, std::process::id())
}

/// Outermost layer: request id, tracing span, latency metric, panic containment.
async fn track(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128)
        .map(str::to_string)
        .unwrap_or_else(new_request_id);
    let route = route_label(req.uri().path());
    let span = tracing::info_span!("request", id = %id, method = %req.method(), route);
    let fut = CatchUnwind {
        inner: Box::pin(next.run(req)),
    };
    let mut resp = match fut.instrument(span.clone()).await {
        Ok(r) => r,
        Err(msg) => {
            state
                .metrics
                .panics
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            span.in_scope(|| tracing::error!("handler panicked: {msg}"));
            ApiError::internal("internal error while serving the request").into_response()
        }
    };
    let elapsed = start.elapsed();
    state
        .metrics
        .observe_request(route, resp.status().as_u16(), elapsed.as_secs_f64());
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
async fn limit(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
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
async fn auth(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    if !state.authorized(req.headers(), None) {
        return ApiError::unauthorized().into_response();
    }
    next.run(req).await
}

async fn health() -> impl IntoResponse {
    axum::Json(serde_json::json!({"status": "ok"}))
}

async fn ready(State(state): State<Arc<AppState>>) -> Response {
    if state.ready.load(Ordering::Relaxed) {
        axum::Json(serde_json::json!({"status": "ready"})).into_response()
    } else {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            "the server is starting or shutting down",
        )
        .into_response()
    }
}

async fn metrics_text(State(state): State<Arc<AppState>>) -> Response {
    let mut resp = state.metrics.render().into_response();
    resp.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    resp
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such endpoint; see /docs")
}

async fn panic_now() -> Response {
    panic!("test panic requested");
}

fn router(state: Arc<AppState>) -> Router {
    let mut v1 = Router::new()
        .route("/v1/translate", post(routes::translate))
        .route("/v1/detect", post(routes::detect))
        .route("/v1/embed", post(routes::embed))
        .route("/v1/align", post(routes::align))
        .route("/v1/articles", post(routes::ingest_article))
        .route("/v1/events", get(routes::events))
        .route("/v1/events/{id}", get(routes::event))
        .route("/v1/models", get(routes::models));
    if state.cfg.panic_route {
        v1 = v1.route("/v1/_panic", get(panic_now));
    }
    let v1 = v1.route_layer(middleware::from_fn_with_state(state.clone(), auth));
    Router::new()
        .merge(v1)
        .route("/translate", post(libre::translate))
        .route("/detect", post(libre::detect))
        .route("/languages", get(libre::languages))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics_text))
        .route("/openapi.json", get(openapi::spec))
        .route("/docs", get(openapi::docs))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(state.cfg.max_body_bytes))
        .layer(middleware::from_fn_with_state(state.clone(), limit))
        .layer(middleware::from_fn_with_state(state.clone(), track))
        .with_state(state)
}

/// Open the store and the grouping state (blocking).
fn open_online(cfg: &ServerConfig) -> Result<Online, ServerError> {
    let store = match &cfg.store {
        Some(p) => Store::open(p)?,
        None => Store::open_in_memory()?,
    };
    let grouper = match store.load_online_state()? {
        Some(json) => OnlineGrouper::from_json(&json)?,
        None => OnlineGrouper::new(cfg.cluster)?,
    };
    let mut known = HashMap::new();
    for e in store.events()? {
        if let Some(rec) = store.event(e.id)? {
            for m in rec.members {
                known.insert(m.article_id, e.id);
            }
        }
    }
    Ok(Online {
        store,
        grouper,
        known,
    })
}

/// Serve on `listener` until `shutdown` is triggered; then stop accepting, finish the requests
/// in flight, and return. Model workers stop once their queues are empty.
pub async fn serve(
    listener: tokio::net::TcpListener,
    config: ServerConfig,
    shutdown: Shutdown,
) -> Result<(), ServerError> {
    if config.max_concurrent_requests == 0 || config.max_items == 0 || config.max_chars == 0 {
        return Err(ServerError::Config(
            "--max-concurrent-requests, --max-items and --max-chars must be at least 1".into(),
        ));
    }
    let metrics = Arc::new(Metrics::default());
    let cfg2 = config.clone();
    let online = tokio::task::spawn_blocking(move || open_online(&cfg2))
        .await
        .map_err(|e| ServerError::Config(format!("opening the store failed: {e}")))??;
    let languages = crate::engine::Router::new(
        config.manifest.clone(),
        config.models.clone(),
        config.languages.clone(),
    );
    let engine = Engine::new(
        EngineConfig {
            max_loaded_models: config.max_loaded_models.max(1),
            max_batch_tokens: config.max_batch_tokens.max(1),
            hub: config.hub,
            device: config.device.clone(),
            compute_type: config.compute_type,
            embed_model: config.embed_model.clone(),
        },
        languages,
        metrics.clone(),
    );
    let align = routes::AlignWorker::start(&config, engine.clone())?;
    let state = Arc::new(AppState {
        limiter: Arc::new(Semaphore::new(config.max_concurrent_requests)),
        cfg: config,
        engine,
        metrics,
        online: Mutex::new(online),
        align,
        ready: AtomicBool::new(false),
    });
    if state.cfg.preload {
        preload(&state).await?;
    }
    state.ready.store(true, Ordering::Relaxed);
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "serving");
    let app = router(state.clone());
    let st = state.clone();
    let signal = async move {
        shutdown.wait().await;
        st.ready.store(false, Ordering::Relaxed);
        tracing::info!("shutting down: finishing requests in flight");
    };
    axum::serve(listener, app)
        .with_graceful_shutdown(signal)
        .await?;
    tracing::info!("stopped");
    Ok(())
}

/// Load the served languages' models (as many as may stay loaded) and the embedder.
async fn preload(state: &AppState) -> Result<(), ServerError> {
    let mut seen = Vec::new();
    for lang in state.languages() {
        if seen.len() >= state.cfg.max_loaded_models.max(1) {
            tracing::warn!(
                "not preloading the other languages' models: --max-loaded-models is {}",
                state.cfg.max_loaded_models
            );
            break;
        }
        let source = state
            .source_for(&lang)
            .map_err(|e| ServerError::Preload(e.message))?;
        if seen.contains(&source) {
            continue;
        }
        state
            .engine
            .preload(&source)
            .await
            .map_err(|e| ServerError::Preload(e.to_string()))?;
        seen.push(source);
    }
    state
        .engine
        .load_embedder()
        .await
        .map_err(|e| ServerError::Preload(e.to_string()))?;
    Ok(())
}
