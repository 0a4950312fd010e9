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
    /// Each text whole: chunked at the model's length, chunk vectors pooled and normalised
    /// (articles).
    Long,
}

pub(crate) type Reply = tokio::sync::oneshot::Sender<Result<Vec<Vec<f32>>, EngineError>>;

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
    let texts: Vec<&str> = jobs
        .iter()
        .flat_map(|j| j.texts.iter().map(String::as_str))
        .collect();
    let result = guarded(observer, || e.embed(&texts, BATCH));
    match result {
        Ok(vectors) => {
            let mut vectors = vectors.into_iter();
            for job in jobs {
                let mine: Vec<Vec<f32>> = vectors.by_ref().take(job.texts.len()).collect();
                let _ = job.reply.send(Ok(mine));
            }
        }
        Err(err) => {
            for job in jobs {
                let _ = job.reply.send(Err(err.clone()));
            }
        }
    }
}

fn run_long(e: &Embedder, job: Job, observer: &dyn Observer) {
    let result = guarded(observer, || {
        job.texts.iter().map(|t| e.embed_long(t)).collect()
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
        let (sentences, long): (Vec<Job>, Vec<Job>) = waiting
            .into_iter()
            .partition(|j| j.kind == EmbedKind::Sentences);
        if !sentences.is_empty() {
            run_sentences(e, sentences, observer);
        }
        for job in long {
            run_long(e, job, observer);
        }
    }
}
