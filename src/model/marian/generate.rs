//! Greedy and beam search with the semantics of transformers' `generate` (v5): the same logits
//! processors, the same beam bookkeeping (2·num_beams candidates per step, finished hypotheses
//! scored by `sum_logprobs / generated_len^length_penalty`, the same early-stopping rules), so
//! that the ids we produce equal the reference's exactly.
//!
//! Unlike the reference, rows whose result can no longer change leave the batch at once, so the
//! decoder never spends work on them.
//!
//! Written once, generic over [`MarianBackend`], so every backend generates through the same
//! code (tests/parity.rs runs the transformers references through both).

use super::config::{EarlyStopping, GenerationConfig};
use std::cmp::Ordering;

use rayon::prelude::*;

use super::backend::{DecoderState, EncodedBatch, MarianBackend};
use super::profile::{self, Phase};
use super::TranslateError;
use crate::model::kernels::simd;

type Result<T> = std::result::Result<T, TranslateError>;

/// Score transformers gives to beams that must not win (not -inf, so arithmetic stays finite).
const NEG_BIG: f32 = -1.0e9;

/// The logits processors OPUS-MT generation configs use, applied to one row of scores.
struct Processors<'a> {
    gen: &'a GenerationConfig,
}

impl Processors<'_> {
    /// `prefix` is the decoder input so far, decoder start token included (its length is
    /// transformers' `cur_len`).
    fn apply(&self, prefix: &[u32], scores: &mut [f32]) {
        let cur_len = prefix.len();
        // MinLengthLogitsProcessor
        if cur_len < self.gen.min_length {
            for &eos in &self.gen.eos_token_ids {
                if let Some(s) = scores.get_mut(eos as usize) {
                    *s = f32::NEG_INFINITY;
                }
            }
        }
        // NoBadWordsLogitsProcessor: a banned sequence's last token is forbidden when the
        // prefix ends with the rest of it. A lone EOS is never banned.
        for word in &self.gen.bad_words_ids {
            let Some((&last, head)) = word.split_last() else {
                continue;
            };
            if word.len() == 1 && self.gen.eos_token_ids.contains(&last) {
                continue;
            }
            if prefix.ends_with(head) {
                if let Some(s) = scores.get_mut(last as usize) {
                    *s = f32::NEG_INFINITY;
                }
            }
        }
        // ForcedEOSTokenLogitsProcessor: the last allowed step can only be EOS.
        if let Some(eos) = self.gen.forced_eos_token_id {
            if cur_len + 1 == self.gen.max_length {
                scores.fill(f32::NEG_INFINITY);
                if let Some(s) = scores.get_mut(eos as usize) {
                    *s = 0.0;
                }
            }
        }
    }

    /// The processors, then LogitNormalization when the config asks for it. Greedy search
    /// skips the normalisation: it shifts a row by a constant, which cannot change its argmax.
    fn apply_normalised(&self, prefix: &[u32], scores: &mut [f32]) {
        self.apply(prefix, scores);
        if self.gen.renormalize_logits {
            log_softmax_in_place(scores);
        }
    }
}

/// log_softmax of one row, computed as torch does: x - max - log(sum(exp(x - max))).
fn log_softmax_in_place(row: &mut [f32]) {
    simd::log_softmax_row(row);
}

/// Index of the first maximum (torch.argmax's choice on ties); NaNs never win.
fn argmax(row: &[f32]) -> u32 {
    // Same answer as a left-to-right scan with `>`: the first occurrence of the largest
    // non-NaN value, or 0 when the first entry is NaN.
    if row.first().is_none_or(|x| x.is_nan()) {
        return 0;
    }
    let best = simd::max_row(row);
    row.iter().position(|&x| x == best).unwrap_or(0) as u32
}

/// The `k` largest values with their indices, largest first; ties keep the lower index first.
fn top_k(values: &[f32], k: usize) -> Vec<(usize, f32)> {
    let mut top = TopK::new(k);
    top.scan(values, 0.0, 0);
    top.into_sorted()
}

/// The `want` best (value, index) pairs seen so far, ordered by value (`total_cmp`, largest
/// first) and then by index (smallest first), fed in increasing index order.
struct TopK {
    want: usize,
    best: Vec<(f32, usize)>,
}

