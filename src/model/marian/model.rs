//! The Marian encoder-decoder (transformers' `MarianMTModel`).
//!
//! Written for batched inference rather than training: the encoder applies a padding mask, the
//! decoder runs one step at a time with a self-attention KV cache, and each batch's
//! cross-attention keys and values are computed once and then only re-indexed (beam reordering,
//! finished rows leaving the batch). Nothing is cached between calls, so a sentence's output does
//! not depend on what was translated before it or beside it.
//!
//! Two implementations share the weights: on the CPU the encoder and the decoder step run on
//! plain buffers (`cpu`, several times faster than ~100 small tensor operations per step);
//! on other devices they run as candle tensor operations. Tests check one against the other.
//! `TIDINGS_PROFILE=1` times each part ([`profile`]); PROFILE.md has the numbers.

use std::collections::HashMap;

use candle_core::{DType, Device, IndexOp, Layout, Module, Storage, Tensor};
use candle_nn::{LayerNorm, Linear};

use super::config::{Activation, MarianConfig};
use super::TranslateError;
use crate::model::kernels::layers::{PackedLinear, WeightFormat};
use profile::Phase;

mod cpu;
pub(crate) use crate::model::kernels::simd;

type Result<T> = std::result::Result<T, TranslateError>;

/// torch.nn.LayerNorm's default eps; Marian configs have no field for it.
const LAYER_NORM_EPS: f64 = 1e-5;

/// Tensors by name, with the `model.` prefix handled and missing names reported clearly.
struct Weights {
    tensors: HashMap<String, Tensor>,
    prefix: &'static str,
    dtype: DType,
    device: Device,
}

impl Weights {
    fn new(tensors: HashMap<String, Tensor>, dtype: DType, device: &Device) -> Self {
        // MarianMTModel checkpoints name the seq2seq body `model.*`; a bare MarianModel does not.
        let prefix = if tensors.keys().any(|k| k.starts_with("model.")) {
            "model."
        } else {
            ""
        };
        Self {
            tensors,
            prefix,
            dtype,
            device: device.clone(),
        }
    }

    fn full_name(&self, name: &str) -> String {
        if name == "lm_head.weight" || name == "final_logits_bias" {
            name.to_string()
        } else {
            format!("{}{name}", self.prefix)
        }
    }

    fn get_opt(&self, name: &str, shape: &[usize]) -> Result<Option<Tensor>> {
        let full = self.full_name(name);
        let Some(t) = self.tensors.get(&full) else {
            return Ok(None);
        };
        if t.dims() != shape {
            return Err(TranslateError::Weights(format!(
                "tensor {full} has shape {:?}, config.json implies {shape:?}",
                t.dims()
            )));
        }
        // Contiguous, so that the CPU decoder can read weights as plain slices.
        Ok(Some(
            t.to_device(&self.device)?
                .to_dtype(self.dtype)?
                .contiguous()?,
        ))
    }

    fn get(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        self.get_opt(name, shape)?.ok_or_else(|| {
            TranslateError::Weights(format!(
                "tensor {} is missing from the weights",
                self.full_name(name)
            ))
        })
    }

    fn linear(&self, name: &str, in_dim: usize, out_dim: usize) -> Result<Linear> {
        let w = self.get(&format!("{name}.weight"), &[out_dim, in_dim])?;
        let b = self.get(&format!("{name}.bias"), &[out_dim])?;
        Ok(Linear::new(w, Some(b)))
    }

    fn layer_norm(&self, name: &str, dim: usize) -> Result<LayerNorm> {
        let w = self.get(&format!("{name}.weight"), &[dim])?;
        let b = self.get(&format!("{name}.bias"), &[dim])?;
        Ok(LayerNorm::new(w, b, LAYER_NORM_EPS))
    }
}

/// Opt-in wall-clock accounting of the translation hot path, for profiling without a profiler:
/// set `TIDINGS_PROFILE=1`, run, then read [`profile::report`]. Off, it costs one relaxed load
/// per timed section.
pub mod profile {
    use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
    use std::time::Instant;

