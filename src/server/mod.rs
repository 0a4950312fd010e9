//! `tidings serve`: the HTTP service.
//!
//! [`serve`] runs the service on a bound listener until its [`Shutdown`] is triggered, then
//! stops accepting connections and finishes the requests in flight. The process's
//! [`Engine`](crate::engine::Engine) owns the models (translation, embedding, and those of align
//! jobs): one worker thread per loaded model, fed by a queue that merges work from all requests
//! into batches. This module owns the configuration, the shared state and the start-up; the
//! HTTP side knows nothing of tensors:
//!
//! - [`api`]: the typed request and response bodies (the wire contract);
//! - `routes`: the handlers, one file per resource, and the router; [`libre`] the
//!   LibreTranslate-compatible ones;
//! - [`openapi`]: the OpenAPI document generated from both;
//! - `middleware`, `extract`, [`errors`], [`metrics`]: request tracking and load shedding, body
//!   parsing, the error shape, the Prometheus metrics.

pub mod api;
mod connections;
pub mod errors;
mod extract;
mod forms;
pub mod libre;
pub mod metrics;
mod middleware;
pub mod openapi;
pub(crate) mod routes;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{watch, Semaphore};

use crate::app::online::{OnlineError, OnlineGroups};
use crate::engine::manifest::Manifest;
use crate::engine::{Engine, EngineConfig};
use crate::group::ClusterOptions;
use crate::model::device::{DeviceChoice, DeviceError};
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
    /// How long a client may take to send a request's head, and then its body (408 and the
    /// connection closed beyond); also how long an idle kept-alive connection stays open.
    pub read_timeout: Duration,
    /// How long a shutdown waits for the requests in flight before closing their connections.
    pub shutdown_timeout: Duration,
    /// Origins browsers may call from (CORS); `*` allows any; empty: no CORS headers.
    pub cors_origins: Vec<String>,
    /// SQLite store for the online grouping; `None` keeps it in memory.
    pub store: Option<PathBuf>,
    /// Where the models run; opened when the engine is built.
    pub device: DeviceChoice,
    /// How translation models store their layers (int8: CPU only).
    pub compute_type: crate::model::ComputeChoice,
    pub hub: HubOptions,
    pub cluster: ClusterOptions,
    /// Adds `GET /v1/_panic`, which panics, to test that a panic costs one request only.
    #[doc(hidden)]
    pub panic_route: bool,
    /// Adds `GET /v1/_hold`, which holds its concurrency slot until it gets a permit from this
    /// semaphore, to test load shedding without racing a model.
    #[doc(hidden)]
    pub hold_route: Option<Arc<Semaphore>>,
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
            read_timeout: Duration::from_secs(30),
            shutdown_timeout: Duration::from_secs(30),
            cors_origins: Vec::new(),
            store: None,
            device: DeviceChoice::Cpu,
            compute_type: Default::default(),
            hub: HubOptions::default(),
            cluster: ClusterOptions::default(),
            panic_route: false,
            hold_route: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Online(#[from] OnlineError),
    #[error("cannot preload {0}")]
    Preload(String),
    #[error(transparent)]
    Device(#[from] DeviceError),
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

/// Shared by every handler.
pub struct AppState {
    pub(crate) cfg: ServerConfig,
    pub(crate) engine: Engine,
    pub(crate) metrics: Arc<Metrics>,
    /// The process's store: caches, finished articles, events (the online grouping writes
    /// through it too).
    pub(crate) store: Arc<dyn Store>,
    pub(crate) online: Mutex<OnlineGroups>,
    pub(crate) align: routes::align::AlignWorker,
    /// Align jobs that can be followed (`/v1/align/jobs`).
    pub(crate) jobs: routes::jobs::Jobs,
    pub(crate) limiter: Arc<Semaphore>,
    pub(crate) ready: AtomicBool,
    /// The configured models that cannot be loaded, found at start-up (`/ready` lists them).
    pub(crate) unavailable: Vec<crate::engine::UnavailableModel>,
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

/// Open the store and the grouping state (blocking).
fn open_online(cfg: &ServerConfig) -> Result<(Arc<dyn Store>, OnlineGroups), ServerError> {
    let store = match &cfg.store {
        Some(p) => crate::store::open(p)?,
        None => crate::store::open_in_memory()?,
    };
    let online = OnlineGroups::open(store.clone(), cfg.cluster)?;
    Ok((store, online))
}

/// Serve on `listener` until `shutdown` is triggered; then stop accepting, finish the requests
/// in flight (closing the connections still open after `shutdown_timeout`), and return. Model
/// workers stop once their queues are empty.
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
    if config.read_timeout.is_zero() {
        return Err(ServerError::Config(
            "--read-timeout must be more than 0 seconds".into(),
        ));
    }
    let cors = routes::cors_layer(&config.cors_origins)?;
    let device = crate::model::device::open(config.device)?;
    let compute_type = config.compute_type.resolve(&device);
    let metrics = Arc::new(Metrics::default());
    let cfg2 = config.clone();
    let (store, online) = tokio::task::spawn_blocking(move || open_online(&cfg2))
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
            device,
            compute_type,
            embed_model: config.embed_model.clone(),
        },
        languages,
        metrics.clone(),
    );
    let align = routes::align::AlignWorker::start(&config, engine.clone(), store.clone())?;
    let checked = engine.clone();
    let unavailable = tokio::task::spawn_blocking(move || checked.unavailable_models())
        .await
        .unwrap_or_default();
    for u in &unavailable {
        tracing::warn!(model = %u.model, languages = %u.languages.join(","), role = %u.role,
            "configured model cannot be loaded: {}", u.reason);
    }
    let state = Arc::new(AppState {
        limiter: Arc::new(Semaphore::new(config.max_concurrent_requests)),
        cfg: config,
        engine,
        metrics,
        store,
        online: Mutex::new(online),
        align,
        jobs: routes::jobs::Jobs::default(),
        ready: AtomicBool::new(false),
        unavailable,
    });
    if state.cfg.preload {
        preload(&state).await?;
    }
    state.ready.store(true, Ordering::Relaxed);
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "serving");
    let mut app = routes::router(state.clone());
    if let Some(cors) = cors {
        // Outermost: a preflight is answered before the key check and the load shedding.
        app = app.layer(cors);
    }
    let st = state.clone();
    let stopping = async move {
        shutdown.wait().await;
        st.ready.store(false, Ordering::Relaxed);
        tracing::info!("shutting down: finishing requests in flight");
    };
    let timeouts = connections::Timeouts {
        read: state.cfg.read_timeout,
        shutdown: state.cfg.shutdown_timeout,
    };
    connections::serve(listener, app, timeouts, state.metrics.clone(), stopping).await;
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
