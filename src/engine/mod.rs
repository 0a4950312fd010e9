//! The engine owns every loaded model of a process and the device they run on. Translation and
//! embedding requests from every caller (the CLI's article workflow, the HTTP endpoints, align
//! jobs) go through one [`Engine`]: each model is loaded once, at most `max_loaded_models`
//! translation models stay loaded (least recently used first out), and each loaded model has one
//! worker thread whose queue merges all callers' work into batches.
//!
//! - [`manifest`]: which Hub repository serves which language.
//! - [`router`]: a language to its model (overrides, manifest, fallback, served languages).
//! - `slots`: the table of loaded models, loaded once, bounded.
//! - `translate_worker` / `embed_worker`: the per-model threads and their batching.
//!
//! Callers on the async runtime use the `async` methods; threads of their own (the CLI, align
//! jobs) use the `_blocking` ones, which must not be called from inside the async runtime. The
//! engine knows nothing of HTTP: what it counts reaches the server through an [`Observer`].

pub mod manifest;
pub mod router;

mod availability;
pub use availability::UnavailableModel;

mod embed_worker;
mod slots;
mod translate_worker;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use candle_core::Device;
use tokio::sync::oneshot;

pub use embed_worker::{EmbedKind, Embedded};
pub use router::{RouteError, Router};

use crate::model::embed::Embedder;
use crate::model::hub::{HubOptions, ModelRepo, ModelSource};
use crate::model::marian::Translator;
use crate::model::ComputeType;
use slots::Slots;

/// What the engine can fail with; callers map each to their own terms (an HTTP status, a
/// skipped article).
#[derive(Debug, Clone, thiserror::Error)]
pub enum EngineError {
    /// The model cannot be loaded (not cached while offline, download failed, corrupt files).
    #[error("model {model} is not available: {reason}")]
    Unavailable { model: String, reason: String },
    #[error("translation failed: {0}")]
    Failed(String),
    #[error("internal error in the model worker: {0}")]
    Panicked(String),
    #[error("the model worker stopped")]
    Stopped,
    /// A text longer than the embedding model reads, where truncation was not asked for.
    #[error("text {index} has {tokens} tokens, more than the {max} the embedding model reads; shorten it or ask for truncation")]
    TooLong {
        index: usize,
        tokens: usize,
        max: usize,
    },
}

/// What the engine reports as it works (the server turns it into Prometheus metrics). Every
/// method has a default that ignores the event.
pub trait Observer: Send + Sync {
    /// Sentences entered (`n > 0`) or left (`n < 0`) the translation queues.
    fn queued(&self, _n: i64) {}
    /// Sentences dropped because their caller went away.
    fn cancelled(&self, _sentences: usize) {}
    /// A translation batch finished.
    fn batch(&self, _rows: usize, _generated_tokens: usize, _seconds: f64) {}
    /// A translation model finished loading.
    fn model_loaded(&self) {}
    /// A translation model's worker ended (after it was unloaded and drained).
    fn model_stopped(&self) {}
    /// A translation model was unloaded to stay within the bound.
    fn model_evicted(&self) {}
    /// A panic inside model code was caught.
    fn panicked(&self) {}
}

/// An observer that ignores everything.
pub struct NoObserver;
impl Observer for NoObserver {}

/// Settings of the engine.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub max_loaded_models: usize,
    /// Padded source tokens (rows × longest row × beams) per batch, at most; one sentence is
    /// always let through, however long.
    pub max_batch_tokens: usize,
    pub hub: HubOptions,
    pub device: Device,
    pub compute_type: ComputeType,
    pub embed_model: ModelSource,
}

/// How one job's sentences are generated; sentences share a batch only with the same setting.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Generation {
    /// Beam width; `None`: the model's default.
    pub num_beams: Option<usize>,
    /// Generated tokens at most; `None`: the model's default.
    pub max_new_tokens: Option<usize>,
    /// Rows per batch at most (besides the token budget); `None`: no bound.
    pub max_rows: Option<usize>,
}

