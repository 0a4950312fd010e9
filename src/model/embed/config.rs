//! The JSON files of a sentence-transformers model folder: the encoder's `config.json`,
//! `modules.json`, the pooling module's `config.json`, `sentence_bert_config.json` and a Dense
//! module's `config.json`, read with the defaults `transformers` and `sentence-transformers` use.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Deserialize;

use super::EmbedError;

/// Reads and parses one JSON file, naming the file in every error.
pub(crate) fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T, EmbedError> {
    let text = std::fs::read_to_string(path).map_err(|source| EmbedError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|e| EmbedError::Config {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

fn invalid(path: &Path, reason: impl Into<String>) -> EmbedError {
    EmbedError::Config {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Activation of the encoder's feed-forward block (`hidden_act`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HiddenAct {
    /// Exact (erf) GELU: transformers' `gelu`.
    Gelu,
    /// Tanh-approximated GELU: `gelu_new`, `gelu_pytorch_tanh`, `gelu_fast`.
    GeluTanh,
    Relu,
    Silu,
}

/// How token positions are numbered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PositionScheme {
    /// BERT: position `i` for the `i`-th token.
    FromZero,
    /// RoBERTa / XLM-R: non-padding tokens count up from `pad_token_id + 1`, padding tokens
    /// sit at `pad_token_id` (transformers' `create_position_ids_from_input_ids`).
    AfterPadding,
}

/// The encoder architecture from `config.json`, validated.
#[derive(Debug, Clone)]
pub struct EncoderConfig {
    pub model_type: String,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub hidden_act: HiddenAct,
    pub layer_norm_eps: f64,
    pub max_position_embeddings: usize,
    pub type_vocab_size: usize,
    pub pad_token_id: u32,
    pub positions: PositionScheme,
    /// MPNet: the number of relative-position buckets whose learned bias every layer adds to
    /// its attention scores (and the model has no token-type table). `None` for the BERT family.
    pub relative_buckets: Option<usize>,
}

/// `config.json` fields with `BertConfig` / `XLMRobertaConfig` defaults.
#[derive(Deserialize)]
struct RawEncoderConfig {
    model_type: Option<String>,
    #[serde(default = "d_vocab")]
    vocab_size: usize,
    #[serde(default = "d_hidden")]
    hidden_size: usize,
    #[serde(default = "d_layers")]
    num_hidden_layers: usize,
    #[serde(default = "d_heads")]
    num_attention_heads: usize,
    #[serde(default = "d_intermediate")]
    intermediate_size: usize,
    #[serde(default = "d_act")]
    hidden_act: String,
    #[serde(default = "d_eps")]
    layer_norm_eps: f64,
    #[serde(default = "d_max_pos")]
    max_position_embeddings: usize,
    #[serde(default = "d_type_vocab")]
    type_vocab_size: usize,
    pad_token_id: Option<u32>,
    position_embedding_type: Option<String>,
    relative_attention_num_buckets: Option<usize>,
}

fn d_vocab() -> usize {
    30522
}
fn d_hidden() -> usize {
    768
}
fn d_layers() -> usize {
    12
}
fn d_heads() -> usize {
    12
}
fn d_intermediate() -> usize {
    3072
}
fn d_act() -> String {
    "gelu".into()
}
fn d_eps() -> f64 {
    1e-12
}
fn d_max_pos() -> usize {
    512
}
fn d_type_vocab() -> usize {
    2
}

impl EncoderConfig {
    pub fn load(path: &Path) -> Result<Self, EmbedError> {
        let raw: RawEncoderConfig = read_json(path)?;
        Self::from_raw(raw, path)
    }

    fn from_raw(raw: RawEncoderConfig, path: &Path) -> Result<Self, EmbedError> {
        let model_type = raw
            .model_type
            .ok_or_else(|| invalid(path, "it has no `model_type`"))?;
        let (positions, default_pad) = match model_type.as_str() {
            "bert" => (PositionScheme::FromZero, 0),
            "xlm-roberta" | "roberta" | "mpnet" => (PositionScheme::AfterPadding, 1),
            _ => return Err(EmbedError::UnsupportedModelType(model_type)),
        };
        let relative_buckets = if model_type == "mpnet" {
            let buckets = raw.relative_attention_num_buckets.unwrap_or(32);
            // transformers halves the buckets by direction, then halves again for the exact
            // ones: fewer than 4 leaves no bucket for far positions.
            if buckets < 4 {
                return Err(invalid(
                    path,
                    format!("relative_attention_num_buckets {buckets} must be at least 4"),
                ));
            }
            Some(buckets)
        } else {
            None
        };
        let hidden_act = match raw.hidden_act.as_str() {
            "gelu" => HiddenAct::Gelu,
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => HiddenAct::GeluTanh,
            "relu" => HiddenAct::Relu,
            "silu" | "swish" => HiddenAct::Silu,
            other => {
                return Err(invalid(
                    path,
                    format!("hidden_act \"{other}\" is not supported (expected gelu, gelu_new, relu or silu)"),
                ))
            }
        };
        if let Some(kind) = raw.position_embedding_type.as_deref() {
            if kind != "absolute" {
                return Err(invalid(
                    path,
                    format!(
                        "position_embedding_type \"{kind}\" is not supported (only \"absolute\")"
                    ),
                ));
            }
        }
        for (name, value) in [
            ("vocab_size", raw.vocab_size),
            ("hidden_size", raw.hidden_size),
            ("num_hidden_layers", raw.num_hidden_layers),
            ("num_attention_heads", raw.num_attention_heads),
            ("intermediate_size", raw.intermediate_size),
            ("max_position_embeddings", raw.max_position_embeddings),
            ("type_vocab_size", raw.type_vocab_size),
        ] {
            if value == 0 {
                return Err(invalid(path, format!("{name} must be positive")));
            }
        }
        if !raw.hidden_size.is_multiple_of(raw.num_attention_heads) {
            return Err(invalid(
                path,
                format!(
                    "hidden_size {} is not a multiple of num_attention_heads {}",
                    raw.hidden_size, raw.num_attention_heads
                ),
            ));
        }
        if !(raw.layer_norm_eps.is_finite() && raw.layer_norm_eps > 0.0) {
            return Err(invalid(path, "layer_norm_eps must be a positive number"));
        }
        let pad_token_id = raw.pad_token_id.unwrap_or(default_pad);
        if relative_buckets.is_some() && pad_token_id != 1 {
            // MPNet's embeddings number positions after id 1 whatever the config says.
            return Err(invalid(
                path,
                format!("an MPNet model pads with id 1, not pad_token_id {pad_token_id}"),
            ));
        }
        if positions == PositionScheme::AfterPadding
            && pad_token_id as usize + 1 >= raw.max_position_embeddings
        {
            return Err(invalid(
                path,
                format!(
                    "max_position_embeddings {} leaves no positions after pad_token_id {pad_token_id}",
                    raw.max_position_embeddings
                ),
            ));
        }
        Ok(Self {
            model_type,
            vocab_size: raw.vocab_size,
            hidden_size: raw.hidden_size,
            num_hidden_layers: raw.num_hidden_layers,
            num_attention_heads: raw.num_attention_heads,
            intermediate_size: raw.intermediate_size,
            hidden_act,
            layer_norm_eps: raw.layer_norm_eps,
            max_position_embeddings: raw.max_position_embeddings,
            type_vocab_size: raw.type_vocab_size,
            pad_token_id,
            positions,
            relative_buckets,
        })
    }

    /// The longest token sequence the position table can number.
    pub fn usable_positions(&self) -> usize {
        match self.positions {
            PositionScheme::FromZero => self.max_position_embeddings,
            PositionScheme::AfterPadding => {
                self.max_position_embeddings - (self.pad_token_id as usize + 1)
            }
        }
    }
}

/// The kind of one entry of `modules.json`, from the last component of its `type`
/// (`sentence_transformers.models.Pooling` and newer module paths alike).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModuleKind {
    Transformer,
    Pooling,
    Dense,
    Normalize,
}

/// One entry of `modules.json`: what the module is and the folder its files are in.
#[derive(Debug, Clone)]
pub struct ModuleEntry {
    pub kind: ModuleKind,
    /// Relative to the repo root; empty for the root itself.
    pub path: String,
}

#[derive(Deserialize)]
struct RawModule {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    path: String,
}

/// Parses `modules.json` into its entries, in order.
pub fn read_modules(path: &Path) -> Result<Vec<ModuleEntry>, EmbedError> {
    let raw: Vec<RawModule> = read_json(path)?;
    let mut out = Vec::with_capacity(raw.len());
    for module in raw {
        let short = module.kind.rsplit('.').next().unwrap_or_default();
        let kind = match short {
            "Transformer" => ModuleKind::Transformer,
            "Pooling" => ModuleKind::Pooling,
            "Dense" => ModuleKind::Dense,
            "Normalize" => ModuleKind::Normalize,
            _ => return Err(EmbedError::UnsupportedModule { kind: module.kind }),
        };
        let path = module.path.trim_matches('/').to_string();
        out.push(ModuleEntry { kind, path });
    }
    Ok(out)
}

/// Joins a module folder and a file name the way a repo file is named (`/`-separated).
pub fn module_file(module_path: &str, file: &str) -> String {
    if module_path.is_empty() {
        file.to_string()
    } else {
        format!("{module_path}/{file}")
    }
}

/// One way of turning token vectors into a sentence vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolingMode {
    Cls,
    Max,
    Mean,
    MeanSqrtLen,
    WeightedMean,
    LastToken,
}

impl PoolingMode {
    fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "cls" => Self::Cls,
            "max" => Self::Max,
            "mean" => Self::Mean,
            "mean_sqrt_len_tokens" => Self::MeanSqrtLen,
            "weightedmean" => Self::WeightedMean,
            "lasttoken" => Self::LastToken,
            _ => return None,
        })
    }
}

