//! Sentence embeddings with sentence-transformers models (BERT, RoBERTa, XLM-R and MPNet
//! encoders) on candle, computing what sentence-transformers' `model.encode(texts)` computes.
//!
//! A model is a sentence-transformers folder or Hub repo: `modules.json` lists a Transformer
//! module (`config.json`, `tokenizer.json`, `model.safetensors` or `pytorch_model.bin`,
//! `sentence_bert_config.json`), then a Pooling module (`1_Pooling/config.json`), then
//! optionally Dense modules and a Normalize module, applied in that order.

mod bert;
mod config;
mod pooling;

use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use tokenizers::normalizers::{Lowercase, NormalizerWrapper, Sequence};
use tokenizers::{
    PostProcessor, Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy,
};

use crate::model::compute::ComputeType;
use crate::model::hub::{HubError, ModelRepo};
use crate::model::weights::WeightsError;

use bert::BertEncoder;
use config::{
    module_file, read_json, read_modules, DenseConfig, EncoderConfig, ModuleEntry, ModuleKind,
    PoolingConfig, SentenceBertConfig, TokenizerConfig,
};
use pooling::Dense;

/// Everything that can go wrong between a model repo and an embedding.
#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    #[error(transparent)]
    Hub(#[from] HubError),
    #[error("{repo} has no {file}, which a sentence-transformers model needs: {why}")]
    MissingFile {
        repo: String,
        file: String,
        why: String,
    },
    #[error("cannot read {}: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is invalid: {reason}", .path.display())]
    Config { path: PathBuf, reason: String },
    #[error("modules.json does not describe a model this program can run: {0}")]
    Modules(String),
    #[error("model_type \"{0}\" is not supported (expected bert, roberta, xlm-roberta or mpnet)")]
    UnsupportedModelType(String),
    #[error("modules.json lists a `{kind}` module, which is not supported (expected Transformer, Pooling, Dense and Normalize)")]
    UnsupportedModule { kind: String },
    #[error("cannot load tokenizer {}: {reason}", .path.display())]
    Tokenizer { path: PathBuf, reason: String },
    #[error("tokenizing failed: {0}")]
    Tokenize(String),
    #[error(transparent)]
    WeightsFile(#[from] WeightsError),
    #[error("invalid model weights: {0}")]
    Weights(String),
    #[error("invalid input: {0}")]
    Input(String),
    #[error("tensor computation failed: {0}")]
    Tensor(#[from] candle_core::Error),
}

type Result<T> = std::result::Result<T, EmbedError>;

/// What follows pooling, in modules.json order.
enum Stage {
    Dense(Dense),
    Normalize,
}

/// Chunks of one text encoded together in [`Embedder::embed_long`].
const LONG_TEXT_BATCH: usize = 8;

/// A loaded sentence-transformers model.
pub struct Embedder {
    /// Truncates at `max_seq_length` (special tokens included), never pads.
    tokenizer: Tokenizer,
    /// Neither truncates nor pads: cuts long texts into chunks.
    chunker: Tokenizer,
    /// Special tokens the post-processor adds to one sequence.
    added_tokens: usize,
    encoder: BertEncoder,
    pooling: PoolingConfig,
    stages: Vec<Stage>,
    max_seq_length: usize,
    dim: usize,
}

impl std::fmt::Debug for Embedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Embedder")
            .field("model_type", &self.encoder.config().model_type)
            .field("dim", &self.dim)
            .field("max_seq_length", &self.max_seq_length)
            .field("pooling", &self.pooling.modes)
            .finish()
    }
}

fn required(repo: &ModelRepo, file: &str, why: &str) -> Result<PathBuf> {
    repo.get_optional(file)?
        .ok_or_else(|| EmbedError::MissingFile {
            repo: repo.describe(),
            file: file.to_string(),
            why: why.to_string(),
        })
}

