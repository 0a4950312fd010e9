//! From articles to events: prepare (clean, detect, split), translate per language with the
//! manifest's models, embed the English text, group, explain. Every finished article is stored
//! at once, so an interrupted run resumes where it stopped.

use std::collections::BTreeMap;
use std::sync::Arc;

use candle_core::Device;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::claims;
use super::workflow::{self, StageError, Workflow};
pub use super::workflow::{Progress, Silent};
use crate::engine::manifest::Manifest;
use crate::engine::{Engine, EngineConfig, EngineError, Generation, NoObserver, Router};
use crate::group::ClusterOptions;
use crate::model::hub::{HubOptions, ModelSource};
use crate::model::marian::TranslateOptions;
use crate::model::ComputeType;
use crate::store::Store;
use crate::text::article::Article;
use crate::text::prepare::{prepare, Prepared};

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("cannot load the embedding model: {0}")]
    LoadEmbedder(#[source] EngineError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Route(#[from] crate::engine::RouteError),
    #[error("cannot group the articles: {0}")]
    Cluster(#[from] crate::group::ClusterError),
}

type Result<T> = std::result::Result<T, PipelineError>;

impl From<StageError> for PipelineError {
    fn from(e: StageError) -> Self {
        match e {
            StageError::Store(e) => Self::Store(e),
            StageError::Engine(e) => Self::Engine(e),
            StageError::Route(e) => Self::Route(e),
        }
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
    /// Batch or online grouping (by default batch up to [`BATCH_LIMIT`] articles).
    pub grouping: Grouping,
    pub hub: HubOptions,
    /// Redo every article, even those the store has finished the same way.
    pub refresh: bool,
    /// How long a claim on articles lasts unless renewed (processes sharing a store split the
    /// input by claims; a process that dies loses its claims when they run out).
    pub lease: std::time::Duration,
    /// Articles claimed at a time when the store is shared (PostgreSQL); a local store's
    /// process claims all it can at once.
    pub claim_size: usize,
}

/// A claim's lease unless told otherwise: long enough for a share on a slow CPU, short enough
/// that a killed worker's articles are soon taken over.
pub const DEFAULT_LEASE: std::time::Duration = std::time::Duration::from_secs(60);
/// Articles claimed at a time on a shared store: enough for full batches, few enough to spread.
pub const DEFAULT_CLAIM_SIZE: usize = 32;

/// Where a run's articles came from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AlignStats {
    /// Translated and embedded by this process.
    pub computed: usize,
    /// Finished by an earlier run, or by another process during this one.
    pub reused: usize,
    /// Of `computed`: claimed from another process whose lease ran out.
    pub taken_over: usize,
}

// The records the store keeps; defined there so the store depends on nothing above it.
pub use super::events::{group_events, Grouped, Grouping, BATCH_LIMIT};
pub use crate::store::records::{ArticleResult, Event, Member, SentenceMap, Theme};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AlignOutput {
    pub events: Vec<Event>,
    /// Similar events gathered (each event names its theme).
    #[serde(default)]
    pub themes: Vec<Theme>,
    pub articles: Vec<ArticleResult>,
    /// Articles that could not be processed, with the reason; the rest of the run went on.
    pub skipped: Vec<Skipped>,
    /// How the work was shared (not part of the output document).
    #[serde(skip)]
    pub stats: AlignStats,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Skipped {
    pub id: String,
    pub reason: String,
}

/// Version of what turns a page into sentences (cleaning, detection, splitting). Raise it when
/// their output changes, so stored articles made by the old rules are redone.
pub const TEXT_VERSION: u32 = 1;

/// The key a finished article is stored under: its content and everything that produced its
/// result — the text rules' version, every language's model (source and revision), the compute
/// type, the generation settings, the embedding model and whether the source text was embedded.
/// A run that differs in any of these redoes the article (the sentence caches, keyed by model
/// and commit, still answer what they can).
fn article_key(article: &Article, recipe: &str) -> String {
    let mut h = Sha256::new();
    for part in [
        article.title.as_deref().unwrap_or(""),
        "\u{1}",
        &article.text,
        "\u{1}",
        article.lang.as_deref().unwrap_or(""),
        "\u{1}",
        article.published_at.as_deref().unwrap_or(""),
        "\u{1}",
        recipe,
    ] {
        h.update(part.as_bytes());
    }
    format!("{:x}", h.finalize())
}

/// Everything besides the content that decides an article's result, as one string.
fn recipe(engine: &Engine, opts: &AlignOptions) -> String {
    let cfg = engine.config();
    let generation = opts.generation();
    format!(
        "text={TEXT_VERSION}\u{1}models={}\u{1}compute={}\u{1}beams={:?} max_new={:?}\u{1}embed={}\u{1}embed_source={}",
        engine.router().fingerprint(),
        cfg.compute_type,
        generation.num_beams,
        generation.max_new_tokens,
        cfg.embed_model,
        opts.embed_source,
    )
}

impl AlignOptions {
    /// The engine these options describe: the manifest with the `--model` overrides, the
    /// embedding model, the compute type, on `device`. A process makes one and shares it.
    pub fn engine(&self, manifest: Manifest, device: Device) -> Engine {
        let cfg = EngineConfig {
            // One batch run owns its models: every language it needs may stay loaded.
            max_loaded_models: usize::MAX,
            max_batch_tokens: usize::MAX,
            hub: self.hub,
            device,
            compute_type: self.compute_type,
            embed_model: self.embed_model.clone(),
        };
        Engine::new(
            cfg,
            Router::new(manifest, self.models.clone(), None),
            Arc::new(NoObserver),
        )
    }

    /// How each sentence batch is generated.
    pub fn generation(&self) -> Generation {
        Generation {
            num_beams: self.translate.num_beams,
            max_new_tokens: self.translate.max_new_tokens,
            max_rows: Some(self.translate.batch_size.max(1)),
        }
    }
}

/// Run the whole pipeline over `articles` with the models of `engine`. Finished articles found
/// in `store` (same content) are reused; each newly finished article is committed to the store
/// immediately. Processes running this over the same input and store split the work: each
/// claims a share of the articles nobody has done or holds, does it, and claims again; at the
/// end every process groups all the articles, so they all print the same events.
pub fn align(
    articles: &[Article],
    engine: &Engine,
    opts: &AlignOptions,
    store: &dyn Store,
    progress: &mut dyn Progress,
) -> Result<AlignOutput> {
    let recipe = recipe(engine, opts);
    let hashes: Vec<String> = articles.iter().map(|a| article_key(a, &recipe)).collect();
    let mut skipped = Vec::new();
    let mut stats = AlignStats::default();

    // 1. Reuse what an earlier run finished the same way (unless asked to redo everything).
    let mut results = if opts.refresh {
        vec![None; articles.len()]
    } else {
        reuse_done(articles, &hashes, store)?
    };
    stats.reused = results.iter().filter(|r| r.is_some()).count();
    let todo: Vec<usize> = (0..articles.len())
        .filter(|&i| results[i].is_none())
        .collect();

    let work = Work {
        articles,
        hashes: &hashes,
        engine,
        opts,
        store,
        claimed: !opts.refresh,
    };
    if opts.refresh {
        // Redo everything here, whatever others hold: no claims.
        let done = work.stages(&todo, progress)?;
        stats.computed = done.results.len();
        for (i, r) in done.results {
            results[i] = Some(r);
        }
        skipped.extend(done.skipped.into_iter().map(|(_, s)| s));
    } else {
        let share = if store.shared() {
            opts.claim_size.max(1)
        } else {
            usize::MAX
        };
        claims::share_out(
            &work,
            todo,
            share,
            &mut results,
            &mut skipped,
            &mut stats,
            progress,
        )?;
    }

    // 5. Group and explain.
    let done: Vec<ArticleResult> = results.into_iter().flatten().collect();
    let Grouped { events, themes } = group_events(&done, &opts.cluster, opts.grouping)?;
    Ok(AlignOutput {
        events,
        themes,
        articles: done,
        skipped,
        stats,
    })
}

/// What the stages of one share produced: finished articles and skipped ones, by input position.
pub(crate) struct Done {
    pub results: Vec<(usize, ArticleResult)>,
    pub skipped: Vec<(usize, Skipped)>,
    /// Of `results`, those this process committed (another may have been first).
    pub committed: usize,
    /// Of `skipped`, those worth another try (their model failed to load).
    pub retry: std::collections::HashSet<usize>,
}

/// One run's input and settings, for doing shares of it.
pub(crate) struct Work<'a> {
    pub articles: &'a [Article],
    pub hashes: &'a [String],
    pub engine: &'a Engine,
    pub opts: &'a AlignOptions,
    pub store: &'a dyn Store,
    /// Articles are claimed: a commit does not overwrite the same content committed by another
    /// worker meanwhile (`--refresh` overwrites).
    pub claimed: bool,
}

impl Work<'_> {
    /// Stages 2 to 4 for the articles at `todo`: prepare, translate, embed, commit each.
    pub(crate) fn stages(&self, todo: &[usize], progress: &mut dyn Progress) -> Result<Done> {
        let (articles, engine, opts, store) = (self.articles, self.engine, self.opts, self.store);
        let mut done = Done {
            results: Vec::new(),
            skipped: Vec::new(),
            committed: 0,
            retry: Default::default(),
        };
        // 2. Prepare.
        progress.stage("preparing", todo.len());
        let mut prepared: BTreeMap<usize, Prepared> = BTreeMap::new();
        for &i in todo {
            let p = prepare(&articles[i]);
            if p.paragraphs.is_empty() {
                skip(
                    &mut done.skipped,
                    i,
                    &articles[i],
                    "no text left after cleaning".into(),
                );
            } else {
                prepared.insert(i, p);
            }
            progress.advance(1);
        }

        // 3. Route, then translate language by language: all sentences of one language form one
        //    job, deduplicated, cached per (model, revision, sentence), batched by the engine.
        let (per_lang, unroutable) = workflow::route(&prepared, engine, opts.embed_source);
        for (i, e) in unroutable {
            prepared.remove(&i);
            let reason = format!(
                "{e} (article {}). Add one with --model LANG=HUB_ID|DIR",
                articles[i].id
            );
            skip(&mut done.skipped, i, &articles[i], reason);
        }
        for (lang, work) in &per_lang {
            if engine.router().uses_fallback(lang) {
                if let Ok(source) = engine.router().source_for(lang) {
                    progress.notice(&format!(
                        "no model of its own for \"{lang}\" ({} article{}); using the fallback model {source}",
                        work.articles.len(),
                        if work.articles.len() == 1 { "" } else { "s" }
                    ));
                }
            }
        }
        let flow = Workflow {
            engine,
            store,
            embed_source: opts.embed_source,
            generation: opts.generation(),
            chunk: opts.translate.batch_size.max(1) * 8,
        };
        progress.stage(
            "translating",
            per_lang.values().map(|w| w.sentences.len()).sum(),
        );
        let translations = flow.translate(&per_lang, progress)?;
        // A model that cannot be loaded costs the articles that need it, not the whole run.
        for (lang, reason) in &translations.failed {
            for &i in &per_lang[lang].articles {
                if prepared.remove(&i).is_some() {
                    skip(&mut done.skipped, i, &articles[i], reason.clone());
                    done.retry.insert(i);
                }
            }
        }

        // 4. Assemble English text, embed, commit each article.
        progress.stage("embedding", prepared.len());
        if !prepared.is_empty() {
            engine
                .load_embedder_blocking()
                .map_err(PipelineError::LoadEmbedder)?;
        }
        for (&i, p) in &prepared {
            let mut result = workflow::assemble(&articles[i], p, &translations, opts.embed_source);
            flow.embed(&mut result)?;
            let wrote = if self.claimed {
                store.commit_claimed(&p.id, &self.hashes[i], &result)?
            } else {
                store.put_article(&p.id, &self.hashes[i], &result)?;
                true
            };
            done.committed += usize::from(wrote);
            done.results.push((i, result));
            progress.advance(1);
        }
        Ok(done)
    }
}

fn skip(skipped: &mut Vec<(usize, Skipped)>, i: usize, article: &Article, reason: String) {
    skipped.push((
        i,
        Skipped {
            id: article.id.clone(),
            reason,
        },
    ));
}

/// The stored results of articles an earlier run finished with the same content.
fn reuse_done(
    articles: &[Article],
    hashes: &[String],
    store: &dyn Store,
) -> Result<Vec<Option<ArticleResult>>> {
    let mut results: Vec<Option<ArticleResult>> = vec![None; articles.len()];
    for (i, a) in articles.iter().enumerate() {
        results[i] = store.get_done_article(&a.id, &hashes[i])?;
    }
    let reused = results.iter().filter(|r| r.is_some()).count();
    if reused > 0 {
        tracing::info!(reused, "articles already done in the store");
    }
    Ok(results)
}
