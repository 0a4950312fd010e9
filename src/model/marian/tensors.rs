//! Marian on candle tensor operations ([`TensorMarian`]): the backend for every device other
//! than the CPU, and on the CPU the reference the kernels are tested against. It also owns
//! reading a checkpoint into layers: the CPU backend packs its layers from the ones built here.
//!
//! The encoder applies a padding mask; the decoder runs one step at a time with a
//! self-attention KV cache, and each sentence's cross-attention keys and values are computed
//! once and shared by its beams ([`super::tensor_state`]).

use std::collections::HashMap;
use std::sync::OnceLock;

use candle_core::{DType, Device, IndexOp, Module, Tensor};
use candle_nn::{LayerNorm, Linear};

use super::backend::{DecoderState, EncodedBatch, MarianBackend};
use super::config::{Activation, GenerationConfig, MarianConfig};
use super::device_search::{record_transfer, DeviceSearch};
use super::fused::decode_attention::DecodeAttention;
use super::fused::{FusedKernels, Kernel};
use super::profile::{self, Phase};
use super::tensor_state::{CrossKeys, SelfCache, TensorState};
use super::TranslateError;
use crate::model::checkpoint::Checkpoint;
use crate::model::compute::ComputeType;

mod attention;

pub(super) use attention::attention;
use attention::{CrossAttention, SelfAttention};

type Result<T> = std::result::Result<T, TranslateError>;

/// torch.nn.LayerNorm's default eps; Marian configs have no field for it.
pub(super) const LAYER_NORM_EPS: f64 = 1e-5;

/// Marian's own sinusoidal table: the sine half first, then the cosine half (not interleaved).
pub fn sinusoidal_positions(n_pos: usize, dim: usize, device: &Device) -> Result<Tensor> {
    let sentinel = dim.div_ceil(2);
    let mut table = vec![0f32; n_pos * dim];
    for pos in 0..n_pos {
        let row = &mut table[pos * dim..(pos + 1) * dim];
        for (k, slot) in row.iter_mut().take(sentinel).enumerate() {
            let angle = pos as f64 / 10000f64.powf((2 * k) as f64 / dim as f64);
            *slot = angle.sin() as f32;
        }
        for k in 0..dim - sentinel {
            let angle = pos as f64 / 10000f64.powf((2 * k) as f64 / dim as f64);
            row[sentinel + k] = angle.cos() as f32;
        }
    }
    Ok(Tensor::from_vec(table, (n_pos, dim), device)?)
}

fn activate(act: Activation, xs: &Tensor) -> Result<Tensor> {
    Ok(match act {
        Activation::Swish => candle_nn::ops::silu(xs)?,
        Activation::Relu => xs.relu()?,
        Activation::Gelu => xs.gelu_erf()?,
        Activation::GeluTanh => xs.gelu()?,
    })
}

pub(super) struct EncoderLayer {
    pub self_attn: SelfAttention,
    pub self_attn_norm: LayerNorm,
    pub fc1: Linear,
    pub fc2: Linear,
    pub final_norm: LayerNorm,
}

pub(super) struct DecoderLayer {
    pub self_attn: SelfAttention,
    pub self_attn_norm: LayerNorm,
    pub cross_attn: CrossAttention,
    pub cross_attn_norm: LayerNorm,
    pub fc1: Linear,
    pub fc2: Linear,
    pub final_norm: LayerNorm,
}

/// The embedding tables, positions and output bias: looked up by row, so both backends keep
/// them as tensors.
pub(super) struct Embeddings {
    pub encoder: Tensor,
    pub decoder: Tensor,
    /// (target_vocab,)
    pub final_logits_bias: Tensor,
    pub encoder_positions: Tensor,
    pub decoder_positions: Tensor,
    pub scale: f64,
}

/// The layers as candle tensors.
pub(super) struct Layers {
    pub lm_head: Tensor,
    pub encoder: Vec<EncoderLayer>,
    pub decoder: Vec<DecoderLayer>,
}

