//! The engine inside the server: one worker thread per loaded translation model, fed by a
//! queue; sentences from all concurrent requests are merged into length-sorted batches under a
//! token budget. Models load lazily (at most once at a time per model) and the least recently
//! used one is unloaded past the limit. Nothing here knows about HTTP.

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use candle_core::Device;
use tokio::sync::{oneshot, OnceCell};

use crate::model::embed::Embedder;
use crate::model::hub::{HubOptions, ModelRepo, ModelSource};
use crate::model::marian::{TranslateOptions, Translator};
use crate::server::metrics::Metrics;

/// What the engine can fail with; the HTTP layer maps each to a status.
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
}

/// Settings of the engine.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub max_loaded_models: usize,
    /// Padded source tokens (rows × longest row × beams) per batch, at most; one sentence is
    /// always let through, however long.
    pub max_batch_tokens: usize,
    pub hub: HubOptions,
    pub device: Device,
    pub compute_type: crate::model::ComputeType,
    pub embed_model: ModelSource,
}

/// The result of one [`Engine::translate`] call.
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

struct JobOutput {
    texts: Vec<String>,
    queue: Duration,
    inference: Duration,
}

type Reply = oneshot::Sender<Result<JobOutput, EngineError>>;

struct Job {
    texts: Vec<String>,
    beams: Option<usize>,
    reply: Reply,
    enqueued: Instant,
}

#[derive(Clone)]
struct Worker {
    tx: mpsc::Sender<Job>,
    model: String,
}

struct Slot {
    cell: OnceCell<Worker>,
    last_used: AtomicU64,
}

pub struct Engine {
    cfg: EngineConfig,
    metrics: Arc<Metrics>,
    slots: Mutex<HashMap<String, Arc<Slot>>>,
    clock: AtomicU64,
    embedder: OnceCell<(Arc<Embedder>, String)>,
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic".into()
    }
}

