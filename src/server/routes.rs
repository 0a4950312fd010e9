//! The `/v1` endpoints, and the translation core shared with the LibreTranslate endpoints:
//! per-item language detection, sentence splitting, routing each language to its model, and
//! putting the translations back together.

use std::collections::BTreeMap;
use std::sync::{mpsc, Arc};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::oneshot;
use tokio::task::JoinSet;

use super::errors::ApiError;
use super::extract::Payload;
use super::{AppState, ServerConfig, ServerError};
use crate::app::align::{AlignOptions, AlignOutput, PipelineError};
use crate::app::workflow::{OneError, StageError, Workflow};
use crate::engine::manifest::normalise_lang;
use crate::engine::{EmbedKind, Engine, EngineError, Generation, RouteError};
use crate::model::marian::TranslateOptions;
use crate::store::{EventInfo, Store};
use crate::text::article::Article;
use crate::text::detect::{detect as detect_lang, Detection};
use crate::text::segment::split_sentences;

type St = State<Arc<AppState>>;

impl From<RouteError> for ApiError {
    fn from(e: RouteError) -> Self {
        match e {
            RouteError::Unusable { .. } => ApiError::model_unavailable(e.to_string()),
            RouteError::NotServed { .. } | RouteError::NoModel { .. } => {
                ApiError::unsupported_language(e.to_string())
            }
        }
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::Unavailable { .. } => ApiError::model_unavailable(e.to_string()),
            EngineError::Stopped => ApiError::shutting_down(),
            EngineError::Failed(_) | EngineError::Panicked(_) => ApiError::internal(e.to_string()),
        }
    }
}

/// Time spent waiting for and inside model batches, summed over a request's model calls.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Timing {
    pub queue: Duration,
    pub inference: Duration,
}

impl Timing {
    /// `x-queue-ms` and `x-inference-ms`.
    pub fn headers(&self) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, d) in [
            ("x-queue-ms", self.queue),
            ("x-inference-ms", self.inference),
        ] {
            if let Ok(v) = HeaderValue::from_str(&format!("{:.3}", d.as_secs_f64() * 1e3)) {
                h.insert(name, v);
            }
        }
        h
    }
}

/// Translate `(lang, text)` pairs (English passes through), one model call per language, run
/// concurrently. Returns the translations in order and the model used per pair. Languages are
/// all checked before any model work starts.
pub(crate) async fn translate_by_lang(
    state: &Arc<AppState>,
    pairs: &[(String, String)],
    beam: Option<usize>,
) -> Result<(Vec<String>, Vec<Option<String>>, Timing), ApiError> {
    let mut out: Vec<String> = Vec::with_capacity(pairs.len());
    let mut models: Vec<Option<String>> = vec![None; pairs.len()];
    let mut by_lang: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, (lang, text)) in pairs.iter().enumerate() {
        out.push(text.clone());
        if lang != "en" && !text.trim().is_empty() {
            by_lang.entry(lang.as_str()).or_default().push(i);
        }
    }
    let mut jobs = Vec::new();
    for (lang, idx) in by_lang {
        jobs.push((state.source_for(lang)?, idx));
    }
    // Dropping the set (the client went away) aborts the tasks, which cancels their queued work.
    let mut set = JoinSet::new();
    for (source, idx) in jobs {
        let texts: Vec<String> = idx.iter().map(|&i| pairs[i].1.clone()).collect();
        let st = state.clone();
        set.spawn(async move {
            let r = st.engine.translate(&source, texts, beam).await;
            (idx, r)
        });
    }
    let mut timing = Timing::default();
    while let Some(joined) = set.join_next().await {
        let (idx, result) =
            joined.map_err(|e| ApiError::internal(format!("translation task failed: {e}")))?;
        let tr = result?;
        timing.queue = timing.queue.max(tr.queue);
        timing.inference += tr.inference;
        for (&i, text) in idx.iter().zip(tr.texts) {
            out[i] = text;
            models[i] = Some(tr.model.clone());
        }
    }
    Ok((out, models, timing))
}

