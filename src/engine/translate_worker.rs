//! One translation model's worker thread: it owns the loaded model and serves its queue. Jobs
//! from every caller are merged into batches: longest sentences first, up to a token budget and
//! the job's row bound, one generation setting per batch. A job whose caller went away is
//! skipped before its sentences reach a batch.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::{chain, panic_message, EngineError, Generation, Observer};
use crate::model::marian::config::GenerationConfig;
use crate::model::marian::{TranslateError, TranslateOptions, Translator};

/// What a finished job sends back.
pub(crate) struct JobOutput {
    pub texts: Vec<String>,
    pub queue: Duration,
    pub inference: Duration,
}

pub(crate) type Reply = tokio::sync::oneshot::Sender<Result<JobOutput, EngineError>>;

/// Called with the number of a job's sentences each finished batch held.
pub(crate) type OnBatch = Box<dyn FnMut(usize) + Send>;

pub(crate) struct Job {
    pub texts: Vec<String>,
    pub generation: Generation,
    pub reply: Reply,
    pub enqueued: Instant,
    pub on_batch: Option<OnBatch>,
}

/// One job's sentences while they wait and run.
struct Pending {
    reply: Reply,
    generation: Generation,
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
    on_batch: Option<OnBatch>,
}

/// Tokenize a job (on the worker thread, off the async runtime).
fn admit(t: &Translator, job: Job, observer: &dyn Observer) -> Option<Pending> {
    let n = job.texts.len();
    let encoded = catch_unwind(AssertUnwindSafe(|| {
        job.texts
            .iter()
            .map(|s| t.encode(s))
            .collect::<Result<Vec<_>, _>>()
    }));
    let failure = match encoded {
        Ok(Ok(rows)) => {
            return Some(Pending {
                reply: job.reply,
                generation: job.generation,
                out: vec![None; n],
                rows,
                queued: n,
                left: n,
                enqueued: job.enqueued,
                first_batch: None,
                inference: Duration::ZERO,
                failed: None,
                on_batch: job.on_batch,
            })
        }
        Ok(Err(e)) => EngineError::Failed(chain(&e)),
        Err(p) => {
            observer.panicked();
            EngineError::Panicked(panic_message(p.as_ref()))
        }
    };
    observer.queued(-(n as i64));
    let _ = job.reply.send(Err(failure));
    None
}

/// Drops the jobs whose caller went away; their waiting sentences are never translated.
fn drop_cancelled(pending: &mut Vec<Pending>, observer: &dyn Observer) {
    pending.retain(|p| {
        if !p.reply.is_closed() {
            return true;
        }
        observer.queued(-(p.queued as i64));
        observer.cancelled(p.queued);
        tracing::debug!(
            sentences = p.queued,
            "request cancelled; skipping its sentences"
        );
        false
    });
}

/// The next batch: the oldest job's generation setting, longest sentences first, as many rows
/// as the token budget and the row bound allow (at least one). Pairs of (job, sentence), and
/// the generation settings they run with.
fn next_batch(
    t: &Translator,
    pending: &[Pending],
    budget: usize,
) -> Option<(Vec<(usize, usize)>, GenerationConfig)> {
    let first = pending.first()?;
    let generation = first.generation;
    let mut cands: Vec<(usize, usize)> = Vec::new();
    for (pi, p) in pending.iter().enumerate() {
        if p.generation != generation {
            continue;
        }
        // Sentences already done or in no batch yet: `out` is set when done, and a batch
        // always finishes before the next is chosen, so "not done" means "waiting".
        cands.extend(
            (0..p.out.len())
                .filter(|&si| p.out[si].is_none())
                .map(|si| (pi, si)),
        );
    }
    // Longest first; stable, so equal lengths keep arrival order.
    cands.sort_by_key(|&(pi, si)| std::cmp::Reverse(pending[pi].rows[si].len()));
    let longest = cands
        .first()
        .map_or(1, |&(pi, si)| pending[pi].rows[si].len());
    let gen = t.generation_config(&options(generation));
    let per_row = longest.max(1) * gen.num_beams.max(1);
    let take = (budget / per_row)
        .min(generation.max_rows.unwrap_or(usize::MAX))
        .clamp(1, cands.len().max(1));
    cands.truncate(take);
    (!cands.is_empty()).then_some((cands, gen))
}