/// Marian on candle tensor operations, f32, on any device.
pub struct TensorMarian {
    cfg: MarianConfig,
    emb: Embeddings,
    layers: Layers,
    device: Device,
    /// f32, f16 or bf16: the weights' and activations' type (scores are always f32).
    dtype: DType,
    /// Whether decode steps run the project's fused kernels (see [`FusedKernels`]).
    kernels: FusedKernels,
    /// Whether each fused kernel runs (in the order of [`Kernel::ALL`]): `kernels` resolved
    /// on first use, so a GPU checks a kernel once per model.
    fused: [OnceLock<bool>; 2],
}

/// The tensor type a compute type runs in on candle tensors; `None` for int8 (CPU kernels only).
pub fn tensor_dtype(compute: ComputeType) -> Option<DType> {
    match compute {
        ComputeType::F32 => Some(DType::F32),
        ComputeType::F16 => Some(DType::F16),
        ComputeType::BF16 => Some(DType::BF16),
        ComputeType::Int8 => None,
    }
}

/// The encoder output: (n, s, d_model), with the additive padding bias (n, 1, 1, s)
/// cross-attention needs: 0 for real tokens, -inf for padding.
pub struct TensorEncoded {
    hidden: Tensor,
    pad_bias: Tensor,
    lengths: Vec<usize>,
}

impl EncodedBatch for TensorEncoded {
    fn lengths(&self) -> &[usize] {
        &self.lengths
    }
}

impl TensorEncoded {
    /// The same states laid out padded, from sentences packed one after another
    /// ((Σ lengths, d), as the CPU backend keeps them).
    #[cfg(test)]
    pub(super) fn from_packed(
        packed: &[f32],
        lengths: Vec<usize>,
        d: usize,
        device: &Device,
    ) -> Result<Self> {
        let n = lengths.len();
        let s = lengths.iter().copied().max().unwrap_or(0);
        let mut hidden = vec![0f32; n * s * d];
        let mut bias = vec![f32::NEG_INFINITY; n * s];
        let mut at = 0;
        for (i, &len) in lengths.iter().enumerate() {
            hidden[i * s * d..(i * s + len) * d].copy_from_slice(&packed[at..at + len * d]);
            bias[i * s..i * s + len].fill(0.0);
            at += len * d;
        }
        Ok(Self {
            hidden: Tensor::from_vec(hidden, (n, s, d), device)?,
            pad_bias: Tensor::from_vec(bias, (n, 1, 1, s), device)?,
            lengths,
        })
    }

    /// Real tokens only, sentence after sentence: (Σ lengths, d).
    #[cfg(test)]
    pub(super) fn to_packed(&self) -> Result<Vec<f32>> {
        let mut packed = Vec::new();
        for (i, &len) in self.lengths.iter().enumerate() {
            packed.extend(self.hidden.i((i, ..len))?.flatten_all()?.to_vec1::<f32>()?);
        }
        Ok(packed)
    }
}

