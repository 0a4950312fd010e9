//! Marian on the CPU kernels ([`CpuMarian`]): the backend the product runs on the CPU.
//!
//! candle runs a decoder step as ~100 small tensor operations; here the linear layers are
//! packed once at load for the kernels of [`crate::model::kernels`] (f32 or int8, from the
//! [`ComputeType`]) and a step is a handful of large matrix products plus fused passes
//! ([`forward`]), several times faster. The embedding tables stay tensors, read as slices.

mod forward;

use std::collections::HashMap;

use candle_core::{Device, Layout, Storage, Tensor};
use candle_nn::{LayerNorm, Linear};

use super::backend::{DecoderState, EncodedBatch, MarianBackend};
use super::config::{GenerationConfig, MarianConfig};
use super::profile::{self, Phase};
use super::search::HostSearch;
use super::tensors::{Embeddings, Layers, TensorMarian, LAYER_NORM_EPS};
use super::TranslateError;
use crate::model::compute::ComputeType;
use crate::model::kernels::layers::WeightFormat;
use forward::PackedLinear;

pub use forward::State as CpuState;

type Result<T> = std::result::Result<T, TranslateError>;

/// How the kernels store weights for a compute type: the one place the product's
/// [`ComputeType`] meets the kernels' [`WeightFormat`].
fn weight_format(compute: ComputeType) -> Result<WeightFormat> {
    match compute {
        ComputeType::F32 => Ok(WeightFormat::F32),
        ComputeType::Int8 => Ok(WeightFormat::Int8),
        half => Err(TranslateError::Config(format!(
            "{half} runs on a GPU only; on the CPU use f32 (exact) or int8 (faster)"
        ))),
    }
}

/// Marian on the CPU kernels, with its linear layers packed for them.
pub struct CpuMarian {
    cfg: MarianConfig,
    emb: Embeddings,
    encoder: Vec<forward::EncoderLayer>,
    decoder: Vec<forward::Layer>,
    /// The output projection with `final_logits_bias` as its bias.
    lm_head: PackedLinear,
    compute: ComputeType,
    device: Device,
}

/// The encoder output: real tokens only, sentence after sentence: (Σ lengths, d_model).
pub struct CpuEncoded {
    packed: Vec<f32>,
    lengths: Vec<usize>,
}

impl CpuEncoded {
    /// The hidden states, (Σ lengths, d_model).
    pub fn packed(&self) -> &[f32] {
        &self.packed
    }
}

impl EncodedBatch for CpuEncoded {
    fn lengths(&self) -> &[usize] {
        &self.lengths
    }
}

impl DecoderState for CpuState {
    fn rows(&self) -> usize {
        CpuState::rows(self)
    }

    fn step(&self) -> usize {
        self.step
    }

    fn select(&mut self, rows: &[u32]) -> Result<()> {
        let _t = profile::time(Phase::Reorder);
        CpuState::select(self, rows)
    }
}

/// A candle layer norm's parameters copied out for the CPU kernels.
fn cpu_norm(norm: &LayerNorm) -> Result<forward::Norm> {
    let b = norm
        .bias()
        .ok_or_else(|| TranslateError::Weights("a layer norm has no bias".into()))?;
    Ok(forward::Norm {
        w: norm.weight().to_vec1::<f32>()?,
        b: b.to_vec1::<f32>()?,
        eps: LAYER_NORM_EPS as f32,
    })
}

/// Pack a candle linear layer (weight (out, in) and bias) for the CPU kernels.
fn pack_linear(l: &Linear, format: WeightFormat) -> Result<PackedLinear> {
    let b = l
        .bias()
        .ok_or_else(|| TranslateError::Weights("a projection has no bias".into()))?;
    pack_tensors(l.weight(), b, format)
}

fn pack_tensors(w: &Tensor, b: &Tensor, format: WeightFormat) -> Result<PackedLinear> {
    let (out, inp) = w.dims2()?;
    with_slices(&[w, b], |s| {
        Ok(PackedLinear::new(s[0], s[1], out, inp, format)?)
    })
}

/// A contiguous f32 CPU tensor's elements.
fn cpu_slice<'a>(storage: &'a Storage, layout: &Layout) -> Result<&'a [f32]> {
    let Storage::Cpu(cpu) = storage else {
        return Err(TranslateError::Input(
            "the CPU decoder was given a tensor on another device".into(),
        ));
    };
    let all = cpu.as_slice::<f32>()?;
    let (start, end) = layout.contiguous_offsets().ok_or_else(|| {
        TranslateError::Weights("the CPU decoder needs contiguous weights".into())
    })?;
    all.get(start..end)
        .ok_or_else(|| TranslateError::Weights("tensor layout outside its storage".into()))
}

/// Run `f` with `tensors` (contiguous f32 CPU tensors) borrowed as slices, in order.
fn with_slices<R>(tensors: &[&Tensor], f: impl FnOnce(&[&[f32]]) -> Result<R>) -> Result<R> {
    let guards: Vec<_> = tensors.iter().map(|t| t.storage_and_layout()).collect();
    let slices = guards
        .iter()
        .map(|(storage, layout)| cpu_slice(storage, layout))
        .collect::<Result<Vec<&[f32]>>>()?;
    f(&slices)
}

impl CpuMarian {
    /// Build the model from a checkpoint's tensors (as `MarianMTModel.state_dict()` names
    /// them) on the CPU, its linear layers packed for `compute`.
    pub fn new(
        cfg: &MarianConfig,
        tensors: HashMap<String, Tensor>,
        compute: ComputeType,
    ) -> Result<Self> {
        Self::pack(TensorMarian::unfolded(cfg, tensors, &Device::Cpu)?, compute)
    }

