//! The BERT encoder on candle tensor operations ([`TensorBert`]): the backend for every device
//! other than the CPU, and on the CPU the reference the kernels are tested against. It also
//! reads the checkpoint into layers, which the CPU backend then packs.

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
    pub token_type: Tensor,
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
        Ok(xs.to_dtype(DType::F32)?)
    }
}