/// The embeddings, positions and output bias of a checkpoint.
fn load_embeddings(
    cfg: &MarianConfig,
    w: &Checkpoint,
    device: &Device,
) -> Result<(Embeddings, Tensor)> {
    let d = cfg.d_model;
    let target_vocab = cfg.target_vocab_size();
    let (encoder, decoder) = if cfg.share_encoder_decoder_embeddings {
        // `shared` is the canonical copy; older exports only have the per-side names.
        let shared = match w.get_opt("shared.weight", &[cfg.vocab_size, d])? {
            Some(t) => t,
            None => w.get("encoder.embed_tokens.weight", &[cfg.vocab_size, d])?,
        };
        (shared.clone(), shared)
    } else {
        (
            w.get("encoder.embed_tokens.weight", &[cfg.vocab_size, d])?,
            w.get("decoder.embed_tokens.weight", &[cfg.decoder_vocab_size, d])?,
        )
    };
    // save_pretrained omits a tied lm_head; an untied one must be present.
    let lm_head = if cfg.tie_word_embeddings {
        decoder.clone()
    } else {
        w.exact("lm_head.weight", &[target_vocab, d])?
    };
    if lm_head.dim(0)? != target_vocab {
        return Err(TranslateError::Weights(format!(
            "the output projection has {} rows for a target vocabulary of {target_vocab}",
            lm_head.dim(0)?
        )));
    }
    // Added to the f32 logits, whatever the model computes in.
    let final_logits_bias =
        match w.exact_opt_as("final_logits_bias", &[1, target_vocab], DType::F32)? {
            Some(t) => t.reshape(target_vocab)?,
            None => Tensor::zeros(target_vocab, DType::F32, device)?,
        };
    let n_pos = cfg.max_position_embeddings;
    let table = sinusoidal_positions(n_pos, d, device)?.to_dtype(w.dtype())?;
    // Checkpoints from 2020 store the table; transformers uses the stored one when present.
    let encoder_positions = w
        .get_opt("encoder.embed_positions.weight", &[n_pos, d])?
        .unwrap_or_else(|| table.clone());
    let decoder_positions = w
        .get_opt("decoder.embed_positions.weight", &[n_pos, d])?
        .unwrap_or(table);
    let emb = Embeddings {
        encoder,
        decoder,
        final_logits_bias,
        encoder_positions,
        decoder_positions,
        scale: if cfg.scale_embedding {
            (d as f64).sqrt()
        } else {
            1.0
        },
    };
    Ok((emb, lm_head))
}

fn load_layers(
    cfg: &MarianConfig,
    w: &Checkpoint,
) -> Result<(Vec<EncoderLayer>, Vec<DecoderLayer>)> {
    let d = cfg.d_model;
    let eps = LAYER_NORM_EPS;
    let mut encoder = Vec::with_capacity(cfg.encoder_layers);
    for i in 0..cfg.encoder_layers {
        let p = format!("encoder.layers.{i}");
        let heads = cfg.encoder_attention_heads;
        encoder.push(EncoderLayer {
            self_attn: SelfAttention::load(w, &format!("{p}.self_attn"), d, heads)?,
            self_attn_norm: w.layer_norm(&format!("{p}.self_attn_layer_norm"), d, eps)?,
            fc1: w.linear(&format!("{p}.fc1"), d, cfg.encoder_ffn_dim)?,
            fc2: w.linear(&format!("{p}.fc2"), cfg.encoder_ffn_dim, d)?,
            final_norm: w.layer_norm(&format!("{p}.final_layer_norm"), d, eps)?,
        });
    }
    let mut decoder = Vec::with_capacity(cfg.decoder_layers);
    for i in 0..cfg.decoder_layers {
        let p = format!("decoder.layers.{i}");
        let heads = cfg.decoder_attention_heads;
        decoder.push(DecoderLayer {
            self_attn: SelfAttention::load(w, &format!("{p}.self_attn"), d, heads)?,
            self_attn_norm: w.layer_norm(&format!("{p}.self_attn_layer_norm"), d, eps)?,
            cross_attn: CrossAttention::load(w, &format!("{p}.encoder_attn"), d, heads)?,
            cross_attn_norm: w.layer_norm(&format!("{p}.encoder_attn_layer_norm"), d, eps)?,
            fc1: w.linear(&format!("{p}.fc1"), d, cfg.decoder_ffn_dim)?,
            fc2: w.linear(&format!("{p}.fc2"), cfg.decoder_ffn_dim, d)?,
            final_norm: w.layer_norm(&format!("{p}.final_layer_norm"), d, eps)?,
        });
    }
    Ok((encoder, decoder))
}

impl TensorMarian {
    /// Build the model from a checkpoint's tensors (as `MarianMTModel.state_dict()` names
    /// them), f32 on `device`.
    pub fn new(
        cfg: &MarianConfig,
        tensors: HashMap<String, Tensor>,
        device: &Device,
    ) -> Result<Self> {
        Self::with_compute_type(cfg, tensors, device, ComputeType::F32)
    }