impl Generation {
    pub fn beams(num_beams: Option<usize>) -> Self {
        Self {
            num_beams,
            ..Self::default()
        }
    }
}

/// A loaded model, as callers name and cache it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedModel {
    /// `org/name@revision` or the folder.
    pub name: String,
    /// The commit the revision resolved to (empty for a folder).
    pub commit: String,
    /// The key its outputs are cached under: the name, plus the compute type when that changes
    /// the outputs (int8).
    pub cache_key: String,
}

impl LoadedModel {
    /// The revision part of a cache key for outputs made with `generation`: the commit, plus the
    /// beam and length settings when they are not the model's own (they change the output).
    pub fn cache_revision(&self, generation: &Generation) -> String {
        match (generation.num_beams, generation.max_new_tokens) {
            (None, None) => self.commit.clone(),
            (beams, max_new) => format!(
                "{} beams={} max_new={}",
                self.commit,
                beams.map_or("default".into(), |b| b.to_string()),
                max_new.map_or("default".into(), |m| m.to_string())
            ),
        }
    }
}

/// The result of one translation job.
#[derive(Debug, Clone)]
pub struct Translated {
    /// One per input text, in order.
    pub texts: Vec<String>,
    /// `org/name@revision` or the folder.
    pub model: String,
    /// From submission to the first batch that held one of the texts.
    pub queue: Duration,
    /// Sum of the durations of the batches that held the texts.
    pub inference: Duration,
}

#[derive(Clone)]
struct TranslateHandle {
    tx: mpsc::Sender<translate_worker::Job>,
    model: Arc<LoadedModel>,
}

#[derive(Clone)]
struct EmbedHandle {
    tx: mpsc::Sender<embed_worker::Job>,
    model: Arc<LoadedModel>,
}

struct Inner {
    cfg: EngineConfig,
    router: Router,
    observer: Arc<dyn Observer>,
    translators: Slots<TranslateHandle>,
    embedder: Slots<EmbedHandle>,
}

/// The process's models; cheap to clone (all clones share them).
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

pub(crate) fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic".into()
    }
}

/// "outer: inner" for an error and its causes.
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let s = c.to_string();
        if !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        cur = c.source();
    }
    out
}

/// Waits for a reply on a thread that is not the async runtime's.
fn wait<T>(rx: oneshot::Receiver<Result<T, EngineError>>) -> Result<T, EngineError> {
    rx.blocking_recv().map_err(|_| EngineError::Stopped)?
}

impl Engine {
    pub fn new(cfg: EngineConfig, router: Router, observer: Arc<dyn Observer>) -> Self {
        Self {
            inner: Arc::new(Inner {
                cfg,
                router,
                observer,
                translators: Slots::new(),
                embedder: Slots::new(),
            }),
        }
    }

    pub fn config(&self) -> &EngineConfig {
        &self.inner.cfg
    }

    /// Which model serves which language.
    pub fn router(&self) -> &Router {
        &self.inner.router
    }

    /// Whether the translation model is loaded now.
    pub fn is_loaded(&self, source: &ModelSource) -> bool {
        self.inner.translators.is_loaded(&source.to_string())
    }

    pub fn embedder_loaded(&self) -> bool {
        self.inner
            .embedder
            .is_loaded(&self.inner.cfg.embed_model.to_string())
    }

    // ---- translation ----

    /// Loads the translation model now, if no caller has (blocking).
    pub fn load_blocking(&self, source: &ModelSource) -> Result<LoadedModel, EngineError> {
        Ok((*self.inner.translator(source)?.model).clone())
    }

    /// Loads the translation model now, if no caller has (`--preload`).
    pub async fn load(&self, source: &ModelSource) -> Result<LoadedModel, EngineError> {
        Ok((*self.translator_async(source).await?.model).clone())
    }

    /// [`Engine::load`], answering with the model's name.
    pub async fn preload(&self, source: &ModelSource) -> Result<String, EngineError> {
        Ok(self.load(source).await?.name)
    }