/// The pooling module's settings: the modes whose results are concatenated, in order.
#[derive(Debug, Clone)]
pub struct PoolingConfig {
    pub embedding_dimension: usize,
    pub modes: Vec<PoolingMode>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
struct RawPooling {
    word_embedding_dimension: Option<usize>,
    embedding_dimension: Option<usize>,
    pooling_mode: Option<OneOrMany>,
    #[serde(default)]
    pooling_mode_cls_token: bool,
    #[serde(default)]
    pooling_mode_max_tokens: bool,
    #[serde(default)]
    pooling_mode_mean_tokens: bool,
    #[serde(default)]
    pooling_mode_mean_sqrt_len_tokens: bool,
    #[serde(default)]
    pooling_mode_weightedmean_tokens: bool,
    #[serde(default)]
    pooling_mode_lasttoken: bool,
}

impl PoolingConfig {
    pub fn load(path: &Path) -> Result<Self, EmbedError> {
        let raw: RawPooling = read_json(path)?;
        let embedding_dimension = raw
            .embedding_dimension
            .or(raw.word_embedding_dimension)
            .ok_or_else(|| invalid(path, "it has no `word_embedding_dimension`"))?;
        let modes = match raw.pooling_mode {
            Some(spec) => {
                let names = match spec {
                    OneOrMany::One(name) => vec![name],
                    OneOrMany::Many(names) => names,
                };
                let mut modes = Vec::with_capacity(names.len());
                for name in names {
                    modes.push(PoolingMode::parse(&name).ok_or_else(|| {
                        invalid(path, format!("pooling mode \"{name}\" is not known (expected cls, max, mean, mean_sqrt_len_tokens, weightedmean or lasttoken)"))
                    })?);
                }
                modes
            }
            // The boolean flags of older versions, concatenated in sentence-transformers' fixed
            // order; none set means mean pooling, as sentence-transformers decides.
            None => {
                let flags = [
                    (raw.pooling_mode_cls_token, PoolingMode::Cls),
                    (raw.pooling_mode_max_tokens, PoolingMode::Max),
                    (raw.pooling_mode_mean_tokens, PoolingMode::Mean),
                    (
                        raw.pooling_mode_mean_sqrt_len_tokens,
                        PoolingMode::MeanSqrtLen,
                    ),
                    (
                        raw.pooling_mode_weightedmean_tokens,
                        PoolingMode::WeightedMean,
                    ),
                    (raw.pooling_mode_lasttoken, PoolingMode::LastToken),
                ];
                let modes: Vec<_> = flags.iter().filter(|f| f.0).map(|f| f.1).collect();
                if modes.is_empty() {
                    vec![PoolingMode::Mean]
                } else {
                    modes
                }
            }
        };
        if modes.is_empty() {
            return Err(invalid(path, "`pooling_mode` lists no mode"));
        }
        Ok(Self {
            embedding_dimension,
            modes,
        })
    }
}

/// `sentence_bert_config.json` of the Transformer module.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct SentenceBertConfig {
    pub max_seq_length: Option<usize>,
    #[serde(default)]
    pub do_lower_case: bool,
}