    /// [`Self::new`], computing in `compute` (f32, f16 or bf16): weights and matrix products in
    /// that type; candle's softmax and layer-norm kernels accumulate in f32 whatever the type,
    /// and the logits and everything the search does are f32.
    pub fn with_compute_type(
        cfg: &MarianConfig,
        tensors: HashMap<String, Tensor>,
        device: &Device,
        compute: ComputeType,
    ) -> Result<Self> {
        let mut model = Self::as_stored(cfg, tensors, device, compute)?;
        model.fold_query_scales(true)?;
        Ok(model)
    }

    /// The layers with the checkpoint's weights as they are (no scale folded): what the CPU
    /// kernels pack, since they scale the scores themselves.
    pub(super) fn unfolded(
        cfg: &MarianConfig,
        tensors: HashMap<String, Tensor>,
        device: &Device,
    ) -> Result<Self> {
        Self::as_stored(cfg, tensors, device, ComputeType::F32)
    }

    fn as_stored(
        cfg: &MarianConfig,
        tensors: HashMap<String, Tensor>,
        device: &Device,
        compute: ComputeType,
    ) -> Result<Self> {
        let dtype = tensor_dtype(compute).ok_or_else(|| {
            TranslateError::Config(format!(
                "{compute} weights run on the CPU kernels only, not on candle tensors"
            ))
        })?;
        // MarianMTModel checkpoints name the seq2seq body `model.*`; a bare MarianModel does not.
        let prefix = if tensors.keys().any(|k| k.starts_with("model.")) {
            "model."
        } else {
            ""
        };
        let w = Checkpoint::new(tensors, prefix, device).with_dtype(dtype);
        let (emb, lm_head) = load_embeddings(cfg, &w, device)?;
        let (encoder, decoder) = load_layers(cfg, &w)?;
        Ok(Self {
            cfg: cfg.clone(),
            emb,
            layers: Layers {
                lm_head,
                encoder,
                decoder,
            },
            device: device.clone(),
            dtype,
            kernels: FusedKernels::Auto,
            fused: Default::default(),
        })
    }

    /// The model with its decode steps run with `kernels` (the default, `Auto`, runs each
    /// fused kernel on a GPU where its check passed).
    pub fn with_fused_kernels(mut self, kernels: FusedKernels) -> Self {
        self.kernels = kernels;
        self.fused = Default::default();
        self
    }

    /// Whether decode steps run `kernel` (on a GPU: once its check passed there).
    pub(super) fn runs_fused(&self, kernel: Kernel) -> bool {
        *self.fused[kernel.index()].get_or_init(|| self.kernels.uses(kernel, &self.device))
    }

    /// A decode step's attention: the fused kernel where it runs, candle's operations
    /// elsewhere. q (groups, heads, per, head_dim); k, v (groups, heads, len, head_dim).
    fn step_attention(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        bias: Option<&Tensor>,
        scale: f64,
    ) -> Result<Tensor> {
        if self.runs_fused(Kernel::DecodeAttention) && DecodeAttention::fits(k.dim(2)?) {
            let op = DecodeAttention {
                scale: scale as f32,
            };
            match op.apply(q, k, v, bias) {
                Ok(ctx) => return Ok(ctx),
                // A shape the checks did not foresee: candle's operations take it.
                Err(e) => tracing::warn!("fused decode attention refused a step: {e}"),
            }
        }
        attention(q, k, v, bias, scale)
    }

    /// Fold every attention's scale into its query projection where that is exact (or undo it).
    fn fold_query_scales(&mut self, fold: bool) -> Result<()> {
        for layer in &mut self.layers.encoder {
            layer.self_attn.fold_scale(fold)?;
        }
        for layer in &mut self.layers.decoder {
            layer.self_attn.fold_scale(fold)?;
            layer.cross_attn.fold_scale(fold)?;
        }
        Ok(())
    }

    /// The parts, for the CPU backend to pack: the checkpoint's weights (its kernels scale the
    /// scores themselves). Loaded by [`Self::unfolded`] there is nothing to undo; a model built
    /// with [`Self::new`] is unfolded here (exact).
    pub(super) fn into_parts(mut self) -> Result<(MarianConfig, Embeddings, Layers, Device)> {
        self.fold_query_scales(false)?;
        Ok((self.cfg, self.emb, self.layers, self.device))
    }