    async fn translator_async(&self, source: &ModelSource) -> Result<TranslateHandle, EngineError> {
        if let Some(h) = self.inner.translators.ready(&source.to_string()) {
            return Ok(h);
        }
        let (inner, source) = (self.inner.clone(), source.clone());
        tokio::task::spawn_blocking(move || inner.translator(&source))
            .await
            .map_err(|e| EngineError::Panicked(format!("loading failed: {e}")))?
    }

    /// Translate `texts` (non-empty sentences) with the model at `source`, `beams` wide.
    /// Dropping the returned future cancels the texts not yet in a batch.
    pub async fn translate(
        &self,
        source: &ModelSource,
        texts: Vec<String>,
        beams: Option<usize>,
    ) -> Result<Translated, EngineError> {
        self.translate_with(source, texts, Generation::beams(beams))
            .await
    }

    /// [`Engine::translate`] with every generation setting.
    pub async fn translate_with(
        &self,
        source: &ModelSource,
        texts: Vec<String>,
        generation: Generation,
    ) -> Result<Translated, EngineError> {
        let handle = self.translator_async(source).await?;
        let model = handle.model.name.clone();
        let out = match self.inner.submit(&handle, texts, generation, None) {
            Submitted::Empty => return Ok(Translated::empty(model)),
            Submitted::Waiting(rx) => rx.await.map_err(|_| EngineError::Stopped)??,
        };
        Ok(Translated::from_job(out, model))
    }

    /// [`Engine::translate_with`] from a thread of the caller's own (not the async runtime);
    /// `on_batch` is called with the number of texts each finished batch held.
    pub fn translate_blocking(
        &self,
        source: &ModelSource,
        texts: Vec<String>,
        generation: Generation,
        mut on_batch: impl FnMut(usize),
    ) -> Result<Translated, EngineError> {
        let handle = self.inner.translator(source)?;
        let model = handle.model.name.clone();
        let (progress_tx, progress_rx) = mpsc::channel::<usize>();
        let report: translate_worker::OnBatch = Box::new(move |n| {
            let _ = progress_tx.send(n);
        });
        let rx = match self.inner.submit(&handle, texts, generation, Some(report)) {
            Submitted::Empty => return Ok(Translated::empty(model)),
            Submitted::Waiting(rx) => rx,
        };
        // The job holds the sender: the loop ends once the worker is done with the job.
        for n in progress_rx {
            on_batch(n);
        }
        Ok(Translated::from_job(wait(rx)?, model))
    }

    // ---- embedding ----

    /// Loads the embedding model now, if no caller has (blocking).
    pub fn load_embedder_blocking(&self) -> Result<LoadedModel, EngineError> {
        Ok((*self.inner.embedder()?.model).clone())
    }

    /// Loads the embedding model now, if no caller has.
    pub async fn load_embedder(&self) -> Result<LoadedModel, EngineError> {
        Ok((*self.embedder_async().await?.model).clone())
    }

    async fn embedder_async(&self) -> Result<EmbedHandle, EngineError> {
        let key = self.inner.cfg.embed_model.to_string();
        if let Some(h) = self.inner.embedder.ready(&key) {
            return Ok(h);
        }
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || inner.embedder())
            .await
            .map_err(|e| EngineError::Panicked(format!("loading failed: {e}")))?
    }

    /// Vectors for `texts`, in order, and the embedding model's name.
    pub async fn embed(
        &self,
        texts: Vec<String>,
        kind: EmbedKind,
    ) -> Result<(Vec<Vec<f32>>, String), EngineError> {
        let (embedded, model) = self.embed_counted(texts, kind).await?;
        Ok((embedded.vectors, model))
    }

    /// [`Engine::embed`], with the tokens the model read.
    pub async fn embed_counted(
        &self,
        texts: Vec<String>,
        kind: EmbedKind,
    ) -> Result<(Embedded, String), EngineError> {
        let handle = self.embedder_async().await?;
        let rx = Inner::submit_embed(&handle, texts, kind)?;
        let embedded = rx.await.map_err(|_| EngineError::Stopped)??;
        Ok((embedded, handle.model.name.clone()))
    }

    /// [`Engine::embed`] from a thread of the caller's own (not the async runtime).
    pub fn embed_blocking(
        &self,
        texts: Vec<String>,
        kind: EmbedKind,
    ) -> Result<(Vec<Vec<f32>>, String), EngineError> {
        let handle = self.inner.embedder()?;
        let rx = Inner::submit_embed(&handle, texts, kind)?;
        Ok((wait(rx)?.vectors, handle.model.name.clone()))
    }
}

