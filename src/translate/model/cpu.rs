//! The decoder step on the CPU, on plain `f32` buffers.
//!
//! candle runs a decoder step as ~100 small tensor operations, each allocating its output and
//! handing work to a thread pool; with one query token per row most of them move little data,
//! and attention becomes one tiny matrix product per row and head. Here a step is a handful of
//! large matrix products (the `gemm` crate, which candle itself uses, with the bias written into
//! the output first) plus fused passes for attention, residual + layer norm and the activation.
//!
//! The self-attention cache lives in fixed slots, `[position][slot][k | v]`, so appending a step
//! writes one row per slot and growing the cache never moves old positions. Rows map to slots;
//! reordering rows (beam search) only copies a slot when two rows take the same parent. Rows
//! read the cross-attention keys/values of their source sentence directly, so beams share them.
//!
//! Every row is computed independently of the others, in the same order, so a sentence's result
//! does not depend on its batch.

use gemm::Parallelism;
use rayon::prelude::*;

use super::super::config::Activation;
use super::super::TranslateError;

type Result<T> = std::result::Result<T, TranslateError>;

fn internal(what: &str) -> TranslateError {
    TranslateError::Input(format!("decoder buffers disagree: {what}"))
}

/// `y = x · Wᵀ + b` with `W` stored (out, in), as in PyTorch checkpoints.
#[derive(Clone, Copy)]
pub(super) struct Linear<'a> {
    pub w: &'a [f32],
    pub b: &'a [f32],
    pub inp: usize,
    pub out: usize,
}

#[derive(Clone, Copy)]
pub(super) struct Norm<'a> {
    pub w: &'a [f32],
    pub b: &'a [f32],
    pub eps: f32,
}

pub(super) struct Layer<'a> {
    /// Self-attention q, k and v projections stacked: out = 3·d.
    pub self_qkv: Linear<'a>,
    pub self_out: Linear<'a>,
    pub self_norm: Norm<'a>,
    pub cross_q: Linear<'a>,
    /// Cross-attention k and v projections stacked: out = 2·d.
    pub cross_kv: Linear<'a>,
    pub cross_out: Linear<'a>,
    pub cross_norm: Norm<'a>,
    pub fc1: Linear<'a>,
    pub fc2: Linear<'a>,
    pub final_norm: Norm<'a>,
}

/// Borrowed decoder weights for one step.
pub(super) struct Weights<'a> {
    pub layers: Vec<Layer<'a>>,
    /// (target vocab, d)
    pub embed: &'a [f32],
    /// (positions, d)
    pub positions: &'a [f32],
    pub embed_scale: f32,
    /// The output projection with `final_logits_bias`.
    pub lm_head: Linear<'a>,
    pub d: usize,
    pub heads: usize,
    pub activation: Activation,
}

/// Multiply-accumulate threads for a product of this size: small products are not worth
/// waking the pool for.
fn parallelism(m: usize, n: usize, k: usize) -> Parallelism {
    let threads = rayon::current_num_threads();
    if threads > 1 && m * n * k >= 1 << 18 {
        Parallelism::Rayon(threads)
    } else {
        Parallelism::None
    }
}

/// `out[m×n] = x[m×k] · Wᵀ + b`.
fn linear(lin: Linear<'_>, x: &[f32], m: usize, out: &mut Vec<f32>) -> Result<()> {
    let (k, n) = (lin.inp, lin.out);
    if x.len() < m * k || lin.w.len() != n * k || lin.b.len() != n {
        return Err(internal("linear layer shapes"));
    }
    out.clear();
    out.reserve(m * n);
    for _ in 0..m {
        out.extend_from_slice(lin.b);
    }
    if m == 0 {
        return Ok(());
    }
    // SAFETY: the checks above and `out.len() == m * n` keep every access in bounds: lhs is
    // x[i*k + p], rhs is W[j*k + p] (Wᵀ read column by column) and dst is out[i*n + j], for
    // i < m, j < n, p < k. The three buffers are distinct allocations.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out.as_mut_ptr(),
            1,
            n as isize,
            true,
            x.as_ptr(),
            1,
            k as isize,
            lin.w.as_ptr(),
            k as isize,
            1,
            1.0f32,
            1.0f32,
            false,
            false,
            false,
            parallelism(m, n, k),
        );
    }
    Ok(())
}

