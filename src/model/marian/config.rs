//! Marian architecture and generation settings, read from a model repo's `config.json` and
//! `generation_config.json` with the same defaults as Hugging Face `transformers`.

use serde::Deserialize;
use std::path::Path;

use super::TranslateError;

/// Activation functions OPUS-MT checkpoints use (`swish` for the 2020 base models, `relu` for
/// tc-big), plus the GELU variants other Marian conversions carry.
pub use crate::model::kernels::layers::Activation;

fn parse_activation(name: &str) -> Result<Activation, TranslateError> {
    match name {
        "swish" | "silu" => Ok(Activation::Swish),
        "relu" => Ok(Activation::Relu),
        "gelu" => Ok(Activation::Gelu),
        "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Ok(Activation::GeluTanh),
        other => Err(TranslateError::Config(format!(
            "activation_function \"{other}\" is not supported (expected swish, relu, gelu or gelu_new)"
        ))),
    }
}

/// A token id field that configs write either as one id or as a list of ids.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(u32),
    Many(Vec<u32>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<u32> {
        match self {
            Self::One(id) => vec![id],
            Self::Many(ids) => ids,
        }
    }
}

/// `config.json` as written by `MarianConfig`; field defaults are transformers' defaults.
#[derive(Debug, Clone, Deserialize)]
struct RawConfig {
    #[serde(default = "d_vocab")]
    vocab_size: usize,
    decoder_vocab_size: Option<usize>,
    #[serde(default = "d_max_pos")]
    max_position_embeddings: usize,
    #[serde(default = "d_layers")]
    encoder_layers: usize,
    #[serde(default = "d_ffn")]
    encoder_ffn_dim: usize,
    #[serde(default = "d_heads")]
    encoder_attention_heads: usize,
    #[serde(default = "d_layers")]
    decoder_layers: usize,
    #[serde(default = "d_ffn")]
    decoder_ffn_dim: usize,
    #[serde(default = "d_heads")]
    decoder_attention_heads: usize,
    #[serde(default = "d_act")]
    activation_function: String,
    #[serde(default = "d_model")]
    d_model: usize,
    #[serde(default)]
    scale_embedding: bool,
    #[serde(default = "d_pad")]
    pad_token_id: u32,
    #[serde(default)]
    eos_token_id: Option<OneOrMany>,
    decoder_start_token_id: Option<u32>,
    forced_eos_token_id: Option<u32>,
    #[serde(default = "d_true")]
    share_encoder_decoder_embeddings: bool,
    #[serde(default = "d_true")]
    tie_word_embeddings: bool,
    // Keys the 2020 conversions wrote. transformers' Marian implements only the post-norm,
    // sinusoidal, no-embedding-norm variant, so any other value is refused rather than guessed.
    #[serde(default)]
    normalize_before: bool,
    #[serde(default)]
    normalize_embedding: bool,
    #[serde(default = "d_true")]
    static_position_embeddings: bool,
    #[serde(default)]
    add_final_layer_norm: bool,
    // Old configs carry generation defaults in config.json; transformers falls back to them
    // when there is no generation_config.json.
    #[serde(flatten)]
    generation: RawGeneration,
}

fn d_vocab() -> usize {
    58101
}
fn d_max_pos() -> usize {
    1024
}
fn d_layers() -> usize {
    12
}
fn d_ffn() -> usize {
    4096
}
fn d_heads() -> usize {
    16
}
fn d_act() -> String {
    "gelu".into()
}
fn d_model() -> usize {
    1024
}
fn d_pad() -> u32 {
    58100
}
fn d_true() -> bool {
    true
}