impl TopK {
    fn new(want: usize) -> Self {
        Self {
            want,
            best: Vec::with_capacity(want + 1),
        }
    }

    fn offer(&mut self, v: f32, index: usize) {
        if self.best.len() == self.want {
            // A tie with the worst kept entry loses: its index is larger.
            match self.best.last() {
                Some(&(worst, _)) if v.total_cmp(&worst) == Ordering::Greater => {}
                _ => return,
            }
        }
        let at = self
            .best
            .iter()
            .position(|&(e, _)| e.total_cmp(&v) == Ordering::Less)
            .unwrap_or(self.best.len());
        self.best.insert(at, (v, index));
        self.best.truncate(self.want);
    }

    /// Offer `row[i] + add` as index `base + i`, for every i.
    // `!(v < worst)` on purpose: unlike `v >= worst` it lets NaN through to the exact test.
    #[allow(clippy::neg_cmp_op_on_partial_ord)]
    fn scan(&mut self, row: &[f32], add: f32, base: usize) {
        const CHUNK: usize = 16;
        let mut chunks = row.chunks_exact(CHUNK);
        let mut at = base;
        for chunk in &mut chunks {
            // Cheap test first: nothing below the worst kept value can enter. `!(v < worst)`
            // also lets NaNs and ±0 ties through to the exact comparison.
            if self.best.len() == self.want && self.want > 0 {
                let worst = self.best[self.want - 1].0;
                let mut any = false;
                for &x in chunk {
                    any |= !(x + add < worst);
                }
                if !any {
                    at += CHUNK;
                    continue;
                }
            }
            for (j, &x) in chunk.iter().enumerate() {
                self.offer(x + add, at + j);
            }
            at += CHUNK;
        }
        for (j, &x) in chunks.remainder().iter().enumerate() {
            self.offer(x + add, at + j);
        }
    }

    fn into_sorted(self) -> Vec<(usize, f32)> {
        self.best.into_iter().map(|(v, i)| (i, v)).collect()
    }
}

/// Rows of `logits` (each `width` wide) paired with `items`, in parallel when there is enough
/// work to share.
fn map_rows<T, R, F>(logits: &mut [f32], width: usize, items: &[T], f: F) -> Vec<R>
where
    T: Sync,
    R: Send,
    F: Fn(&mut [f32], &T) -> R + Sync + Send,
{
    if width == 0 {
        return Vec::new();
    }
    if items.len() > 1 && logits.len() >= 1 << 16 && rayon::current_num_threads() > 1 {
        logits
            .par_chunks_mut(width)
            .zip(items.par_iter())
            .map(|(row, item)| f(row, item))
            .collect()
    } else {
        logits
            .chunks_mut(width)
            .zip(items)
            .map(|(row, item)| f(row, item))
            .collect()
    }
}

fn length_normalised(score: f32, generated_len: usize, length_penalty: f32) -> f32 {
    // Python evaluates `len ** penalty` in double precision; torch then divides in f32.
    score / (generated_len as f64).powf(length_penalty as f64) as f32
}

/// Encode `rows`, call `encoded` (e.g. to time the encoder), then generate: beam search when
/// `gen.num_beams > 1`, greedy otherwise.
pub fn encode_and_generate<B: MarianBackend>(
    model: &B,
    rows: &[Vec<u32>],
    gen: &GenerationConfig,
    encoded: impl FnOnce() -> Result<()>,
) -> Result<Vec<Vec<u32>>> {
    let batch = model.encode(rows)?;
    encoded()?;
    beam_search(model, &batch, gen)
}

/// Fails unless the decoder returned one row of `vocab` logits per token.
fn check_logits(logits: &[f32], rows: usize, vocab: usize) -> Result<()> {
    if logits.len() != rows * vocab {
        return Err(TranslateError::Input(
            "decoder returned a wrong logits size".into(),
        ));
    }
    Ok(())
}