/// One sentence of an input text: byte span in the whole text, and its line (paragraph).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct SentenceOut {
    pub paragraph: usize,
    pub start: usize,
    pub end: usize,
    pub source: String,
    pub translation: String,
}

/// One translated input text.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ItemOut {
    pub text: String,
    /// The language it was translated from.
    pub source_language: String,
    pub detected_language: Option<DetectedOut>,
    /// The model used (`org/name@revision` or folder); `null` when nothing needed one.
    pub model: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sentences: Option<Vec<SentenceOut>>,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct DetectedOut {
    pub code: String,
    pub confidence: f32,
}

impl From<&Detection> for DetectedOut {
    fn from(d: &Detection) -> Self {
        Self {
            code: d.lang.clone(),
            confidence: d.confidence,
        }
    }
}

/// Translate whole texts: detect each one's language (used when `source` is `None`), split it
/// into lines and sentences, translate the sentences, join them back (a space between
/// sentences, the original line breaks between lines).
pub(crate) async fn translate_texts(
    state: &Arc<AppState>,
    texts: &[String],
    source: Option<&str>,
    beam: Option<usize>,
) -> Result<(Vec<ItemOut>, Timing), ApiError> {
    let source = source.map(normalise_lang);
    let mut pairs: Vec<(String, String)> = Vec::new();
    let mut plans = Vec::new();
    for (i, text) in texts.iter().enumerate() {
        let detected = detect_lang(text);
        let lang = match (&source, &detected) {
            (Some(s), _) => s.clone(),
            (None, Some(d)) => d.lang.clone(),
            (None, None) => {
                return Err(ApiError::invalid(format!(
                    "cannot detect the language of text {i}; give \"source\""
                )))
            }
        };
        let mut spans = Vec::new();
        let mut offset = 0;
        for (pi, line) in text.split('\n').enumerate() {
            for r in split_sentences(line, &lang) {
                spans.push((pi, offset + r.start, offset + r.end, pairs.len()));
                pairs.push((lang.clone(), line[r].to_string()));
            }
            offset += line.len() + 1;
        }
        plans.push((lang, detected, spans, text.split('\n').count()));
    }
    let (translated, models, timing) = translate_by_lang(state, &pairs, beam).await?;
    let items = plans
        .into_iter()
        .map(|(lang, detected, spans, lines)| {
            let mut paragraphs = vec![Vec::new(); lines];
            let mut sentences = Vec::with_capacity(spans.len());
            let mut model = None;
            for &(pi, start, end, k) in &spans {
                if let Some(p) = paragraphs.get_mut(pi) {
                    p.push(translated[k].as_str());
                }
                if model.is_none() {
                    model = models[k].clone();
                }
                sentences.push(SentenceOut {
                    paragraph: pi,
                    start,
                    end,
                    source: pairs[k].1.clone(),
                    translation: translated[k].clone(),
                });
            }
            let text = paragraphs
                .iter()
                .map(|p| p.join(" "))
                .collect::<Vec<_>>()
                .join("\n");
            ItemOut {
                text,
                source_language: lang,
                detected_language: detected.as_ref().map(DetectedOut::from),
                model,
                sentences: Some(sentences),
            }
        })
        .collect();
    Ok((items, timing))
}

/// Checks a request's texts against the limits.
pub(crate) fn check_texts(state: &AppState, texts: &[String]) -> Result<(), ApiError> {
    if texts.is_empty() {
        return Err(ApiError::invalid("no texts given"));
    }
    if texts.len() > state.cfg.max_items {
        return Err(ApiError::invalid(format!(
            "{} texts given; at most {} per request",
            texts.len(),
            state.cfg.max_items
        )));
    }
    for (i, t) in texts.iter().enumerate() {
        if t.trim().is_empty() {
            return Err(ApiError::invalid(format!("text {i} is empty")));
        }
        let n = t.chars().count();
        if n > state.cfg.max_chars {
            return Err(ApiError::invalid(format!(
                "text {i} has {n} characters; at most {} are accepted",
                state.cfg.max_chars
            )));
        }
    }
    Ok(())
}

