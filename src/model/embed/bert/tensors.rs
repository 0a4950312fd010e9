//! The BERT encoder on candle tensor operations ([`TensorBert`]): the backend for every device
//! other than the CPU, and on the CPU the reference the kernels are tested against (and the
//! backend of MPNet, whose relative-position bias the kernels do not have). It also reads the
//! checkpoint into layers, which the CPU backend then packs.

use std::collections::HashMap;

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{LayerNorm, Linear};

use super::super::config::{EncoderConfig, HiddenAct};
use super::super::EmbedError;
use super::{positions, BertBackend};
use crate::model::checkpoint::Checkpoint;

type Result<T> = std::result::Result<T, EmbedError>;

/// Added to attention scores of padding keys. Finite (as transformers does) so that a row with
/// no real token at all still softmaxes to numbers rather than NaN.
const MASKED: f32 = f32::MIN;

fn activate(act: HiddenAct, xs: &Tensor) -> Result<Tensor> {
    Ok(match act {
        HiddenAct::Gelu => xs.gelu_erf()?,
        HiddenAct::GeluTanh => xs.gelu()?,
        HiddenAct::Relu => xs.relu()?,
        HiddenAct::Silu => candle_nn::ops::silu(xs)?,
    })
}

pub(super) struct Layer {
    pub query: Linear,
    pub key: Linear,
    pub value: Linear,
    pub attn_out: Linear,
    pub attn_norm: LayerNorm,
    pub intermediate: Linear,
    pub output: Linear,
    pub out_norm: LayerNorm,
}

/// A BERT-family encoder on candle tensors, f32, on any device.
pub(super) struct TensorBert {
    cfg: EncoderConfig,
    pub word: Tensor,
    pub position: Tensor,
    /// The token-type table (BERT family; MPNet has none).
    pub token_type: Option<Tensor>,
    /// MPNet's relative-position bias table (buckets, heads), shared by every layer.
    relative: Option<Tensor>,
    pub embed_norm: LayerNorm,
    pub layers: Vec<Layer>,
    head_dim: usize,
    device: Device,
}

/// The most negative finite value of `dtype`: added to the attention scores of padding keys
/// (transformers' `torch.finfo(dtype).min`), so that a padded key never gets weight.
fn masked(dtype: DType) -> f64 {
    match dtype {
        DType::F16 => -65504.0,
        // bf16 has f32's range but fewer digits: f32::MIN would round to -inf.
        DType::BF16 => -3.389_531_389_251_535_5e38,
        _ => f64::from(MASKED),
    }
}

