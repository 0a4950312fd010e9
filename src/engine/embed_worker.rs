//! The embedding model's worker thread: it owns the loaded embedder and serves its queue.
//! Sentence jobs waiting together are embedded in one length-sorted run, so concurrent callers
//! share batches; whole-article jobs are chunked and pooled per text.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc;

use super::{chain, panic_message, EngineError, Observer};
use crate::model::embed::Embedder;

/// How the texts of a job are embedded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmbedKind {
    /// Each text as sentence-transformers `encode` gives it (truncated at the model's length).
    Sentences,
    /// As `Sentences`, but a text longer than the model's length is refused
    /// ([`EngineError::TooLong`]) instead of truncated.
    Strict,
    /// Each text whole: chunked at the model's length, chunk vectors pooled and normalised
    /// (articles).
    Long,
}

/// A job's vectors, in order, and the tokens the model read for them.
#[derive(Debug, Clone, Default)]
pub struct Embedded {
    pub vectors: Vec<Vec<f32>>,
    pub tokens: usize,
}

pub(crate) type Reply = tokio::sync::oneshot::Sender<Result<Embedded, EngineError>>;

pub(crate) struct Job {
    pub texts: Vec<String>,
    pub kind: EmbedKind,
    pub reply: Reply,
}

/// Rows per encoder batch.
const BATCH: usize = 32;

fn guarded<T>(
    observer: &dyn Observer,
    f: impl FnOnce() -> Result<T, crate::model::embed::EmbedError>,
) -> Result<T, EngineError> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(EngineError::Failed(chain(&e))),
        Err(p) => {
            observer.panicked();
            Err(EngineError::Panicked(panic_message(p.as_ref())))
        }
    }
}

/// Embeds every waiting sentence job in one run and answers each with its own vectors.
fn run_sentences(e: &Embedder, jobs: Vec<Job>, observer: &dyn Observer) {
    // Each text is tokenized once; a strict job with a text over the length is answered here.
    let mut kept = Vec::with_capacity(jobs.len());
    let mut rows: Vec<Vec<u32>> = Vec::new();
    for job in jobs {
        match guarded(observer, || job_rows(e, &job)) {
            Ok(Ok(mine)) => {
                let tokens = mine.iter().map(Vec::len).sum();
                rows.extend(mine);
                kept.push((job, tokens));
            }
            Ok(Err(too_long)) | Err(too_long) => {
                let _ = job.reply.send(Err(too_long));
            }
        }
    }
    if rows.is_empty() {
        return;
    }
    match guarded(observer, || e.embed_ids(&rows, BATCH)) {
        Ok(vectors) => {
            let mut vectors = vectors.into_iter();
            for (job, tokens) in kept {
                let mine: Vec<Vec<f32>> = vectors.by_ref().take(job.texts.len()).collect();
                let _ = job.reply.send(Ok(Embedded {
                    vectors: mine,
                    tokens,
                }));
            }
        }
        Err(err) => {
            for (job, _) in kept {
                let _ = job.reply.send(Err(err.clone()));
            }
        }
    }
}

/// A job's token id rows as the encoder reads them; for a strict job, the first text the
/// model would have to cut, as an error. Only a row at the length limit can have been cut, so
/// only such a row is counted again without truncation.
fn job_rows(
    e: &Embedder,
    job: &Job,
) -> Result<Result<Vec<Vec<u32>>, EngineError>, crate::model::embed::EmbedError> {
    let max = e.max_seq_length();
    let mut rows = Vec::with_capacity(job.texts.len());
    for (index, text) in job.texts.iter().enumerate() {
        let ids = e.token_ids(text)?;
        if job.kind == EmbedKind::Strict && ids.len() >= max {
            let tokens = e.token_count(text)?;
            if tokens > max {
                return Ok(Err(EngineError::TooLong { index, tokens, max }));
            }
        }
        rows.push(ids);
    }
    Ok(Ok(rows))
}

fn run_long(e: &Embedder, job: Job, observer: &dyn Observer) {
    let result = guarded(observer, || {
        let mut embedded = Embedded::default();
        for t in &job.texts {
            let (vector, tokens) = e.embed_long_counted(t)?;
            embedded.vectors.push(vector);
            embedded.tokens += tokens;
        }
        Ok(embedded)
    });
    let _ = job.reply.send(result);
}

/// The worker loop: take everything waiting, embed the sentence jobs together, then the long
/// ones, repeat. Ends when every sender is gone.
pub(crate) fn run(e: &Embedder, rx: &mpsc::Receiver<Job>, observer: &dyn Observer) {
    while let Ok(first) = rx.recv() {
        let mut waiting = vec![first];
        waiting.extend(rx.try_iter());
        // A job whose caller went away is not worth embedding.
        waiting.retain(|j| !j.reply.is_closed());
        let (sentences, long): (Vec<Job>, Vec<Job>) =
            waiting.into_iter().partition(|j| j.kind != EmbedKind::Long);
        if !sentences.is_empty() {
            run_sentences(e, sentences, observer);
        }
        for job in long {
            run_long(e, job, observer);
        }
    }
}
