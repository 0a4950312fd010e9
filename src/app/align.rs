//! From articles to events: prepare (clean, detect, split), translate per language with the
//! manifest's models, embed the English text, group, explain. Every finished article is stored
//! at once, so an interrupted run resumes where it stopped.

use std::collections::{BTreeMap, HashMap};

use candle_core::Device;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::engine::manifest::{normalise_lang, Manifest};
use crate::group::cluster::{self, ClusterOptions};
use crate::model::embed::Embedder;
use crate::model::hub::{HubOptions, ModelRepo, ModelSource};
use crate::model::marian::ComputeType;
use crate::model::marian::{TranslateOptions, Translator};
use crate::store::Store;
use crate::text::article::Article;
use crate::text::prepare::{prepare, Prepared};

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("no model translates \"{lang}\" into English (article {article}); supported: {supported}. Add one with --model {lang}=HUB_ID|DIR")]
    NoModel {
        lang: String,
        article: String,
        supported: String,
    },
    #[error("cannot load the translation model {model}: {source}")]
    LoadTranslator {
        model: String,
        #[source]
        source: Box<crate::model::marian::TranslateError>,
    },
    #[error("cannot load the embedding model {model}: {source}")]
    LoadEmbedder {
        model: String,
        #[source]
        source: Box<crate::model::embed::EmbedError>,
    },
    #[error(transparent)]
    Translate(Box<crate::model::marian::TranslateError>),
    #[error(transparent)]
    Embed(Box<crate::model::embed::EmbedError>),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Hub(#[from] crate::model::hub::HubError),
    #[error("cannot group the articles: {0}")]
    Cluster(#[from] crate::group::cluster::ClusterError),
    #[error("cannot encode a result as JSON: {0}")]
    Json(#[from] serde_json::Error),
}

type Result<T> = std::result::Result<T, PipelineError>;

// Boxed: the engine's errors are large, and a pipeline error travels through every stage.
impl From<crate::model::marian::TranslateError> for PipelineError {
    fn from(e: crate::model::marian::TranslateError) -> Self {
        Self::Translate(Box::new(e))
    }
}

impl From<crate::model::embed::EmbedError> for PipelineError {
    fn from(e: crate::model::embed::EmbedError) -> Self {
        Self::Embed(Box::new(e))
    }
}

/// How to run `align`.
#[derive(Debug, Clone)]
pub struct AlignOptions {
    /// Per-language model overrides (`--model LANG=HUB_ID|DIR`), over the manifest.
    pub models: BTreeMap<String, ModelSource>,
    pub embed_model: ModelSource,
    /// Skip translation and embed the source text itself (for a multilingual embedding model such
    /// as paraphrase-multilingual-MiniLM-L12-v2 or LaBSE); "translation" then holds the source.
    pub embed_source: bool,
    pub translate: TranslateOptions,
    /// How the translation models' layers are stored (int8: faster, CPU only, not bit-equal).
    pub compute_type: ComputeType,
    pub cluster: ClusterOptions,
    pub hub: HubOptions,
}

/// One translated sentence and where it came from.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SentenceMap {
    pub paragraph: usize,
    /// Byte span of the source sentence in its (cleaned) paragraph.
    pub start: usize,
    pub end: usize,
    pub source: String,
    pub lang: String,
    pub translation: String,
}

/// Everything the pipeline knows about one article once it is done.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ArticleResult {
    pub id: String,
    pub lang: String,
    pub confidence: f32,
    pub title: String,
    pub title_en: String,
    /// English text, paragraph by paragraph (blank line between paragraphs).
    pub translation: String,
    pub sentences: Vec<SentenceMap>,
    /// Models used, as `lang=model@revision`.
    pub models: Vec<String>,
    pub published_day: Option<i64>,
    pub removed_lines: usize,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub embedding: Vec<f32>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Member {
    pub id: String,
    /// Cosine similarity of the article to its event's centroid.
    pub similarity: f32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Event {
    pub id: String,
    pub title: String,
    pub keywords: Vec<String>,
    pub shared_names: Vec<String>,
    pub shared_numbers: Vec<String>,
    pub members: Vec<Member>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AlignOutput {
    pub events: Vec<Event>,
    pub articles: Vec<ArticleResult>,
    /// Articles that could not be processed, with the reason; the rest of the run went on.
    pub skipped: Vec<Skipped>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Skipped {
    pub id: String,
    pub reason: String,
}

/// Progress callbacks, so the CLI can draw bars without the pipeline knowing about terminals.
pub trait Progress {
    fn stage(&mut self, _name: &str, _total: usize) {}
    fn advance(&mut self, _n: usize) {}
}

/// No progress reporting.
pub struct Silent;
impl Progress for Silent {}

fn content_hash(article: &Article) -> String {
    let mut h = Sha256::new();
    for part in [
        article.title.as_deref().unwrap_or(""),
        "\u{1}",
        &article.text,
        "\u{1}",
        article.lang.as_deref().unwrap_or(""),
        "\u{1}",
        article.published_at.as_deref().unwrap_or(""),
    ] {
        h.update(part.as_bytes());
    }
    format!("{:x}", h.finalize())
}

/// Loads each model once, on first use.
pub struct Models<'a> {
    manifest: &'a Manifest,
    opts: &'a AlignOptions,
    device: Device,
    translators: HashMap<String, (Translator, String, String)>,
    embedder: Option<(Embedder, String)>,
}

impl<'a> Models<'a> {
    pub fn new(manifest: &'a Manifest, opts: &'a AlignOptions, device: Device) -> Self {
        Self {
            manifest,
            opts,
            device,
            translators: HashMap::new(),
            embedder: None,
        }
    }

    /// The model source serving `lang`: an override, the manifest's own entry, or the fallback.
    fn source_for(&self, lang: &str, article: &str) -> Result<ModelSource> {
        let lang = normalise_lang(lang);
        if let Some(src) = self.opts.models.get(&lang) {
            return Ok(src.clone());
        }
        let entry = self
            .manifest
            .resolve(&lang)
            .map_err(|_| PipelineError::NoModel {
                lang: lang.clone(),
                article: article.to_string(),
                supported: self.manifest.languages().join(", "),
            })?;
        Ok(ModelSource::parse(&entry.repo, Some(&entry.revision))?)
    }

    /// The translator for `lang` and the key it is cached under ("repo@revision" or a path).
    fn translator(&mut self, lang: &str, article: &str) -> Result<(&Translator, String, String)> {
        let source = self.source_for(lang, article)?;
        let key = source.to_string();
        if !self.translators.contains_key(&key) {
            let repo = ModelRepo::open(source, &self.opts.hub)?;
            let t = Translator::load_with(&repo, &self.device, self.opts.compute_type).map_err(
                |e| PipelineError::LoadTranslator {
                    model: repo.describe(),
                    source: Box::new(e),
                },
            )?;
            // The cache key is the model and the commit it resolved to (a folder has none).
            let revision = repo.commit().unwrap_or_default();
            // int8 translations differ from f32 ones: they are cached (and reported) apart.
            let described = match self.opts.compute_type {
                ComputeType::F32 => repo.describe(),
                other => format!("{} [{other}]", repo.describe()),
            };
            self.translators
                .insert(key.clone(), (t, described, revision));
        }
        let (t, model, revision) = &self.translators[&key];
        Ok((t, model.clone(), revision.clone()))
    }

    fn embedder(&mut self) -> Result<(&Embedder, String)> {
        if self.embedder.is_none() {
            let repo = ModelRepo::open(self.opts.embed_model.clone(), &self.opts.hub)?;
            let e =
                Embedder::load(&repo, &self.device).map_err(|e| PipelineError::LoadEmbedder {
                    model: repo.describe(),
                    source: Box::new(e),
                })?;
            self.embedder = Some((e, repo.describe()));
        }
        let (e, key) = self.embedder.as_ref().expect("set above");
        Ok((e, key.clone()))
    }
}

/// The language a paragraph is translated from: its own, else the article's, else "und"
/// (undetermined), which the manifest routes to its fallback model.
fn effective_lang(own: Option<&str>, article: Option<&str>) -> String {
    own.or(article)
        .map(normalise_lang)
        .unwrap_or_else(|| "und".into())
}

/// Sentences still to translate for one language, deduplicated, with where each one goes.
#[derive(Default)]
struct LangWork {
    sentences: Vec<String>,
    index: HashMap<String, usize>,
}

/// Run the whole pipeline over `articles`. Finished articles found in `store` (same content)
/// are reused; each newly finished article is committed to the store immediately.
pub fn align(
    articles: &[Article],
    models: &mut Models,
    store: &Store,
    progress: &mut dyn Progress,
) -> Result<AlignOutput> {
    let translate_opts = models.opts.translate.clone();
    let cluster_opts = models.opts.cluster;
    let embed_source = models.opts.embed_source;
    let mut results: Vec<Option<ArticleResult>> = vec![None; articles.len()];
    let mut skipped = Vec::new();
    let hashes: Vec<String> = articles.iter().map(content_hash).collect();

    // 1. Reuse what an earlier run finished.
    for (i, a) in articles.iter().enumerate() {
        if let Some(json) = store.get_done_article(&a.id, &hashes[i])? {
            match serde_json::from_str::<ArticleResult>(&json) {
                Ok(r) => results[i] = Some(r),
                Err(e) => {
                    tracing::warn!(article = %a.id, "stored result unreadable ({e}); redoing it")
                }
            }
        }
    }
    let todo: Vec<usize> = (0..articles.len())
        .filter(|&i| results[i].is_none())
        .collect();
    if todo.len() < articles.len() {
        tracing::info!(
            reused = articles.len() - todo.len(),
            "articles already done in the store"
        );
    }

    // 2. Prepare.
    progress.stage("preparing", todo.len());
    let mut prepared: BTreeMap<usize, Prepared> = BTreeMap::new();
    for &i in &todo {
        let p = prepare(&articles[i]);
        if p.paragraphs.is_empty() {
            skipped.push(Skipped {
                id: articles[i].id.clone(),
                reason: "no text left after cleaning".into(),
            });
        } else {
            prepared.insert(i, p);
        }
        progress.advance(1);
    }

    // 3. Translate, language by language: all sentences of one language form one job,
    //    deduplicated, cached per (model, revision, sentence), length-sorted into batches.
    let mut per_lang: BTreeMap<String, LangWork> = BTreeMap::new();
    let mut unroutable: BTreeMap<usize, String> = BTreeMap::new();
    let mut lang_articles: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (&i, p) in &prepared {
        let title_lang = effective_lang(None, p.lang.as_deref());
        let title = (title_lang.as_str(), p.title.as_str());
        let paragraphs = p.paragraphs.iter().map(|para| {
            let texts: Vec<&str> = para.sentences.iter().map(|s| s.text.as_str()).collect();
            (
                effective_lang(para.lang.as_deref(), p.lang.as_deref()),
                texts,
            )
        });
        let units = std::iter::once((title.0.to_string(), vec![title.1]))
            .filter(|(_, t)| !t[0].trim().is_empty())
            .chain(paragraphs);
        for (lang, texts) in units {
            if lang == "en" || embed_source {
                continue;
            }
            if let Err(e) = models.source_for(&lang, &p.id) {
                unroutable.insert(i, e.to_string());
                continue;
            }
            let users = lang_articles.entry(lang.clone()).or_default();
            if users.last() != Some(&i) {
                users.push(i);
            }
            let work = per_lang.entry(lang).or_default();
            for text in texts {
                if !work.index.contains_key(text) {
                    work.index.insert(text.to_string(), work.sentences.len());
                    work.sentences.push(text.to_string());
                }
            }
        }
    }
    for (i, reason) in unroutable {
        prepared.remove(&i);
        skipped.push(Skipped {
            id: articles[i].id.clone(),
            reason,
        });
    }
    let total: usize = per_lang.values().map(|w| w.sentences.len()).sum();
    progress.stage("translating", total);
    // (lang, sentence) -> (translation, model key)
    let mut translated: HashMap<(String, String), String> = HashMap::new();
    let mut model_keys: HashMap<String, String> = HashMap::new();
    for (lang, work) in &per_lang {
        // A model that cannot be loaded costs the articles that need it, not the whole run.
        let (translator, key, revision) = match models.translator(lang, "") {
            Ok(t) => t,
            Err(e) => {
                let reason = e.to_string();
                tracing::warn!("{reason}");
                for &i in lang_articles.get(lang).into_iter().flatten() {
                    if prepared.remove(&i).is_some() {
                        skipped.push(Skipped {
                            id: articles[i].id.clone(),
                            reason: reason.clone(),
                        });
                    }
                }
                progress.advance(work.sentences.len());
                continue;
            }
        };
        model_keys.insert(lang.clone(), key.clone());
        let mut missing = Vec::new();
        for s in &work.sentences {
            match store.get_translation(&key, &revision, s)? {
                Some(t) => {
                    translated.insert((lang.clone(), s.clone()), t);
                    progress.advance(1);
                }
                None => missing.push(s.as_str()),
            }
        }
        let opts = &translate_opts;
        // Chunks keep memory bounded and let the cache absorb partial progress.
        for chunk in missing.chunks(opts.batch_size.max(1) * 8) {
            let out = translator.translate(chunk, opts, |n| progress.advance(n))?;
            let pairs: Vec<(String, String)> = chunk
                .iter()
                .zip(&out)
                .map(|(s, t)| (s.to_string(), t.text.clone()))
                .collect();
            store.put_translations(&key, &revision, &pairs)?;
            for (s, t) in pairs {
                translated.insert((lang.clone(), s), t);
            }
        }
    }

    // 4. Assemble English text, embed, commit each article.
    progress.stage("embedding", prepared.len());
    let (embedder, embed_key) = models.embedder()?;
    for (&i, p) in &prepared {
        let mut sentences = Vec::new();
        let mut paragraphs_en = Vec::new();
        let mut used_models: Vec<String> = Vec::new();
        for (pi, para) in p.paragraphs.iter().enumerate() {
            let lang = effective_lang(para.lang.as_deref(), p.lang.as_deref());
            let mut en = Vec::new();
            for s in &para.sentences {
                let t = if lang == "en" || embed_source {
                    s.text.clone()
                } else {
                    translated
                        .get(&(lang.clone(), s.text.clone()))
                        .cloned()
                        .unwrap_or_default()
                };
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
            if let Some(k) = model_keys.get(&lang) {
                let m = format!("{lang}={k}");
                if !used_models.contains(&m) {
                    used_models.push(m);
                }
            }
            paragraphs_en.push(en.join(" "));
        }
        let title_lang = effective_lang(None, p.lang.as_deref());
        let title_en = if title_lang == "en" || embed_source {
            p.title.clone()
        } else {
            translated
                .get(&(title_lang, p.title.clone()))
                .cloned()
                .unwrap_or_default()
        };
        let translation = paragraphs_en.join("\n\n");
        let text_for_embedding = format!("{title_en}\n{translation}");
        let embedding = match store.get_embedding(&embed_key, &text_for_embedding)? {
            Some(v) => v,
            None => {
                let v = embedder.embed_long(&text_for_embedding)?;
                store.put_embedding(&embed_key, &text_for_embedding, &v)?;
                v
            }
        };
        let result = ArticleResult {
            id: p.id.clone(),
            lang: p.lang.clone().unwrap_or_else(|| "und".into()),
            confidence: p.confidence,
            title: p.title.clone(),
            title_en,
            translation,
            sentences,
            models: used_models,
            published_day: articles[i]
                .published_at
                .as_deref()
                .and_then(crate::text::article::parse_date),
            removed_lines: p.removed.len(),
            embedding,
        };
        store.put_article(&p.id, &hashes[i], &serde_json::to_string(&result)?)?;
        results[i] = Some(result);
        progress.advance(1);
    }

    // 5. Group and explain.
    let done: Vec<ArticleResult> = results.into_iter().flatten().collect();
    let events = group_events(&done, &cluster_opts)?;
    Ok(AlignOutput {
        events,
        articles: done,
        skipped,
    })
}

/// Group finished articles into events and explain each one.
pub fn group_events(articles: &[ArticleResult], opts: &ClusterOptions) -> Result<Vec<Event>> {
    let vectors: Vec<Vec<f32>> = articles.iter().map(|a| a.embedding.clone()).collect();
    let days: Vec<Option<i64>> = articles.iter().map(|a| a.published_day).collect();
    let groups = cluster::group(&vectors, &days, opts)?;
    let corpus = cluster::Corpus::from_documents(
        articles
            .iter()
            .map(|a| format!("{}\n{}", a.title_en, a.translation)),
    );
    let events = groups
        .iter()
        .enumerate()
        .map(|(gi, members)| {
            let dim = vectors[members[0]].len();
            let mut sum = vec![0f32; dim];
            for &m in members {
                for (s, x) in sum.iter_mut().zip(&vectors[m]) {
                    *s += x;
                }
            }
            let centroid = cluster::normalize(&sum);
            let sims: Vec<f32> = members
                .iter()
                .map(|&m| cluster::cosine(&vectors[m], &centroid))
                .collect();
            let titles: Vec<&str> = members
                .iter()
                .map(|&m| articles[m].title_en.as_str())
                .collect();
            let texts: Vec<&str> = members
                .iter()
                .map(|&m| articles[m].translation.as_str())
                .collect();
            let ex = cluster::explain(&titles, &texts, &sims, &corpus);
            Event {
                id: format!("e{}", gi + 1),
                title: ex.title,
                keywords: ex.keywords,
                shared_names: ex.shared_names,
                shared_numbers: ex.shared_numbers,
                members: members
                    .iter()
                    .zip(&sims)
                    .map(|(&m, &s)| Member {
                        id: articles[m].id.clone(),
                        similarity: s,
                    })
                    .collect(),
            }
        })
        .collect();
    Ok(events)
}
