//! `POST /v1/translate`, and the translation core shared with the LibreTranslate endpoints
//! and the online ingest: per-text language detection, sentence splitting, routing each
//! language to its model through the engine, and putting the translations back together.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use tokio::task::JoinSet;

use super::validate::{check_beam, check_target, check_texts, one_or_many, parse_source};
use std::sync::atomic::Ordering;

use crate::engine::manifest::normalise_lang;
use crate::engine::{EngineError, Generation, Translated};
use crate::model::hub::ModelSource;
use crate::server::api::translate::{
    DetectedLanguage, TranslateRequest, TranslateResponse, TranslatedSentence, TranslatedText,
};
use crate::server::api::BodyErrors;
use crate::server::errors::ApiError;
use crate::server::extract::Payload;
use crate::server::AppState;
use crate::text::detect::{detect as detect_lang, Detection, RELIABLE_CONFIDENCE};
use crate::text::segment::split_sentences;

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
            let r = cached_translate(&st, &source, texts, beam).await;
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

/// Sentences translated before (by this process or any other on the store) come from the
/// store's cache, keyed by model, revision, generation settings and sentence; the rest from the
/// engine, and then into the cache. A store that cannot be reached costs the cache, not the
/// request.
async fn cached_translate(
    state: &Arc<AppState>,
    source: &ModelSource,
    texts: Vec<String>,
    beam: Option<usize>,
) -> Result<Translated, EngineError> {
    let model = state.engine.load(source).await?;
    let generation = Generation::beams(beam);
    let key = Arc::new((model.cache_key.clone(), model.cache_revision(&generation)));
    let texts = Arc::new(texts);
    let (st, k, t) = (state.clone(), key.clone(), texts.clone());
    let cached = tokio::task::spawn_blocking(move || {
        let refs: Vec<&str> = t.iter().map(String::as_str).collect();
        st.store.get_translations(&k.0, &k.1, &refs)
    })
    .await;
    let cached = match cached {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            tracing::warn!("translating without the cache: {e}");
            vec![None; texts.len()]
        }
        Err(e) => {
            tracing::warn!("translating without the cache: {e}");
            vec![None; texts.len()]
        }
    };
    let missing: Vec<usize> = (0..texts.len()).filter(|&i| cached[i].is_none()).collect();
    let metrics = &state.metrics;
    metrics
        .cache_hits
        .fetch_add((texts.len() - missing.len()) as u64, Ordering::Relaxed);
    metrics
        .cache_misses
        .fetch_add(missing.len() as u64, Ordering::Relaxed);
    let mut out: Vec<String> = cached.into_iter().map(Option::unwrap_or_default).collect();
    if missing.is_empty() {
        return Ok(Translated {
            texts: out,
            model: model.name,
            queue: Duration::ZERO,
            inference: Duration::ZERO,
        });
    }
    let todo: Vec<String> = missing.iter().map(|&i| texts[i].clone()).collect();
    let done = state.engine.translate(source, todo, beam).await?;
    // The sentences for the cache come from the request's own texts, not a second copy.
    let pairs: Vec<(String, String)> = missing
        .iter()
        .zip(&done.texts)
        .map(|(&i, t)| (texts[i].clone(), t.clone()))
        .collect();
    for (&i, t) in missing.iter().zip(done.texts) {
        out[i] = t;
    }
    let st = state.clone();
    // Written behind the answer: a slow store does not hold the client.
    tokio::task::spawn_blocking(move || {
        if let Err(e) = st.store.put_translations(&key.0, &key.1, &pairs) {
            tracing::warn!("cannot cache translations: {e}");
        }
    });
    Ok(Translated {
        texts: out,
        model: done.model,
        queue: done.queue,
        inference: done.inference,
    })
}

impl From<&Detection> for DetectedLanguage {
    fn from(d: &Detection) -> Self {
        Self {
            code: d.lang.clone(),
            confidence: f64::from(d.confidence),
            reliable: d.reliable,
        }
    }
}

/// Translate whole texts: detect each one's language (used when `source` is `None`), split it
/// into lines and sentences, translate the sentences, join them back (a space between
/// sentences, the original line breaks between lines). Every result has its sentence map.
///
/// Without `source`, a text is translated from its own language only when its detection is
/// reliable ([`RELIABLE_CONFIDENCE`]); otherwise it takes the request's language, where the
/// request has one (see [`request_lang`]); otherwise the request is refused with a 422 asking for
/// `source`. A guess never picks a model.
pub(crate) async fn translate_texts(
    state: &Arc<AppState>,
    texts: &[String],
    source: Option<&str>,
    beam: Option<usize>,
) -> Result<(Vec<TranslatedText>, Timing), ApiError> {
    let source = source.map(normalise_lang);
    let detections: Vec<Option<Detection>> = texts.iter().map(|t| detect_lang(t)).collect();
    let request = match source {
        Some(_) => None,
        None => request_lang(texts, &detections),
    };
    let mut pairs: Vec<(String, String)> = Vec::new();
    let mut plans = Vec::new();
    for (i, (text, detected)) in texts.iter().zip(detections).enumerate() {
        let lang = match (&source, &detected, &request) {
            (Some(s), _, _) => s.clone(),
            (None, Some(d), _) if d.reliable => d.lang.clone(),
            (None, _, Some(r)) => r.clone(),
            (None, Some(d), None) => {
                return Err(ApiError::invalid(format!(
                    "cannot tell the language of text {i} reliably (best guess \"{}\", \
                     confidence {:.3}, below {RELIABLE_CONFIDENCE}); give \"source\"",
                    d.lang, d.confidence
                )))
            }
            (None, None, None) => {
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
                sentences.push(TranslatedSentence {
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
            TranslatedText {
                text,
                source_language: lang,
                detected_language: detected.as_ref().map(DetectedLanguage::from),
                model,
                sentences: Some(sentences),
            }
        })
        .collect();
    Ok((items, timing))
}

/// The language of a request's texts taken together, for its texts too short to judge alone:
/// the one language of all its reliably detected texts when they agree; when none is reliable
/// alone, the reliable detection of all of them joined; else none (a mixed or undecidable
/// request gives its short texts no language).
fn request_lang(texts: &[String], detections: &[Option<Detection>]) -> Option<String> {
    let reliable: BTreeSet<&str> = detections
        .iter()
        .flatten()
        .filter(|d| d.reliable)
        .map(|d| d.lang.as_str())
        .collect();
    match reliable.len() {
        1 => reliable.first().map(|l| l.to_string()),
        0 if texts.len() > 1 => detect_lang(&texts.join("\n"))
            .filter(|d| d.reliable)
            .map(|d| d.lang),
        _ => None,
    }
}

/// Translate one text or many into English.
///
/// Each text's language is detected unless `source` is given; texts are split into lines and
/// sentences, and each language goes to its own model.
#[utoipa::path(
    post,
    path = "/v1/translate",
    tag = "translation",
    request_body = TranslateRequest,
    responses(
        (status = 200, description = "One result for `text`, `results` for `texts`",
            body = TranslateResponse,
            headers(
                ("x-queue-ms" = String, description = "milliseconds waiting for a model batch"),
                ("x-inference-ms" = String, description = "milliseconds inside model batches")
            )),
        BodyErrors
    )
)]
pub(crate) async fn translate(
    State(state): State<Arc<AppState>>,
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
        let item = items.into_iter().next();
        TranslateResponse::One(item.ok_or_else(|| ApiError::internal("no translation"))?)
    } else {
        TranslateResponse::Many { results: items }
    };
    Ok((timing.headers(), Json(body)).into_response())
}