fn options(g: Generation) -> TranslateOptions {
    TranslateOptions {
        num_beams: g.num_beams,
        max_new_tokens: g.max_new_tokens,
        ..TranslateOptions::default()
    }
}

/// Runs one batch; a panic inside the model is caught and becomes the batch's error.
fn run_batch(
    t: &Translator,
    rows: &[Vec<u32>],
    gen: &GenerationConfig,
    observer: &dyn Observer,
) -> Result<Vec<(String, usize)>, EngineError> {
    let result = catch_unwind(AssertUnwindSafe(|| {
        let ids = t.generate_batch(rows, gen)?;
        ids.iter()
            .map(|ids| Ok((t.tokenizer().decode(ids)?, ids.len())))
            .collect::<Result<Vec<_>, TranslateError>>()
    }));
    match result {
        Ok(Ok(texts)) if texts.len() == rows.len() => Ok(texts),
        Ok(Ok(_)) => Err(EngineError::Failed(
            "the model returned a wrong number of rows".into(),
        )),
        Ok(Err(e)) => Err(EngineError::Failed(chain(&e))),
        Err(p) => {
            observer.panicked();
            tracing::error!("model batch panicked: {}", panic_message(p.as_ref()));
            Err(EngineError::Panicked(panic_message(p.as_ref())))
        }
    }
}

/// Sends every finished (or failed) job its answer; keeps the rest oldest first.
fn answer_finished(pending: &mut Vec<Pending>, observer: &dyn Observer) {
    let mut i = 0;
    while i < pending.len() {
        if pending[i].left > 0 && pending[i].failed.is_none() {
            i += 1;
            continue;
        }
        let p = pending.swap_remove(i);
        let answer = match p.failed {
            Some(e) => {
                observer.queued(-(p.queued as i64));
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

/// The worker loop: take everything that is waiting, run one batch, answer finished jobs,
/// repeat. Jobs that arrive while a batch runs join the next one. Ends when every sender is
/// gone (the model was unloaded, or the engine dropped) and the queue is empty.
pub(crate) fn run(
    t: &Translator,
    rx: &mpsc::Receiver<Job>,
    budget: usize,
    observer: &dyn Observer,
) {
    let mut pending: Vec<Pending> = Vec::new();
    loop {
        if pending.is_empty() {
            match rx.recv() {
                Ok(job) => pending.extend(admit(t, job, observer)),
                Err(_) => return,
            }
        }
        while let Ok(job) = rx.try_recv() {
            pending.extend(admit(t, job, observer));
        }
        drop_cancelled(&mut pending, observer);
        let Some((batch, gen)) = next_batch(t, &pending, budget) else {
            continue;
        };
        let rows: Vec<Vec<u32>> = batch
            .iter()
            .map(|&(pi, si)| pending[pi].rows[si].clone())
            .collect();
        let start = Instant::now();
        for &(pi, _) in &batch {
            let p = &mut pending[pi];
            p.first_batch.get_or_insert(start);
            p.queued -= 1;
        }
        observer.queued(-(batch.len() as i64));
        let outcome = run_batch(t, &rows, &gen, observer);
        let elapsed = start.elapsed();
        let mut touched: Vec<usize> = batch.iter().map(|&(pi, _)| pi).collect();
        touched.sort_unstable();
        touched.dedup();
        for &pi in &touched {
            pending[pi].inference += elapsed;
        }
        match outcome {
            Ok(texts) => {
                let tokens: usize = texts.iter().map(|(_, n)| n).sum();
                observer.batch(batch.len(), tokens, elapsed.as_secs_f64());
                for (&(pi, si), (text, _)) in batch.iter().zip(texts) {
                    let p = &mut pending[pi];
                    p.out[si] = Some(text);
                    p.left -= 1;
                }
                for &pi in &touched {
                    let n = batch.iter().filter(|&&(p, _)| p == pi).count();
                    if let Some(f) = pending[pi].on_batch.as_mut() {
                        f(n);
                    }
                }
            }
            Err(e) => {
                for &pi in &touched {
                    pending[pi].failed = Some(e.clone());
                }
            }
        }
        answer_finished(&mut pending, observer);
    }
}