    /// One decoder step on checked tokens: next-token logits (rows × target vocab, f32,
    /// `final_logits_bias` added), left on the device.
    pub(super) fn step_logits(&self, tokens: &[u32], state: &mut TensorState) -> Result<Tensor> {
        let n = tokens.len();
        let d = self.cfg.d_model;
        let t_embed = profile::time_on(Phase::Embed, &self.device);
        let ids = Tensor::from_slice(tokens, n, &self.device)?;
        let embedded = self.emb.decoder.index_select(&ids, 0)?;
        let position = self.emb.decoder_positions.i(state.step..state.step + 1)?;
        let mut xs = (embedded * self.emb.scale)?
            .broadcast_add(&position)?
            .reshape((n, 1, d))?;
        drop(t_embed);
        for (i, layer) in self.layers.decoder.iter().enumerate() {
            xs = self.decoder_layer(layer, xs, state, i)?;
        }
        state.step += 1;
        let t_head = profile::time_on(Phase::LmHead, &self.device);
        let out = xs
            .reshape((n, d))?
            .matmul(&self.layers.lm_head.t()?)?
            .to_dtype(DType::F32)?
            .broadcast_add(&self.emb.final_logits_bias)?;
        drop(t_head);
        Ok(out)
    }

    /// Decoder layer `i`'s step on `xs` (n, 1, d).
    fn decoder_layer(
        &self,
        layer: &DecoderLayer,
        xs: Tensor,
        state: &mut TensorState,
        i: usize,
    ) -> Result<Tensor> {
        // Self-attention over everything decoded so far (no causal mask needed: one query).
        let t_qkv = profile::time_on(Phase::SelfQkv, &self.device);
        let att = &layer.self_attn;
        let (q, k_new, v_new) = att.project(&xs)?;
        let (k, v) = SelfCache::append(&mut state.self_kv[i], &k_new, &v_new, state.positions)?;
        drop(t_qkv);
        let t_att = profile::time_on(Phase::SelfAttend, &self.device);
        let ctx = self.step_attention(&q, &k, &v, None, att.scale.on_scores())?;
        drop((t_att, k, v));
        let t_out = profile::time_on(Phase::SelfOut, &self.device);
        let attn = att.out.forward(&ctx)?;
        drop(t_out);
        let t_norm = profile::time_on(Phase::AddNorm, &self.device);
        let xs = layer.self_attn_norm.forward(&(xs + attn)?)?;
        drop(t_norm);

        // Cross-attention: a sentence's rows (its beams) are the queries of one attention over
        // its keys, (sentences, heads, rows per sentence, head_dim).
        let cross = &layer.cross_attn;
        let t_q = profile::time_on(Phase::CrossQ, &self.device);
        let (n, d) = (xs.dim(0)?, self.cfg.d_model);
        let per = state.cross.rows_per_sentence;
        let heads = cross.heads;
        let q = cross
            .q
            .forward(&xs)?
            .reshape((n / per, per, heads, d / heads))?
            .transpose(1, 2)?
            .contiguous()?;
        drop(t_q);
        let t_att = profile::time_on(Phase::CrossAttend, &self.device);
        let (ck, cv) = &state.cross.kv[i];
        let bias = &state.cross.bias;
        let ctx = self
            .step_attention(&q, ck, cv, Some(bias), cross.scale.on_scores())?
            .reshape((n, 1, d))?;
        drop(t_att);
        let t_out = profile::time_on(Phase::CrossOut, &self.device);
        let attn = cross.out.forward(&ctx)?;
        drop(t_out);
        let t_norm = profile::time_on(Phase::AddNorm, &self.device);
        let xs = layer.cross_attn_norm.forward(&(xs + attn)?)?;
        drop(t_norm);

        let t_ffn = profile::time_on(Phase::Ffn, &self.device);
        let ff = layer
            .fc2
            .forward(&activate(self.cfg.activation, &layer.fc1.forward(&xs)?)?)?;
        drop(t_ffn);
        let _t = profile::time_on(Phase::AddNorm, &self.device);
        Ok(layer.final_norm.forward(&(xs + ff)?)?)
    }
}

