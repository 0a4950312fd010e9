//! The article workflow as stages, shared by `tidings align`, the server's align jobs and its
//! online ingest: **prepare** (clean, detect, split), **route** (each language to its model),
//! **translate** (deduplicated per language, through the sentence cache, then the engine),
//! **assemble** (English text and the sentence map), **embed** (through the embedding cache).
//! Grouping is the caller's: a batch groups all articles at once, the server one at a time.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use crate::engine::manifest::normalise_lang;
use crate::engine::{EmbedKind, Engine, EngineError, Generation, RouteError};
use crate::store::{Store, StoreError};
use crate::text::article::Article;
use crate::text::prepare::Prepared;

use super::align::{ArticleResult, SentenceMap};

/// Progress callbacks, so the CLI can draw bars without the workflow knowing about terminals.
pub trait Progress {
    fn stage(&mut self, _name: &str, _total: usize) {}
    fn advance(&mut self, _n: usize) {}
    /// A one-line notice for the user (a language going to the fallback model).
    fn notice(&mut self, _message: &str) {}
}

/// No progress reporting.
pub struct Silent;
impl Progress for Silent {}

/// What the stages need besides their input.
pub struct Workflow<'a> {
    pub engine: &'a Engine,
    pub store: &'a dyn Store,
    /// Embed the source text instead of translating (multilingual embedding models).
    pub embed_source: bool,
    pub generation: Generation,
    /// Sentences handed to the engine (and committed to the cache) at a time.
    pub chunk: usize,
}

/// The language a paragraph is translated from: its own, else the article's, else "und"
/// (undetermined), which the manifest routes to its fallback model.
pub fn effective_lang(own: Option<&str>, article: Option<&str>) -> String {
    own.or(article)
        .map(normalise_lang)
        .unwrap_or_else(|| "und".into())
}

/// The units of a prepared article that need a model: the title, then each paragraph's
/// sentences, with their language.
fn units(p: &Prepared) -> impl Iterator<Item = (String, Vec<&str>)> {
    let title_lang = effective_lang(None, p.lang.as_deref());
    let title = std::iter::once((title_lang, vec![p.title.as_str()]))
        .filter(|(_, t)| !t[0].trim().is_empty());
    let paragraphs = p.paragraphs.iter().map(move |para| {
        let texts: Vec<&str> = para.sentences.iter().map(|s| s.text.as_str()).collect();
        (
            effective_lang(para.lang.as_deref(), p.lang.as_deref()),
            texts,
        )
    });
    title.chain(paragraphs)
}

/// Sentences still to translate for one language, deduplicated, and the articles using them.
#[derive(Default)]
pub struct LangWork {
    pub sentences: Vec<String>,
    index: HashMap<String, usize>,
    /// Keys (article positions) of the articles that need this language.
    pub articles: Vec<usize>,
}

/// Stage 2: every sentence that needs a model, by language. Articles with a language no model
/// serves come back apart, with the reason.
pub fn route(
    prepared: &BTreeMap<usize, Prepared>,
    engine: &Engine,
    embed_source: bool,
) -> (BTreeMap<String, LangWork>, BTreeMap<usize, RouteError>) {
    let mut per_lang: BTreeMap<String, LangWork> = BTreeMap::new();
    let mut unroutable = BTreeMap::new();
    if embed_source {
        return (per_lang, unroutable);
    }
    for (&i, p) in prepared {
        for (lang, texts) in units(p) {
            if lang == "en" {
                continue;
            }
            if let Err(e) = engine.router().source_for(&lang) {
                unroutable.insert(i, e);
                continue;
            }
            let work = per_lang.entry(lang).or_default();
            if work.articles.last() != Some(&i) {
                work.articles.push(i);
            }
            for text in texts {
                if !work.index.contains_key(text) {
                    work.index.insert(text.to_string(), work.sentences.len());
                    work.sentences.push(text.to_string());
                }
            }
        }
    }
    (per_lang, unroutable)
}

/// What the translate stage produced.
#[derive(Default)]
pub struct Translations {
    /// (language, sentence) -> English.
    pub text: HashMap<(String, String), String>,
    /// Language -> the model that translated it (`org/name@revision`, or with ` [int8]`).
    pub models: HashMap<String, String>,
    /// Languages whose model could not be loaded, with the reason.
    pub failed: BTreeMap<String, String>,
    /// Longest wait of a job for its first batch.
    pub queue: Duration,
    /// Time in the batches that held the sentences.
    pub inference: Duration,
}