impl TensorBert {
    /// Reads the layers from a checkpoint's tensors; finds the prefix from the word embedding
    /// table's name, so that checkpoints of the bare model and of task models
    /// (`bert.embeddings...`) both load. Weights and activations are `dtype` (f16 or bf16 on a
    /// GPU): candle's softmax and layer-norm kernels accumulate in f32 whatever the type, and
    /// the hidden states come out as f32.
    pub fn new(
        cfg: &EncoderConfig,
        tensors: HashMap<String, Tensor>,
        device: &Device,
        dtype: DType,
    ) -> Result<Self> {
        const ANCHOR: &str = "embeddings.word_embeddings.weight";
        let prefix = Checkpoint::prefix_of(&tensors, ANCHOR)
            .ok_or_else(|| EmbedError::Weights(format!("the weights have no `{ANCHOR}` tensor")))?;
        let w = Checkpoint::new(tensors, prefix, device).with_dtype(dtype);
        let d = cfg.hidden_size;
        let eps = cfg.layer_norm_eps;
        let word = w.get(ANCHOR, &[cfg.vocab_size, d])?;
        let position = w.get(
            "embeddings.position_embeddings.weight",
            &[cfg.max_position_embeddings, d],
        )?;
        let heads = cfg.num_attention_heads;
        let (token_type, relative) = match cfg.relative_buckets {
            None => {
                let table = w.get(
                    "embeddings.token_type_embeddings.weight",
                    &[cfg.type_vocab_size, d],
                )?;
                (Some(table), None)
            }
            Some(buckets) => {
                let table = w.get("encoder.relative_attention_bias.weight", &[buckets, heads])?;
                (None, Some(table))
            }
        };
        let embed_norm = w.layer_norm("embeddings.LayerNorm", d, eps)?;
        let names = LayerNames::of(cfg);
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for i in 0..cfg.num_hidden_layers {
            let p = format!("encoder.layer.{i}");
            let ff = cfg.intermediate_size;
            layers.push(Layer {
                query: w.linear(&format!("{p}.{}", names.query), d, d)?,
                key: w.linear(&format!("{p}.{}", names.key), d, d)?,
                value: w.linear(&format!("{p}.{}", names.value), d, d)?,
                attn_out: w.linear(&format!("{p}.{}", names.attn_out), d, d)?,
                attn_norm: w.layer_norm(&format!("{p}.{}", names.attn_norm), d, eps)?,
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
            relative,
            embed_norm,
            layers,
            head_dim: cfg.hidden_size / cfg.num_attention_heads,
            device: device.clone(),
        })
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

/// Where each layer's weights are, under `encoder.layer.{i}.`.
struct LayerNames {
    query: &'static str,
    key: &'static str,
    value: &'static str,
    attn_out: &'static str,
    attn_norm: &'static str,
}

impl LayerNames {
    fn of(cfg: &EncoderConfig) -> Self {
        if cfg.relative_buckets.is_some() {
            Self {
                query: "attention.attn.q",
                key: "attention.attn.k",
                value: "attention.attn.v",
                attn_out: "attention.attn.o",
                attn_norm: "attention.LayerNorm",
            }
        } else {
            Self {
                query: "attention.self.query",
                key: "attention.self.key",
                value: "attention.self.value",
                attn_out: "attention.output.dense",
                attn_norm: "attention.output.LayerNorm",
            }
        }
    }
}

/// MPNet's relative-position bucket of every (query, key) pair of `s` positions, row-major:
/// transformers' `relative_position_bucket` (T5's scheme, `max_distance` 128), computed in f32
/// as it does, so that the bucket edges (distance 16 is bucket 10, not 9) fall the same way.
pub(super) fn relative_buckets(s: usize, buckets: usize) -> Vec<u32> {
    const MAX_DISTANCE: f32 = 128.0;
    let half = buckets / 2;
    let exact = half / 2;
    let bucket = |query: usize, key: usize| -> u32 {
        // transformers takes n = query - key: keys before the query are positive.
        let n = query as i64 - key as i64;
        let mut b = if n < 0 { half } else { 0 };
        let n = n.unsigned_abs() as usize;
        b += if n < exact {
            n
        } else {
            // The divisor is a Python float (f64) that torch rounds to f32.
            let span = (f64::from(MAX_DISTANCE) / exact as f64).ln() as f32;
            let scale = (n as f32 / exact as f32).ln() / span;
            let far = exact + (scale * (half - exact) as f32) as usize;
            far.min(half - 1)
        };
        b as u32
    };
    // The bucket depends on query - key only: one per distance (2s - 1 logarithms rather than
    // s²), then laid out per pair.
    let last = s.saturating_sub(1);
    let by_distance: Vec<u32> = (0..=2 * last).map(|i| bucket(i, last)).collect();
    (0..s)
        .flat_map(|q| (0..s).map(move |k| (q, k)))
        .map(|(q, k)| by_distance[q + last - k])
        .collect()
}

impl BertBackend for TensorBert {
    fn name(&self) -> &'static str {
        "tensors"
    }

    fn hidden_states(&self, rows: &[&[u32]], s: usize, mask: &Tensor) -> Result<Tensor> {
        let n = rows.len();
        let mut ids = Vec::with_capacity(n * s);
        let mut pos = Vec::with_capacity(n * s);
        for row in rows {
            ids.extend_from_slice(row);
            ids.extend(std::iter::repeat_n(self.cfg.pad_token_id, s - row.len()));
            pos.extend(positions(&self.cfg, row, s));
        }
        let d = self.cfg.hidden_size;
        let ids = Tensor::from_vec(ids, n * s, &self.device)?;
        let pos = Tensor::from_vec(pos, n * s, &self.device)?;
        // (n, 1, 1, s): 0 where the key is a token, MASKED where it is padding.
        let dtype = self.word.dtype();
        let bias = ((1.0 - mask)? * masked(dtype))?
            .reshape((n, 1, 1, s))?
            .to_dtype(dtype)?;

        let mut embedded = self
            .word
            .index_select(&ids, 0)?
            .add(&self.position.index_select(&pos, 0)?)?;
        if let Some(types) = &self.token_type {
            embedded = embedded.broadcast_add(&types.get(0)?)?;
        }
        let embedded = embedded.reshape((n, s, d))?;
        // MPNet: (n, heads, s, s), the relative-position bias plus the padding mask.
        let bias = match (&self.relative, self.cfg.relative_buckets) {
            (Some(table), Some(buckets)) => {
                let index = Tensor::from_vec(relative_buckets(s, buckets), s * s, &self.device)?;
                let heads = self.cfg.num_attention_heads;
                let relative = table
                    .index_select(&index, 0)?
                    .reshape((s, s, heads))?
                    .permute((2, 0, 1))?
                    .unsqueeze(0)?;
                bias.broadcast_add(&relative)?
            }
            _ => bias,
        };
        let mut xs = self.embed_norm.forward(&embedded)?;
        for layer in &self.layers {
            let attn = self.attention(layer, &xs, &bias)?;
            xs = layer.attn_norm.forward(&(attn + &xs)?)?;
            let ff = activate(self.cfg.hidden_act, &layer.intermediate.forward(&xs)?)?;
            let ff = layer.output.forward(&ff)?;
            xs = layer.out_norm.forward(&(ff + &xs)?)?;
        }
        Ok(xs.to_dtype(DType::F32)?)
    }
}

#[cfg(test)]
mod tests {
    use super::relative_buckets;

    /// The bucket of a query `n` positions after its key (`n` < 0: before it).
    fn bucket_at(n: i64) -> u32 {
        let s = 600;
        let (q, k) = if n >= 0 {
            (n as usize, 0)
        } else {
            (0, n.unsigned_abs() as usize)
        };
        relative_buckets(s, 32)[q * s + k]
    }

    #[test]
    fn relative_buckets_match_transformers_at_every_edge() {
        // Values printed by transformers' MPNetEncoder.relative_position_bucket (32 buckets).
        for n in 0..8 {
            assert_eq!(bucket_at(n), n as u32);
            assert_eq!(bucket_at(-n), if n == 0 { 0 } else { 16 + n as u32 });
        }
        for (n, after, before) in [
            (8, 8, 24),
            (15, 9, 25),
            (16, 10, 26),
            (31, 11, 27),
            (32, 12, 28),
            (64, 14, 30),
            (127, 15, 31),
            (128, 15, 31),
            (599, 15, 31),
        ] {
            assert_eq!(bucket_at(n), after, "distance {n}");
            assert_eq!(bucket_at(-n), before, "distance -{n}");
        }
    }
}