    /// The timed sections, in the order a batch goes through them.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Phase {
        Encode,
        CrossKv,
        Embed,
        SelfQkv,
        SelfAttend,
        SelfOut,
        CrossQ,
        CrossAttend,
        CrossOut,
        AddNorm,
        Ffn,
        LmHead,
        ReadLogits,
        Search,
        Reorder,
    }

    const PHASES: [Phase; 15] = [
        Phase::Encode,
        Phase::CrossKv,
        Phase::Embed,
        Phase::SelfQkv,
        Phase::SelfAttend,
        Phase::SelfOut,
        Phase::CrossQ,
        Phase::CrossAttend,
        Phase::CrossOut,
        Phase::AddNorm,
        Phase::Ffn,
        Phase::LmHead,
        Phase::ReadLogits,
        Phase::Search,
        Phase::Reorder,
    ];

    static NANOS: [AtomicU64; 15] = [const { AtomicU64::new(0) }; 15];
    static CALLS: [AtomicU64; 15] = [const { AtomicU64::new(0) }; 15];
    /// 0 = not read yet, 1 = off, 2 = on.
    static STATE: AtomicU8 = AtomicU8::new(0);

    pub fn enabled() -> bool {
        match STATE.load(Ordering::Relaxed) {
            0 => {
                let on = std::env::var_os("TIDINGS_PROFILE").is_some_and(|v| v != "0");
                STATE.store(if on { 2 } else { 1 }, Ordering::Relaxed);
                on
            }
            s => s == 2,
        }
    }

    /// Adds the time until it is dropped to `phase`.
    pub struct Timer {
        phase: Phase,
        start: Option<Instant>,
    }

    impl Drop for Timer {
        fn drop(&mut self) {
            if let Some(start) = self.start {
                let i = self.phase as usize;
                NANOS[i].fetch_add(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
                CALLS[i].fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    pub fn time(phase: Phase) -> Timer {
        Timer {
            phase,
            start: enabled().then(Instant::now),
        }
    }

    /// Forget everything timed so far.
    pub fn reset() {
        for (n, c) in NANOS.iter().zip(&CALLS) {
            n.store(0, Ordering::Relaxed);
            c.store(0, Ordering::Relaxed);
        }
    }

    /// A table of the time per section since the last [`reset`], or `None` when profiling is
    /// off.
    pub fn report() -> Option<String> {
        if !enabled() {
            return None;
        }
        let total: u64 = NANOS.iter().map(|n| n.load(Ordering::Relaxed)).sum();
        let mut out = String::from("| section | calls | ms | share |\n|---|---:|---:|---:|\n");
        for phase in PHASES {
            let ns = NANOS[phase as usize].load(Ordering::Relaxed);
            let calls = CALLS[phase as usize].load(Ordering::Relaxed);
            out.push_str(&format!(
                "| {phase:?} | {calls} | {:.1} | {:.1}% |\n",
                ns as f64 / 1e6,
                100.0 * ns as f64 / total.max(1) as f64
            ));
        }
        out.push_str(&format!("| total | | {:.1} | |\n", total as f64 / 1e6));
        Some(out)
    }
}

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

/// (n, t, d) -> (n, heads, t, head_dim), contiguous.
fn split_heads(xs: &Tensor, heads: usize) -> Result<Tensor> {
    let (n, t, d) = xs.dims3()?;
    Ok(xs
        .reshape((n, t, heads, d / heads))?
        .transpose(1, 2)?
        .contiguous()?)
}

/// Scaled dot-product attention of per-head queries over keys/values, with an additive bias
/// broadcastable to (n, heads, t_q, t_k); returns (n, t_q, d).
fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    bias: Option<&Tensor>,
    scale: f64,
) -> Result<Tensor> {
    let (n, heads, t, hd) = q.dims4()?;
    let mut scores = (q.matmul(&k.t()?)? * scale)?;
    if let Some(bias) = bias {
        scores = scores.broadcast_add(bias)?;
    }
    let probs = candle_nn::ops::softmax_last_dim(&scores)?;
    Ok(probs
        .matmul(v)?
        .transpose(1, 2)?
        .reshape((n, t, heads * hd))?)
}

/// Self-attention with the q, k and v projections stacked into one (3·d, d) matrix, so one
/// matrix product serves all three.
struct SelfAttention {
    qkv: Linear,
    out: Linear,
    heads: usize,
    scale: f64,
}

/// Cross-attention: q from the decoder, k and v (stacked, (2·d, d)) from the encoder output.
struct CrossAttention {
    q: Linear,
    kv: Linear,
    out: Linear,
    heads: usize,
    scale: f64,
}

/// Load `names` (each `{name}.weight` (d, d) and `{name}.bias` (d)) as one stacked projection.
fn stacked_linear(w: &Weights, names: &[String], d: usize) -> Result<Linear> {
    let mut weights = Vec::with_capacity(names.len());
    let mut biases = Vec::with_capacity(names.len());
    for name in names {
        weights.push(w.get(&format!("{name}.weight"), &[d, d])?);
        biases.push(w.get(&format!("{name}.bias"), &[d])?);
    }
    Ok(Linear::new(
        Tensor::cat(&weights, 0)?,
        Some(Tensor::cat(&biases, 0)?),
    ))
}

fn heads_scale(d_model: usize, heads: usize) -> Result<f64> {
    if heads == 0 || !d_model.is_multiple_of(heads) {
        return Err(TranslateError::Config(format!(
            "d_model {d_model} is not divisible into {heads} attention heads"
        )));
    }
    Ok(((d_model / heads) as f64).powf(-0.5))
}

impl SelfAttention {
    fn load(w: &Weights, name: &str, d: usize, heads: usize) -> Result<Self> {
        let names: Vec<String> = ["q_proj", "k_proj", "v_proj"]
            .iter()
            .map(|p| format!("{name}.{p}"))
            .collect();
        Ok(Self {
            qkv: stacked_linear(w, &names, d)?,
            out: w.linear(&format!("{name}.out_proj"), d, d)?,
            heads,
            scale: heads_scale(d, heads)?,
        })
    }

    /// Per-head q, k and v of `xs` (n, t, d).
    fn project(&self, xs: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
        let d = xs.dim(2)?;
        let qkv = self.qkv.forward(xs)?;
        let part = |i: usize| split_heads(&qkv.narrow(2, i * d, d)?, self.heads);
        Ok((part(0)?, part(1)?, part(2)?))
    }
}

impl CrossAttention {
    fn load(w: &Weights, name: &str, d: usize, heads: usize) -> Result<Self> {
        Ok(Self {
            q: w.linear(&format!("{name}.q_proj"), d, d)?,
            kv: stacked_linear(w, &[format!("{name}.k_proj"), format!("{name}.v_proj")], d)?,
            out: w.linear(&format!("{name}.out_proj"), d, d)?,
            heads,
            scale: heads_scale(d, heads)?,
        })
    }

    /// Per-head keys and values of the encoder output (n, s, d).
    fn project_kv(&self, hidden: &Tensor) -> Result<(Tensor, Tensor)> {
        let d = hidden.dim(2)?;
        let kv = self.kv.forward(hidden)?;
        Ok((
            split_heads(&kv.narrow(2, 0, d)?, self.heads)?,
            split_heads(&kv.narrow(2, d, d)?, self.heads)?,
        ))
    }
}

struct EncoderLayer {
    self_attn: SelfAttention,
    self_attn_norm: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    final_norm: LayerNorm,
}

struct DecoderLayer {
    self_attn: SelfAttention,
    self_attn_norm: LayerNorm,
    cross_attn: CrossAttention,
    cross_attn_norm: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    final_norm: LayerNorm,
}

/// The encoder's output for one batch.
pub struct Encoded {
    kind: EncodedKind,
    /// Real (unpadded) length of each sentence.
    lengths: Vec<usize>,
}

enum EncodedKind {
    /// (n, s, d_model) with the additive padding bias (n, 1, 1, s) cross-attention needs:
    /// 0 for real tokens, -inf for padding.
    Tensors { hidden: Tensor, pad_bias: Tensor },
    /// CPU: real tokens only, sentence after sentence: (Σ lengths, d_model).
    Packed(Vec<f32>),
}

impl Encoded {
    /// Sentences in the batch.
    pub fn rows(&self) -> usize {
        self.lengths.len()
    }

    /// Source tokens per sentence.
    pub fn lengths(&self) -> &[usize] {
        &self.lengths
    }

    /// Hidden states, packed sentence after sentence: (Σ lengths, d_model).
    fn packed(&self, d: usize) -> Result<std::borrow::Cow<'_, [f32]>> {
        match &self.kind {
            EncodedKind::Packed(v) => Ok(std::borrow::Cow::Borrowed(v)),
            EncodedKind::Tensors { hidden, .. } => {
                let mut packed = Vec::with_capacity(self.lengths.iter().sum::<usize>() * d);
                for (i, &len) in self.lengths.iter().enumerate() {
                    let rows = hidden.i((i, ..len))?.flatten_all()?.to_vec1::<f32>()?;
                    packed.extend(rows);
                }
                Ok(std::borrow::Cow::Owned(packed))
            }
        }
    }

    /// Padded hidden states (n, s, d_model) and the padding bias (n, 1, 1, s).
    fn padded(&self, d: usize, device: &Device) -> Result<(Tensor, Tensor)> {
        match &self.kind {
            EncodedKind::Tensors { hidden, pad_bias } => Ok((hidden.clone(), pad_bias.clone())),
            EncodedKind::Packed(v) => {
                let n = self.lengths.len();
                let s = self.lengths.iter().copied().max().unwrap_or(0);
                let mut hidden = vec![0f32; n * s * d];
                let mut bias = vec![f32::NEG_INFINITY; n * s];
                let mut at = 0;
                for (i, &len) in self.lengths.iter().enumerate() {
                    hidden[i * s * d..(i * s + len) * d].copy_from_slice(&v[at..at + len * d]);
                    bias[i * s..i * s + len].fill(0.0);
                    at += len * d;
                }
                Ok((
                    Tensor::from_vec(hidden, (n, s, d), device)?,
                    Tensor::from_vec(bias, (n, 1, 1, s), device)?,
                ))
            }
        }
    }
}

/// Per-row decoder state for incremental decoding. Rows can be reordered or dropped with
/// [`DecoderState::select`] (beam reordering, finished sequences leaving the batch).
pub struct DecoderState {
    inner: StateKind,
}

enum StateKind {
    Tensors(TensorState),
    Cpu(Box<cpu::State>),
}

/// The device-independent decoder state: candle tensors per row.
struct TensorState {
    self_kv: Vec<Option<(Tensor, Tensor)>>,
    cross_kv: Vec<(Tensor, Tensor)>,
    cross_bias: Tensor,
    /// Tokens decoded so far (the next token's position).
    step: usize,
}

impl DecoderState {
    pub fn rows(&self) -> Result<usize> {
        match &self.inner {
            StateKind::Tensors(s) => Ok(s.cross_bias.dim(0)?),
            StateKind::Cpu(s) => Ok(s.rows()),
        }
    }

    fn step(&self) -> usize {
        match &self.inner {
            StateKind::Tensors(s) => s.step,
            StateKind::Cpu(s) => s.step,
        }
    }

    /// Keep rows `rows` (in that order, repeats allowed) of every cached tensor.
    pub fn select(&mut self, rows: &[u32]) -> Result<()> {
        let _t = profile::time(Phase::Reorder);
        match &mut self.inner {
            StateKind::Cpu(s) => s.select(rows),
            StateKind::Tensors(s) => {
                let device = s.cross_bias.device().clone();
                let idx = Tensor::from_slice(rows, rows.len(), &device)?;
                let pick = |t: &Tensor| -> Result<Tensor> { Ok(t.index_select(&idx, 0)?) };
                for kv in s.self_kv.iter_mut().flatten() {
                    *kv = (pick(&kv.0)?, pick(&kv.1)?);
                }
                for kv in s.cross_kv.iter_mut() {
                    *kv = (pick(&kv.0)?, pick(&kv.1)?);
                }
                s.cross_bias = pick(&s.cross_bias)?;
                Ok(())
            }
        }
    }
}

pub struct MarianModel {
    cfg: MarianConfig,
    encoder_embed: Tensor,
    decoder_embed: Tensor,
    /// (target_vocab,)
    final_logits_bias: Tensor,
    encoder_positions: Tensor,
    decoder_positions: Tensor,
    embed_scale: f64,
    device: Device,
    backend: Backend,
}

/// The layers, either as candle tensors (any device) or packed for the CPU kernels.
enum Backend {
    Tensors(Box<TensorLayers>),
    Cpu(Box<CpuLayers>),
}

struct TensorLayers {
    lm_head: Tensor,
    encoder: Vec<EncoderLayer>,
    decoder: Vec<DecoderLayer>,
}

/// A candle layer norm's parameters copied out for the CPU kernels.
fn cpu_norm(norm: &LayerNorm) -> Result<cpu::Norm> {
    Ok(cpu::Norm {
        w: norm.weight().to_vec1::<f32>()?,
        b: norm_bias(norm)?.to_vec1::<f32>()?,
        eps: LAYER_NORM_EPS as f32,
    })
}

/// The layers packed for the CPU kernels; the embeddings stay tensors (looked up by row).
struct CpuLayers {
    encoder: Vec<cpu::EncoderLayer>,
    decoder: Vec<cpu::Layer>,
    /// The output projection with `final_logits_bias` as its bias.
    lm_head: PackedLinear,
    format: WeightFormat,
}

/// Pack a candle linear layer (weight (out, in) and bias) for the CPU kernels.
fn pack_linear(l: &Linear, format: WeightFormat) -> Result<PackedLinear> {
    pack_tensors(l.weight(), bias(l)?, format)
}

fn pack_tensors(w: &Tensor, b: &Tensor, format: WeightFormat) -> Result<PackedLinear> {
    let (out, inp) = w.dims2()?;
    with_slices(&[w, b], |s| {
        Ok(PackedLinear::new(s[0], s[1], out, inp, format)?)
    })
}

impl CpuLayers {
    /// Packs the tensor layers one by one, dropping each once packed so that the f32 copies
    /// are freed as the packed ones are made.
    fn pack(t: TensorLayers, final_logits_bias: &Tensor, format: WeightFormat) -> Result<Self> {
        let TensorLayers {
            lm_head,
            encoder,
            decoder,
        } = t;
        let mut enc = Vec::with_capacity(encoder.len());
        for l in encoder {
            enc.push(cpu::EncoderLayer {
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
            dec.push(cpu::Layer {
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
        let lm_head = pack_tensors(&lm_head, final_logits_bias, format)?;
        Ok(Self {
            encoder: enc,
            decoder: dec,
            lm_head,
            format,
        })
    }

    fn bytes(&self) -> usize {
        let enc: usize = self.encoder.iter().map(cpu::EncoderLayer::bytes).sum();
        let dec: usize = self.decoder.iter().map(cpu::Layer::bytes).sum();
        enc + dec + self.lm_head.bytes()
    }
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

fn bias(l: &Linear) -> Result<&Tensor> {
    l.bias()
        .ok_or_else(|| TranslateError::Weights("a projection has no bias".into()))
}

fn norm_bias(l: &LayerNorm) -> Result<&Tensor> {
    l.bias()
        .ok_or_else(|| TranslateError::Weights("a layer norm has no bias".into()))
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

impl MarianModel {
    /// Build the model from a checkpoint's tensors (as `MarianMTModel.state_dict()` names them),
    /// with f32 weights.
    pub fn new(
        cfg: &MarianConfig,
        tensors: HashMap<String, Tensor>,
        device: &Device,
    ) -> Result<Self> {
        Self::with_format(cfg, tensors, device, WeightFormat::F32)
    }

    /// Build the model with its linear layers stored in `format`. On the CPU the layers are
    /// packed for the CPU kernels (and the tensors freed); other devices run candle tensor
    /// operations in f32, so `Int8` is refused there.
    pub fn with_format(
        cfg: &MarianConfig,
        tensors: HashMap<String, Tensor>,
        device: &Device,
        format: WeightFormat,
    ) -> Result<Self> {
        let mut model = Self::with_tensor_ops(cfg, tensors, device)?;
        if device.is_cpu() {
            let Backend::Tensors(layers) = model.backend else {
                return Err(TranslateError::Weights("the model was built packed".into()));
            };
            let packed = CpuLayers::pack(*layers, &model.final_logits_bias, format)?;
            tracing::debug!(format = %format, bytes = packed.bytes(), "packed the linear layers");
            model.backend = Backend::Cpu(Box::new(packed));
        } else if format != WeightFormat::F32 {
            return Err(TranslateError::Config(format!(
                "{format} weights run on the CPU only (this model is on {device:?}); use f32 or --device cpu"
            )));
        }
        Ok(model)
    }

    /// The model on candle tensor operations, on any device (on the CPU: the reference the
    /// packed layers are tested against).
    fn with_tensor_ops(
        cfg: &MarianConfig,
        tensors: HashMap<String, Tensor>,
        device: &Device,
    ) -> Result<Self> {
        let w = Weights::new(tensors, DType::F32, device);
        let d = cfg.d_model;
        let target_vocab = cfg.target_vocab_size();
        let (encoder_embed, decoder_embed) = if cfg.share_encoder_decoder_embeddings {
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
            decoder_embed.clone()
        } else {
            w.get("lm_head.weight", &[target_vocab, d])?
        };
        if lm_head.dim(0)? != target_vocab {
            return Err(TranslateError::Weights(format!(
                "the output projection has {} rows for a target vocabulary of {target_vocab}",
                lm_head.dim(0)?
            )));
        }
        let final_logits_bias = match w.get_opt("final_logits_bias", &[1, target_vocab])? {
            Some(t) => t.reshape(target_vocab)?,
            None => Tensor::zeros(target_vocab, DType::F32, device)?,
        };
        let n_pos = cfg.max_position_embeddings;
        let table = sinusoidal_positions(n_pos, d, device)?;
        // Checkpoints from 2020 store the table; transformers uses the stored one when present.
        let encoder_positions = w
            .get_opt("encoder.embed_positions.weight", &[n_pos, d])?
            .unwrap_or_else(|| table.clone());
        let decoder_positions = w
            .get_opt("decoder.embed_positions.weight", &[n_pos, d])?
            .unwrap_or(table);

        let mut encoder_layers = Vec::with_capacity(cfg.encoder_layers);
        for i in 0..cfg.encoder_layers {
            let p = format!("encoder.layers.{i}");
            encoder_layers.push(EncoderLayer {
                self_attn: SelfAttention::load(
                    &w,
                    &format!("{p}.self_attn"),
                    d,
                    cfg.encoder_attention_heads,
                )?,
                self_attn_norm: w.layer_norm(&format!("{p}.self_attn_layer_norm"), d)?,
                fc1: w.linear(&format!("{p}.fc1"), d, cfg.encoder_ffn_dim)?,
                fc2: w.linear(&format!("{p}.fc2"), cfg.encoder_ffn_dim, d)?,
                final_norm: w.layer_norm(&format!("{p}.final_layer_norm"), d)?,
            });
        }
        let mut decoder_layers = Vec::with_capacity(cfg.decoder_layers);
        for i in 0..cfg.decoder_layers {
            let p = format!("decoder.layers.{i}");
            let heads = cfg.decoder_attention_heads;
            decoder_layers.push(DecoderLayer {
                self_attn: SelfAttention::load(&w, &format!("{p}.self_attn"), d, heads)?,
                self_attn_norm: w.layer_norm(&format!("{p}.self_attn_layer_norm"), d)?,
                cross_attn: CrossAttention::load(&w, &format!("{p}.encoder_attn"), d, heads)?,
                cross_attn_norm: w.layer_norm(&format!("{p}.encoder_attn_layer_norm"), d)?,
                fc1: w.linear(&format!("{p}.fc1"), d, cfg.decoder_ffn_dim)?,
                fc2: w.linear(&format!("{p}.fc2"), cfg.decoder_ffn_dim, d)?,
                final_norm: w.layer_norm(&format!("{p}.final_layer_norm"), d)?,
            });
        }
        Ok(Self {
            cfg: cfg.clone(),
            encoder_embed,
            decoder_embed,
            final_logits_bias,
            encoder_positions,
            decoder_positions,
            embed_scale: if cfg.scale_embedding {
                (d as f64).sqrt()
            } else {
                1.0
            },
            device: device.clone(),
            backend: Backend::Tensors(Box::new(TensorLayers {
                lm_head,
                encoder: encoder_layers,
                decoder: decoder_layers,
            })),
        })
    }

    /// How the linear layers are stored: f32 for the tensor path, else what was packed.
    pub fn weight_format(&self) -> WeightFormat {
        match &self.backend {
            Backend::Cpu(c) => c.format,
            Backend::Tensors(_) => WeightFormat::F32,
        }
    }

    pub fn config(&self) -> &MarianConfig {
        &self.cfg
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Run `f` with the decoder's weights (CPU only).
    fn with_cpu_weights<R>(
        &self,
        c: &CpuLayers,
        f: impl FnOnce(&cpu::Weights<'_>) -> Result<R>,
    ) -> Result<R> {
        with_slices(&[&self.decoder_embed, &self.decoder_positions], |s| {
            f(&cpu::Weights {
                layers: &c.decoder,
                embed: s[0],
                positions: s[1],
                embed_scale: self.embed_scale as f32,
                lm_head: &c.lm_head,
                d: self.cfg.d_model,
                heads: self.cfg.decoder_attention_heads,
                activation: self.cfg.activation,
            })
        })
    }

    /// Run `f` with the encoder's weights (CPU only).
    fn with_cpu_encoder<R>(
        &self,
        c: &CpuLayers,
        f: impl FnOnce(&cpu::EncoderWeights<'_>) -> Result<R>,
    ) -> Result<R> {
        with_slices(&[&self.encoder_embed, &self.encoder_positions], |s| {
            f(&cpu::EncoderWeights {
                layers: &c.encoder,
                embed: s[0],
                positions: s[1],
                embed_scale: self.embed_scale as f32,
                d: self.cfg.d_model,
                heads: self.cfg.encoder_attention_heads,
                activation: self.cfg.activation,
            })
        })
    }

    /// Encode a batch of token id rows, right-padded with `pad_token_id` to the longest row.
    pub fn encode(&self, rows: &[Vec<u32>]) -> Result<Encoded> {
        let _t = profile::time(Phase::Encode);
        let n = rows.len();
        let s = rows.iter().map(Vec::len).max().unwrap_or(0);
        if n == 0 || s == 0 {
            return Err(TranslateError::Input("cannot encode an empty batch".into()));
        }
        if s > self.cfg.max_position_embeddings {
            return Err(TranslateError::Input(format!(
                "a source sentence has {s} tokens, more than the model's {} positions",
                self.cfg.max_position_embeddings
            )));
        }
        let vocab = self.cfg.vocab_size as u32;
        if let Some(bad) = rows.iter().flatten().find(|&&id| id >= vocab) {
            return Err(TranslateError::Input(format!(
                "token id {bad} is outside the source vocabulary of {vocab}"
            )));
        }
        let lengths: Vec<usize> = rows.iter().map(Vec::len).collect();
        let layers = match &self.backend {
            Backend::Tensors(t) => t,
            Backend::Cpu(c) => {
                let ids: Vec<u32> = rows.iter().flatten().copied().collect();
                let hidden = self.with_cpu_encoder(c, |w| cpu::encode(w, &ids, &lengths))?;
                return Ok(Encoded {
                    kind: EncodedKind::Packed(hidden),
                    lengths,
                });
            }
        };
        let mut ids = Vec::with_capacity(n * s);
        let mut bias = Vec::with_capacity(n * s);
        for row in rows {
            ids.extend_from_slice(row);
            ids.extend(std::iter::repeat_n(self.cfg.pad_token_id, s - row.len()));
            bias.extend(std::iter::repeat_n(0f32, row.len()));
            bias.extend(std::iter::repeat_n(f32::NEG_INFINITY, s - row.len()));
        }
        let ids = Tensor::from_vec(ids, (n, s), &self.device)?;
        let pad_bias = Tensor::from_vec(bias, (n, 1, 1, s), &self.device)?;

        let embedded = self
            .encoder_embed
            .index_select(&ids.flatten_all()?, 0)?
            .reshape((n, s, self.cfg.d_model))?;
        let positions = self.encoder_positions.i(..s)?;
        let mut xs = (embedded * self.embed_scale)?.broadcast_add(&positions)?;
        for layer in &layers.encoder {
            let att = &layer.self_attn;
            let (q, k, v) = att.project(&xs)?;
            let ctx = attention(&q, &k, &v, Some(&pad_bias), att.scale)?;
            let attn = att.out.forward(&ctx)?;
            xs = layer.self_attn_norm.forward(&(xs + attn)?)?;
            let ff = layer
                .fc2
                .forward(&activate(self.cfg.activation, &layer.fc1.forward(&xs)?)?)?;
            xs = layer.final_norm.forward(&(xs + ff)?)?;
        }
        Ok(Encoded {
            kind: EncodedKind::Tensors {
                hidden: xs,
                pad_bias,
            },
            lengths,
        })
    }

    /// Prepare decoding: cross-attention keys/values of every decoder layer, computed once.
    /// `rows` maps each decoder row to an encoder row (e.g. each sentence repeated per beam).
    pub fn start_decoding(&self, encoded: &Encoded, rows: Option<&[u32]>) -> Result<DecoderState> {
        let _t = profile::time(Phase::CrossKv);
        let n = encoded.rows();
        if let Some(bad) = rows.into_iter().flatten().find(|&&r| r as usize >= n) {
            return Err(TranslateError::Input(format!(
                "decoder row maps to encoder row {bad} of {n}"
            )));
        }
        let d = self.cfg.d_model;
        let layers = match &self.backend {
            Backend::Tensors(t) => t,
            Backend::Cpu(c) => {
                let hidden = encoded.packed(d)?;
                let rows: Vec<usize> = match rows {
                    Some(rows) => rows.iter().map(|&r| r as usize).collect(),
                    None => (0..n).collect(),
                };
                let state = self.with_cpu_weights(c, |w| {
                    cpu::State::new(w, &hidden, encoded.lengths.clone(), rows)
                })?;
                return Ok(DecoderState {
                    inner: StateKind::Cpu(Box::new(state)),
                });
            }
        };
        let (hidden, pad_bias) = encoded.padded(d, &self.device)?;
        let mut cross_kv = Vec::with_capacity(layers.decoder.len());
        for layer in &layers.decoder {
            cross_kv.push(layer.cross_attn.project_kv(&hidden)?);
        }
        let mut state = DecoderState {
            inner: StateKind::Tensors(TensorState {
                self_kv: vec![None; layers.decoder.len()],
                cross_kv,
                cross_bias: pad_bias,
                step: 0,
            }),
        };
        if let Some(rows) = rows {
            state.select(rows)?;
        }
        Ok(state)
    }

    fn check_step(&self, tokens: &[u32], state: &DecoderState) -> Result<()> {
        let n = tokens.len();
        if n != state.rows()? {
            return Err(TranslateError::Input(format!(
                "decode step got {n} tokens for {} rows",
                state.rows()?
            )));
        }
        if state.step() >= self.cfg.max_position_embeddings {
            return Err(TranslateError::Input(format!(
                "cannot decode past the model's {} positions",
                self.cfg.max_position_embeddings
            )));
        }
        let vocab = self.cfg.target_vocab_size() as u32;
        if let Some(bad) = tokens.iter().find(|&&t| t >= vocab) {
            return Err(TranslateError::Input(format!(
                "token id {bad} is outside the target vocabulary of {vocab}"
            )));
        }
        Ok(())
    }

    /// One decoder step: feed one token per row, get next-token logits (rows, target_vocab)
    /// with `final_logits_bias` added.
    pub fn decode_step(&self, tokens: &[u32], state: &mut DecoderState) -> Result<Tensor> {
        self.check_step(tokens, state)?;
        match &mut state.inner {
            StateKind::Tensors(s) => self.decode_step_tensors(tokens, s),
            StateKind::Cpu(s) => {
                let mut logits = Vec::new();
                let c = self.cpu_layers()?;
                self.with_cpu_weights(c, |w| cpu::step(w, s, tokens, &mut logits))?;
                let shape = (tokens.len(), self.cfg.target_vocab_size());
                Ok(Tensor::from_vec(logits, shape, &self.device)?)
            }
        }
    }

    /// [`Self::decode_step`] into a caller-owned buffer (rows × target_vocab, row-major), so
    /// that a generation loop reuses one allocation.
    pub fn decode_step_into(
        &self,
        tokens: &[u32],
        state: &mut DecoderState,
        logits: &mut Vec<f32>,
    ) -> Result<()> {
        self.check_step(tokens, state)?;
        match &mut state.inner {
            StateKind::Cpu(s) => {
                let c = self.cpu_layers()?;
                self.with_cpu_weights(c, |w| cpu::step(w, s, tokens, logits))
            }
            StateKind::Tensors(s) => {
                let t = self.decode_step_tensors(tokens, s)?;
                let _t = profile::time(Phase::ReadLogits);
                *logits = t.flatten_all()?.to_vec1::<f32>()?;
                Ok(())
            }
        }
    }

    fn cpu_layers(&self) -> Result<&CpuLayers> {
        match &self.backend {
            Backend::Cpu(c) => Ok(c),
            Backend::Tensors(_) => Err(TranslateError::Input(
                "a CPU decoder state was given to a tensor model".into(),
            )),
        }
    }

    fn tensor_layers(&self) -> Result<&TensorLayers> {
        match &self.backend {
            Backend::Tensors(t) => Ok(t),
            Backend::Cpu(_) => Err(TranslateError::Input(
                "a tensor decoder state was given to a CPU model".into(),
            )),
        }
    }

    fn decode_step_tensors(&self, tokens: &[u32], state: &mut TensorState) -> Result<Tensor> {
        let layers = self.tensor_layers()?;
        let n = tokens.len();
        let d = self.cfg.d_model;
        let t_embed = profile::time(Phase::Embed);
        let ids = Tensor::from_slice(tokens, n, &self.device)?;
        let embedded = self.decoder_embed.index_select(&ids, 0)?;
        let position = self.decoder_positions.i(state.step..state.step + 1)?;
        let mut xs = (embedded * self.embed_scale)?
            .broadcast_add(&position)?
            .reshape((n, 1, d))?;
        drop(t_embed);
        for (i, layer) in layers.decoder.iter().enumerate() {
            // Self-attention over everything decoded so far (no causal mask needed: one query).
            let t_qkv = profile::time(Phase::SelfQkv);
            let att = &layer.self_attn;
            let (q, k_new, v_new) = att.project(&xs)?;
            let (k, v) = match state.self_kv[i].take() {
                Some((k, v)) => (
                    Tensor::cat(&[&k, &k_new], 2)?,
                    Tensor::cat(&[&v, &v_new], 2)?,
                ),
                None => (k_new, v_new),
            };
            drop(t_qkv);
            let t_att = profile::time(Phase::SelfAttend);
            let ctx = attention(&q, &k, &v, None, att.scale)?;
            drop(t_att);
            state.self_kv[i] = Some((k, v));
            let t_out = profile::time(Phase::SelfOut);
            let attn = att.out.forward(&ctx)?;
            drop(t_out);
            let t_norm = profile::time(Phase::AddNorm);
            xs = layer.self_attn_norm.forward(&(xs + attn)?)?;
            drop(t_norm);

            let cross = &layer.cross_attn;
            let t_q = profile::time(Phase::CrossQ);
            let q = split_heads(&cross.q.forward(&xs)?, cross.heads)?;
            drop(t_q);
            let t_att = profile::time(Phase::CrossAttend);
            let (ck, cv) = &state.cross_kv[i];
            let ctx = attention(&q, ck, cv, Some(&state.cross_bias), cross.scale)?;
            drop(t_att);
            let t_out = profile::time(Phase::CrossOut);
            let attn = cross.out.forward(&ctx)?;
            drop(t_out);
            let t_norm = profile::time(Phase::AddNorm);
            xs = layer.cross_attn_norm.forward(&(xs + attn)?)?;
            drop(t_norm);

            let t_ffn = profile::time(Phase::Ffn);
            let ff = layer
                .fc2
                .forward(&activate(self.cfg.activation, &layer.fc1.forward(&xs)?)?)?;
            drop(t_ffn);
            let _t = profile::time(Phase::AddNorm);
            xs = layer.final_norm.forward(&(xs + ff)?)?;
        }
        state.step += 1;
        let _t = profile::time(Phase::LmHead);
        let hidden = xs.reshape((n, d))?;
        let logits = hidden
            .matmul(&layers.lm_head.t()?)?
            .broadcast_add(&self.final_logits_bias)?;
        Ok(logits.to_dtype(DType::F32)?)
    }

    /// Logits of the first decoder step for each row (the decoder start token as input).
    pub fn first_step_logits(&self, rows: &[Vec<u32>]) -> Result<Vec<Vec<f32>>> {
        let encoded = self.encode(rows)?;
        let mut state = self.start_decoding(&encoded, None)?;
        let start = vec![self.cfg.decoder_start_token_id; rows.len()];
        let logits = self.decode_step(&start, &mut state)?;
        Ok(logits.to_vec2::<f32>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::marian::random;

    fn small(activation: Activation) -> MarianConfig {
        let mut cfg = MarianConfig::opus_mt_base();
        cfg.vocab_size = 60;
        cfg.decoder_vocab_size = 60;
        cfg.d_model = 24;
        cfg.encoder_attention_heads = 4;
        cfg.decoder_attention_heads = 4;
        cfg.encoder_ffn_dim = 40;
        cfg.decoder_ffn_dim = 40;
        cfg.encoder_layers = 2;
        cfg.decoder_layers = 2;
        cfg.activation = activation;
        cfg.pad_token_id = 59;
        cfg.decoder_start_token_id = 59;
        cfg
    }

    /// The plain-buffer CPU model and the candle-tensor model, on the same weights.
    fn pair(cfg: &MarianConfig) -> (MarianModel, MarianModel) {
        let tensors = random::random_weights(cfg, 3, &Device::Cpu).unwrap();
        let fast = MarianModel::new(cfg, tensors.clone(), &Device::Cpu).unwrap();
        let reference = MarianModel::with_tensor_ops(cfg, tensors, &Device::Cpu).unwrap();
        assert!(matches!(fast.backend, Backend::Cpu(_)));
        assert!(matches!(reference.backend, Backend::Tensors(_)));
        (fast, reference)
    }

    fn worst_diff(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    }

    #[test]
    fn cpu_decoder_matches_tensor_decoder() {
        for act in [Activation::Swish, Activation::Relu, Activation::Gelu] {
            let cfg = small(act);
            let (fast, reference) = pair(&cfg);
            let rows = vec![
                vec![5, 0],
                vec![7, 8, 9, 10, 11, 12, 13, 0],
                vec![0],
                vec![3, 4, 0],
            ];
            let enc_fast = fast.encode(&rows).unwrap();
            let enc_ref = reference.encode(&rows).unwrap();
            assert!(matches!(enc_fast.kind, EncodedKind::Packed(_)));
            let d = cfg.d_model;
            let diff = worst_diff(&enc_fast.packed(d).unwrap(), &enc_ref.packed(d).unwrap());
            assert!(diff < 1e-4, "{act:?}: encoder differs by {diff}");

            // Beams fan out, reorder, repeat a parent and drop rows, as beam search does.
            let expand = [0u32, 0, 1, 1, 2, 3];
            let mut s_fast = fast.start_decoding(&enc_fast, Some(&expand)).unwrap();
            // The tensor decoder also reads the packed encoder output.
            let mut s_ref = reference.start_decoding(&enc_fast, Some(&expand)).unwrap();
            let selections: [&[u32]; 5] = [
                &[1, 1, 0, 3, 2, 5],
                &[0, 1, 2, 3, 4, 5],
                &[5, 4, 4, 4, 0, 1],
                &[2, 3, 0],
                &[2, 2, 1, 1, 0],
            ];
            let mut tokens = vec![cfg.decoder_start_token_id; expand.len()];
            let mut out = Vec::new();
            for (step, sel) in selections.iter().enumerate() {
                fast.decode_step_into(&tokens, &mut s_fast, &mut out)
                    .unwrap();
                let want = reference
                    .decode_step(&tokens, &mut s_ref)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap();
                let diff = worst_diff(&out, &want);
                assert!(diff < 1e-4, "{act:?} step {step}: logits differ by {diff}");
                s_fast.select(sel).unwrap();
                s_ref.select(sel).unwrap();
                tokens = sel
                    .iter()
                    .map(|&r| (r * 7 + step as u32 * 3) % 60)
                    .collect();
            }
            assert!(s_fast.select(&[9]).is_err());
        }
    }

    #[test]
    fn generation_agrees_between_decoders() {
        use crate::model::marian::{generate, GenerationConfig};
        let cfg = small(Activation::Swish);
        let (fast, reference) = pair(&cfg);
        let rows = vec![vec![5, 6, 0], vec![7, 8, 9, 10, 11, 0], vec![0]];
        let mut gen = GenerationConfig::defaults_for(&cfg).with_max_new_tokens(8);
        for beams in [1, 3] {
            gen.num_beams = beams;
            let a = generate::beam_search(&fast, &fast.encode(&rows).unwrap(), &gen).unwrap();
            let b =
                generate::beam_search(&reference, &reference.encode(&rows).unwrap(), &gen).unwrap();
            assert_eq!(a, b, "beam {beams}");
        }
    }

    #[test]
    fn bad_inputs_are_errors() {
        let cfg = small(Activation::Relu);
        let (fast, _) = pair(&cfg);
        assert!(fast.encode(&[vec![600]]).is_err());
        assert!(fast.encode(&[]).is_err());
        let enc = fast.encode(&[vec![1, 0]]).unwrap();
        assert!(fast.start_decoding(&enc, Some(&[1])).is_err());
        let mut state = fast.start_decoding(&enc, None).unwrap();
        assert!(fast.decode_step(&[1, 2], &mut state).is_err());
        assert!(fast.decode_step(&[600], &mut state).is_err());
        assert!(fast.decode_step(&[1], &mut state).is_ok());
    }
}
