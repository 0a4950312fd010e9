//! The layers of a post-norm transformer on plain `f32` buffers: linear layers as large
//! matrix products, attention, residual + layer norm and activations as fused row passes.
//! Marian's encoder and decoder and BERT's encoder are built from these.
//!
//! Every row is computed independently of the others, in the same order, so a sentence's result
//! does not depend on the batch it is in.

use rayon::prelude::*;

use super::int8::PackedI8;
use super::packed_f32::PackedF32;
use super::simd::{self, dispatch};
use super::KernelError;

type Result<T> = std::result::Result<T, KernelError>;

/// The feed-forward activations of the supported models.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    Relu,
    /// x · sigmoid(x), also called SiLU.
    Swish,
    /// Exact (erf) GELU.
    Gelu,
    /// GELU's tanh approximation.
    GeluTanh,
}

/// How the CPU kernels store a linear layer's weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WeightFormat {
    /// f32, packed once at load for the matrix-product kernel: the reference numerics.
    #[default]
    F32,
    /// 8-bit weights per output feature and activations quantised per row on every product
    /// (what CTranslate2 calls int8): faster and smaller, not bit-equal to the f32 model.
    Int8,
}

impl WeightFormat {
    pub fn name(self) -> &'static str {
        match self {
            WeightFormat::F32 => "f32",
            WeightFormat::Int8 => "int8",
        }
    }
}

impl std::str::FromStr for WeightFormat {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "f32" | "float32" => Ok(WeightFormat::F32),
            "int8" | "i8" => Ok(WeightFormat::Int8),
            other => Err(format!(
                "unknown weight format `{other}` (expected f32 or int8)"
            )),
        }
    }
}

impl std::fmt::Display for WeightFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A linear layer `y = x · Wᵀ + b` (W given (out, in), as in PyTorch checkpoints), its weights
/// packed at load for the kernel of its [`WeightFormat`].
pub enum PackedLinear {
    F32(PackedF32),
    Int8(PackedI8),
}

impl PackedLinear {
    /// `w` is (out, inp) row-major, `b` has `out` entries.
    pub fn new(w: &[f32], b: &[f32], out: usize, inp: usize, format: WeightFormat) -> Result<Self> {
        Ok(match format {
            WeightFormat::F32 => PackedLinear::F32(PackedF32::pack(w, b, out, inp)?),
            WeightFormat::Int8 => PackedLinear::Int8(PackedI8::quantize(w, b, out, inp)?),
        })
    }

    pub fn inp(&self) -> usize {
        match self {
            PackedLinear::F32(p) => p.k(),
            PackedLinear::Int8(p) => p.k(),
        }
    }

    pub fn out(&self) -> usize {
        match self {
            PackedLinear::F32(p) => p.n(),
            PackedLinear::Int8(p) => p.n(),
        }
    }

    /// Memory the packed weights take.
    pub fn bytes(&self) -> usize {
        match self {
            PackedLinear::F32(p) => p.bytes(),
            PackedLinear::Int8(p) => p.bytes(),
        }
    }
}

/// LayerNorm's scale and shift.
pub struct Norm {
    pub w: Vec<f32>,
    pub b: Vec<f32>,
    pub eps: f32,
}

/// `out[m×n] = x[m×k] · Wᵀ + b`, reading the first m·k values of `x`.
pub fn linear(lin: &PackedLinear, x: &[f32], m: usize, out: &mut Vec<f32>) -> Result<()> {
    let x = x
        .get(..m * lin.inp())
        .ok_or(KernelError::Shape("linear layer input"))?;
    match lin {
        PackedLinear::F32(p) => p.matmul(x, m, out)?,
        PackedLinear::Int8(p) => p.matmul(x, m, out)?,
    }
    Ok(())
}