/// "outer: inner" for an error and its causes.
fn chain(e: &dyn std::error::Error) -> String {
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

impl Engine {
    pub fn new(cfg: EngineConfig, metrics: Arc<Metrics>) -> Self {
        Self {
            cfg,
            metrics,
            slots: Mutex::new(HashMap::new()),
            clock: AtomicU64::new(0),
            embedder: OnceCell::new(),
        }
    }

    /// Whether the model is loaded now.
    pub fn is_loaded(&self, source: &ModelSource) -> bool {
        self.slots
            .lock()
            .map(|m| {
                m.get(&source.to_string())
                    .is_some_and(|s| s.cell.initialized())
            })
            .unwrap_or(false)
    }

    pub fn embedder_loaded(&self) -> bool {
        self.embedder.initialized()
    }

    /// Translate `texts` (non-empty sentences) with the model at `source`. Dropping the
    /// returned future cancels the texts not yet in a batch.
    pub async fn translate(
        &self,
        source: &ModelSource,
        texts: Vec<String>,
        beams: Option<usize>,
    ) -> Result<Translated, EngineError> {
        let worker = self.worker(source).await?;
        if texts.is_empty() {
            return Ok(Translated {
                texts,
                model: worker.model,
                queue: Duration::ZERO,
                inference: Duration::ZERO,
            });
        }
        let n = texts.len() as i64;
        let (reply, rx) = oneshot::channel();
        self.metrics.queue_depth.fetch_add(n, Ordering::Relaxed);
        let job = Job {
            texts,
            beams,
            reply,
            enqueued: Instant::now(),
        };
        if worker.tx.send(job).is_err() {
            self.metrics.queue_depth.fetch_sub(n, Ordering::Relaxed);
            return Err(EngineError::Stopped);
        }
        let out = rx.await.map_err(|_| EngineError::Stopped)??;
        Ok(Translated {
            texts: out.texts,
            model: worker.model,
            queue: out.queue,
            inference: out.inference,
        })
    }

    /// Load the model now (for `--preload`).
    pub async fn preload(&self, source: &ModelSource) -> Result<String, EngineError> {
        Ok(self.worker(source).await?.model)
    }

    /// The worker of a model, starting it (once) if needed.
    async fn worker(&self, source: &ModelSource) -> Result<Worker, EngineError> {
        let key = source.to_string();
        let slot = {
            let mut slots = self
                .slots
                .lock()
                .map_err(|_| EngineError::Panicked("model table poisoned".into()))?;
            slots
                .entry(key.clone())
                .or_insert_with(|| {
                    Arc::new(Slot {
                        cell: OnceCell::new(),
                        last_used: AtomicU64::new(0),
                    })
                })
                .clone()
        };
        slot.last_used.store(
            self.clock.fetch_add(1, Ordering::Relaxed) + 1,
            Ordering::Relaxed,
        );
        let mut started = false;
        let worker = slot
            .cell
            .get_or_try_init(|| {
                started = true;
                self.start_worker(source.clone())
            })
            .await?
            .clone();
        if started {
            self.evict_beyond_limit(&key);
        }
        Ok(worker)
    }

    /// Unload least recently used models until at most `max_loaded_models` remain. A worker
    /// finishes the work it has before its thread ends (requests hold their own handles).
    fn evict_beyond_limit(&self, keep: &str) {
        let Ok(mut slots) = self.slots.lock() else {
            return;
        };
        let max = self.cfg.max_loaded_models.max(1);
        loop {
            let loaded: Vec<(&String, u64)> = slots
                .iter()
                .filter(|(_, s)| s.cell.initialized())
                .map(|(k, s)| (k, s.last_used.load(Ordering::Relaxed)))
                .collect();
            if loaded.len() <= max {
                return;
            }
            let victim = loaded
                .iter()
                .filter(|(k, _)| k.as_str() != keep)
                .min_by_key(|(_, t)| *t)
                .map(|(k, _)| (*k).clone());
            let Some(victim) = victim else { return };
            tracing::info!(model = %victim, "unloading the least recently used model");
            slots.remove(&victim);
            self.metrics.model_unloads.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Spawn a thread that loads the model and then serves its queue.
    async fn start_worker(&self, source: ModelSource) -> Result<Worker, EngineError> {
        let (tx, rx) = mpsc::channel::<Job>();
        let (ready_tx, ready_rx) = oneshot::channel::<Result<String, EngineError>>();
        let hub = self.cfg.hub;
        let device = self.cfg.device.clone();
        let compute_type = self.cfg.compute_type;
        let metrics = self.metrics.clone();
        let budget = self.cfg.max_batch_tokens.max(1);
        let key = source.to_string();
        let name = format!(
            "tidings-model-{}",
            key.rsplit('/').next().unwrap_or("model")
        );
        tracing::info!(model = %key, "loading translation model");
        let spawned = std::thread::Builder::new().name(name).spawn(move || {
            let load = || -> Result<(Translator, String), String> {
                let repo = ModelRepo::open(source, &hub).map_err(|e| chain(&e))?;
                let t =
                    Translator::load_with(&repo, &device, compute_type).map_err(|e| chain(&e))?;
                Ok((t, repo.describe()))
            };
            match catch_unwind(AssertUnwindSafe(load)) {
                Ok(Ok((translator, model))) => {
                    metrics.model_loads.fetch_add(1, Ordering::Relaxed);
                    metrics.loaded_models.fetch_add(1, Ordering::Relaxed);
                    let _ = ready_tx.send(Ok(model.clone()));
                    run_worker(&translator, &rx, budget, &metrics);
                    metrics.loaded_models.fetch_sub(1, Ordering::Relaxed);
                    tracing::debug!(model = %model, "model worker stopped");
                }
                Ok(Err(reason)) => {
                    let _ = ready_tx.send(Err(EngineError::Unavailable { model: key, reason }));
                }
                Err(p) => {
                    metrics.panics.fetch_add(1, Ordering::Relaxed);
                    let _ = ready_tx.send(Err(EngineError::Unavailable {
                        model: key,
                        reason: format!("loading panicked: {}", panic_message(p.as_ref())),
                    }));
                }
            }
        });
        if let Err(e) = spawned {
            return Err(EngineError::Failed(format!(
                "cannot start a model thread: {e}"
            )));
        }
        let model = ready_rx.await.map_err(|_| EngineError::Stopped)??;
        Ok(Worker { tx, model })
    }

    /// The embedding model, loaded on first use (at most once).
    pub async fn embedder(&self) -> Result<(Arc<Embedder>, String), EngineError> {
        let source = self.cfg.embed_model.clone();
        let hub = self.cfg.hub;
        let device = self.cfg.device.clone();
        let got = self
            .embedder
            .get_or_try_init(|| async move {
                let key = source.to_string();
                let res = tokio::task::spawn_blocking(move || {
                    let repo = ModelRepo::open(source, &hub).map_err(|e| chain(&e))?;
                    let e = Embedder::load(&repo, &device).map_err(|e| chain(&e))?;
                    Ok::<_, String>((Arc::new(e), repo.describe()))
                })
                .await;
                match res {
                    Ok(Ok(v)) => Ok(v),
                    Ok(Err(reason)) => Err(EngineError::Unavailable { model: key, reason }),
                    Err(e) => Err(EngineError::Unavailable {
                        model: key,
                        reason: format!("loading failed: {e}"),
                    }),
                }
            })
            .await?;
        Ok(got.clone())
    }
}

/// One request's sentences while they wait and run.
struct Pending {
    reply: Reply,
    beams: Option<usize>,
    rows: Vec<Vec<u32>>,
    out: Vec<Option<String>>,
    /// Sentences not yet put in a batch.
    queued: usize,
    /// Sentences not yet translated.
    left: usize,
    enqueued: Instant,
    first_batch: Option<Instant>,
    inference: Duration,
    failed: Option<EngineError>,
    /// Set while the sentence is in the running batch.
    in_batch: Vec<bool>,
}

/// Tokenize a job (in the worker thread, off the async runtime).
fn admit(t: &Translator, job: Job, metrics: &Metrics) -> Option<Pending> {
    let n = job.texts.len();
    let encoded = catch_unwind(AssertUnwindSafe(|| {
        job.texts
            .iter()
            .map(|s| t.encode(s))
            .collect::<Result<Vec<_>, _>>()
    }));
    let rows = match encoded {
        Ok(Ok(rows)) => rows,
        Ok(Err(e)) => {
            metrics.queue_depth.fetch_sub(n as i64, Ordering::Relaxed);
            let _ = job.reply.send(Err(EngineError::Failed(chain(&e))));
            return None;
        }
        Err(p) => {
            metrics.queue_depth.fetch_sub(n as i64, Ordering::Relaxed);
            metrics.panics.fetch_add(1, Ordering::Relaxed);
            let _ = job
                .reply
                .send(Err(EngineError::Panicked(panic_message(p.as_ref()))));
            return None;
        }
    };
    Some(Pending {
        reply: job.reply,
        beams: job.beams,
        out: vec![None; n],
        in_batch: vec![false; n],
        rows,
        queued: n,
        left: n,
        enqueued: job.enqueued,
        first_batch: None,
        inference: Duration::ZERO,
        failed: None,
    })
}

/// The worker loop: take everything that is waiting, run one batch of the oldest request's
/// beam setting (longest sentences first, up to the token budget), answer finished requests,
/// repeat. Requests that arrive while a batch runs join the next one.
fn run_worker(t: &Translator, rx: &mpsc::Receiver<Job>, budget: usize, metrics: &Metrics) {
    let mut pending: Vec<Pending> = Vec::new();
    loop {
        if pending.is_empty() {
            match rx.recv() {
                Ok(job) => pending.extend(admit(t, job, metrics)),
                Err(_) => return,
            }
        }
        while let Ok(job) = rx.try_recv() {
            pending.extend(admit(t, job, metrics));
        }
        // A request whose client went away: its waiting sentences are skipped.
        pending.retain(|p| {
            if p.reply.is_closed() {
                metrics
                    .queue_depth
                    .fetch_sub(p.queued as i64, Ordering::Relaxed);
                metrics
                    .cancelled_sentences
                    .fetch_add(p.queued as u64, Ordering::Relaxed);
                tracing::debug!(
                    sentences = p.queued,
                    "request cancelled; skipping its sentences"
                );
                false
            } else {
                true
            }
        });
        let Some(first) = pending.first() else {
            continue;
        };
        let beams = first.beams;
        let gen = t.generation_config(&TranslateOptions {
            num_beams: beams,
            ..TranslateOptions::default()
        });
        let mut cands: Vec<(usize, usize)> = Vec::new();
        for (pi, p) in pending.iter().enumerate() {
            if p.beams != beams {
                continue;
            }
            for (si, o) in p.out.iter().enumerate() {
                if o.is_none() && !p.in_batch[si] {
                    cands.push((pi, si));
                }
            }
        }
        // Longest first; stable, so equal lengths keep arrival order.
        cands.sort_by_key(|&(pi, si)| std::cmp::Reverse(pending[pi].rows[si].len()));
        let longest = cands
            .first()
            .map_or(1, |&(pi, si)| pending[pi].rows[si].len());
        let per_row = longest.max(1) * gen.num_beams.max(1);
        let take = (budget / per_row).clamp(1, cands.len().max(1));
        let batch: Vec<(usize, usize)> = cands.into_iter().take(take).collect();
        if batch.is_empty() {
            // Cannot happen (every pending request has untranslated sentences), but never spin.
            pending.clear();
            continue;
        }
        let rows: Vec<Vec<u32>> = batch
            .iter()
            .map(|&(pi, si)| pending[pi].rows[si].clone())
            .collect();
        let start = Instant::now();
        for &(pi, si) in &batch {
            let p = &mut pending[pi];
            p.first_batch.get_or_insert(start);
            p.in_batch[si] = true;
            p.queued -= 1;
        }
        metrics
            .queue_depth
            .fetch_sub(batch.len() as i64, Ordering::Relaxed);
        let result = catch_unwind(AssertUnwindSafe(|| {
            let ids = t.generate_batch(&rows, &gen)?;
            ids.iter()
                .map(|ids| Ok((t.tokenizer().decode(ids)?, ids.len())))
                .collect::<Result<Vec<_>, crate::model::marian::TranslateError>>()
        }));
        let elapsed = start.elapsed();
        let outcome = match result {
            Ok(Ok(texts)) if texts.len() == batch.len() => Ok(texts),
            Ok(Ok(_)) => Err(EngineError::Failed(
                "the model returned a wrong number of rows".into(),
            )),
            Ok(Err(e)) => Err(EngineError::Failed(chain(&e))),
            Err(p) => {
                metrics.panics.fetch_add(1, Ordering::Relaxed);
                tracing::error!("model batch panicked: {}", panic_message(p.as_ref()));
                Err(EngineError::Panicked(panic_message(p.as_ref())))
            }
        };
        let mut touched: Vec<usize> = batch.iter().map(|&(pi, _)| pi).collect();
        touched.dedup();
        for &pi in &touched {
            pending[pi].inference += elapsed;
        }
        match outcome {
            Ok(texts) => {
                let tokens: usize = texts.iter().map(|(_, n)| n).sum();
                metrics.observe_batch(batch.len(), tokens, elapsed.as_secs_f64());
                for (&(pi, si), (text, _)) in batch.iter().zip(texts) {
                    let p = &mut pending[pi];
                    p.out[si] = Some(text);
                    p.in_batch[si] = false;
                    p.left -= 1;
                }
            }
            Err(e) => {
                for &pi in &touched {
                    pending[pi].failed = Some(e.clone());
                }
            }
        }
        // Answer what is finished (or failed).
        let mut i = 0;
        while i < pending.len() {
            let done = pending[i].left == 0 || pending[i].failed.is_some();
            if !done {
                i += 1;
                continue;
            }
            let p = pending.swap_remove(i);
            // swap_remove changes order; keep the oldest-first invariant cheap by re-sorting.
            let answer = match p.failed {
                Some(e) => {
                    metrics
                        .queue_depth
                        .fetch_sub(p.queued as i64, Ordering::Relaxed);
                    Err(e)
                }
                None => Ok(JobOutput {
                    texts: p.out.into_iter().map(Option::unwrap_or_default).collect(),
                    queue: p
                        .first_batch
                        .map_or(Duration::ZERO, |s| s.duration_since(p.enqueued)),
                    inference: p.inference,
                }),
            };
            let _ = p.reply.send(answer);
        }
        pending.sort_by_key(|p| p.enqueued);
    }
}
