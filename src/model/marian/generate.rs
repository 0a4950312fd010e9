//! Greedy and beam search with the semantics of transformers' `generate` (v5): the same logits
//! processors, the same beam bookkeeping (2·num_beams candidates per step, finished hypotheses
//! scored by `sum_logprobs / generated_len^length_penalty`, the same early-stopping rules), so
//! that the ids we produce equal the reference's exactly.
//!
//! Unlike the reference, rows whose result can no longer change leave the batch at once, so the
//! decoder never spends work on them.
//!
//! Written once, generic over [`MarianBackend`], so every backend generates through the same
//! code (tests/parity.rs runs the transformers references through both). Each step's logits are
//! searched by the backend's [`StepSearch`] (on the host for the CPU kernels, on the device for
//! candle tensors); the beam bookkeeping here only sees the chosen candidates.

use super::backend::{DecoderState, EncodedBatch, MarianBackend};
use super::config::{EarlyStopping, GenerationConfig};
use super::profile::{self, Phase};
use super::search::{top_k, BeamQuery, StepSearch};
use super::TranslateError;

type Result<T> = std::result::Result<T, TranslateError>;

/// Score transformers gives to beams that must not win (not -inf, so arithmetic stays finite).
const NEG_BIG: f32 = -1.0e9;

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

/// Greedy decoding of one encoded batch. Returns each row's generated ids: no decoder start
/// token, EOS kept when generated, no padding.
pub fn greedy<B: MarianBackend>(
    model: &B,
    encoded: &B::Encoded,
    gen: &GenerationConfig,
) -> Result<Vec<Vec<u32>>> {
    let n = encoded.rows();
    let mut search = model.searcher(gen)?;
    let mut state = model.start_decoding(encoded, None)?;
    // Decoder inputs so far per row, decoder start token included.
    let mut prefixes: Vec<Vec<u32>> = vec![vec![gen.decoder_start_token_id]; n];
    let mut active: Vec<usize> = (0..n).collect();
    while !active.is_empty() {
        let tokens: Vec<u32> = active
            .iter()
            .map(|&r| *prefixes[r].last().unwrap_or(&gen.decoder_start_token_id))
            .collect();
        let rows: Vec<&[u32]> = active.iter().map(|&r| prefixes[r].as_slice()).collect();
        let next = search.greedy_step(&tokens, &mut state, &rows)?;
        let t_search = profile::time(Phase::Search);
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
    /// Running beams: decoder inputs (the decoder start token first) and accumulated log-prob.
    running: Vec<(Vec<u32>, f32)>,
    /// Finished slots: ids (the decoder start token first), length-normalised score, and whether the slot holds a real
    /// hypothesis (transformers' `is_sent_finished`); initial slots are placeholders.
    finished: Vec<(Vec<u32>, f32, bool)>,
    /// transformers' `is_early_stop_heuristic_unsatisfied`.
    improvable: bool,
}

/// One continuation of a running beam: (beam, token, accumulated log-prob, whether it stops
/// here: EOS or the length limit).
type Candidate = (usize, u32, f32, bool);

impl BeamItem {
    fn new(num_beams: usize, start: u32) -> Self {
        let running = (0..num_beams)
            .map(|b| (vec![start], if b == 0 { 0.0 } else { NEG_BIG }))
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
    let mut search = model.searcher(gen)?;
    // The first step feeds every beam of a sentence the same token, so it runs one row per
    // sentence; the rows fan out to `k` per sentence when the first beams are chosen.
    let mut state = model.start_decoding(encoded, None)?;
    let mut rows_per_item = 1usize;
    let start = gen.decoder_start_token_id;
    let mut items: Vec<BeamItem> = (0..n).map(|_| BeamItem::new(k, start)).collect();
    // Items still decoding, in the order of their row blocks in `state`.
    let mut active: Vec<usize> = (0..n).collect();
    // transformers' cur_len: decoder input length, the start token included.
    let mut cur_len = 1usize;
    while !active.is_empty() {
        let rows: Vec<&[u32]> = active
            .iter()
            .flat_map(|&i| items[i].running[..rows_per_item].iter())
            .map(|(ids, _)| ids.as_slice())
            .collect();
        let tokens: Vec<u32> = rows
            .iter()
            .map(|ids| *ids.last().unwrap_or(&start))
            .collect();
        let scores: Vec<f32> = active
            .iter()
            .flat_map(|&i| items[i].running.iter().map(|r| r.1))
            .collect();
        let query = BeamQuery {
            rows_per_item,
            beams: k,
            scores: &scores,
            want: candidates_per_item,
        };
        let tops = search.beam_step(&tokens, &mut state, &rows, query)?;
        let t_search = profile::time(Phase::Search);
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
                .map(|f| f.0.get(1..).unwrap_or_default().to_vec())
                .unwrap_or_default()
        })
        .collect())
}
