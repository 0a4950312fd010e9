//! The CPU backend's forward passes, on plain `f32` buffers (the layers are in
//! [`crate::model::kernels::layers`]): the encoder over sentences packed without padding, and
//! one decoder step with its per-batch state. [`super::CpuMarian`] owns the weights.
//!
//! candle runs a decoder step as ~100 small tensor operations, each allocating its output and
//! handing work to a thread pool; with one query token per row most of them move little data,
//! and attention becomes one tiny matrix product per row and head. Here a step is a handful of
//! large matrix products plus fused passes for attention, residual + layer norm and the
//! activation.
//!
//! The self-attention cache lives in fixed slots, `[position][slot][k | v]`, so appending a step
//! writes one row per slot and growing the cache never moves old positions. Rows map to slots;
//! reordering rows (beam search) only copies a slot when two rows take the same parent. Rows
//! read the cross-attention keys/values of their source sentence directly, so beams share them.
//!
//! Every row is computed independently of the others, in the same order, so a sentence's result
//! does not depend on its batch.

use crate::model::kernels::layers::{
    activate, attend, encode_layers, for_rows, linear, offsets, residual_norm_rows,
};
pub(super) use crate::model::kernels::layers::{EncoderLayer, Norm, PackedLinear};
use crate::model::kernels::KernelError;

use super::super::config::Activation;
use super::super::profile::{self, Phase};
use super::super::TranslateError;

type Result<T> = std::result::Result<T, TranslateError>;

fn internal(what: &str) -> TranslateError {
    TranslateError::Input(format!("decoder buffers disagree: {what}"))
}

impl From<KernelError> for TranslateError {
    fn from(e: KernelError) -> Self {
        TranslateError::Input(e.to_string())
    }
}

/// One decoder layer's weights, packed for the CPU kernels.
pub(super) struct Layer {
    /// Self-attention q, k and v projections stacked: out = 3·d.
    pub self_qkv: PackedLinear,
    pub self_out: PackedLinear,
    pub self_norm: Norm,
    pub cross_q: PackedLinear,
    /// Cross-attention k and v projections stacked: out = 2·d.
    pub cross_kv: PackedLinear,
    pub cross_out: PackedLinear,
    pub cross_norm: Norm,
    pub fc1: PackedLinear,
    pub fc2: PackedLinear,
    pub final_norm: Norm,
}

impl Layer {
    pub fn bytes(&self) -> usize {
        [
            &self.self_qkv,
            &self.self_out,
            &self.cross_q,
            &self.cross_kv,
            &self.cross_out,
            &self.fc1,
            &self.fc2,
        ]
        .iter()
        .map(|p| p.bytes())
        .sum()
    }
}

/// Borrowed decoder weights for one step.
pub(super) struct Weights<'a> {
    pub layers: &'a [Layer],
    /// (target vocab, d)
    pub embed: &'a [f32],
    /// (positions, d)
    pub positions: &'a [f32],
    pub embed_scale: f32,
    /// The output projection with `final_logits_bias`.
    pub lm_head: &'a PackedLinear,
    pub d: usize,
    pub heads: usize,
    pub activation: Activation,
}

pub(super) struct EncoderWeights<'a> {
    pub layers: &'a [EncoderLayer],
    /// (source vocab, d)
    pub embed: &'a [f32],
    /// (positions, d)
    pub positions: &'a [f32],
    pub embed_scale: f32,
    pub d: usize,
    pub heads: usize,
    pub activation: Activation,
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
    let mut x = Vec::with_capacity(total * d);
    for (i, &len) in lengths.iter().enumerate() {
        for p in 0..len {
            let t = ids[starts[i] + p] as usize;
            let e = w
                .embed
                .get(t * d..(t + 1) * d)
                .ok_or_else(|| TranslateError::Input(format!("token id {t} is out of range")))?;
            let pos = &w.positions[p * d..(p + 1) * d];
            x.extend(e.iter().zip(pos).map(|(e, p)| e * w.embed_scale + p));
        }
    }
    encode_layers(w.layers, &mut x, lengths, d, w.heads, w.activation)?;
    Ok(x)
}

/// The decoder's per-batch state on the CPU.
pub struct State {
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
    pub(super) step: usize,
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
    pub(super) fn new(
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
        for layer in w.layers {
            let mut kv = Vec::new();
            linear(&layer.cross_kv, hidden, total, &mut kv)?;
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
    let n = tokens.len();
    let d = w.d;
    if n != st.rows() || d != st.d || w.layers.len() != st.layers {
        return Err(internal("rows or model size"));
    }
    let vocab = w.lm_head.out();
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
        linear(&layer.self_qkv, &sc.x, n, &mut sc.qkv)?;
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
                attend(q, kv, plane, len, heads, scale, scores, out);
            });
        }
        drop(t_att);

        let t_out = profile::time(Phase::SelfOut);
        linear(&layer.self_out, &sc.ctx, n, &mut sc.y)?;
        drop(t_out);
        let t_norm = profile::time(Phase::AddNorm);
        residual_norm_rows(&mut sc.x, &sc.y, d, &layer.self_norm);
        drop(t_norm);

        // Cross-attention over the row's source sentence.
        let t_q = profile::time(Phase::CrossQ);
        linear(&layer.cross_q, &sc.x, n, &mut sc.q)?;
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
                attend(
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
        linear(&layer.cross_out, &sc.ctx, n, &mut sc.y)?;
        drop(t_out);
        let t_norm = profile::time(Phase::AddNorm);
        residual_norm_rows(&mut sc.x, &sc.y, d, &layer.cross_norm);
        drop(t_norm);

        let t_ffn = profile::time(Phase::Ffn);
        linear(&layer.fc1, &sc.x, n, &mut sc.hidden)?;
        let act = w.activation;
        let ffn = layer.fc1.out();
        for_rows(&mut sc.hidden, ffn, ffn, |_, row, _| activate(act, row));
        linear(&layer.fc2, &sc.hidden, n, &mut sc.y)?;
        drop(t_ffn);
        let t_norm = profile::time(Phase::AddNorm);
        residual_norm_rows(&mut sc.x, &sc.y, d, &layer.final_norm);
        drop(t_norm);
    }

    let t_head = profile::time(Phase::LmHead);
    linear(w.lm_head, &sc.x, n, logits)?;
    drop(t_head);
    st.step += 1;
    st.scratch = sc;
    Ok(())
}