/// `tokenizer_config.json`: only the length limit matters here.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct TokenizerConfig {
    /// A float in some files (`1e30` for "no limit"), so read loosely.
    pub model_max_length: Option<f64>,
}

/// Activation after a Dense module's linear layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenseAct {
    Identity,
    Tanh,
    Relu,
    Gelu,
    Sigmoid,
}

/// A Dense module's `config.json`.
#[derive(Debug, Clone)]
pub struct DenseConfig {
    pub in_features: usize,
    pub out_features: usize,
    pub bias: bool,
    pub activation: DenseAct,
    pub path: PathBuf,
}

#[derive(Deserialize)]
struct RawDense {
    in_features: usize,
    out_features: usize,
    #[serde(default = "d_true")]
    bias: bool,
    activation_function: Option<String>,
}

fn d_true() -> bool {
    true
}

impl DenseConfig {
    pub fn load(path: &Path) -> Result<Self, EmbedError> {
        let raw: RawDense = read_json(path)?;
        if raw.in_features == 0 || raw.out_features == 0 {
            return Err(invalid(
                path,
                "in_features and out_features must be positive",
            ));
        }
        // sentence-transformers stores the activation as a torch class path; Tanh is its default.
        let activation = match raw.activation_function.as_deref() {
            None => DenseAct::Tanh,
            Some(name) => match name.rsplit('.').next().unwrap_or_default() {
                "Identity" => DenseAct::Identity,
                "Tanh" => DenseAct::Tanh,
                "ReLU" => DenseAct::Relu,
                "GELU" => DenseAct::Gelu,
                "Sigmoid" => DenseAct::Sigmoid,
                _ => {
                    return Err(invalid(
                        path,
                        format!("activation_function \"{name}\" is not supported (expected Identity, Tanh, ReLU, GELU or Sigmoid)"),
                    ))
                }
            },
        };
        Ok(Self {
            in_features: raw.in_features,
            out_features: raw.out_features,
            bias: raw.bias,
            activation,
            path: path.to_path_buf(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn legacy_pooling_flags_keep_sentence_transformers_order() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            dir.path(),
            "p.json",
            r#"{"word_embedding_dimension": 8, "pooling_mode_mean_tokens": true, "pooling_mode_cls_token": true}"#,
        );
        let cfg = PoolingConfig::load(&p).unwrap();
        assert_eq!(cfg.modes, vec![PoolingMode::Cls, PoolingMode::Mean]);
        assert_eq!(cfg.embedding_dimension, 8);
        let p = write(dir.path(), "q.json", r#"{"word_embedding_dimension": 8}"#);
        assert_eq!(
            PoolingConfig::load(&p).unwrap().modes,
            vec![PoolingMode::Mean]
        );
    }

    #[test]
    fn new_style_pooling_mode_and_bad_mode() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            dir.path(),
            "p.json",
            r#"{"embedding_dimension": 4, "pooling_mode": ["max", "lasttoken"]}"#,
        );
        let cfg = PoolingConfig::load(&p).unwrap();
        assert_eq!(cfg.modes, vec![PoolingMode::Max, PoolingMode::LastToken]);
        let p = write(
            dir.path(),
            "q.json",
            r#"{"embedding_dimension": 4, "pooling_mode": "median"}"#,
        );
        let err = PoolingConfig::load(&p).unwrap_err().to_string();
        assert!(err.contains("median"), "{err}");
    }

    #[test]
    fn encoder_config_rejects_what_it_cannot_run() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "c.json", r#"{"model_type": "gpt2"}"#);
        assert!(matches!(
            EncoderConfig::load(&p),
            Err(EmbedError::UnsupportedModelType(t)) if t == "gpt2"
        ));
        let p = write(
            dir.path(),
            "d.json",
            r#"{"model_type": "bert", "hidden_size": 10, "num_attention_heads": 3}"#,
        );
        let err = EncoderConfig::load(&p).unwrap_err().to_string();
        assert!(err.contains("multiple"), "{err}");
        let p = write(
            dir.path(),
            "e.json",
            r#"{"model_type": "bert", "position_embedding_type": "relative_key"}"#,
        );
        assert!(EncoderConfig::load(&p).is_err());
    }