/// Run `f(row, out_row, scratch)` for each `width`-wide row of `out`, on the thread pool when
/// there is enough work (`cost` is a rough per-row element count). `scratch` is a buffer
/// reused across the rows a thread runs.
fn for_rows<F>(out: &mut [f32], width: usize, cost: usize, f: F)
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

pub(crate) mod simd {
    //! Small vector kernels written so that the compiler vectorises them, compiled twice on
    //! x86-64 (baseline and AVX2) and picked at run time.

    const LANES: usize = 8;

    /// `$body` for `$l` = 0..8, written out: the compiler turns the eight statements into one
    /// vector operation, and unoptimised (test) builds run them without iterator calls.
    macro_rules! lanes {
        ($l:ident => $body:expr) => {{
            {
                let $l = 0;
                $body;
            }
            {
                let $l = 1;
                $body;
            }
            {
                let $l = 2;
                $body;
            }
            {
                let $l = 3;
                $body;
            }
            {
                let $l = 4;
                $body;
            }
            {
                let $l = 5;
                $body;
            }
            {
                let $l = 6;
                $body;
            }
            {
                let $l = 7;
                $body;
            }
        }};
    }

    #[inline(always)]
    fn reduce(acc: &[f32; LANES]) -> f32 {
        ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7]))
    }

    #[inline(always)]
    pub fn dot(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let (a, b) = (&a[..n], &b[..n]);
        let mut acc = [0f32; LANES];
        let mut ca = a.chunks_exact(LANES);
        let mut cb = b.chunks_exact(LANES);
        for (x, y) in (&mut ca).zip(&mut cb) {
            lanes!(l => acc[l] += x[l] * y[l]);
        }
        let mut tail = 0f32;
        for (x, y) in ca.remainder().iter().zip(cb.remainder()) {
            tail += x * y;
        }
        reduce(&acc) + tail
    }

    /// `y += s * x`
    #[inline(always)]
    pub fn axpy(y: &mut [f32], s: f32, x: &[f32]) {
        for (y, x) in y.iter_mut().zip(x) {
            *y += s * *x;
        }
    }

    #[inline(always)]
    pub fn max(v: &[f32]) -> f32 {
        let n = v.len();
        let full = n - n % LANES;
        let mut acc = [f32::NEG_INFINITY; LANES];
        let mut i = 0;
        while i < full {
            let x = &v[i..i + LANES];
            lanes!(l => acc[l] = acc[l].max(x[l]));
            i += LANES;
        }
        let mut m = f32::NEG_INFINITY;
        for &x in acc.iter().chain(&v[full..]) {
            m = m.max(x);
        }
        m
    }

    /// e^x to within a few ulp for x ≤ 88 (NaN stays NaN), branch-free so that loops over it
    /// vectorise:
    /// x = n·ln2 + r with |r| ≤ ln2/2, e^r by its Taylor series to r^7, 2^n from the exponent
    /// bits. Below -87.3 (where f32 leaves normal numbers) it returns 0.
    #[inline(always)]
    pub fn exp(x: f32) -> f32 {
        const LOG2E: f32 = std::f32::consts::LOG2_E;
        // ln 2 split so that n·LN2_HI is exact for |n| < 2^8.
        const LN2_HI: f32 = 0.693_145_75;
        const LN2_LO: f32 = 1.428_606_8e-6;
        // Adding and subtracting 1.5·2^23 rounds to the nearest integer.
        const ROUND: f32 = 12_582_912.0;
        let xc = x.clamp(-87.3, 88.0);
        let t = xc * LOG2E + ROUND;
        let n = t - ROUND;
        let r = (xc - n * LN2_HI) - n * LN2_LO;
        let mut p = 1.0 / 5040.0;
        p = p * r + 1.0 / 720.0;
        p = p * r + 1.0 / 120.0;
        p = p * r + 1.0 / 24.0;
        p = p * r + 1.0 / 6.0;
        p = p * r + 0.5;
        p = p * r + 1.0;
        p = p * r + 1.0;
        // n sits in the low mantissa bits of t; integer arithmetic (unlike a float-to-int
        // cast, which saturates) keeps this loop vectorisable.
        let n_int = t.to_bits().wrapping_sub(ROUND.to_bits());
        let scale = f32::from_bits(n_int.wrapping_add(127) << 23);
        let y = p * scale;
        let y = if x < -87.3 { 0.0 } else { y };
        let y = if x > 88.0 { f32::INFINITY } else { y };
        if x.is_nan() {
            x
        } else {
            y
        }
    }

    /// Σ e^(x - shift)
    #[inline(always)]
    pub fn sum_exp(v: &[f32], shift: f32) -> f32 {
        let mut acc = [0f32; LANES];
        let mut chunks = v.chunks_exact(LANES);
        for c in &mut chunks {
            for l in 0..LANES {
                acc[l] += exp(c[l] - shift);
            }
        }
        let mut tail = 0f32;
        for &x in chunks.remainder() {
            tail += exp(x - shift);
        }
        reduce(&acc) + tail
    }

    #[inline(always)]
    pub fn sum(v: &[f32]) -> f32 {
        let n = v.len();
        let full = n - n % LANES;
        let mut acc = [0f32; LANES];
        let mut i = 0;
        while i < full {
            let x = &v[i..i + LANES];
            lanes!(l => acc[l] += x[l]);
            i += LANES;
        }
        let mut tail = 0f32;
        for &x in &v[full..] {
            tail += x;
        }
        reduce(&acc) + tail
    }

    /// `v[i] = f(v[i])` for every i.
    // An index loop rather than an iterator: as fast when optimised, and much faster in the
    // unoptimised builds the tests run in.
    #[allow(clippy::needless_range_loop)]
    #[inline(always)]
    pub fn map(v: &mut [f32], f: impl Fn(f32) -> f32) {
        for i in 0..v.len() {
            v[i] = f(v[i]);
        }
    }

    /// Softmax in place, as torch computes it: e^(x - max) / Σ.
    #[inline(always)]
    pub fn softmax(v: &mut [f32]) {
        let m = max(v);
        map(v, |x| exp(x - m));
        let sum = sum(v);
        map(v, |x| x / sum);
    }

    /// log_softmax in place: x - max - ln Σ e^(x - max).
    #[inline(always)]
    pub fn log_softmax(v: &mut [f32]) {
        let m = max(v);
        let log_sum = sum_exp(v, m).ln();
        map(v, |x| x - m - log_sum);
    }

    /// Calls `$body` (an expression using only `#[inline(always)]` kernels) compiled for AVX2
    /// when the CPU has it.
    macro_rules! dispatch {
        ($name:ident, ($($arg:ident: $ty:ty),*) -> $ret:ty, $body:expr) => {
            #[allow(clippy::too_many_arguments)]
            pub fn $name($($arg: $ty),*) -> $ret {
                #[cfg(target_arch = "x86_64")]
                {
                    #[target_feature(enable = "avx2")]
                    #[allow(clippy::too_many_arguments)]
                    fn avx2($($arg: $ty),*) -> $ret {
                        $body
                    }
                    if std::arch::is_x86_feature_detected!("avx2") {
                        // SAFETY: the CPU supports AVX2, checked just above.
                        return unsafe { avx2($($arg),*) };
                    }
                }
                $body
            }
        };
    }
    pub(crate) use dispatch;

    dispatch!(log_softmax_row, (v: &mut [f32]) -> (), log_softmax(v));
    dispatch!(max_row, (v: &[f32]) -> f32, max(v));
}