pub(crate) fn check_target(target: &str) -> Result<(), ApiError> {
    if normalise_lang(target) != "en" {
        return Err(ApiError::unsupported_language(format!(
            "target \"{target}\" is not supported: tidings translates into English (\"en\") only"
        )));
    }
    Ok(())
}

pub(crate) fn check_beam(state: &AppState, beam: Option<usize>) -> Result<(), ApiError> {
    match beam {
        Some(b) if b == 0 || b > state.cfg.max_beam => Err(ApiError::invalid(format!(
            "beam must be between 1 and {}",
            state.cfg.max_beam
        ))),
        _ => Ok(()),
    }
}

/// `"auto"` (or absent) means detect; anything else must be a served language.
pub(crate) fn parse_source(state: &AppState, source: &str) -> Result<Option<String>, ApiError> {
    let s = source.trim();
    if s.is_empty() || s.eq_ignore_ascii_case("auto") {
        return Ok(None);
    }
    let lang = normalise_lang(s);
    if lang != "en" {
        state.source_for(&lang)?;
    }
    Ok(Some(lang))
}

/// `{"text": ...}` or `{"texts": [...]}`: the texts, and whether a single one was given.
fn one_or_many(
    text: Option<String>,
    texts: Option<Vec<String>>,
) -> Result<(Vec<String>, bool), ApiError> {
    match (text, texts) {
        (Some(t), None) => Ok((vec![t], true)),
        (None, Some(ts)) => Ok((ts, false)),
        _ => Err(ApiError::invalid(
            "give exactly one of \"text\" and \"texts\"",
        )),
    }
}

fn default_auto() -> String {
    "auto".into()
}

fn default_en() -> String {
    "en".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TranslateRequest {
    text: Option<String>,
    texts: Option<Vec<String>>,
    #[serde(default = "default_auto")]
    source: String,
    #[serde(default = "default_en")]
    target: String,
    beam: Option<usize>,
    #[serde(default)]
    return_sentences: bool,
}

pub async fn translate(
    State(state): St,
    Payload(req): Payload<TranslateRequest>,
) -> Result<Response, ApiError> {
    let (texts, single) = one_or_many(req.text, req.texts)?;
    check_texts(&state, &texts)?;
    check_target(&req.target)?;
    check_beam(&state, req.beam)?;
    let source = parse_source(&state, &req.source)?;
    let (mut items, timing) = translate_texts(&state, &texts, source.as_deref(), req.beam).await?;
    if !req.return_sentences {
        items.iter_mut().for_each(|i| i.sentences = None);
    }
    let body = if single {
        serde_json::to_value(&items[0])
    } else {
        serde_json::to_value(json!({ "results": items }))
    }
    .map_err(|e| ApiError::internal(e.to_string()))?;
    Ok((timing.headers(), Json(body)).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TextsRequest {
    text: Option<String>,
    texts: Option<Vec<String>>,
}

fn detect_body(state: &AppState, req: TextsRequest) -> Result<Value, ApiError> {
    let (texts, single) = one_or_many(req.text, req.texts)?;
    check_texts(state, &texts)?;
    let results: Vec<Value> = texts
        .iter()
        .map(|t| match detect_lang(t) {
            Some(d) => json!({"code": d.lang, "confidence": d.confidence}),
            None => json!({"code": null, "confidence": 0.0}),
        })
        .collect();
    Ok(if single {
        results.into_iter().next().unwrap_or(Value::Null)
    } else {
        json!({ "results": results })
    })
}

pub async fn detect(
    State(state): St,
    Payload(req): Payload<TextsRequest>,
) -> Result<Json<Value>, ApiError> {
    detect_body(&state, req).map(Json)
}

pub async fn embed(
    State(state): St,
    Payload(req): Payload<TextsRequest>,
) -> Result<Json<Value>, ApiError> {
    let (texts, _) = one_or_many(req.text, req.texts)?;
    check_texts(&state, &texts)?;
    let (vectors, model) = state.engine.embed(texts, EmbedKind::Sentences).await?;
    let dim = vectors.first().map_or(0, Vec::len);
    Ok(Json(
        json!({"model": model, "dim": dim, "embeddings": vectors}),
    ))
}

// ---- align: the whole pipeline on a thread of its own ----

type AlignReply = oneshot::Sender<Result<AlignOutput, ApiError>>;

/// Runs `pipeline::align` jobs one at a time on a thread that keeps its models loaded.
pub struct AlignWorker {
    tx: std::sync::Mutex<mpsc::Sender<(Vec<Article>, AlignReply)>>,
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
            compute_type: cfg.compute_type,
            cluster: cfg.cluster,
            hub: cfg.hub,
        };
        std::thread::Builder::new()
            .name("tidings-align".into())
            .spawn(move || {
                while let Ok((articles, reply)) = rx.recv() {
                    if reply.is_closed() {
                        continue;
                    }
                    let st = &*store;
                    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        crate::app::align::align(
                            &articles,
                            &engine,
                            &opts,
                            st,
                            &mut crate::app::align::Silent,
                        )
                    }));
                    let answer = match result {
                        Ok(Ok(mut out)) => {
                            out.articles.iter_mut().for_each(|a| a.embedding.clear());
                            Ok(out)
                        }
                        Ok(Err(e)) => Err(pipeline_error(&e)),
                        Err(_) => Err(ApiError::internal("the align pipeline panicked")),
                    };
                    let _ = reply.send(answer);
                }
            })?;
        Ok(Self {
            tx: std::sync::Mutex::new(tx),
        })
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlignRequest {
    articles: Vec<Article>,
}