/// The first of `names` (in the module folder) that the repo has.
fn weights_file(repo: &ModelRepo, module: &str, what: &str) -> Result<PathBuf> {
    let names = ["model.safetensors", "pytorch_model.bin"];
    for name in names {
        if let Some(path) = repo.get_optional(&module_file(module, name))? {
            return Ok(path);
        }
    }
    Err(EmbedError::MissingFile {
        repo: repo.describe(),
        file: module_file(module, "model.safetensors"),
        why: format!("the {what} weights (model.safetensors or pytorch_model.bin)"),
    })
}

/// Checks the module sequence: Transformer, Pooling, then Dense and Normalize modules.
fn check_modules(modules: &[ModuleEntry]) -> Result<()> {
    let kinds: Vec<&ModuleKind> = modules.iter().map(|m| &m.kind).collect();
    match kinds.as_slice() {
        [ModuleKind::Transformer, ModuleKind::Pooling, rest @ ..]
            if rest
                .iter()
                .all(|k| matches!(k, ModuleKind::Dense | ModuleKind::Normalize)) =>
        {
            Ok(())
        }
        _ => Err(EmbedError::Modules(format!(
            "expected a Transformer module, a Pooling module, then only Dense or Normalize modules; found {kinds:?}"
        ))),
    }
}

/// sentence-transformers' `do_lower_case`: put a Lowercase normalizer in front unless the
/// top level already has one (a lowercasing BertNormalizer does not count, as in
/// sentence-transformers).
fn add_lowercase(tokenizer: &mut Tokenizer) -> tokenizers::Result<()> {
    let current = tokenizer.get_normalizer().cloned();
    let has_lowercase = match &current {
        Some(NormalizerWrapper::Lowercase(_)) => true,
        Some(NormalizerWrapper::Sequence(seq)) => seq
            .as_ref()
            .iter()
            .any(|n| matches!(n, NormalizerWrapper::Lowercase(_))),
        _ => false,
    };
    if has_lowercase {
        return Ok(());
    }
    let mut chain = vec![NormalizerWrapper::Lowercase(Lowercase)];
    match current {
        Some(NormalizerWrapper::Sequence(seq)) => chain.extend(seq),
        Some(other) => chain.push(other),
        None => {}
    }
    tokenizer.with_normalizer(Some(Sequence::new(chain)))?;
    Ok(())
}

impl Embedder {
    /// Loads a sentence-transformers model from a repo or folder onto `device`, in f32.
    pub fn load(repo: &ModelRepo, device: &Device) -> Result<Self> {
        Self::load_with(repo, device, ComputeType::F32)
    }

