//! A loaded translation model: tokenizer + Marian model + generation defaults, and the batching
//! that turns a list of sentences into translations in the same order.

use std::path::Path;

use candle_core::Device;
use serde::Serialize;

use super::backend::BackendKind;
use super::config::{load_configs, GenerationConfig};
use super::model::MarianModel;
use super::TranslateError;
use crate::model::compute::ComputeType;
use crate::model::hub::ModelRepo;
use crate::model::tokenize::MarianTokenizer;
use crate::model::weights;

type Result<T> = std::result::Result<T, TranslateError>;

/// Per-call overrides of the model's generation defaults.
#[derive(Debug, Clone)]
pub struct TranslateOptions {
    /// Beam width; `None` uses the model's `num_beams`.
    pub num_beams: Option<usize>,
    /// Generated tokens at most; `None` uses the model's `max_length`.
    pub max_new_tokens: Option<usize>,
    /// Sentences per batch given to the model.
    pub batch_size: usize,
}

impl Default for TranslateOptions {
    fn default() -> Self {
        Self {
            num_beams: None,
            max_new_tokens: None,
            batch_size: 32,
        }
    }
}

/// One translated segment.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Translation {
    pub text: String,
    /// The encoder's input ids, `</s>` included.
    pub source_token_ids: Vec<u32>,
    /// Generated ids, without the decoder start token and without padding.
    pub token_ids: Vec<u32>,
}

/// Where a model came from, for logs, JSON output and caches.
#[derive(Debug, Clone, Serialize)]
pub struct ModelInfo {
    /// Hub id or folder path.
    pub id: String,
    /// Requested revision (Hub models only).
    pub revision: Option<String>,
    /// Resolved commit sha, when known.
    pub commit: Option<String>,
    /// The weights file that was loaded.
    pub weights_file: String,
}

pub struct Translator {
    model: MarianModel,
    tokenizer: MarianTokenizer,
    generation: GenerationConfig,
    info: ModelInfo,
}

/// Fetch one file and parse it; a file that fails to parse is re-fetched once when the repo
/// can download (a truncated or corrupted cache entry), and reported otherwise.
fn with_refetch<T>(
    repo: &ModelRepo,
    file: &str,
    path: std::path::PathBuf,
    parse: impl Fn(&Path) -> Result<T>,
) -> Result<T> {
    match parse(&path) {
        Ok(v) => Ok(v),
        Err(e) if repo.can_refetch() => {
            tracing::warn!("{e}; fetching {file} again");
            let path = repo.refetch(file)?;
            parse(&path)
        }
        Err(e) => Err(e),
    }
}

/// Files of a Marian repo that must be present.
pub const REQUIRED_FILES: &[&str] = &["config.json", "source.spm", "target.spm", "vocab.json"];
/// Files used when present.
pub const OPTIONAL_FILES: &[&str] = &[
    "generation_config.json",
    "tokenizer_config.json",
    "target_vocab.json",
];
/// Weights, in order of preference: safetensors needs no unpickling and can be memory-mapped.
pub const WEIGHT_FILES: &[&str] = &["model.safetensors", "pytorch_model.bin"];