/// Run `f(row, out_row, scratch)` for each `width`-wide row of `out`, on the thread pool when
/// there is enough work (`cost` is a rough per-row element count). `scratch` is a buffer
/// reused across the rows a thread runs.
pub fn for_rows<F>(out: &mut [f32], width: usize, cost: usize, f: F)
where
    F: Fn(usize, &mut [f32], &mut Vec<f32>) + Sync + Send,
{
    if width == 0 {
        return;
    }
    let rows = out.len() / width;
    if rows > 1 && rows * cost >= 1 << 15 && rayon::current_num_threads() > 1 {
        let min_len = (1 << 13) / cost.max(1);
        out.par_chunks_mut(width)
            .enumerate()
            .with_min_len(min_len.max(1))
            .for_each_init(Vec::new, |scratch, (r, row)| f(r, row, scratch));
    } else {
        let mut scratch = Vec::new();
        for (r, row) in out.chunks_mut(width).enumerate() {
            f(r, row, &mut scratch);
        }
    }
}

/// Attention of one row's query (all heads) over `len` keys/values stored every `stride`
/// floats from `kv` (keys at +0, values at +`d`), writing the context into `out`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn attend_body(
    q: &[f32],
    kv: &[f32],
    stride: usize,
    len: usize,
    heads: usize,
    scale: f32,
    scores: &mut Vec<f32>,
    out: &mut [f32],
) {
    let d = out.len();
    let hd = d / heads.max(1);
    out.fill(0.0);
    if len == 0 || hd == 0 {
        return;
    }
    // Head-major scores; each key and value is read once, all heads at a time, so the
    // cache is walked position by position.
    scores.clear();
    scores.resize(heads * len, 0.0);
    for j in 0..len {
        let k = &kv[j * stride..j * stride + d];
        for h in 0..heads {
            let at = h * hd;
            scores[h * len + j] = simd::dot(&q[at..at + hd], &k[at..at + hd]) * scale;
        }
    }
    for h in 0..heads {
        simd::softmax(&mut scores[h * len..(h + 1) * len]);
    }
    for j in 0..len {
        let v = &kv[j * stride + d..j * stride + 2 * d];
        for h in 0..heads {
            let at = h * hd;
            simd::axpy(&mut out[at..at + hd], scores[h * len + j], &v[at..at + hd]);
        }
    }
}

dispatch!(
    attend,
    (
        q: &[f32],
        kv: &[f32],
        stride: usize,
        len: usize,
        heads: usize,
        scale: f32,
        scores: &mut Vec<f32>,
        out: &mut [f32]
    ) -> (),
    attend_body(q, kv, stride, len, heads, scale, scores, out)
);

/// x = LayerNorm(x + y), with the mean and variance of the sum computed in two passes.
#[inline(always)]
fn residual_norm_body(x: &mut [f32], y: &[f32], w: &[f32], b: &[f32], eps: f32) {
    for (x, y) in x.iter_mut().zip(y) {
        *x += *y;
    }
    let n = x.len() as f32;
    let mean = simd::sum(x) / n;
    let mut acc = [0f32; 8];
    let mut chunks = x.chunks_exact(8);
    for c in &mut chunks {
        for l in 0..8 {
            acc[l] += (c[l] - mean) * (c[l] - mean);
        }
    }
    let tail: f32 = chunks
        .remainder()
        .iter()
        .map(|v| (v - mean) * (v - mean))
        .sum();
    let var = (acc.iter().sum::<f32>() + tail) / n;
    let inv = 1.0 / (var + eps).sqrt();
    for ((x, w), b) in x.iter_mut().zip(w).zip(b) {
        *x = (*x - mean) * inv * w + b;
    }
}

dispatch!(
    residual_norm,
    (x: &mut [f32], y: &[f32], w: &[f32], b: &[f32], eps: f32) -> (),
    residual_norm_body(x, y, w, b, eps)
);

#[inline(always)]
#[allow(clippy::needless_range_loop)]
fn activate_body(act: Activation, v: &mut [f32]) {
    match act {
        Activation::Relu => simd::map(v, |x| x.max(0.0)),
        Activation::Swish => simd::map(v, |x| x / (1.0 + simd::exp(-x))),
        // Written-out loops: through `simd::map` the GELU closure is too large for the
        // inliner, stays a scalar call per element and was 30% of a BERT forward pass.
        Activation::Gelu => {
            for i in 0..v.len() {
                v[i] = simd::gelu(v[i]);
            }
        }
        Activation::GeluTanh => {
            for i in 0..v.len() {
                v[i] = simd::gelu_tanh(v[i]);
            }
        }
    }
}