/// One article through the stages, and the time its translation took.
pub struct Processed {
    pub article: ArticleResult,
    pub queue: Duration,
    pub inference: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Route(#[from] RouteError),
}

impl Workflow<'_> {
    /// Stage 3: translate each language's sentences: cached ones from the store, the rest
    /// through the engine in chunks, each chunk committed to the cache as it finishes. A model
    /// that cannot be loaded costs its language (reported in `failed`), not the run.
    pub fn translate(
        &self,
        per_lang: &BTreeMap<String, LangWork>,
        progress: &mut dyn Progress,
    ) -> Result<Translations, StageError> {
        let mut out = Translations::default();
        for (lang, work) in per_lang {
            let source = self.engine.router().source_for(lang)?;
            let model = match self.engine.load_blocking(&source) {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!("{e}");
                    out.failed.insert(lang.clone(), e.to_string());
                    progress.advance(work.sentences.len());
                    continue;
                }
            };
            out.models.insert(lang.clone(), model.cache_key.clone());
            let revision = model.cache_revision(&self.generation);
            let sentences: Vec<&str> = work.sentences.iter().map(String::as_str).collect();
            let cached = self
                .store
                .get_translations(&model.cache_key, &revision, &sentences)?;
            let mut missing = Vec::new();
            for (s, hit) in work.sentences.iter().zip(cached) {
                match hit {
                    Some(t) => {
                        out.text.insert((lang.clone(), s.clone()), t);
                        progress.advance(1);
                    }
                    None => missing.push(s.clone()),
                }
            }
            // Chunks keep memory bounded and let the cache absorb partial progress.
            for chunk in missing.chunks(self.chunk.max(1)) {
                let done = self.engine.translate_blocking(
                    &source,
                    chunk.to_vec(),
                    self.generation,
                    |n| progress.advance(n),
                )?;
                out.queue = out.queue.max(done.queue);
                out.inference += done.inference;
                let pairs: Vec<(String, String)> = chunk.iter().cloned().zip(done.texts).collect();
                self.store
                    .put_translations(&model.cache_key, &revision, &pairs)?;
                for (s, t) in pairs {
                    out.text.insert((lang.clone(), s), t);
                }
            }
        }
        Ok(out)
    }

    /// Stage 5: the article's vector, from the embedding cache or the engine.
    pub fn embed(&self, result: &mut ArticleResult) -> Result<(), StageError> {
        let text = format!("{}\n{}", result.title_en, result.translation);
        let model = self.engine.load_embedder_blocking()?;
        result.embedding = match self.store.get_embedding(&model.cache_key, &text)? {
            Some(v) => v,
            None => {
                let (mut vectors, _) = self
                    .engine
                    .embed_blocking(vec![text.clone()], EmbedKind::Long)?;
                let v = vectors.pop().unwrap_or_default();
                self.store.put_embedding(&model.cache_key, &text, &v)?;
                v
            }
        };
        Ok(())
    }

    /// Prepare → route → translate → assemble → embed for one article (the server's online
    /// ingest): the same stages as a batch, with the same caches.
    pub fn process_one(&self, article: &Article) -> Result<Processed, OneError> {
        let p = crate::text::prepare::prepare(article);
        if p.paragraphs.is_empty() {
            return Err(OneError::Empty);
        }
        let prepared = BTreeMap::from([(0, p)]);
        let (per_lang, unroutable) = route(&prepared, self.engine, self.embed_source);
        if let Some(e) = unroutable.into_values().next() {
            return Err(OneError::Route(e));
        }
        let translations = self.translate(&per_lang, &mut Silent)?;
        if let Some(reason) = translations.failed.values().next() {
            let reason = reason.clone();
            return Err(OneError::Unavailable(reason));
        }
        let mut result = assemble(article, &prepared[&0], &translations, self.embed_source);
        self.embed(&mut result)?;
        Ok(Processed {
            article: result,
            queue: translations.queue,
            inference: translations.inference,
        })
    }
}

/// Why one article could not be processed.
#[derive(Debug, thiserror::Error)]
pub enum OneError {
    #[error("no text left after cleaning")]
    Empty,
    #[error(transparent)]
    Route(RouteError),
    #[error("{0}")]
    Unavailable(String),
    #[error(transparent)]
    Stage(#[from] StageError),
}

/// Stage 4: the English text of a prepared article and its sentence map (no vector yet).
pub fn assemble(
    article: &Article,
    p: &Prepared,
    translations: &Translations,
    embed_source: bool,
) -> ArticleResult {
    let english = |lang: &str, text: &str| -> String {
        if lang == "en" || embed_source {
            text.to_string()
        } else {
            translations
                .text
                .get(&(lang.to_string(), text.to_string()))
                .cloned()
                .unwrap_or_default()
        }
    };
    let mut sentences = Vec::new();
    let mut paragraphs_en = Vec::new();
    let mut used_models: Vec<String> = Vec::new();
    for (pi, para) in p.paragraphs.iter().enumerate() {
        let lang = effective_lang(para.lang.as_deref(), p.lang.as_deref());
        let mut en = Vec::new();
        for s in &para.sentences {
            let t = english(&lang, &s.text);
            en.push(t.clone());
            sentences.push(SentenceMap {
                paragraph: pi,
                start: s.start,
                end: s.end,
                source: s.text.clone(),
                lang: lang.clone(),
                translation: t,
            });
        }
        if let Some(k) = translations.models.get(&lang) {
            let m = format!("{lang}={k}");
            if !used_models.contains(&m) {
                used_models.push(m);
            }
        }
        paragraphs_en.push(en.join(" "));
    }
    let title_lang = effective_lang(None, p.lang.as_deref());
    ArticleResult {
        id: p.id.clone(),
        lang: p.lang.clone().unwrap_or_else(|| "und".into()),
        confidence: p.confidence,
        title: p.title.clone(),
        title_en: english(&title_lang, &p.title),
        translation: paragraphs_en.join("\n\n"),
        sentences,
        models: used_models,
        published_day: article
            .published_at
            .as_deref()
            .and_then(crate::text::article::parse_date),
        removed_lines: p.removed.len(),
        embedding: Vec::new(),
    }
}