/// Greedy decoding of one encoded batch. Returns each row's generated ids: no decoder start
/// token, EOS kept when generated, no padding.
pub fn greedy<B: MarianBackend>(
    model: &B,
    encoded: &B::Encoded,
    gen: &GenerationConfig,
) -> Result<Vec<Vec<u32>>> {
    let n = encoded.rows();
    let processors = Processors { gen };
    let mut state = model.start_decoding(encoded, None)?;
    // Decoder inputs so far per row, decoder start token included.
    let mut prefixes: Vec<Vec<u32>> = vec![vec![gen.decoder_start_token_id]; n];
    let mut active: Vec<usize> = (0..n).collect();
    let vocab = model.config().target_vocab_size();
    let mut logits = Vec::new();
    while !active.is_empty() {
        let tokens: Vec<u32> = active
            .iter()
            .map(|&r| *prefixes[r].last().unwrap_or(&gen.decoder_start_token_id))
            .collect();
        model.decode_step_into(&tokens, &mut state, &mut logits)?;
        check_logits(&logits, active.len(), vocab)?;
        let t_search = profile::time(Phase::Search);
        let next = map_rows(&mut logits, vocab, &active, |scores, &row| {
            processors.apply(&prefixes[row], scores);
            argmax(scores)
        });
        let mut keep = Vec::with_capacity(active.len());
        let mut still_active = Vec::with_capacity(active.len());
        for (slot, (&row, next)) in active.iter().zip(next).enumerate() {
            prefixes[row].push(next);
            let done = gen.eos_token_ids.contains(&next) || prefixes[row].len() >= gen.max_length;
            if !done {
                keep.push(slot as u32);
                still_active.push(row);
            }
        }
        drop(t_search);
        if still_active.len() != active.len() && !still_active.is_empty() {
            state.select(&keep)?;
        }
        active = still_active;
    }
    Ok(prefixes.into_iter().map(|p| p[1..].to_vec()).collect())
}

/// One sentence's beam search bookkeeping, mirroring transformers' per-batch-item tensors.
struct BeamItem {
    /// Running beams: generated ids (without decoder start) and accumulated log-prob.
    running: Vec<(Vec<u32>, f32)>,
    /// Finished slots: ids, length-normalised score, and whether the slot holds a real
    /// hypothesis (transformers' `is_sent_finished`); initial slots are placeholders.
    finished: Vec<(Vec<u32>, f32, bool)>,
    /// transformers' `is_early_stop_heuristic_unsatisfied`.
    improvable: bool,
}

/// One continuation of a running beam: (beam, token, accumulated log-prob, whether it stops
/// here: EOS or the length limit).
type Candidate = (usize, u32, f32, bool);

impl BeamItem {
    fn new(num_beams: usize) -> Self {
        let running = (0..num_beams)
            .map(|b| (Vec::new(), if b == 0 { 0.0 } else { NEG_BIG }))
            .collect();
        let finished = (0..num_beams)
            .map(|_| (Vec::new(), NEG_BIG, false))
            .collect();
        Self {
            running,
            finished,
            improvable: true,
        }
    }

    fn all_finished(&self) -> bool {
        self.finished.iter().all(|f| f.2)
    }

    /// The best `2·num_beams` (at least) continuations of the running beams, by accumulated
    /// log-prob, as flat indices `beam · vocab + token`. `block` holds this sentence's rows of
    /// logits (one row for every beam, or one shared row on the first step).
    fn top_continuations(
        &self,
        block: &mut [f32],
        vocab: usize,
        gen: &GenerationConfig,
        want: usize,
    ) -> Vec<(usize, f32)> {
        let processors = Processors { gen };
        let mut prefix = Vec::with_capacity(gen.max_length);
        for (row, (ids, _)) in block.chunks_mut(vocab).zip(&self.running) {
            log_softmax_in_place(row);
            prefix.clear();
            prefix.push(gen.decoder_start_token_id);
            prefix.extend_from_slice(ids);
            processors.apply_normalised(&prefix, row);
        }
        let shared_row = block.len() == vocab;
        let mut top = TopK::new(want);
        for (b, (_, score)) in self.running.iter().enumerate() {
            let row = if shared_row { 0 } else { b };
            top.scan(&block[row * vocab..(row + 1) * vocab], *score, b * vocab);
        }
        top.into_sorted()
    }

    fn extend(&self, beam: usize, token: u32) -> Vec<u32> {
        let mut ids = self.running[beam].0.clone();
        ids.push(token);
        ids
    }