type EmbedReceiver = oneshot::Receiver<Result<Embedded, EngineError>>;

enum Submitted {
    Empty,
    Waiting(oneshot::Receiver<Result<translate_worker::JobOutput, EngineError>>),
}

impl Translated {
    fn empty(model: String) -> Self {
        Self {
            texts: Vec::new(),
            model,
            queue: Duration::ZERO,
            inference: Duration::ZERO,
        }
    }

    fn from_job(out: translate_worker::JobOutput, model: String) -> Self {
        Self {
            texts: out.texts,
            model,
            queue: out.queue,
            inference: out.inference,
        }
    }
}

impl Inner {
    fn submit(
        &self,
        handle: &TranslateHandle,
        texts: Vec<String>,
        generation: Generation,
        on_batch: Option<translate_worker::OnBatch>,
    ) -> Submitted {
        if texts.is_empty() {
            return Submitted::Empty;
        }
        let n = texts.len() as i64;
        let (reply, rx) = oneshot::channel();
        self.observer.queued(n);
        let job = translate_worker::Job {
            texts,
            generation,
            reply,
            enqueued: Instant::now(),
            on_batch,
        };
        if handle.tx.send(job).is_err() {
            self.observer.queued(-n);
            // The receiver's sender was dropped with the job: the caller sees `Stopped`.
        }
        Submitted::Waiting(rx)
    }

    fn submit_embed(
        handle: &EmbedHandle,
        texts: Vec<String>,
        kind: EmbedKind,
    ) -> Result<EmbedReceiver, EngineError> {
        let (reply, rx) = oneshot::channel();
        if texts.is_empty() {
            let _ = reply.send(Ok(Embedded::default()));
            return Ok(rx);
        }
        handle
            .tx
            .send(embed_worker::Job { texts, kind, reply })
            .map_err(|_| EngineError::Stopped)?;
        Ok(rx)
    }

    /// The worker of a translation model, loading it (once) if needed; blocking.
    fn translator(self: &Arc<Self>, source: &ModelSource) -> Result<TranslateHandle, EngineError> {
        let key = source.to_string();
        let (handle, loaded_now) = self
            .translators
            .get_or_load(&key, || self.start_translator(source.clone()))?;
        if loaded_now {
            for victim in self
                .translators
                .evict_beyond(self.cfg.max_loaded_models, &key)
            {
                tracing::info!(model = %victim, "unloading the least recently used model");
                self.observer.model_evicted();
            }
        }
        Ok(handle)
    }

    /// Spawns a thread that loads the translation model and then serves its queue.
    fn start_translator(&self, source: ModelSource) -> Result<TranslateHandle, EngineError> {
        let (tx, rx) = mpsc::channel::<translate_worker::Job>();
        let (hub, device) = (self.cfg.hub, self.cfg.device.clone());
        let compute_type = self.cfg.compute_type;
        let observer = self.observer.clone();
        let budget = self.cfg.max_batch_tokens.max(1);
        let key = source.to_string();
        let thread = format!(
            "tidings-model-{}",
            key.rsplit('/').next().unwrap_or("model")
        );
        tracing::info!(model = %key, "loading translation model");
        let counted = observer.clone();
        let load = move || {
            let repo = ModelRepo::open(source, &hub).map_err(|e| chain(&e))?;
            let t = Translator::load_with(&repo, &device, compute_type).map_err(|e| chain(&e))?;
            // Counted before the caller hears of it, so a metric read after the answer sees it.
            counted.model_loaded();
            let name = repo.describe();
            let info = LoadedModel {
                cache_key: cache_key(compute_type, &name),
                commit: repo.commit().unwrap_or_default(),
                name,
            };
            Ok((t, info))
        };
        let serve = move |t: Translator| {
            translate_worker::run(&t, &rx, budget, observer.as_ref());
            observer.model_stopped();
        };
        let model = spawn_model(thread, key, self.observer.clone(), load, serve)?;
        Ok(TranslateHandle { tx, model })
    }