/// One step's row-independent kernels, dispatched for AVX2 as a whole.
mod kernels {
    use super::simd::{self, dispatch};
    use super::Activation;

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
    fn activate_body(act: Activation, v: &mut [f32]) {
        match act {
            Activation::Relu => simd::map(v, |x| x.max(0.0)),
            Activation::Swish => simd::map(v, |x| x / (1.0 + simd::exp(-x))),
            Activation::Gelu => {
                for x in v.iter_mut() {
                    let e = candle_core::cpu::erf::erf_f32(*x * std::f32::consts::FRAC_1_SQRT_2);
                    *x *= (e + 1.0) * 0.5;
                }
            }
            Activation::GeluTanh => {
                for x in v.iter_mut() {
                    let c = (2.0f32 / std::f32::consts::PI).sqrt();
                    let t = (c * (*x + 0.044_715 * *x * *x * *x)).tanh();
                    *x = 0.5 * *x * (1.0 + t);
                }
            }
        }
    }

    dispatch!(
        activate,
        (act: Activation, v: &mut [f32]) -> (),
        activate_body(act, v)
    );
}

pub(super) struct EncoderLayer<'a> {
    /// q, k and v projections stacked: out = 3·d.
    pub qkv: Linear<'a>,
    pub out: Linear<'a>,
    pub self_norm: Norm<'a>,
    pub fc1: Linear<'a>,
    pub fc2: Linear<'a>,
    pub final_norm: Norm<'a>,
}