    /// Take the step's candidates (best first): the best that did not stop become the running
    /// beams, the best that stopped (among the top `k`) enter the finished slots. Returns the
    /// parent beam of each new running beam, or `None` when the sentence is done.
    fn advance(
        &mut self,
        candidates: &[Candidate],
        cur_len: usize,
        gen: &GenerationConfig,
    ) -> Option<Vec<usize>> {
        let k = gen.num_beams;
        // Next running beams: the best continuations that did not stop.
        let running_scores: Vec<f32> = candidates
            .iter()
            .map(|&(_, _, lp, hits)| if hits { lp + NEG_BIG } else { lp })
            .collect();
        let chosen = top_k(&running_scores, k);
        let new_running: Vec<(Vec<u32>, f32)> = chosen
            .iter()
            .map(|&(c, s)| (self.extend(candidates[c].0, candidates[c].1), s))
            .collect();
        let parents: Vec<usize> = chosen.iter().map(|&(c, _)| candidates[c].0).collect();

        // Finished hypotheses: only the top num_beams candidates may finish.
        let beams_full = gen.early_stopping == EarlyStopping::Yes && self.all_finished();
        let mut merged: Vec<(Vec<u32>, f32, bool)> = std::mem::take(&mut self.finished);
        for (rank, &(beam, token, lp, hits)) in candidates.iter().enumerate() {
            let just_finished = hits && rank < k;
            let mut s = length_normalised(lp, cur_len, gen.length_penalty);
            if beams_full {
                s += NEG_BIG;
            }
            if !self.improvable {
                s += NEG_BIG;
            }
            if !just_finished {
                s += NEG_BIG;
            }
            merged.push((self.extend(beam, token), s, just_finished));
        }
        let merged_scores: Vec<f32> = merged.iter().map(|m| m.1).collect();
        let keep = top_k(&merged_scores, k);
        self.finished = keep.iter().map(|&(i, _)| merged[i].clone()).collect();
        self.running = new_running;

        self.update_improvable(cur_len, gen);
        let all_hit = candidates.iter().all(|c| c.3);
        let done = !self.improvable
            || (gen.early_stopping == EarlyStopping::Yes && self.all_finished())
            || all_hit;
        (!done).then_some(parents)
    }

    /// The early-stop heuristic, evaluated at the new length: can the best running beam still
    /// beat a finished slot?
    fn update_improvable(&mut self, cur_len: usize, gen: &GenerationConfig) {
        let best_len = if gen.early_stopping == EarlyStopping::Never && gen.length_penalty > 0.0 {
            gen.max_length - 1
        } else {
            cur_len
        };
        let best_possible = length_normalised(self.running[0].1, best_len, gen.length_penalty);
        let worst_finished = self
            .finished
            .iter()
            .map(|f| f.1)
            .fold(f32::INFINITY, f32::min);
        self.improvable &= self.finished.iter().any(|f| {
            let worst = if f.2 { worst_finished } else { NEG_BIG };
            best_possible > worst
        });
    }
}