dispatch!(
    activate,
    (act: Activation, v: &mut [f32]) -> (),
    activate_body(act, v)
);

/// Every row of `x` (rows of `d`) = LayerNorm(row + the same row of `y`).
pub fn residual_norm_rows(x: &mut [f32], y: &[f32], d: usize, norm: &Norm) {
    for_rows(x, d, d, |r, row, _| {
        residual_norm(row, &y[r * d..(r + 1) * d], &norm.w, &norm.b, norm.eps)
    });
}

/// LayerNorm of every row of `x` (rows of `d`) in place.
pub fn norm_rows(x: &mut [f32], d: usize, norm: &Norm) {
    for_rows(x, d, d, |_, row, zeros| {
        zeros.clear();
        zeros.resize(row.len(), 0.0);
        residual_norm(row, zeros, &norm.w, &norm.b, norm.eps)
    });
}

/// The activation on every element of `v` (rows of `width`).
pub fn activate_rows(act: Activation, v: &mut [f32], width: usize) {
    for_rows(v, width, width, |_, row, _| activate(act, row));
}

/// One post-norm encoder layer: self-attention, add & norm, feed-forward, add & norm.
pub struct EncoderLayer {
    /// q, k and v projections stacked: out = 3·d.
    pub qkv: PackedLinear,
    pub out: PackedLinear,
    pub self_norm: Norm,
    pub fc1: PackedLinear,
    pub fc2: PackedLinear,
    pub final_norm: Norm,
}

impl EncoderLayer {
    pub fn bytes(&self) -> usize {
        self.qkv.bytes() + self.out.bytes() + self.fc1.bytes() + self.fc2.bytes()
    }
}

/// Start of each sentence in a packed batch, and the total.
pub fn offsets(lengths: &[usize]) -> (Vec<usize>, usize) {
    let mut at = 0;
    let starts = lengths
        .iter()
        .map(|&l| {
            let s = at;
            at += l;
            s
        })
        .collect();
    (starts, at)
}

/// Run encoder layers over sentences packed one after another (`lengths` tokens each, `x` is
/// (Σ lengths, d) of embedded tokens, updated in place): padding is never computed, and each
/// token attends to the tokens of its own sentence only (what a padding mask does).
pub fn encode_layers(
    layers: &[EncoderLayer],
    x: &mut [f32],
    lengths: &[usize],
    d: usize,
    heads: usize,
    activation: Activation,
) -> Result<()> {
    let (starts, total) = offsets(lengths);
    if x.len() != total * d || heads == 0 || !d.is_multiple_of(heads) {
        return Err(KernelError::Shape("packed encoder input"));
    }
    let max_len = lengths.iter().copied().max().unwrap_or(0);
    let sentence: Vec<usize> = lengths
        .iter()
        .enumerate()
        .flat_map(|(i, &len)| std::iter::repeat_n(i, len))
        .collect();
    let scale = ((d / heads) as f32).powf(-0.5);
    let (mut qkv, mut ctx, mut y, mut hidden) =
        (Vec::new(), vec![0f32; total * d], Vec::new(), Vec::new());
    for layer in layers {
        if layer.qkv.out() != 3 * d || layer.out.out() != d || layer.fc2.out() != d {
            return Err(KernelError::Shape("encoder layer"));
        }
        linear(&layer.qkv, x, total, &mut qkv)?;
        {
            let qkv = &qkv;
            let sentence = &sentence;
            let starts = &starts;
            for_rows(&mut ctx, d, max_len * 2 * d, |r, out, scores| {
                let i = sentence[r];
                let kv = &qkv[starts[i] * 3 * d + d..];
                let q = &qkv[r * 3 * d..r * 3 * d + d];
                attend(q, kv, 3 * d, lengths[i], heads, scale, scores, out);
            });
        }
        linear(&layer.out, &ctx, total, &mut y)?;
        residual_norm_rows(x, &y, d, &layer.self_norm);
        linear(&layer.fc1, x, total, &mut hidden)?;
        activate_rows(activation, &mut hidden, layer.fc1.out());
        linear(&layer.fc2, &hidden, total, &mut y)?;
        residual_norm_rows(x, &y, d, &layer.final_norm);
    }
    Ok(())
}
