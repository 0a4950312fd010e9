//! Align jobs that can be followed: `POST /v1/align/jobs` queues a batch for the align worker
//! and answers at once with the job's id; `GET /v1/align/jobs/{id}` says where it is (stage,
//! units done of total) and, once done, carries what `POST /v1/align` answers plus the plot.
//! The web page polls it to show progress. Jobs live in memory; the newest
//! [`KEPT_JOBS`] are kept.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::align::{validated, AlignReply};
use crate::app::align::{AlignOutput, Progress};
use crate::server::api::articles::{AlignRequest, AlignResponse};
use crate::server::api::jobs::AlignJob;
use crate::server::api::{BodyErrors, ErrorBody};
use crate::server::errors::ApiError;
use crate::server::extract::Payload;
use crate::server::AppState;
use crate::text::article::Article;

/// Finished jobs kept for `GET` (the newest); jobs still queued or running are always kept.
pub(crate) const KEPT_JOBS: usize = 64;
/// Jobs queued or running at once; more are refused (429) until one finishes.
pub(crate) const MAX_UNFINISHED_JOBS: usize = 16;

/// One job and its state, shared by the worker (which writes) and the handlers (which read).
pub(crate) struct Job {
    id: String,
    state: Mutex<AlignJob>,
}

impl Job {
    fn new(id: String) -> Self {
        Self {
            id: id.clone(),
            state: Mutex::new(AlignJob {
                id,
                status: "queued".into(),
                stage: None,
                done: 0,
                total: 0,
                notices: Vec::new(),
                result: None,
                plot_svg: None,
                error: None,
            }),
        }
    }

    fn update(&self, f: impl FnOnce(&mut AlignJob)) {
        if let Ok(mut s) = self.state.lock() {
            f(&mut s);
        }
    }

    fn unfinished(&self) -> bool {
        self.state
            .lock()
            .map(|s| s.status == "queued" || s.status == "running")
            .unwrap_or(false)
    }

    fn snapshot(&self) -> AlignJob {
        self.state
            .lock()
            .map(|s| s.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    /// Records the outcome (the plot is drawn here, while the embeddings are at hand).
    pub(crate) fn finish(&self, _articles: &[Article], answer: Result<AlignOutput, ApiError>) {
        match answer {
            Ok(out) => {
                let svg = crate::app::plot::events_svg(&out);
                let result = AlignResponse::from(out);
                self.update(|s| {
                    s.status = "done".into();
                    s.result = Some(result);
                    s.plot_svg = Some(svg);
                });
            }
            Err(e) => self.update(|s| {
                s.status = "failed".into();
                s.error = Some(ErrorBody {
                    error: e.message,
                    kind: e.kind.to_string(),
                });
            }),
        }
    }
}

/// The jobs of this process, newest last.
#[derive(Default)]
pub(crate) struct Jobs {
    list: Mutex<VecDeque<Arc<Job>>>,
}

static JOB_COUNTER: AtomicU64 = AtomicU64::new(0);

impl Jobs {
    /// A new queued job, or 429 when [`MAX_UNFINISHED_JOBS`] are queued or running.
    fn add(&self) -> Result<Arc<Job>, ApiError> {
        let mut list = self
            .list
            .lock()
            .map_err(|_| ApiError::internal("the job list is poisoned"))?;
        if list.iter().filter(|j| j.unfinished()).count() >= MAX_UNFINISHED_JOBS {
            let mut e = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "overloaded",
                format!(
                    "{MAX_UNFINISHED_JOBS} align jobs are queued or running; retry when one has finished"
                ),
            );
            e.retry_after = Some(5);
            return Err(e);
        }
        let n = JOB_COUNTER.fetch_add(1, Ordering::Relaxed);
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros());
        let job = Arc::new(Job::new(format!("job-{t:x}-{n}")));
        list.push_back(job.clone());
        // Forget the oldest finished jobs beyond the limit; unfinished ones stay.
        while list.iter().filter(|j| !j.unfinished()).count() > KEPT_JOBS {
            let Some(pos) = list.iter().position(|j| !j.unfinished()) else {
                break;
            };
            list.remove(pos);
        }
        Ok(job)
    }

    fn get(&self, id: &str) -> Option<Arc<Job>> {
        let list = self.list.lock().ok()?;
        list.iter().find(|j| j.id == id).cloned()
    }
}

/// Progress of a batch, written into its job (or nowhere, for a plain request).
pub(crate) struct JobProgress(Option<Arc<Job>>);

impl JobProgress {
    pub(crate) fn new(job: Arc<Job>) -> Self {
        Self(Some(job))
    }
    pub(crate) fn none() -> Self {
        Self(None)
    }
}

impl Progress for JobProgress {
    fn stage(&mut self, name: &str, total: usize) {
        if let Some(job) = &self.0 {
            job.update(|s| {
                s.status = "running".into();
                s.stage = Some(name.to_string());
                s.done = 0;
                s.total = total;
            });
        }
    }
    fn advance(&mut self, n: usize) {
        if let Some(job) = &self.0 {
            job.update(|s| s.done = (s.done + n).min(s.total.max(s.done + n)));
        }
    }
    fn notice(&mut self, message: &str) {
        if let Some(job) = &self.0 {
            job.update(|s| s.notices.push(message.to_string()));
        }
    }
}

/// Start an align job: the same batch as `POST /v1/align`, answered at once with the job to
/// follow (202).
#[utoipa::path(
    post,
    path = "/v1/align/jobs",
    tag = "articles",
    request_body = AlignRequest,
    responses((status = 202, body = AlignJob), BodyErrors)
)]
pub(crate) async fn create(
    State(state): State<Arc<AppState>>,
    Payload(req): Payload<AlignRequest>,
) -> Result<Response, ApiError> {
    let (articles, warnings) = validated(&state, req)?;
    let job = state.jobs.add()?;
    job.update(|s| s.notices.extend(warnings));
    state
        .align
        .tx
        .lock()
        .map_err(|_| ApiError::internal("align queue poisoned"))?
        .send((articles, AlignReply::Job(job.clone())))
        .map_err(|_| ApiError::shutting_down())?;
    Ok((StatusCode::ACCEPTED, Json(job.snapshot())).into_response())
}

/// Where an align job is; its result and plot once done.
#[utoipa::path(
    get,
    path = "/v1/align/jobs/{id}",
    tag = "articles",
    params(("id" = String, Path, description = "The job id")),
    responses(
        (status = 200, body = AlignJob),
        (status = 404, description = "No such job (or an old one no longer kept)", body = ErrorBody)
    )
)]
pub(crate) async fn status(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<AlignJob>, ApiError> {
    state
        .jobs
        .get(&id)
        .map(|j| Json(j.snapshot()))
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "no align job {id} (only the newest {KEPT_JOBS} are kept)"
            ))
        })
}