    /// [`Self::load`] computing in `compute`: f16 and bf16 run on a GPU only; int8 applies to
    /// translation models, so embeddings compute in f32 then.
    pub fn load_with(repo: &ModelRepo, device: &Device, compute: ComputeType) -> Result<Self> {
        let started = std::time::Instant::now();
        let modules_path = required(
            repo,
            "modules.json",
            "it lists the model's modules (Transformer, Pooling, ...)",
        )?;
        let modules = read_modules(&modules_path)?;
        check_modules(&modules)?;
        let tf = &modules[0].path;

        let cfg = EncoderConfig::load(&required(
            repo,
            &module_file(tf, "config.json"),
            "the encoder's configuration",
        )?)?;
        let sbert = Self::sentence_bert_config(repo, tf)?;
        let tok_cfg: TokenizerConfig =
            match repo.get_optional(&module_file(tf, "tokenizer_config.json"))? {
                Some(path) => read_json(&path)?,
                None => TokenizerConfig::default(),
            };
        let tokenizer_path = required(
            repo,
            &module_file(tf, "tokenizer.json"),
            "the tokenizer (the fast-tokenizer JSON file)",
        )?;
        let mut tokenizer =
            Tokenizer::from_file(&tokenizer_path).map_err(|e| EmbedError::Tokenizer {
                path: tokenizer_path.clone(),
                reason: e.to_string(),
            })?;
        // tokenizer.json files often carry the padding / truncation of their last use.
        tokenizer.with_padding(None);
        let tok_err = |e: tokenizers::Error| EmbedError::Tokenizer {
            path: tokenizer_path.clone(),
            reason: e.to_string(),
        };
        tokenizer.with_truncation(None).map_err(tok_err)?;
        if sbert.do_lower_case {
            add_lowercase(&mut tokenizer).map_err(tok_err)?;
        }
        let added_tokens = tokenizer
            .get_post_processor()
            .map_or(0, |p| p.added_tokens(false));

        let max_seq_length = Self::choose_max_seq_length(&cfg, &sbert, &tok_cfg);
        if max_seq_length <= added_tokens {
            return Err(EmbedError::Config {
                path: tokenizer_path,
                reason: format!(
                    "max_seq_length {max_seq_length} leaves no room for text next to the {added_tokens} special tokens"
                ),
            });
        }
        let chunker = tokenizer.clone();
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: max_seq_length,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
                direction: TruncationDirection::Right,
            }))
            .map_err(tok_err)?;

        let weights_path = weights_file(repo, tf, "encoder")?;
        // Read on the host: the encoder casts each tensor to its type before moving it.
        let tensors = crate::model::weights::read_tensors(&weights_path, &Device::Cpu)?;
        let encoder = BertEncoder::with_compute_type(&cfg, tensors, device, compute)?;

        let pooling_path = required(
            repo,
            &module_file(&modules[1].path, "config.json"),
            "the Pooling module's configuration (mean / cls / max), named in modules.json",
        )?;
        let pooling = PoolingConfig::load(&pooling_path)?;
        if pooling.embedding_dimension != cfg.hidden_size {
            return Err(EmbedError::Config {
                path: pooling_path,
                reason: format!(
                    "word_embedding_dimension {} differs from the encoder's hidden_size {}",
                    pooling.embedding_dimension, cfg.hidden_size
                ),
            });
        }
        let mut dim = pooling.modes.len() * cfg.hidden_size;
        let mut stages = Vec::new();
        for module in &modules[2..] {
            match module.kind {
                ModuleKind::Normalize => stages.push(Stage::Normalize),
                ModuleKind::Dense => {
                    let dense_cfg = DenseConfig::load(&required(
                        repo,
                        &module_file(&module.path, "config.json"),
                        "a Dense module's configuration, named in modules.json",
                    )?)?;
                    if dense_cfg.in_features != dim {
                        return Err(EmbedError::Config {
                            path: dense_cfg.path,
                            reason: format!(
                                "in_features {} differs from the {dim} features before it",
                                dense_cfg.in_features
                            ),
                        });
                    }
                    let path = weights_file(repo, &module.path, "Dense module")?;
                    let tensors = crate::model::weights::read_tensors(&path, device)?;
                    let dense = Dense::new(&dense_cfg, &tensors, device)?;
                    dim = dense.out_features;
                    stages.push(Stage::Dense(dense));
                }
                // check_modules admits nothing else after the pooling module.
                ModuleKind::Transformer | ModuleKind::Pooling => {
                    return Err(EmbedError::Modules(
                        "a second Transformer or Pooling module".into(),
                    ))
                }
            }
        }
        tracing::debug!(
            model = %repo.describe(),
            model_type = %cfg.model_type,
            layers = cfg.num_hidden_layers,
            dim,
            max_seq_length,
            pooling = ?pooling.modes,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "loaded sentence embedding model"
        );
        Ok(Self {
            tokenizer,
            chunker,
            added_tokens,
            encoder,
            pooling,
            stages,
            max_seq_length,
            dim,
        })
    }

    /// The Transformer module's settings, under the names sentence-transformers has used.
    fn sentence_bert_config(repo: &ModelRepo, module: &str) -> Result<SentenceBertConfig> {
        const NAMES: [&str; 7] = [
            "sentence_bert_config.json",
            "sentence_roberta_config.json",
            "sentence_distilbert_config.json",
            "sentence_camembert_config.json",
            "sentence_albert_config.json",
            "sentence_xlm-roberta_config.json",
            "sentence_xlnet_config.json",
        ];
        for name in NAMES {
            if let Some(path) = repo.get_optional(&module_file(module, name))? {
                return read_json(&path);
            }
        }
        Ok(SentenceBertConfig::default())
    }

    /// `sentence_bert_config.json`'s `max_seq_length`, else the tokenizer's `model_max_length`
    /// capped at `max_position_embeddings` (as sentence-transformers does); never more than
    /// the position table can number.
    fn choose_max_seq_length(
        cfg: &EncoderConfig,
        sbert: &SentenceBertConfig,
        tok: &TokenizerConfig,
    ) -> usize {
        let wanted = match sbert.max_seq_length {
            Some(n) => n,
            None => {
                let from_tokenizer = tok
                    .model_max_length
                    .filter(|v| v.is_finite() && *v >= 1.0 && *v < 1e9)
                    .map_or(usize::MAX, |v| v as usize);
                from_tokenizer.min(cfg.max_position_embeddings)
            }
        };
        let usable = cfg.usable_positions();
        if wanted > usable {
            tracing::warn!(
                max_seq_length = wanted,
                positions = usable,
                "max_seq_length exceeds the model's positions; truncating at the positions instead"
            );
        }
        wanted.min(usable)
    }

    /// Length of every output vector.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Longest token sequence (special tokens included) the model sees; longer texts are
    /// truncated by [`Embedder::embed`] and chunked by [`Embedder::embed_long`].
    pub fn max_seq_length(&self) -> usize {
        self.max_seq_length
    }

    /// Tokens of `text` before truncation, special tokens included: more than
    /// [`Embedder::max_seq_length`] means [`Embedder::embed`] would cut it. A second
    /// tokenization: worth it only for a text whose [`Embedder::token_ids`] reach the limit.
    pub fn token_count(&self, text: &str) -> Result<usize> {
        let encoding = self
            .chunker
            .encode(text, true)
            .map_err(|e| EmbedError::Tokenize(e.to_string()))?;
        Ok(encoding.get_ids().len())
    }

    /// The token ids [`Embedder::embed`] feeds the encoder for `text` (special tokens
    /// included, truncated at `max_seq_length`).
    pub fn token_ids(&self, text: &str) -> Result<Vec<u32>> {
        let encoding = self
            .tokenizer
            .encode(text, true)
            .map_err(|e| EmbedError::Tokenize(e.to_string()))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// Exactly as sentence-transformers `model.encode(texts)` (truncated at max_seq_length;
    /// normalised iff the model has a Normalize module).
    ///
    /// Texts are sorted by token count and encoded at most `batch_size` at a time, a batch
    /// ending early rather than take a text less than half as long as its longest, so that
    /// padding stays small; the vectors come back in the order of `texts`. Batching changes a
    /// vector only by float rounding.
    pub fn embed(&self, texts: &[&str], batch_size: usize) -> Result<Vec<Vec<f32>>> {
        self.embed_ids(&self.token_id_rows(texts)?, batch_size)
    }

    /// [`Embedder::token_ids`] of every text, tokenized in parallel, so that tokenizing on one
    /// thread does not hold back an encoder on a GPU.
    pub fn token_id_rows(&self, texts: &[&str]) -> Result<Vec<Vec<u32>>> {
        use rayon::prelude::*;
        texts.par_iter().map(|t| self.token_ids(t)).collect()
    }

    /// [`Embedder::embed`] of texts already tokenized by [`Embedder::token_ids`]: vectors of
    /// token id rows, in order, encoded longest first in batches.
    pub fn embed_ids(&self, rows: &[Vec<u32>], batch_size: usize) -> Result<Vec<Vec<f32>>> {
        if batch_size == 0 {
            return Err(EmbedError::Input("batch_size must be at least 1".into()));
        }
        let mut out = vec![Vec::new(); rows.len()];
        // A row can only be empty with a tokenizer that adds no special tokens. It has no
        // token vectors to run through the encoder; it pools to zeros (what mean pooling gives
        // it in sentence-transformers), and the later modules apply to that.
        let (empty, mut order): (Vec<usize>, Vec<usize>) =
            (0..rows.len()).partition(|&i| rows[i].is_empty());
        if !empty.is_empty() {
            let width = self.pooling.modes.len() * self.encoder.config().hidden_size;
            let zeros = Tensor::zeros((1, width), DType::F32, self.encoder.device())?;
            let v = self.finish(zeros)?.into_iter().next().unwrap_or_default();
            for &i in &empty {
                out[i] = v.clone();
            }
        }
        order.sort_by_key(|&i| std::cmp::Reverse(rows[i].len()));
        let mut tokens = 0usize;
        let mut start = 0;
        while start < order.len() {
            // Longest first: a batch ends at `batch_size` rows or before a row that would be
            // more than half padding, so one long text does not make a whole batch long.
            let longest = rows[order[start]].len();
            let mut end = start + 1;
            while end < order.len()
                && end - start < batch_size
                && rows[order[end]].len() * 2 >= longest
            {
                end += 1;
            }
            let batch = &order[start..end];
            start = end;
            let slices: Vec<&[u32]> = batch.iter().map(|&i| rows[i].as_slice()).collect();
            tokens += slices.iter().map(|s| s.len()).sum::<usize>();
            let vectors = self.forward(&slices)?;
            for (&i, v) in batch.iter().zip(vectors) {
                out[i] = v;
            }
        }
        tracing::trace!(texts = rows.len(), tokens, "embedded");
        Ok(out)
    }

    /// Encoder, pooling and the later modules for one batch.
    fn forward(&self, rows: &[&[u32]]) -> Result<Vec<Vec<f32>>> {
        let (hidden, mask) = self.encoder.forward(rows)?;
        self.finish(pooling::pool(&self.pooling, &hidden, &mask)?)
    }

    /// The modules after pooling, on pooled vectors (n, pooled width).
    fn finish(&self, pooled: Tensor) -> Result<Vec<Vec<f32>>> {
        let mut xs = pooled;
        for stage in &self.stages {
            xs = match stage {
                Stage::Dense(dense) => dense.forward(&xs)?,
                Stage::Normalize => pooling::normalize(&xs)?,
            };
        }
        Ok(xs.to_dtype(DType::F32)?.to_vec2()?)
    }

    /// Whole long text: split into chunks of at most max_seq_length tokens (on token
    /// boundaries), embed each, pool the chunk vectors (token-count-weighted mean),
    /// L2-normalise.
    ///
    /// Each chunk carries the model's special tokens, so a chunk holds at most
    /// `max_seq_length - special tokens` tokens of text; a chunk's weight is its length
    /// including them. A text that fits in one chunk gives its [`Embedder::embed`] vector,
    /// normalised.
    pub fn embed_long(&self, text: &str) -> Result<Vec<f32>> {
        Ok(self.embed_long_counted(text)?.0)
    }

    /// [`Embedder::embed_long`], with the tokens the encoder read (every chunk's, special
    /// tokens included).
    pub fn embed_long_counted(&self, text: &str) -> Result<(Vec<f32>, usize)> {
        let tok_err = |e: tokenizers::Error| EmbedError::Tokenize(e.to_string());
        let mut whole = self.chunker.encode(text, false).map_err(tok_err)?;
        let room = self.max_seq_length - self.added_tokens;
        whole.truncate(room, 0, TruncationDirection::Right);
        let rest = whole.take_overflowing();
        let mut rows = Vec::with_capacity(1 + rest.len());
        for piece in std::iter::once(whole).chain(rest) {
            let piece = self
                .chunker
                .post_process(piece, None, true)
                .map_err(tok_err)?;
            rows.push(piece.get_ids().to_vec());
        }
        let vectors = self.embed_ids(&rows, LONG_TEXT_BATCH)?;
        let mut sum = vec![0f64; self.dim];
        for (row, v) in rows.iter().zip(&vectors) {
            let weight = row.len() as f64;
            for (acc, x) in sum.iter_mut().zip(v) {
                *acc += weight * f64::from(*x);
            }
        }
        let total: f64 = rows.iter().map(|r| r.len() as f64).sum::<f64>().max(1.0);
        let mut mean: Vec<f32> = sum.iter().map(|s| (s / total) as f32).collect();
        pooling::normalize_vec(&mut mean);
        tracing::trace!(chunks = rows.len(), "embedded long text");
        Ok((mean, rows.iter().map(Vec::len).sum()))
    }
}
