//! A BERT-family encoder (transformers' `BertModel`, `XLMRobertaModel`, `RobertaModel`) on
//! candle: word + position + token-type embeddings and LayerNorm, then post-norm layers of
//! masked self-attention and a feed-forward block. Returns the last hidden states; the pooler
//! head is not used (sentence-transformers pools the token vectors itself).

use std::collections::HashMap;

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{LayerNorm, Linear};

use super::config::{EncoderConfig, HiddenAct, PositionScheme};
use super::EmbedError;

type Result<T> = std::result::Result<T, EmbedError>;

/// Added to attention scores of padding keys. Finite (as transformers does) so that a row with
/// no real token at all still softmaxes to numbers rather than NaN.
const MASKED: f32 = f32::MIN;

/// Tensors by name under the checkpoint's prefix (`""`, `bert.`, `roberta.`, ...).
pub(crate) struct Weights {
    tensors: HashMap<String, Tensor>,
    prefix: String,
    device: Device,
}

impl Weights {
    /// Finds the prefix from the word embedding table's name, so that checkpoints of the bare
    /// model and of task models (`bert.embeddings...`) both load.
    pub(crate) fn new(tensors: HashMap<String, Tensor>, device: &Device) -> Result<Self> {
        const ANCHOR: &str = "embeddings.word_embeddings.weight";
        let prefix = tensors
            .keys()
            .filter_map(|k| k.strip_suffix(ANCHOR))
            .filter(|p| p.is_empty() || p.ends_with('.'))
            .min_by_key(|p| p.len())
            .map(str::to_string)
            .ok_or_else(|| EmbedError::Weights(format!("the weights have no `{ANCHOR}` tensor")))?;
        Ok(Self {
            tensors,
            prefix,
            device: device.clone(),
        })
    }

    fn lookup(&self, name: &str) -> Option<(&Tensor, String)> {
        let full = format!("{}{name}", self.prefix);
        self.tensors.get(&full).map(|t| (t, full))
    }

    fn get(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let (t, full) = self.lookup(name).ok_or_else(|| {
            EmbedError::Weights(format!(
                "tensor `{}{name}` is missing from the weights",
                self.prefix
            ))
        })?;
        check_shape(t, &full, shape)?;
        Ok(t.to_device(&self.device)?.to_dtype(DType::F32)?)
    }

    fn linear(&self, name: &str, in_dim: usize, out_dim: usize) -> Result<Linear> {
        let w = self.get(&format!("{name}.weight"), &[out_dim, in_dim])?;
        let b = self.get(&format!("{name}.bias"), &[out_dim])?;
        Ok(Linear::new(w, Some(b)))
    }

    fn layer_norm(&self, name: &str, dim: usize, eps: f64) -> Result<LayerNorm> {
        // Checkpoints from TensorFlow-era conversions call the parameters gamma / beta.
        let (w, b) = if self.lookup(&format!("{name}.weight")).is_some() {
            (
                self.get(&format!("{name}.weight"), &[dim])?,
                self.get(&format!("{name}.bias"), &[dim])?,
            )
        } else {
            (
                self.get(&format!("{name}.gamma"), &[dim])?,
                self.get(&format!("{name}.beta"), &[dim])?,
            )
        };
        Ok(LayerNorm::new(w, b, eps))
    }
}

pub(crate) fn check_shape(t: &Tensor, name: &str, shape: &[usize]) -> Result<()> {
    if t.dims() != shape {
        return Err(EmbedError::Weights(format!(
            "tensor `{name}` has shape {:?}, the config implies {shape:?}",
            t.dims()
        )));
    }
    Ok(())
}

fn activate(act: HiddenAct, xs: &Tensor) -> Result<Tensor> {
    Ok(match act {
        HiddenAct::Gelu => xs.gelu_erf()?,
        HiddenAct::GeluTanh => xs.gelu()?,
        HiddenAct::Relu => xs.relu()?,
        HiddenAct::Silu => candle_nn::ops::silu(xs)?,
    })
}

struct Layer {
    query: Linear,
    key: Linear,
    value: Linear,
    attn_out: Linear,
    attn_norm: LayerNorm,
    intermediate: Linear,
    output: Linear,
    out_norm: LayerNorm,
}

pub struct BertEncoder {
    cfg: EncoderConfig,
    word: Tensor,
    position: Tensor,
    token_type: Tensor,
    embed_norm: LayerNorm,
    layers: Vec<Layer>,
    head_dim: usize,
    device: Device,
}

impl BertEncoder {
    pub fn new(
        cfg: &EncoderConfig,
        tensors: HashMap<String, Tensor>,
        device: &Device,
    ) -> Result<Self> {
        let w = Weights::new(tensors, device)?;
        let d = cfg.hidden_size;
        let eps = cfg.layer_norm_eps;
        let word = w.get("embeddings.word_embeddings.weight", &[cfg.vocab_size, d])?;
        let position = w.get(
            "embeddings.position_embeddings.weight",
            &[cfg.max_position_embeddings, d],
        )?;
        let token_type = w.get(
            "embeddings.token_type_embeddings.weight",
            &[cfg.type_vocab_size, d],
        )?;
        let embed_norm = w.layer_norm("embeddings.LayerNorm", d, eps)?;
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for i in 0..cfg.num_hidden_layers {
            let p = format!("encoder.layer.{i}");
            let ff = cfg.intermediate_size;
            layers.push(Layer {
                query: w.linear(&format!("{p}.attention.self.query"), d, d)?,
                key: w.linear(&format!("{p}.attention.self.key"), d, d)?,
                value: w.linear(&format!("{p}.attention.self.value"), d, d)?,
                attn_out: w.linear(&format!("{p}.attention.output.dense"), d, d)?,
                attn_norm: w.layer_norm(&format!("{p}.attention.output.LayerNorm"), d, eps)?,
                intermediate: w.linear(&format!("{p}.intermediate.dense"), d, ff)?,
                output: w.linear(&format!("{p}.output.dense"), ff, d)?,
                out_norm: w.layer_norm(&format!("{p}.output.LayerNorm"), d, eps)?,
            });
        }
        Ok(Self {
            cfg: cfg.clone(),
            word,
            position,
            token_type,
            embed_norm,
            layers,
            head_dim: d / cfg.num_attention_heads,
            device: device.clone(),
        })
    }