pub(super) struct EncoderWeights<'a> {
    pub layers: Vec<EncoderLayer<'a>>,
    /// (source vocab, d)
    pub embed: &'a [f32],
    /// (positions, d)
    pub positions: &'a [f32],
    pub embed_scale: f32,
    pub d: usize,
    pub heads: usize,
    pub activation: Activation,
}

/// Start of each sentence in a packed batch, and the total.
fn offsets(lengths: &[usize]) -> (Vec<usize>, usize) {
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

/// Encode sentences given as ids packed one after another (`lengths` each): padding is never
/// computed, and each token attends to the tokens of its own sentence only (what the padding
/// mask does). Returns the hidden states, packed the same way: (Σ lengths, d).
pub(super) fn encode(w: &EncoderWeights<'_>, ids: &[u32], lengths: &[usize]) -> Result<Vec<f32>> {
    let d = w.d;
    let (starts, total) = offsets(lengths);
    if ids.len() != total {
        return Err(internal("packed ids and lengths"));
    }
    let max_len = lengths.iter().copied().max().unwrap_or(0);
    if max_len * d > w.positions.len() {
        return Err(TranslateError::Input(
            "a source sentence is longer than the model's positions".into(),
        ));
    }
    // Sentence and position of each packed token.
    let mut sentence = Vec::with_capacity(total);
    let mut x = Vec::with_capacity(total * d);
    for (i, &len) in lengths.iter().enumerate() {
        for p in 0..len {
            sentence.push(i);
            let t = ids[starts[i] + p] as usize;
            let e = w
                .embed
                .get(t * d..(t + 1) * d)
                .ok_or_else(|| TranslateError::Input(format!("token id {t} is out of range")))?;
            let pos = &w.positions[p * d..(p + 1) * d];
            x.extend(e.iter().zip(pos).map(|(e, p)| e * w.embed_scale + p));
        }
    }
    let heads = w.heads;
    let scale = ((d / heads.max(1)) as f32).powf(-0.5);
    let (mut qkv, mut ctx, mut y, mut hidden) =
        (Vec::new(), vec![0f32; total * d], Vec::new(), Vec::new());
    for layer in &w.layers {
        linear(layer.qkv, &x, total, &mut qkv)?;
        {
            let qkv = &qkv;
            let sentence = &sentence;
            let starts = &starts;
            for_rows(&mut ctx, d, max_len * 2 * d, |r, out, scores| {
                let i = sentence[r];
                let kv = &qkv[starts[i] * 3 * d + d..];
                let q = &qkv[r * 3 * d..r * 3 * d + d];
                kernels::attend(q, kv, 3 * d, lengths[i], heads, scale, scores, out);
            });
        }
        linear(layer.out, &ctx, total, &mut y)?;
        residual_norm_rows(&mut x, &y, d, layer.self_norm);
        linear(layer.fc1, &x, total, &mut hidden)?;
        let act = w.activation;
        let ffn = layer.fc1.out;
        for_rows(&mut hidden, ffn, ffn, |_, row, _| {
            kernels::activate(act, row)
        });
        linear(layer.fc2, &hidden, total, &mut y)?;
        residual_norm_rows(&mut x, &y, d, layer.final_norm);
    }
    Ok(x)
}

/// The decoder's per-batch state on the CPU.
pub(super) struct State {
    layers: usize,
    d: usize,
    /// Per layer: `[position][slot][k | v]`, `slot_cap` slots per position.
    self_kv: Vec<Vec<f32>>,
    slot_cap: usize,
    /// Positions each layer's buffer has room for.
    pos_cap: usize,
    slot_of_row: Vec<usize>,
    free_slots: Vec<usize>,
    /// Which source sentence each row reads.
    item_of_row: Vec<usize>,
    /// Per layer: `[source token][k | v]`, sentences packed one after another.
    cross_kv: Vec<Vec<f32>>,
    src_len: Vec<usize>,
    src_start: Vec<usize>,
    /// Tokens decoded so far.
    pub step: usize,
    scratch: Scratch,
}

#[derive(Default)]
struct Scratch {
    x: Vec<f32>,
    qkv: Vec<f32>,
    ctx: Vec<f32>,
    y: Vec<f32>,
    q: Vec<f32>,
    hidden: Vec<f32>,
}

impl State {
    /// `hidden` is the packed encoder output (Σ src_len, d); `rows` maps each decoder row to
    /// a source sentence.
    pub fn new(
        w: &Weights<'_>,
        hidden: &[f32],
        src_len: Vec<usize>,
        rows: Vec<usize>,
    ) -> Result<Self> {
        let d = w.d;
        let items = src_len.len();
        let (src_start, total) = offsets(&src_len);
        if hidden.len() != total * d || rows.iter().any(|&i| i >= items) {
            return Err(internal("encoder output shape"));
        }
        let mut cross_kv = Vec::with_capacity(w.layers.len());
        for layer in &w.layers {
            let mut kv = Vec::new();
            linear(layer.cross_kv, hidden, total, &mut kv)?;
            cross_kv.push(kv);
        }
        let n = rows.len();
        Ok(Self {
            layers: w.layers.len(),
            d,
            self_kv: vec![Vec::new(); w.layers.len()],
            slot_cap: n.max(1),
            pos_cap: 0,
            slot_of_row: (0..n).collect(),
            free_slots: Vec::new(),
            item_of_row: rows,
            cross_kv,
            src_len,
            src_start,
            step: 0,
            scratch: Scratch::default(),
        })
    }

    pub fn rows(&self) -> usize {
        self.slot_of_row.len()
    }

    /// Room for `slots` slots per position: the buffers are laid out again (cheap early in
    /// decoding, which is when beam search first fans out).
    fn grow_slots(&mut self, slots: usize) {
        let width = 2 * self.d;
        let new_cap = slots.max(self.slot_cap * 2);
        for buf in &mut self.self_kv {
            let mut grown = vec![0f32; self.pos_cap * new_cap * width];
            for t in 0..self.step.min(self.pos_cap) {
                let from = &buf[t * self.slot_cap * width..(t + 1) * self.slot_cap * width];
                grown[t * new_cap * width..t * new_cap * width + from.len()].copy_from_slice(from);
            }
            *buf = grown;
        }
        self.free_slots.extend(self.slot_cap..new_cap);
        self.slot_cap = new_cap;
    }

    /// Keep rows `rows` (in that order, repeats allowed).
    pub fn select(&mut self, rows: &[u32]) -> Result<()> {
        let old = self.rows();
        if rows.iter().any(|&r| r as usize >= old) {
            return Err(TranslateError::Input(format!(
                "row selection out of range for {old} rows"
            )));
        }
        // The first row to take a parent takes its slot; later ones get a copy.
        let mut taken = vec![false; old];
        let mut slots = vec![usize::MAX; rows.len()];
        for (new, &o) in rows.iter().enumerate() {
            let o = o as usize;
            if !taken[o] {
                taken[o] = true;
                slots[new] = self.slot_of_row[o];
            }
        }
        for (o, &t) in taken.iter().enumerate() {
            if !t {
                self.free_slots.push(self.slot_of_row[o]);
            }
        }
        let copies = slots.iter().filter(|&&s| s == usize::MAX).count();
        if copies > self.free_slots.len() {
            let in_use = self.slot_cap - self.free_slots.len();
            self.grow_slots(in_use + copies);
        }
        let width = 2 * self.d;
        let filled = self.step.min(self.pos_cap);
        for (new, &o) in rows.iter().enumerate() {
            if slots[new] != usize::MAX {
                continue;
            }
            let from = self.slot_of_row[o as usize];
            let to = self
                .free_slots
                .pop()
                .ok_or_else(|| internal("no free cache slot"))?;
            for buf in &mut self.self_kv {
                for t in 0..filled {
                    let base = t * self.slot_cap * width;
                    buf.copy_within(
                        base + from * width..base + (from + 1) * width,
                        base + to * width,
                    );
                }
            }
            slots[new] = to;
        }
        self.item_of_row = rows.iter().map(|&o| self.item_of_row[o as usize]).collect();
        self.slot_of_row = slots;
        Ok(())
    }

    /// Make room for position `self.step` in every layer's cache.
    fn reserve_position(&mut self) {
        if self.step < self.pos_cap {
            return;
        }
        let new_cap = (self.pos_cap * 2).max(16);
        let plane = self.slot_cap * 2 * self.d;
        for buf in &mut self.self_kv {
            buf.resize(new_cap * plane, 0.0);
        }
        self.pos_cap = new_cap;
    }
}

/// One decoder step: embed `tokens` (one per row), run the layers, and write the next-token
/// logits (rows × vocab, `final_logits_bias` added) into `logits`.
pub(super) fn step(
    w: &Weights<'_>,
    st: &mut State,
    tokens: &[u32],
    logits: &mut Vec<f32>,
) -> Result<()> {
    use super::profile::{self, Phase};

    let n = tokens.len();
    let d = w.d;
    if n != st.rows() || d != st.d || w.layers.len() != st.layers {
        return Err(internal("rows or model size"));
    }
    let vocab = w.lm_head.out;
    let pos = st.step;
    if (pos + 1) * d > w.positions.len() {
        return Err(TranslateError::Input(
            "cannot decode past the model's positions".into(),
        ));
    }
    st.reserve_position();
    let heads = w.heads;
    let scale = ((d / heads.max(1)) as f32).powf(-0.5);
    let mut sc = std::mem::take(&mut st.scratch);

    let t_embed = profile::time(Phase::Embed);
    sc.x.clear();
    let position = &w.positions[pos * d..(pos + 1) * d];
    for &tok in tokens {
        let t = tok as usize;
        let Some(e) = w.embed.get(t * d..(t + 1) * d) else {
            return Err(TranslateError::Input(format!(
                "token id {tok} is outside the target vocabulary of {vocab}"
            )));
        };
        sc.x.extend(e.iter().zip(position).map(|(e, p)| e * w.embed_scale + p));
    }
    drop(t_embed);

    let width = 2 * d;
    let plane = st.slot_cap * width;
    for (l, layer) in w.layers.iter().enumerate() {
        // Self-attention: project q|k|v, append k|v to each row's slot, attend.
        let t_qkv = profile::time(Phase::SelfQkv);
        linear(layer.self_qkv, &sc.x, n, &mut sc.qkv)?;
        let cache = &mut st.self_kv[l];
        for (r, qkv) in sc.qkv.chunks_exact(3 * d).enumerate() {
            let at = pos * plane + st.slot_of_row[r] * width;
            cache[at..at + width].copy_from_slice(&qkv[d..]);
        }
        drop(t_qkv);

        let t_att = profile::time(Phase::SelfAttend);
        sc.ctx.resize(n * d, 0.0);
        {
            let cache = &st.self_kv[l];
            let slots = &st.slot_of_row;
            let qkv = &sc.qkv;
            let len = pos + 1;
            for_rows(&mut sc.ctx, d, len * width, |r, out, scores| {
                let kv = &cache[slots[r] * width..];
                let q = &qkv[r * 3 * d..r * 3 * d + d];
                kernels::attend(q, kv, plane, len, heads, scale, scores, out);
            });
        }
        drop(t_att);

        let t_out = profile::time(Phase::SelfOut);
        linear(layer.self_out, &sc.ctx, n, &mut sc.y)?;
        drop(t_out);
        let t_norm = profile::time(Phase::AddNorm);
        residual_norm_rows(&mut sc.x, &sc.y, d, layer.self_norm);
        drop(t_norm);

        // Cross-attention over the row's source sentence.
        let t_q = profile::time(Phase::CrossQ);
        linear(layer.cross_q, &sc.x, n, &mut sc.q)?;
        drop(t_q);
        let t_att = profile::time(Phase::CrossAttend);
        {
            let kv = &st.cross_kv[l];
            let items = &st.item_of_row;
            let src_len = &st.src_len;
            let src_start = &st.src_start;
            let q = &sc.q;
            let longest = src_len.iter().copied().max().unwrap_or(0);
            for_rows(&mut sc.ctx, d, longest * width, |r, out, scores| {
                let item = items[r];
                let kv = &kv[src_start[item] * width..];
                kernels::attend(
                    &q[r * d..(r + 1) * d],
                    kv,
                    width,
                    src_len[item],
                    heads,
                    scale,
                    scores,
                    out,
                );
            });
        }
        drop(t_att);
        let t_out = profile::time(Phase::CrossOut);
        linear(layer.cross_out, &sc.ctx, n, &mut sc.y)?;
        drop(t_out);
        let t_norm = profile::time(Phase::AddNorm);
        residual_norm_rows(&mut sc.x, &sc.y, d, layer.cross_norm);
        drop(t_norm);

        let t_ffn = profile::time(Phase::Ffn);
        linear(layer.fc1, &sc.x, n, &mut sc.hidden)?;
        let act = w.activation;
        let ffn = layer.fc1.out;
        for_rows(&mut sc.hidden, ffn, ffn, |_, row, _| {
            kernels::activate(act, row)
        });
        linear(layer.fc2, &sc.hidden, n, &mut sc.y)?;
        drop(t_ffn);
        let t_norm = profile::time(Phase::AddNorm);
        residual_norm_rows(&mut sc.x, &sc.y, d, layer.final_norm);
        drop(t_norm);
    }

    let t_head = profile::time(Phase::LmHead);
    linear(w.lm_head, &sc.x, n, logits)?;
    drop(t_head);
    st.step += 1;
    st.scratch = sc;
    Ok(())
}

fn residual_norm_rows(x: &mut [f32], y: &[f32], d: usize, norm: Norm<'_>) {
    for_rows(x, d, d, |r, row, _| {
        kernels::residual_norm(row, &y[r * d..(r + 1) * d], norm.w, norm.b, norm.eps)
    });
}

#[cfg(test)]
mod tests {
    use super::simd;

    #[test]
    fn exp_is_accurate_and_saturates() {
        let mut worst = 0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            let want = (x as f64).exp();
            let got = simd::exp(x) as f64;
            worst = worst.max(((got - want) / want).abs());
            x += 0.0137;
        }
        assert!(
            worst < 4.0 * f32::EPSILON as f64,
            "relative error {worst:e}"
        );
        assert_eq!(simd::exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(simd::exp(-100.0), 0.0);
        assert_eq!(simd::exp(0.0), 1.0);
        assert_eq!(simd::exp(100.0), f32::INFINITY);
    }

    #[test]
    fn kernels_match_plain_loops() {
        let a: Vec<f32> = (0..37).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..37).map(|i| (i as f32 * 0.11).cos()).collect();
        let plain: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        assert!((simd::dot(&a, &b) - plain).abs() < 1e-5);
        assert_eq!(
            simd::max(&a),
            a.iter().copied().fold(f32::NEG_INFINITY, f32::max)
        );
        let mut row = a.clone();
        row[3] = f32::NEG_INFINITY;
        simd::log_softmax_row(&mut row);
        let total: f32 = row.iter().map(|x| x.exp()).sum();
        assert!((total - 1.0).abs() < 1e-5);
        assert_eq!(row[3], f32::NEG_INFINITY);
        let mut p = a.clone();
        simd::softmax(&mut p);
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-5);
    }
}