/// The model architecture, validated.
#[derive(Debug, Clone)]
pub struct MarianConfig {
    pub vocab_size: usize,
    pub decoder_vocab_size: usize,
    pub max_position_embeddings: usize,
    pub encoder_layers: usize,
    pub encoder_ffn_dim: usize,
    pub encoder_attention_heads: usize,
    pub decoder_layers: usize,
    pub decoder_ffn_dim: usize,
    pub decoder_attention_heads: usize,
    pub activation: Activation,
    pub d_model: usize,
    pub scale_embedding: bool,
    pub pad_token_id: u32,
    pub eos_token_ids: Vec<u32>,
    pub decoder_start_token_id: u32,
    pub forced_eos_token_id: Option<u32>,
    pub share_encoder_decoder_embeddings: bool,
    pub tie_word_embeddings: bool,
}

impl MarianConfig {
    /// Size of the decoder's output vocabulary (the logits' width).
    pub fn target_vocab_size(&self) -> usize {
        if self.share_encoder_decoder_embeddings {
            self.vocab_size
        } else {
            self.decoder_vocab_size
        }
    }

    /// The architecture of `Helsinki-NLP/opus-mt-*` base models (as converted in 2020).
    pub fn opus_mt_base() -> Self {
        Self {
            vocab_size: 58101,
            decoder_vocab_size: 58101,
            max_position_embeddings: 512,
            encoder_layers: 6,
            encoder_ffn_dim: 2048,
            encoder_attention_heads: 8,
            decoder_layers: 6,
            decoder_ffn_dim: 2048,
            decoder_attention_heads: 8,
            activation: Activation::Swish,
            d_model: 512,
            scale_embedding: true,
            pad_token_id: 58100,
            eos_token_ids: vec![0],
            decoder_start_token_id: 58100,
            forced_eos_token_id: Some(0),
            share_encoder_decoder_embeddings: true,
            tie_word_embeddings: true,
        }
    }

    /// The architecture of `Helsinki-NLP/opus-mt-tc-big-*` models.
    pub fn opus_mt_tc_big() -> Self {
        Self {
            vocab_size: 57060,
            decoder_vocab_size: 57060,
            max_position_embeddings: 1024,
            encoder_layers: 6,
            encoder_ffn_dim: 4096,
            encoder_attention_heads: 16,
            decoder_layers: 6,
            decoder_ffn_dim: 4096,
            decoder_attention_heads: 16,
            activation: Activation::Relu,
            d_model: 1024,
            scale_embedding: true,
            pad_token_id: 57059,
            eos_token_ids: vec![43741],
            decoder_start_token_id: 57059,
            forced_eos_token_id: Some(43741),
            share_encoder_decoder_embeddings: true,
            tie_word_embeddings: true,
        }
    }
}

/// Generation defaults (`generation_config.json`, or the same keys in `config.json`).
#[derive(Debug, Clone, Default, Deserialize)]
struct RawGeneration {
    num_beams: Option<usize>,
    max_length: Option<usize>,
    max_new_tokens: Option<usize>,
    length_penalty: Option<f32>,
    early_stopping: Option<serde_json::Value>,
    bad_words_ids: Option<Vec<Vec<u32>>>,
    #[serde(default)]
    eos_token_id: Option<OneOrMany>,
    pad_token_id: Option<u32>,
    decoder_start_token_id: Option<u32>,
    forced_eos_token_id: Option<u32>,
    min_length: Option<usize>,
    renormalize_logits: Option<bool>,
}

/// When beam search may stop before `max_length` (transformers' `early_stopping`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EarlyStopping {
    /// `True`: stop as soon as `num_beams` hypotheses are finished.
    Yes,
    /// `False` (the default): stop when the best running beam, scored at its current length,
    /// cannot beat the worst finished hypothesis.
    Heuristic,
    /// `"never"`: stop only when no better hypothesis is possible at any length.
    Never,
}

/// The generation settings one decode uses.
#[derive(Debug, Clone)]
pub struct GenerationConfig {
    pub num_beams: usize,
    /// Total decoder length including the decoder start token, as transformers counts it.
    pub max_length: usize,
    pub min_length: usize,
    pub length_penalty: f32,
    pub early_stopping: EarlyStopping,
    pub bad_words_ids: Vec<Vec<u32>>,
    pub eos_token_ids: Vec<u32>,
    pub pad_token_id: u32,
    pub decoder_start_token_id: u32,
    pub forced_eos_token_id: Option<u32>,
    /// Re-apply log_softmax after the other processors (real OPUS-MT configs set this), so
    /// beam scores stay normalised once banned tokens are removed.
    pub renormalize_logits: bool,
}