    /// Packs the tensor model's layers one by one, dropping each once packed so that the f32
    /// copies are freed as the packed ones are made.
    pub fn pack(model: TensorMarian, compute: ComputeType) -> Result<Self> {
        let format = weight_format(compute)?;
        let (cfg, emb, layers, device) = model.into_parts()?;
        if !device.is_cpu() {
            return Err(TranslateError::Config(format!(
                "the CPU kernels run on the CPU only (this model is on {device:?})"
            )));
        }
        let Layers {
            lm_head,
            encoder,
            decoder,
        } = layers;
        let mut enc = Vec::with_capacity(encoder.len());
        for l in encoder {
            enc.push(forward::EncoderLayer {
                qkv: pack_linear(&l.self_attn.qkv, format)?,
                out: pack_linear(&l.self_attn.out, format)?,
                self_norm: cpu_norm(&l.self_attn_norm)?,
                fc1: pack_linear(&l.fc1, format)?,
                fc2: pack_linear(&l.fc2, format)?,
                final_norm: cpu_norm(&l.final_norm)?,
            });
        }
        let mut dec = Vec::with_capacity(decoder.len());
        for l in decoder {
            dec.push(forward::Layer {
                self_qkv: pack_linear(&l.self_attn.qkv, format)?,
                self_out: pack_linear(&l.self_attn.out, format)?,
                self_norm: cpu_norm(&l.self_attn_norm)?,
                cross_q: pack_linear(&l.cross_attn.q, format)?,
                cross_kv: pack_linear(&l.cross_attn.kv, format)?,
                cross_out: pack_linear(&l.cross_attn.out, format)?,
                cross_norm: cpu_norm(&l.cross_attn_norm)?,
                fc1: pack_linear(&l.fc1, format)?,
                fc2: pack_linear(&l.fc2, format)?,
                final_norm: cpu_norm(&l.final_norm)?,
            });
        }
        let lm_head = pack_tensors(&lm_head, &emb.final_logits_bias, format)?;
        let model = Self {
            cfg,
            emb,
            encoder: enc,
            decoder: dec,
            lm_head,
            compute,
            device,
        };
        tracing::debug!(format = %format, bytes = model.bytes(), "packed the linear layers");
        Ok(model)
    }

    /// Memory the packed layers take.
    fn bytes(&self) -> usize {
        let enc: usize = self.encoder.iter().map(forward::EncoderLayer::bytes).sum();
        let dec: usize = self.decoder.iter().map(forward::Layer::bytes).sum();
        enc + dec + self.lm_head.bytes()
    }

    /// Run `f` with the decoder's weights.
    fn with_decoder<R>(&self, f: impl FnOnce(&forward::Weights<'_>) -> Result<R>) -> Result<R> {
        with_slices(&[&self.emb.decoder, &self.emb.decoder_positions], |s| {
            f(&forward::Weights {
                layers: &self.decoder,
                embed: s[0],
                positions: s[1],
                embed_scale: self.emb.scale as f32,
                lm_head: &self.lm_head,
                d: self.cfg.d_model,
                heads: self.cfg.decoder_attention_heads,
                activation: self.cfg.activation,
            })
        })
    }

    /// Run `f` with the encoder's weights.
    fn with_encoder<R>(
        &self,
        f: impl FnOnce(&forward::EncoderWeights<'_>) -> Result<R>,
    ) -> Result<R> {
        with_slices(&[&self.emb.encoder, &self.emb.encoder_positions], |s| {
            f(&forward::EncoderWeights {
                layers: &self.encoder,
                embed: s[0],
                positions: s[1],
                embed_scale: self.emb.scale as f32,
                d: self.cfg.d_model,
                heads: self.cfg.encoder_attention_heads,
                activation: self.cfg.activation,
            })
        })
    }
}

impl MarianBackend for CpuMarian {
    type Encoded = CpuEncoded;
    type State = CpuState;
    type Search<'a> = HostSearch<'a, Self>;

    fn searcher<'a>(&'a self, gen: &'a GenerationConfig) -> Result<HostSearch<'a, Self>> {
        Ok(HostSearch::new(self, gen))
    }

    fn config(&self) -> &MarianConfig {
        &self.cfg
    }

    fn device(&self) -> &Device {
        &self.device
    }

    fn compute_type(&self) -> ComputeType {
        self.compute
    }

    fn run_encoder(&self, rows: &[Vec<u32>]) -> Result<CpuEncoded> {
        let lengths: Vec<usize> = rows.iter().map(Vec::len).collect();
        let ids: Vec<u32> = rows.iter().flatten().copied().collect();
        let packed = self.with_encoder(|w| forward::encode(w, &ids, &lengths))?;
        Ok(CpuEncoded { packed, lengths })
    }

    fn run_start(&self, encoded: &CpuEncoded, rows: Option<&[u32]>) -> Result<CpuState> {
        let rows: Vec<usize> = match rows {
            Some(rows) => rows.iter().map(|&r| r as usize).collect(),
            None => (0..encoded.rows()).collect(),
        };
        self.with_decoder(|w| CpuState::new(w, &encoded.packed, encoded.lengths.clone(), rows))
    }

    fn run_step(&self, tokens: &[u32], state: &mut CpuState, logits: &mut Vec<f32>) -> Result<()> {
        self.with_decoder(|w| forward::step(w, state, tokens, logits))
    }
}