    #[test]
    fn xlm_roberta_positions_start_after_padding() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            dir.path(),
            "c.json",
            r#"{"model_type": "xlm-roberta", "max_position_embeddings": 514, "pad_token_id": 1}"#,
        );
        let cfg = EncoderConfig::load(&p).unwrap();
        assert_eq!(cfg.positions, PositionScheme::AfterPadding);
        assert_eq!(cfg.usable_positions(), 512);
    }

    #[test]
    fn modules_json_kinds_by_last_component() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            dir.path(),
            "m.json",
            r#"[{"idx":0,"name":"0","path":"","type":"sentence_transformers.models.Transformer"},
                {"idx":1,"name":"1","path":"1_Pooling","type":"sentence_transformers.sentence_transformer.modules.Pooling"},
                {"idx":2,"name":"2","path":"2_Normalize","type":"sentence_transformers.models.Normalize"}]"#,
        );
        let kinds: Vec<_> = read_modules(&p)
            .unwrap()
            .into_iter()
            .map(|m| m.kind)
            .collect();
        assert_eq!(
            kinds,
            vec![
                ModuleKind::Transformer,
                ModuleKind::Pooling,
                ModuleKind::Normalize
            ]
        );
        let p = write(
            dir.path(),
            "n.json",
            r#"[{"path":"","type":"sentence_transformers.models.LSTM"}]"#,
        );
        assert!(matches!(
            read_modules(&p),
            Err(EmbedError::UnsupportedModule { .. })
        ));
    }
}