    /// The embedding model's worker, loading it (once) if needed; blocking.
    fn embedder(&self) -> Result<EmbedHandle, EngineError> {
        let key = self.cfg.embed_model.to_string();
        let (handle, _) = self.embedder.get_or_load(&key, || self.start_embedder())?;
        Ok(handle)
    }

    fn start_embedder(&self) -> Result<EmbedHandle, EngineError> {
        let (tx, rx) = mpsc::channel::<embed_worker::Job>();
        let source = self.cfg.embed_model.clone();
        let (hub, device) = (self.cfg.hub, self.cfg.device.clone());
        // The type it computes in, for the cache key.
        let compute = self.cfg.compute_type.for_embeddings();
        let observer = self.observer.clone();
        let key = source.to_string();
        tracing::info!(model = %key, "loading embedding model");
        let load = move || {
            let repo = ModelRepo::open(source, &hub).map_err(|e| chain(&e))?;
            let e = Embedder::load_with(&repo, &device, compute).map_err(|e| chain(&e))?;
            let name = repo.describe();
            let info = LoadedModel {
                cache_key: cache_key(compute, &name),
                commit: repo.commit().unwrap_or_default(),
                name,
            };
            Ok((e, info))
        };
        let serve = move |e: Embedder| embed_worker::run(&e, &rx, observer.as_ref());
        let model = spawn_model(
            "tidings-embed".into(),
            key,
            self.observer.clone(),
            load,
            serve,
        )?;
        Ok(EmbedHandle { tx, model })
    }
}

/// The key a model's outputs are cached under.
fn cache_key(compute_type: ComputeType, name: &str) -> String {
    // int8 and half-precision outputs differ from f32 ones: they are cached (and reported) apart.
    match compute_type {
        ComputeType::F32 => name.to_string(),
        other => format!("{name} [{other}]"),
    }
}

/// Runs `load` on a new thread named `thread`, then `serve` with the loaded model on the same
/// thread (the model never leaves it). Waits for the load; a failed or panicking load is
/// `Unavailable`.
fn spawn_model<M: 'static>(
    thread: String,
    key: String,
    observer: Arc<dyn Observer>,
    load: impl FnOnce() -> Result<(M, LoadedModel), String> + Send + 'static,
    serve: impl FnOnce(M) + Send + 'static,
) -> Result<Arc<LoadedModel>, EngineError> {
    let (ready_tx, ready_rx) = mpsc::channel::<Result<Arc<LoadedModel>, EngineError>>();
    let spawned = std::thread::Builder::new().name(thread).spawn(move || {
        let failed = |reason: String| EngineError::Unavailable {
            model: key.clone(),
            reason,
        };
        match catch_unwind(AssertUnwindSafe(load)) {
            Ok(Ok((model, info))) => {
                let _ = ready_tx.send(Ok(Arc::new(info)));
                serve(model);
            }
            Ok(Err(reason)) => {
                let _ = ready_tx.send(Err(failed(reason)));
            }
            Err(p) => {
                observer.panicked();
                let reason = format!("loading panicked: {}", panic_message(p.as_ref()));
                let _ = ready_tx.send(Err(failed(reason)));
            }
        }
    });
    if let Err(e) = spawned {
        return Err(EngineError::Failed(format!(
            "cannot start a model thread: {e}"
        )));
    }
    ready_rx.recv().map_err(|_| EngineError::Stopped)?
}