fn check_article(state: &AppState, a: &Article, i: usize) -> Result<(), ApiError> {
    if a.id.trim().is_empty() {
        return Err(ApiError::invalid(format!("article {i} has an empty id")));
    }
    if a.text.trim().is_empty() {
        return Err(ApiError::invalid(format!("article {} has no text", a.id)));
    }
    let n = a.text.chars().count() + a.title.as_deref().map_or(0, |t| t.chars().count());
    if n > state.cfg.max_chars {
        return Err(ApiError::invalid(format!(
            "article {} has {n} characters; at most {} are accepted",
            a.id, state.cfg.max_chars
        )));
    }
    Ok(())
}

pub async fn align(
    State(state): St,
    Payload(req): Payload<AlignRequest>,
) -> Result<Json<AlignOutput>, ApiError> {
    if req.articles.is_empty() {
        return Err(ApiError::invalid("no articles given"));
    }
    if req.articles.len() > state.cfg.max_items {
        return Err(ApiError::invalid(format!(
            "{} articles given; at most {} per request",
            req.articles.len(),
            state.cfg.max_items
        )));
    }
    let mut ids = std::collections::HashSet::new();
    for (i, a) in req.articles.iter().enumerate() {
        check_article(&state, a, i)?;
        if !ids.insert(a.id.as_str()) {
            return Err(ApiError::invalid(format!(
                "article id {} appears twice",
                a.id
            )));
        }
    }
    let (reply, rx) = oneshot::channel();
    state
        .align
        .tx
        .lock()
        .map_err(|_| ApiError::internal("align queue poisoned"))?
        .send((req.articles, reply))
        .map_err(|_| ApiError::shutting_down())?;
    let out = rx
        .await
        .map_err(|_| ApiError::internal("the align worker stopped"))??;
    Ok(Json(out))
}

// ---- online grouping ----

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArticleRequest {
    id: String,
    text: String,
    title: Option<String>,
    lang: Option<String>,
    published_at: Option<String>,
    url: Option<String>,
    beam: Option<usize>,
}

