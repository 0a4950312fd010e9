//! `POST /v1/align`: a batch of articles through the align workflow (translate, embed, group
//! into events), run one batch at a time on a thread of its own over the process's engine; the
//! same batch as a job that can be followed is in [`super::jobs`].

use std::collections::HashSet;
use std::sync::{mpsc, Arc, Mutex};

use axum::extract::State;
use axum::Json;
use tokio::sync::oneshot;

use super::validate::check_article;
use crate::app::align::{AlignOptions, PipelineError};
use crate::engine::{Engine, EngineError};
use crate::model::marian::TranslateOptions;
use crate::server::api::articles::{ignored_warnings, AlignRequest, AlignResponse};
use crate::server::api::BodyErrors;
use crate::server::errors::ApiError;
use crate::server::extract::Payload;
use crate::server::{AppState, ServerConfig, ServerError};
use crate::store::Store;
use crate::text::article::Article;

/// Where a batch's outcome goes: a waiting request, or a job that is followed.
pub(crate) enum AlignReply {
    Request(oneshot::Sender<Result<AlignResponse, ApiError>>),
    Job(Arc<super::jobs::Job>),
}

impl AlignReply {
    /// Nobody waits for it any more (the client went away).
    fn is_closed(&self) -> bool {
        match self {
            AlignReply::Request(tx) => tx.is_closed(),
            AlignReply::Job(_) => false,
        }
    }
}

/// Runs `app::align::align` jobs one at a time on a thread of its own; the models are the
/// engine's and the store is the process's, shared with every other request.
pub struct AlignWorker {
    pub(crate) tx: Mutex<mpsc::Sender<(Vec<Article>, AlignReply)>>,
}

impl AlignWorker {
    /// Starts the thread; its jobs use the process's engine and store.
    pub(crate) fn start(
        cfg: &ServerConfig,
        engine: Engine,
        store: Arc<dyn Store>,
    ) -> Result<Self, ServerError> {
        let (tx, rx) = mpsc::channel::<(Vec<Article>, AlignReply)>();
        let opts = AlignOptions {
            models: cfg.models.clone(),
            embed_model: cfg.embed_model.clone(),
            embed_source: false,
            translate: TranslateOptions::default(),
            compute_type: engine.config().compute_type,
            cluster: cfg.cluster,
            grouping: Default::default(),
            hub: cfg.hub,
            refresh: false,
            lease: crate::app::align::DEFAULT_LEASE,
            claim_size: crate::app::align::DEFAULT_CLAIM_SIZE,
        };
        std::thread::Builder::new()
            .name("tidings-align".into())
            .spawn(move || {
                while let Ok((articles, reply)) = rx.recv() {
                    if reply.is_closed() {
                        continue;
                    }
                    let st = &*store;
                    let mut progress = match &reply {
                        AlignReply::Job(job) => super::jobs::JobProgress::new(job.clone()),
                        AlignReply::Request(_) => super::jobs::JobProgress::none(),
                    };
                    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        crate::app::align::align(&articles, &engine, &opts, st, &mut progress)
                    }));
                    let answer = match result {
                        Ok(Ok(out)) => Ok(out),
                        Ok(Err(e)) => Err(pipeline_error(&e)),
                        Err(_) => Err(ApiError::internal("the align pipeline panicked")),
                    };
                    match reply {
                        // The embeddings stay behind: the answer does not carry them.
                        AlignReply::Request(tx) => {
                            let _ = tx.send(answer.map(AlignResponse::from));
                        }
                        AlignReply::Job(job) => job.finish(&articles, answer),
                    }
                }
            })?;
        Ok(Self { tx: Mutex::new(tx) })
    }
}

fn pipeline_error(e: &PipelineError) -> ApiError {
    match e {
        PipelineError::LoadEmbedder(_) | PipelineError::Engine(EngineError::Unavailable { .. }) => {
            ApiError::model_unavailable(e.to_string())
        }
        PipelineError::Route(r) => r.clone().into(),
        _ => ApiError::internal(e.to_string()),
    }
}

/// Translate articles and group them into events (what `tidings align` writes).
///
/// Batches run one at a time; the answer comes when the whole batch is done. Articles that
/// cannot be processed are listed in `skipped` with the reason.
#[utoipa::path(
    post,
    path = "/v1/align",
    tag = "articles",
    request_body = AlignRequest,
    responses((status = 200, body = AlignResponse), BodyErrors)
)]
pub(crate) async fn align(
    State(state): State<Arc<AppState>>,
    Payload(req): Payload<AlignRequest>,
) -> Result<Json<AlignResponse>, ApiError> {
    let (articles, warnings) = validated(&state, req)?;
    let (reply, rx) = oneshot::channel();
    state
        .align
        .tx
        .lock()
        .map_err(|_| ApiError::internal("align queue poisoned"))?
        .send((articles, AlignReply::Request(reply)))
        .map_err(|_| ApiError::shutting_down())?;
    let mut out = rx
        .await
        .map_err(|_| ApiError::internal("the align worker stopped"))??;
    out.warnings = warnings;
    Ok(Json(out))
}

/// The articles of an align batch, checked as `POST /v1/align` checks them, and the warnings
/// about fields ignored.
pub(crate) fn validated(
    state: &AppState,
    req: AlignRequest,
) -> Result<(Vec<Article>, Vec<String>), ApiError> {
    let warnings = ignored_warnings(
        req.articles
            .iter()
            .map(|a| (a.id.as_str(), a.ignored.as_slice())),
    );
    let articles: Vec<Article> = req.articles.into_iter().map(Article::from).collect();
    if articles.is_empty() {
        return Err(ApiError::invalid("no articles given"));
    }
    if articles.len() > state.cfg.max_items {
        return Err(ApiError::invalid(format!(
            "{} articles given; at most {} per request",
            articles.len(),
            state.cfg.max_items
        )));
    }
    let mut ids = HashSet::new();
    for (i, a) in articles.iter().enumerate() {
        check_article(state, a, i)?;
        if !ids.insert(a.id.as_str()) {
            return Err(ApiError::invalid(format!(
                "article id {} appears twice",
                a.id
            )));
        }
    }
    Ok((articles, warnings))
}