impl GenerationConfig {
    /// Use `max_new_tokens` generated tokens at most (the decoder start token is not counted).
    pub fn with_max_new_tokens(mut self, max_new_tokens: usize) -> Self {
        self.max_length = max_new_tokens + 1;
        self
    }

    /// Default settings for a model, as transformers derives them from its config alone.
    pub fn defaults_for(model: &MarianConfig) -> Self {
        Self {
            num_beams: 1,
            max_length: 20,
            min_length: 0,
            length_penalty: 1.0,
            early_stopping: EarlyStopping::Heuristic,
            bad_words_ids: Vec::new(),
            eos_token_ids: model.eos_token_ids.clone(),
            pad_token_id: model.pad_token_id,
            decoder_start_token_id: model.decoder_start_token_id,
            forced_eos_token_id: model.forced_eos_token_id,
            renormalize_logits: false,
        }
    }

    fn apply(&mut self, raw: &RawGeneration) -> Result<(), TranslateError> {
        if let Some(n) = raw.num_beams {
            self.num_beams = n.max(1);
        }
        if let Some(n) = raw.max_length {
            self.max_length = n;
        }
        if let Some(n) = raw.max_new_tokens {
            self.max_length = n + 1;
        }
        if let Some(n) = raw.min_length {
            self.min_length = n;
        }
        if let Some(lp) = raw.length_penalty {
            self.length_penalty = lp;
        }
        if let Some(es) = &raw.early_stopping {
            self.early_stopping = match es {
                serde_json::Value::Bool(true) => EarlyStopping::Yes,
                serde_json::Value::Bool(false) | serde_json::Value::Null => {
                    EarlyStopping::Heuristic
                }
                serde_json::Value::String(s) if s == "never" => EarlyStopping::Never,
                other => {
                    return Err(TranslateError::Config(format!(
                        "early_stopping must be true, false or \"never\", not {other}"
                    )))
                }
            };
        }
        if let Some(words) = &raw.bad_words_ids {
            self.bad_words_ids = words.clone();
        }
        if let Some(ids) = raw.eos_token_id.clone() {
            self.eos_token_ids = ids.into_vec();
        }
        if let Some(id) = raw.pad_token_id {
            self.pad_token_id = id;
        }
        if let Some(id) = raw.decoder_start_token_id {
            self.decoder_start_token_id = id;
        }
        if let Some(r) = raw.renormalize_logits {
            self.renormalize_logits = r;
        }
        if raw.forced_eos_token_id.is_some() {
            self.forced_eos_token_id = raw.forced_eos_token_id;
        }
        Ok(())
    }
}

/// Read `config.json` (required) and `generation_config.json` (optional) of a model folder.
pub fn load_configs(
    config_path: &Path,
    generation_path: Option<&Path>,
) -> Result<(MarianConfig, GenerationConfig), TranslateError> {
    let raw: RawConfig = read_json(config_path)?;
    let model = validate(&raw)?;
    let mut generation = GenerationConfig::defaults_for(&model);
    match generation_path {
        Some(path) => {
            let raw_gen: RawGeneration = read_json(path)?;
            generation.apply(&raw_gen)?;
        }
        None => generation.apply(&raw.generation)?,
    }
    check_generation(&model, &generation)?;
    Ok((model, generation))
}

pub(crate) fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, TranslateError> {
    let bytes = std::fs::read(path).map_err(|e| TranslateError::Io {
        path: path.to_path_buf(),
        source: e,
    })?;
    serde_json::from_slice(&bytes).map_err(|e| TranslateError::CorruptFile {
        path: path.to_path_buf(),
        reason: format!("not valid JSON for this file: {e}"),
    })
}