    pub fn config(&self) -> &EncoderConfig {
        &self.cfg
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Position ids of one row of `s` slots whose first `len` hold `ids` (the rest padding).
    fn positions(&self, ids: &[u32], s: usize) -> Vec<u32> {
        match self.cfg.positions {
            PositionScheme::FromZero => (0..s as u32).collect(),
            PositionScheme::AfterPadding => {
                // transformers: cumsum(id != pad) * (id != pad) + pad, padding slots included.
                let pad = self.cfg.pad_token_id;
                let mut count = 0u32;
                (0..s)
                    .map(|i| match ids.get(i) {
                        Some(&id) if id != pad => {
                            count += 1;
                            pad + count
                        }
                        _ => pad,
                    })
                    .collect()
            }
        }
    }

    /// Last hidden states (n, s, hidden) of a batch of token id rows, right-padded to the
    /// longest row, with the (n, s) f32 attention mask (1 for tokens, 0 for padding).
    /// Every token type is 0, as for a single text.
    pub fn forward(&self, rows: &[&[u32]]) -> Result<(Tensor, Tensor)> {
        let n = rows.len();
        let s = rows.iter().map(|r| r.len()).max().unwrap_or(0);
        if n == 0 || s == 0 {
            return Err(EmbedError::Input("cannot encode an empty batch".into()));
        }
        if s > self.cfg.usable_positions() {
            return Err(EmbedError::Input(format!(
                "a sequence has {s} tokens, more than the model's {} positions",
                self.cfg.usable_positions()
            )));
        }
        let vocab = self.cfg.vocab_size as u32;
        let mut ids = Vec::with_capacity(n * s);
        let mut pos = Vec::with_capacity(n * s);
        let mut mask = Vec::with_capacity(n * s);
        for row in rows {
            if let Some(bad) = row.iter().find(|&&id| id >= vocab) {
                return Err(EmbedError::Input(format!(
                    "token id {bad} is outside the model's vocabulary of {vocab}"
                )));
            }
            ids.extend_from_slice(row);
            ids.extend(std::iter::repeat_n(self.cfg.pad_token_id, s - row.len()));
            pos.extend(self.positions(row, s));
            mask.extend(std::iter::repeat_n(1f32, row.len()));
            mask.extend(std::iter::repeat_n(0f32, s - row.len()));
        }
        let d = self.cfg.hidden_size;
        let ids = Tensor::from_vec(ids, n * s, &self.device)?;
        let pos = Tensor::from_vec(pos, n * s, &self.device)?;
        let mask = Tensor::from_vec(mask, (n, s), &self.device)?;
        // (n, 1, 1, s): 0 where the key is a token, MASKED where it is padding.
        let bias = ((1.0 - &mask)? * f64::from(MASKED))?.reshape((n, 1, 1, s))?;

        let type0 = self.token_type.get(0)?;
        let embedded = self
            .word
            .index_select(&ids, 0)?
            .add(&self.position.index_select(&pos, 0)?)?
            .broadcast_add(&type0)?
            .reshape((n, s, d))?;
        let mut xs = self.embed_norm.forward(&embedded)?;
        for layer in &self.layers {
            let attn = self.attention(layer, &xs, &bias)?;
            xs = layer.attn_norm.forward(&(attn + &xs)?)?;
            let ff = activate(self.cfg.hidden_act, &layer.intermediate.forward(&xs)?)?;
            let ff = layer.output.forward(&ff)?;
            xs = layer.out_norm.forward(&(ff + &xs)?)?;
        }
        Ok((xs, mask))
    }

    fn attention(&self, layer: &Layer, xs: &Tensor, bias: &Tensor) -> Result<Tensor> {
        let (n, s, d) = xs.dims3()?;
        let heads = self.cfg.num_attention_heads;
        let split = |t: Tensor| -> Result<Tensor> {
            Ok(t.reshape((n, s, heads, self.head_dim))?
                .transpose(1, 2)?
                .contiguous()?)
        };
        let q = split(layer.query.forward(xs)?)?;
        let k = split(layer.key.forward(xs)?)?;
        let v = split(layer.value.forward(xs)?)?;
        let scale = (self.head_dim as f64).powf(-0.5);
        let scores = (q.matmul(&k.t()?)? * scale)?.broadcast_add(bias)?;
        let probs = candle_nn::ops::softmax_last_dim(&scores)?;
        let ctx = probs.matmul(&v)?.transpose(1, 2)?.reshape((n, s, d))?;
        Ok(layer.attn_out.forward(&ctx)?)
    }
}