/// Translate, embed and group one article; answer with the event it joined.
pub async fn ingest_article(
    State(state): St,
    Payload(req): Payload<ArticleRequest>,
) -> Result<Response, ApiError> {
    check_beam(&state, req.beam)?;
    let article = Article {
        id: req.id,
        title: req.title,
        text: req.text,
        lang: req.lang,
        published_at: req.published_at,
        url: req.url,
    };
    check_article(&state, &article, 0)?;
    let already = state
        .online
        .lock()
        .map_err(|_| ApiError::internal("online state poisoned"))?
        .known
        .get(&article.id)
        .copied();
    if let Some(event) = already {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            format!("article {} is already in event {event}", article.id),
        ));
    }
    // The article workflow's stages, with the sentence and embedding caches, on a thread of
    // their own (they wait on the engine).
    let (st, art, beam) = (state.clone(), article.clone(), req.beam);
    let done = tokio::task::spawn_blocking(move || {
        let flow = Workflow {
            engine: &st.engine,
            store: &*st.store,
            embed_source: false,
            generation: Generation::beams(beam),
            chunk: usize::MAX,
        };
        flow.process_one(&art)
    })
    .await
    .map_err(|e| ApiError::internal(format!("the article task failed: {e}")))?
    .map_err(|e| one_error(e, &article.id))?;
    let timing = Timing {
        queue: done.queue,
        inference: done.inference,
    };
    let result = done.article;
    let (lang, title_en, translation) = (
        result.lang.clone(),
        result.title_en.clone(),
        result.translation.clone(),
    );
    // "lang=model" -> the models, once each.
    let mut used: Vec<String> = result
        .models
        .iter()
        .map(|m| m.split_once('=').map_or(m.as_str(), |(_, k)| k).to_string())
        .collect();
    used.sort();
    used.dedup();
    let vector = result.embedding;
    let day = article
        .published_at
        .as_deref()
        .and_then(crate::text::article::parse_date);

    let st = state.clone();
    let id = article.id.clone();
    let title_for_event = title_en.clone();
    let (assignment, record) = tokio::task::spawn_blocking(move || {
        let mut online = st
            .online
            .lock()
            .map_err(|_| ApiError::internal("online state poisoned"))?;
        if let Some(event) = online.known.get(&id) {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "conflict",
                format!("article {id} is already in event {event}"),
            ));
        }
        // Assign on a copy: the state only changes once the store has it.
        let mut grouper = online.grouper.clone();
        let a = grouper
            .assign(&vector, day)
            .map_err(|e| ApiError::internal(format!("grouping failed: {e}")))?;
        let event_id = a.event as i64 + 1;
        let store_err = |e: crate::store::StoreError| ApiError::internal(e.to_string());
        online
            .store
            .record_online_assignment(event_id, &id, a.similarity, &grouper.to_json())
            .map_err(store_err)?;
        if a.created {
            let info = EventInfo {
                title: Some(title_for_event),
                first_article: Some(id.clone()),
            };
            online
                .store
                .set_event_info(event_id, &info)
                .map_err(store_err)?;
        }
        online.grouper = grouper;
        online.known.insert(id, event_id);
        let record = online.store.event(event_id).map_err(store_err)?;
        Ok((a, record))
    })
    .await
    .map_err(|e| ApiError::internal(format!("grouping task failed: {e}")))??;

    let event = record.map(event_json).unwrap_or(Value::Null);
    let body = json!({
        "article": {
            "id": article.id,
            "lang": lang,
            "confidence": result.confidence,
            "title_en": title_en,
            "translation": translation,
            "models": used,
        },
        "event": event,
        "similarity": assignment.similarity,
        "created": assignment.created,
    });
    Ok((StatusCode::CREATED, timing.headers(), Json(body)).into_response())
}