fn validate(raw: &RawConfig) -> Result<MarianConfig, TranslateError> {
    let bad = |msg: String| Err(TranslateError::Config(msg));
    if raw.normalize_before {
        return bad("normalize_before=true (pre-norm Marian) is not supported: transformers' Marian is post-norm only".into());
    }
    if raw.normalize_embedding {
        return bad("normalize_embedding=true is not supported by Marian in transformers".into());
    }
    if !raw.static_position_embeddings {
        return bad("static_position_embeddings=false (learned positions) is not supported by Marian in transformers".into());
    }
    if raw.add_final_layer_norm {
        return bad("add_final_layer_norm=true is not supported by Marian in transformers".into());
    }
    for (what, d, h) in [
        ("encoder", raw.d_model, raw.encoder_attention_heads),
        ("decoder", raw.d_model, raw.decoder_attention_heads),
    ] {
        if h == 0 || d % h != 0 {
            return bad(format!(
                "d_model {d} is not divisible by {what}_attention_heads {h}"
            ));
        }
    }
    if raw.d_model == 0 || raw.vocab_size == 0 || raw.max_position_embeddings == 0 {
        return bad("d_model, vocab_size and max_position_embeddings must be positive".into());
    }
    let decoder_vocab_size = raw.decoder_vocab_size.unwrap_or(raw.vocab_size);
    let eos_token_ids = raw
        .eos_token_id
        .clone()
        .map(OneOrMany::into_vec)
        .unwrap_or_else(|| vec![0]);
    let cfg = MarianConfig {
        vocab_size: raw.vocab_size,
        decoder_vocab_size,
        max_position_embeddings: raw.max_position_embeddings,
        encoder_layers: raw.encoder_layers,
        encoder_ffn_dim: raw.encoder_ffn_dim,
        encoder_attention_heads: raw.encoder_attention_heads,
        decoder_layers: raw.decoder_layers,
        decoder_ffn_dim: raw.decoder_ffn_dim,
        decoder_attention_heads: raw.decoder_attention_heads,
        activation: parse_activation(&raw.activation_function)?,
        d_model: raw.d_model,
        scale_embedding: raw.scale_embedding,
        pad_token_id: raw.pad_token_id,
        eos_token_ids,
        decoder_start_token_id: raw.decoder_start_token_id.unwrap_or(raw.pad_token_id),
        forced_eos_token_id: raw.forced_eos_token_id,
        share_encoder_decoder_embeddings: raw.share_encoder_decoder_embeddings,
        tie_word_embeddings: raw.tie_word_embeddings,
    };
    let target = cfg.target_vocab_size() as u32;
    let ids = cfg
        .eos_token_ids
        .iter()
        .chain([&cfg.pad_token_id, &cfg.decoder_start_token_id]);
    if let Some(id) = ids.into_iter().find(|&&id| id >= target) {
        return bad(format!(
            "special token id {id} is outside the target vocabulary of {target}"
        ));
    }
    Ok(cfg)
}

fn check_generation(model: &MarianConfig, gen: &GenerationConfig) -> Result<(), TranslateError> {
    let target = model.target_vocab_size() as u32;
    if gen.eos_token_ids.is_empty() {
        return Err(TranslateError::Config("no eos_token_id is set".into()));
    }
    let all = gen
        .eos_token_ids
        .iter()
        .chain(gen.bad_words_ids.iter().flatten())
        .chain([&gen.pad_token_id, &gen.decoder_start_token_id])
        .chain(gen.forced_eos_token_id.iter());
    for &id in all {
        if id >= target {
            return Err(TranslateError::Config(format!(
                "generation token id {id} is outside the target vocabulary of {target}"
            )));
        }
    }
    if gen.max_length < 2 {
        return Err(TranslateError::Config(
            "max_length must leave room for at least one generated token".into(),
        ));
    }
    Ok(())
}