/// Local paths of a Marian repo's files, downloaded as needed.
#[derive(Debug, Clone)]
pub struct MarianFiles {
    /// The folder holding them side by side (a cache snapshot or the local folder).
    pub folder: std::path::PathBuf,
    pub config: std::path::PathBuf,
    pub generation_config: Option<std::path::PathBuf>,
    /// File name and path of the weights.
    pub weights: (&'static str, std::path::PathBuf),
}

/// An optional file: absent, or (offline) never looked up, both mean "not there".
fn optional(repo: &ModelRepo, file: &str) -> Result<Option<std::path::PathBuf>> {
    match repo.get_optional(file) {
        Ok(p) => Ok(p),
        Err(crate::model::hub::HubError::OfflineMiss { .. }) => {
            tracing::debug!("{file} is not in the cache; going on without it (offline)");
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

/// Make sure every file a Marian model needs is local; download what is missing.
pub fn fetch_files(repo: &ModelRepo) -> Result<MarianFiles> {
    let config = repo.get("config.json")?;
    for file in REQUIRED_FILES.iter().filter(|f| **f != "config.json") {
        repo.get(file)?;
    }
    let generation_config = optional(repo, "generation_config.json")?;
    for file in OPTIONAL_FILES
        .iter()
        .filter(|f| **f != "generation_config.json")
    {
        optional(repo, file)?;
    }
    let mut weights = None;
    let mut offline_miss = None;
    for &file in WEIGHT_FILES {
        match repo.get_optional(file) {
            Ok(Some(p)) => {
                weights = Some((file, p));
                break;
            }
            Ok(None) => {}
            Err(e @ crate::model::hub::HubError::OfflineMiss { .. }) => {
                offline_miss.get_or_insert(e);
            }
            Err(e) => return Err(e.into()),
        }
    }
    let weights = match (weights, offline_miss) {
        (Some(w), _) => w,
        (None, Some(miss)) => return Err(miss.into()),
        (None, None) => {
            return Err(TranslateError::Weights(format!(
                "{} has neither model.safetensors nor pytorch_model.bin",
                repo.describe()
            )))
        }
    };
    let folder = config
        .parent()
        .ok_or_else(|| TranslateError::Config("config.json has no parent folder".into()))?
        .to_path_buf();
    Ok(MarianFiles {
        folder,
        config,
        generation_config,
        weights,
    })
}

impl Translator {
    /// Load a model from a Hub repo or a local folder laid out like one, with f32 weights.
    pub fn load(repo: &ModelRepo, device: &Device) -> Result<Self> {
        Self::load_with(repo, device, ComputeType::F32)
    }

    /// [`Self::load`] computing in `compute` (int8: CPU only).
    pub fn load_with(repo: &ModelRepo, device: &Device, compute: ComputeType) -> Result<Self> {
        Self::load_with_backend(repo, device, compute, BackendKind::Auto)
    }

    /// [`Self::load_with`] on the backend `kind` asks for: the product always uses
    /// [`BackendKind::Auto`]; tests pick the tensor backend on the CPU to check it too.
    pub fn load_with_backend(
        repo: &ModelRepo,
        device: &Device,
        compute: ComputeType,
        kind: BackendKind,
    ) -> Result<Self> {
        let files = fetch_files(repo)?;
        let (config, generation) = with_refetch(repo, "config.json", files.config.clone(), |p| {
            load_configs(p, files.generation_config.as_deref())
        })?;
        let tokenizer = MarianTokenizer::from_dir(&files.folder)?;
        let (weights_name, weights_path) = files.weights.clone();
        let tensors = with_refetch(repo, weights_name, weights_path, |p| {
            // Read on the host: the model casts each tensor to its type before moving it.
            Ok(weights::read_tensors(p, &Device::Cpu)?)
        })?;
        let model = MarianModel::with_backend(&config, tensors, device, compute, kind)?;
        check_vocab_sizes(&model, &tokenizer)?;
        let (id, revision) = match repo.source() {
            crate::model::hub::ModelSource::Hub { repo_id, revision } => {
                (repo_id.clone(), Some(revision.clone()))
            }
            crate::model::hub::ModelSource::Local(path) => (path.display().to_string(), None),
        };
        tracing::info!(model = %repo.describe(), weights = weights_name, "model loaded");
        Ok(Self {
            model,
            tokenizer,
            generation,
            info: ModelInfo {
                id,
                revision,
                commit: repo.commit(),
                weights_file: weights_name.to_string(),
            },
        })
    }

    pub fn from_parts(
        model: MarianModel,
        tokenizer: MarianTokenizer,
        generation: GenerationConfig,
        info: ModelInfo,
    ) -> Result<Self> {
        check_vocab_sizes(&model, &tokenizer)?;
        Ok(Self {
            model,
            tokenizer,
            generation,
            info,
        })
    }

    /// Take the loaded parts apart (e.g. to drive the model directly in a benchmark).
    pub fn into_parts(self) -> (MarianModel, MarianTokenizer, GenerationConfig) {
        (self.model, self.tokenizer, self.generation)
    }

    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    pub fn model(&self) -> &MarianModel {
        &self.model
    }

    pub fn tokenizer(&self) -> &MarianTokenizer {
        &self.tokenizer
    }

    /// The model's defaults with `opts` applied.
    pub fn generation_config(&self, opts: &TranslateOptions) -> GenerationConfig {
        let mut gen = self.generation.clone();
        if let Some(beams) = opts.num_beams {
            gen.num_beams = beams.max(1);
        }
        if let Some(n) = opts.max_new_tokens {
            gen = gen.with_max_new_tokens(n);
        }
        // Positions are finite: never decode past the table.
        gen.max_length = gen
            .max_length
            .min(self.model.config().max_position_embeddings);
        gen
    }

    /// Tokenize one segment, truncated (with `</s>` kept) to the model's positions.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let mut ids = self.tokenizer.encode(text)?;
        let max = self.model.config().max_position_embeddings;
        if ids.len() > max {
            tracing::warn!(
                tokens = ids.len(),
                max,
                "segment longer than the model accepts; translating its first {max} tokens"
            );
            let eos = ids[ids.len() - 1];
            ids.truncate(max - 1);
            ids.push(eos);
        }
        Ok(ids)
    }

    /// Generate ids for one batch of token id rows (no sorting, no splitting).
    pub fn generate_batch(
        &self,
        rows: &[Vec<u32>],
        gen: &GenerationConfig,
    ) -> Result<Vec<Vec<u32>>> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        self.model.generate(rows, gen)
    }

    /// Translate segments, returning one translation per segment in input order. Segments are
    /// sorted by length into batches so padding stays small. An empty (or all-whitespace)
    /// segment translates to an empty one without running the model. `on_batch` is called with
    /// the number of segments each finished batch covered.
    pub fn translate(
        &self,
        texts: &[&str],
        opts: &TranslateOptions,
        mut on_batch: impl FnMut(usize),
    ) -> Result<Vec<Translation>> {
        let gen = self.generation_config(opts);
        let mut out: Vec<Option<Translation>> = vec![None; texts.len()];
        let mut work: Vec<(usize, Vec<u32>)> = Vec::with_capacity(texts.len());
        for (i, text) in texts.iter().enumerate() {
            if text.trim().is_empty() {
                out[i] = Some(Translation {
                    text: String::new(),
                    source_token_ids: Vec::new(),
                    token_ids: Vec::new(),
                });
            } else {
                work.push((i, self.encode(text)?));
            }
        }
        // Longest first: the slowest batch runs while memory is fresh, and lengths in a batch
        // are close. Stable, so equal lengths keep input order.
        work.sort_by_key(|w| std::cmp::Reverse(w.1.len()));
        for chunk in work.chunks(opts.batch_size.max(1)) {
            let rows: Vec<Vec<u32>> = chunk.iter().map(|(_, ids)| ids.clone()).collect();
            let generated = self.generate_batch(&rows, &gen)?;
            for ((i, source), ids) in chunk.iter().zip(generated) {
                let text = self.tokenizer.decode(&ids)?;
                out[*i] = Some(Translation {
                    text,
                    source_token_ids: source.clone(),
                    token_ids: ids,
                });
            }
            on_batch(chunk.len());
        }
        Ok(out.into_iter().flatten().collect())
    }
}

fn check_vocab_sizes(model: &MarianModel, tokenizer: &MarianTokenizer) -> Result<()> {
    let cfg = model.config();
    if tokenizer.source_vocab_size() > cfg.vocab_size {
        return Err(TranslateError::Config(format!(
            "the tokenizer's vocabulary ({}) is larger than the model's ({})",
            tokenizer.source_vocab_size(),
            cfg.vocab_size
        )));
    }
    if tokenizer.target_vocab_size() > cfg.target_vocab_size() {
        return Err(TranslateError::Config(format!(
            "the target vocabulary ({}) is larger than the model's output ({})",
            tokenizer.target_vocab_size(),
            cfg.target_vocab_size()
        )));
    }
    Ok(())
}