fn one_error(e: OneError, id: &str) -> ApiError {
    match e {
        OneError::Empty => {
            ApiError::invalid(format!("article {id} has no text left after cleaning"))
        }
        OneError::Route(r) | OneError::Stage(StageError::Route(r)) => r.into(),
        OneError::Unavailable(reason) => ApiError::model_unavailable(reason),
        OneError::Stage(StageError::Engine(e)) => e.into(),
        OneError::Stage(StageError::Store(e)) => ApiError::internal(e.to_string()),
    }
}

fn parse_info(info: Option<&EventInfo>) -> Value {
    info.and_then(|i| serde_json::to_value(i).ok())
        .unwrap_or(Value::Null)
}

fn event_json(rec: crate::store::EventRecord) -> Value {
    let info = parse_info(rec.info.as_ref());
    json!({
        "id": rec.id,
        "title": info.get("title").cloned().unwrap_or(Value::Null),
        "info": info,
        "created_at": rec.created_at,
        "size": rec.members.len(),
        "members": rec.members,
    })
}

pub async fn events(State(state): St) -> Result<Json<Value>, ApiError> {
    let list = tokio::task::spawn_blocking(move || {
        let online = state
            .online
            .lock()
            .map_err(|_| ApiError::internal("online state poisoned"))?;
        online
            .store
            .events()
            .map_err(|e| ApiError::internal(e.to_string()))
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))??;
    let events: Vec<Value> = list
        .into_iter()
        .map(|e| {
            let info = parse_info(e.info.as_ref());
            json!({
                "id": e.id,
                "title": info.get("title").cloned().unwrap_or(Value::Null),
                "size": e.size,
                "created_at": e.created_at,
            })
        })
        .collect();
    Ok(Json(json!({ "events": events })))
}

pub async fn event(State(state): St, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let missing = || ApiError::not_found(format!("no event {id}"));
    let Ok(n) = id.parse::<i64>() else {
        return Err(missing());
    };
    let rec = tokio::task::spawn_blocking(move || {
        let online = state
            .online
            .lock()
            .map_err(|_| ApiError::internal("online state poisoned"))?;
        online
            .store
            .event(n)
            .map_err(|e| ApiError::internal(e.to_string()))
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))??;
    rec.map(|r| Json(event_json(r))).ok_or_else(missing)
}

pub async fn models(State(state): St) -> Result<Json<Value>, ApiError> {
    // Group the served languages by the model that serves them.
    let mut by_model: BTreeMap<String, (crate::model::hub::ModelSource, Vec<String>)> =
        BTreeMap::new();
    for lang in state.languages() {
        if let Ok(src) = state.source_for(&lang) {
            by_model
                .entry(src.to_string())
                .or_insert_with(|| (src.clone(), Vec::new()))
                .1
                .push(lang);
        }
    }
    let mut list = Vec::new();
    for (_, (src, langs)) in by_model {
        let (id, revision) = match &src {
            crate::model::hub::ModelSource::Hub { repo_id, revision } => {
                (repo_id.clone(), Some(revision.clone()))
            }
            crate::model::hub::ModelSource::Local(p) => (p.display().to_string(), None),
        };
        let license = state
            .cfg
            .manifest
            .entries()
            .iter()
            .find(|e| e.repo == id && !e.license.is_empty())
            .map(|e| e.license.clone());
        list.push(json!({
            "id": id,
            "revision": revision,
            "languages": langs,
            "license": license,
            "loaded": state.engine.is_loaded(&src),
        }));
    }
    let fallback = if state.cfg.languages.is_none() {
        state.cfg.manifest.fallback().map(|e| {
            let loaded = crate::model::hub::ModelSource::parse(&e.repo, Some(&e.revision))
                .map(|s| state.engine.is_loaded(&s))
                .unwrap_or(false);
            json!({"id": e.repo, "revision": e.revision, "languages": ["*"], "license": e.license, "loaded": loaded})
        })
    } else {
        None
    };
    Ok(Json(json!({
        "models": list,
        "fallback": fallback,
        "embedding_model": {
            "id": state.cfg.embed_model.to_string(),
            "loaded": state.engine.embedder_loaded(),
        }
    })))
}