/// Beam search over one encoded batch, returning the best hypothesis of each row.
pub fn beam_search<B: MarianBackend>(
    model: &B,
    encoded: &B::Encoded,
    gen: &GenerationConfig,
) -> Result<Vec<Vec<u32>>> {
    let k = gen.num_beams;
    if k <= 1 {
        return greedy(model, encoded, gen);
    }
    let n = encoded.rows();
    let vocab = model.config().target_vocab_size();
    let candidates_per_item = 2.max(1 + gen.eos_token_ids.len()) * k;
    // The first step feeds every beam of a sentence the same token, so it runs one row per
    // sentence; the rows fan out to `k` per sentence when the first beams are chosen.
    let mut state = model.start_decoding(encoded, None)?;
    let mut rows_per_item = 1usize;
    let mut items: Vec<BeamItem> = (0..n).map(|_| BeamItem::new(k)).collect();
    // Items still decoding, in the order of their row blocks in `state`.
    let mut active: Vec<usize> = (0..n).collect();
    // transformers' cur_len: decoder input length, the start token included.
    let mut cur_len = 1usize;
    let mut logits = Vec::new();
    while !active.is_empty() {
        let tokens: Vec<u32> = active
            .iter()
            .flat_map(|&i| {
                items[i].running[..rows_per_item]
                    .iter()
                    .map(|(ids, _)| *ids.last().unwrap_or(&gen.decoder_start_token_id))
            })
            .collect();
        model.decode_step_into(&tokens, &mut state, &mut logits)?;
        check_logits(&logits, tokens.len(), vocab)?;
        let t_search = profile::time(Phase::Search);
        // Per sentence, in parallel: normalise its rows and find the best continuations of the
        // accumulated log-probs of every (beam, token), flattened beam-major.
        let tops = map_rows(&mut logits, rows_per_item * vocab, &active, |block, &i| {
            items[i].top_continuations(block, vocab, gen, candidates_per_item)
        });
        let hits_max_length = cur_len + 1 >= gen.max_length;
        let mut next_rows: Vec<u32> = Vec::with_capacity(active.len() * k);
        let mut still_active = Vec::with_capacity(active.len());
        for ((block, &item_idx), top) in active.iter().enumerate().zip(tops) {
            let candidates: Vec<Candidate> = top
                .into_iter()
                .map(|(flat_idx, lp)| {
                    let token = (flat_idx % vocab) as u32;
                    let hits = hits_max_length || gen.eos_token_ids.contains(&token);
                    (flat_idx / vocab, token, lp, hits)
                })
                .collect();
            if let Some(parents) = items[item_idx].advance(&candidates, cur_len, gen) {
                still_active.push(item_idx);
                let row = |p: usize| block * rows_per_item + if rows_per_item == 1 { 0 } else { p };
                next_rows.extend(parents.iter().map(|&p| row(p) as u32));
            }
        }
        drop(t_search);
        cur_len += 1;
        rows_per_item = k;
        if !still_active.is_empty() {
            state.select(&next_rows)?;
        }
        active = still_active;
    }
    Ok(items
        .into_iter()
        .map(|item| {
            item.finished
                .into_iter()
                .next()
                .map(|f| f.0)
                .unwrap_or_default()
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_orders_by_value_then_index() {
        let v = [0.5, 2.0, -1.0, 2.0, f32::NEG_INFINITY, 1.0];
        let got: Vec<usize> = top_k(&v, 4).into_iter().map(|(i, _)| i).collect();
        assert_eq!(got, vec![1, 3, 5, 0]);
        assert_eq!(top_k(&v, 10).len(), v.len());
    }

    #[test]
    fn log_softmax_normalises() {
        let mut row = vec![1.0f32, 2.0, 3.0, f32::NEG_INFINITY];
        log_softmax_in_place(&mut row);
        let total: f32 = row.iter().map(|x| x.exp()).sum();
        assert!((total - 1.0).abs() < 1e-6);
        assert_eq!(row[3], f32::NEG_INFINITY);
        assert!(row[2] > row[1] && row[1] > row[0]);
    }

    #[test]
    fn argmax_takes_first_of_ties() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0, 2.0]), 1);
    }

    fn gen_config() -> GenerationConfig {
        GenerationConfig {
            num_beams: 1,
            max_length: 5,
            min_length: 0,
            length_penalty: 1.0,
            early_stopping: EarlyStopping::Heuristic,
            bad_words_ids: vec![vec![3], vec![0], vec![1, 2]],
            eos_token_ids: vec![0],
            pad_token_id: 3,
            decoder_start_token_id: 3,
            forced_eos_token_id: Some(0),
            renormalize_logits: false,
        }
    }

    #[test]
    fn processors_ban_pad_keep_eos_and_match_multi_token_words() {
        let gen = gen_config();
        let p = Processors { gen: &gen };
        let mut scores = vec![0.0f32; 5];
        p.apply(&[3, 1], &mut scores);
        // pad banned, lone-EOS ban ignored, `2` banned after `1`.
        assert_eq!(scores[3], f32::NEG_INFINITY);
        assert_eq!(scores[0], 0.0);
        assert_eq!(scores[2], f32::NEG_INFINITY);
        assert_eq!(scores[4], 0.0);
        let mut scores = vec![0.0f32; 5];
        p.apply(&[3, 4], &mut scores);
        assert_eq!(scores[2], 0.0);
    }

    #[test]
    fn forced_eos_on_the_last_step() {
        let gen = gen_config();
        let p = Processors { gen: &gen };
        let mut scores = vec![1.0f32; 5];
        p.apply(&[3, 1, 1, 1], &mut scores); // cur_len 4 == max_length - 1
        assert_eq!(
            scores,
            vec![
                0.0,
                f32::NEG_INFINITY,
                f32::NEG_INFINITY,
                f32::NEG_INFINITY,
                f32::NEG_INFINITY
            ]
        );
    }
}