impl MarianBackend for TensorMarian {
    type Encoded = TensorEncoded;
    type State = TensorState;
    type Search<'a> = DeviceSearch<'a>;

    fn searcher<'a>(&'a self, gen: &'a GenerationConfig) -> Result<DeviceSearch<'a>> {
        DeviceSearch::new(self, gen)
    }

    fn config(&self) -> &MarianConfig {
        &self.cfg
    }

    fn device(&self) -> &Device {
        &self.device
    }

    fn compute_type(&self) -> ComputeType {
        match self.dtype {
            DType::F16 => ComputeType::F16,
            DType::BF16 => ComputeType::BF16,
            _ => ComputeType::F32,
        }
    }

    fn run_encoder(&self, rows: &[Vec<u32>]) -> Result<TensorEncoded> {
        let n = rows.len();
        let s = rows.iter().map(Vec::len).max().unwrap_or(0);
        let mut ids = Vec::with_capacity(n * s);
        let mut bias = Vec::with_capacity(n * s);
        for row in rows {
            ids.extend_from_slice(row);
            ids.extend(std::iter::repeat_n(self.cfg.pad_token_id, s - row.len()));
            bias.extend(std::iter::repeat_n(0f32, row.len()));
            bias.extend(std::iter::repeat_n(f32::NEG_INFINITY, s - row.len()));
        }
        let ids = Tensor::from_vec(ids, (n, s), &self.device)?;
        let pad_bias = Tensor::from_vec(bias, (n, 1, 1, s), &self.device)?.to_dtype(self.dtype)?;

        let embedded = self
            .emb
            .encoder
            .index_select(&ids.flatten_all()?, 0)?
            .reshape((n, s, self.cfg.d_model))?;
        let positions = self.emb.encoder_positions.i(..s)?;
        let mut xs = (embedded * self.emb.scale)?.broadcast_add(&positions)?;
        for layer in &self.layers.encoder {
            let att = &layer.self_attn;
            let (q, k, v) = att.project(&xs)?;
            let ctx = attention(&q, &k, &v, Some(&pad_bias), att.scale.on_scores())?;
            let attn = att.out.forward(&ctx)?;
            xs = layer.self_attn_norm.forward(&(xs + attn)?)?;
            let ff = layer
                .fc2
                .forward(&activate(self.cfg.activation, &layer.fc1.forward(&xs)?)?)?;
            xs = layer.final_norm.forward(&(xs + ff)?)?;
        }
        Ok(TensorEncoded {
            hidden: xs,
            pad_bias,
            lengths: rows.iter().map(Vec::len).collect(),
        })
    }

    fn run_start(&self, encoded: &TensorEncoded, rows: Option<&[u32]>) -> Result<TensorState> {
        let decoder = &self.layers.decoder;
        let mut cross_kv = Vec::with_capacity(decoder.len());
        for layer in decoder {
            cross_kv.push(layer.cross_attn.project_kv(&encoded.hidden)?);
        }
        let cross = CrossKeys {
            kv: cross_kv,
            bias: encoded.pad_bias.clone(),
            rows_per_sentence: 1,
        };
        let mut state = TensorState::new(decoder.len(), cross, self.cfg.max_position_embeddings);
        if let Some(rows) = rows {
            state.select(rows)?;
        }
        Ok(state)
    }

    fn run_step(
        &self,
        tokens: &[u32],
        state: &mut TensorState,
        logits: &mut Vec<f32>,
    ) -> Result<()> {
        let out = self.step_logits(tokens, state)?;
        let _t = profile::time_on(Phase::ReadLogits, &self.device);
        record_transfer(out.elem_count() * out.dtype().size_in_bytes());
        *logits = out.flatten_all()?.to_vec1::<f32>()?;
        Ok(())
    }
}
