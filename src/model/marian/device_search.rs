//! The search over a decode step's logits where the logits are: log-softmax, the processors,
//! the running beam scores and the best candidates per sentence all run as tensor operations
//! on the model's device, and only the chosen ids and scores cross to the host (O(rows × beams)
//! numbers a step, never a vocabulary-sized row).
//!
//! On the CPU device the same operations run on candle's CPU backend, which is how the
//! transformers references prove this path exact without a GPU (tests/parity.rs). Every copy
//! to the host goes through [`to_host`], which counts the bytes per thread, so a test can bound
//! what crosses per step.

use std::cell::Cell;

use candle_core::{DType, Device, Tensor, D};

use super::backend::{check_step, MarianBackend};
use super::config::GenerationConfig;
use super::fused::beam_candidates::{BeamCandidates, EXACT_F32_INDEX};
use super::fused::Kernel;
use super::profile::{self, Phase};
use super::search::{banned_words, forced_eos, BeamQuery, StepSearch};
use super::tensor_state::TensorState;
use super::tensors::TensorMarian;
use super::TranslateError;

type Result<T> = std::result::Result<T, TranslateError>;

/// Rows this long or shorter are sorted whole; longer ones are cut into chunks first. candle's
/// sort keeps a row in one block's shared memory on a GPU (4 bytes an entry, 16 KiB here).
pub const SORT_LIMIT: usize = 4096;

thread_local! {
    static TRANSFERS: Cell<Transfers> = const { Cell::new(Transfers { copies: 0, bytes: 0, largest: 0 }) };
}

/// Copies from a model's tensors to the host made on this thread (see [`transfers`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Transfers {
    /// Copies made.
    pub copies: u64,
    /// Bytes copied in all.
    pub bytes: u64,
    /// The largest single copy, in bytes.
    pub largest: u64,
}

/// What this thread has copied from model tensors to the host so far.
pub fn transfers() -> Transfers {
    TRANSFERS.with(Cell::get)
}

/// Count a copy of `bytes` to the host.
pub(super) fn record_transfer(bytes: usize) {
    TRANSFERS.with(|t| {
        let mut v = t.get();
        v.copies += 1;
        v.bytes += bytes as u64;
        v.largest = v.largest.max(bytes as u64);
        t.set(v);
    });
}

/// A tensor's elements on the host, in order (one blocking copy), counted.
fn to_host<T: candle_core::WithDType>(t: &Tensor) -> Result<Vec<T>> {
    record_transfer(t.elem_count() * t.dtype().size_in_bytes());
    Ok(t.flatten_all()?.to_vec1::<T>()?)
}

/// The `k` largest entries of each row of `x` (rows × len, f32) as (values, indices), both
/// rows × k, largest first.
///
/// Rows longer than `sort_limit` are cut into chunks: every one of the k largest entries lies
/// in one of the k chunks with the largest maxima, so only those chunks are searched further.
/// Equal values may come out in any order (a GPU sort is not stable).
pub fn top_k_rows(x: &Tensor, k: usize, sort_limit: usize) -> Result<(Tensor, Tensor)> {
    let (rows, len) = x.dims2()?;
    let k = k.min(len);
    if len <= sort_limit.max(k) {
        let order = x.arg_sort_last_dim(false)?.narrow(1, 0, k)?.contiguous()?;
        return Ok((x.gather(&order, 1)?, order));
    }
    let chunk = chunk_size(len, sort_limit.max(k));
    let chunks = len.div_ceil(chunk);
    if chunks <= k {
        // Chunking would not shorten the row (a limit below k): sort it whole.
        return top_k_rows(x, k, len);
    }
    let padded = if chunks * chunk > len {
        let pad = Tensor::full(f32::NEG_INFINITY, (rows, chunks * chunk - len), x.device())?;
        Tensor::cat(&[x, &pad], 1)?
    } else {
        x.clone()
    };
    let maxima = padded.reshape((rows, chunks, chunk))?.max(2)?;
    let (_, best_chunks) = top_k_rows(&maxima, k, sort_limit)?;
    // Positions of every entry of the chosen chunks: chunk · size + 0..size.
    let offsets = Tensor::arange(0u32, chunk as u32, x.device())?.reshape((1, 1, chunk))?;
    let positions = best_chunks
        .affine(chunk as f64, 0.0)?
        .unsqueeze(2)?
        .broadcast_add(&offsets)?
        .reshape((rows, k * chunk))?
        .contiguous()?;
    let candidates = padded.gather(&positions, 1)?;
    let (values, local) = top_k_rows(&candidates, k, sort_limit)?;
    Ok((values, positions.gather(&local, 1)?))
}

/// A chunk size that cuts `len` into at most `limit` chunks: one that divides `len` when there
/// is one up to twice the smallest size, so that the row needs no padding (a copy).
fn chunk_size(len: usize, limit: usize) -> usize {
    let smallest = len.div_ceil(limit).max(2);
    (smallest..=2 * smallest)
        .find(|c| len.is_multiple_of(*c))
        .unwrap_or(smallest)
}

/// An additive row (1 × vocab): -inf at `banned`, 0 elsewhere; `None` when nothing is banned.
fn ban_row(banned: &[u32], vocab: usize, device: &Device) -> Result<Option<Tensor>> {
    if banned.is_empty() {
        return Ok(None);
    }
    let mut row = vec![0f32; vocab];
    for &t in banned {
        if let Some(s) = row.get_mut(t as usize) {
            *s = f32::NEG_INFINITY;
        }
    }
    Ok(Some(Tensor::from_vec(row, (1, vocab), device)?))
}

/// The search on the model's device for one generation call: the processors' fixed parts are
/// made once, as additive rows.
pub struct DeviceSearch<'a> {
    model: &'a TensorMarian,
    gen: &'a GenerationConfig,
    vocab: usize,
    /// Single-token bad words.
    bans: Option<Tensor>,
    /// Single-token bad words and EOS (before `min_length`).
    bans_and_eos: Option<Tensor>,
    /// Longer bad words: (the prefix that bans, the banned token), checked per row.
    sequence_bans: Vec<(&'a [u32], u32)>,
    /// The forced-EOS row: 0 at EOS, -inf elsewhere.
    forced: Option<Tensor>,
    /// Beam steps take their candidates from the fused operation where they can.
    fused: bool,
}

impl<'a> DeviceSearch<'a> {
    pub fn new(model: &'a TensorMarian, gen: &'a GenerationConfig) -> Result<Self> {
        let vocab = model.config().target_vocab_size();
        let device = model.device();
        let (single, sequence_bans): (Vec<_>, Vec<_>) =
            banned_words(gen).partition(|(head, _)| head.is_empty());
        let single: Vec<u32> = single.into_iter().map(|(_, t)| t).collect();
        // Needed only while the decoder input is shorter than `min_length` (it starts at 1).
        let with_eos: Vec<u32> = if gen.min_length > 1 {
            single.iter().chain(&gen.eos_token_ids).copied().collect()
        } else {
            Vec::new()
        };
        let forced = match gen.forced_eos_token_id {
            Some(eos) => {
                let mut row = vec![f32::NEG_INFINITY; vocab];
                if let Some(s) = row.get_mut(eos as usize) {
                    *s = 0.0;
                }
                Some(Tensor::from_vec(row, (1, vocab), device)?)
            }
            None => None,
        };
        Ok(Self {
            model,
            gen,
            vocab,
            bans: ban_row(&single, vocab, device)?,
            bans_and_eos: ban_row(&with_eos, vocab, device)?,
            sequence_bans,
            forced,
            fused: model.runs_fused(Kernel::BeamCandidates),
        })
    }

    /// What the processors do at the step whose rows have the decoder inputs `prefixes`.
    fn rule(&self, prefixes: &[&[u32]]) -> StepRule<'_> {
        let cur_len = prefixes.first().map_or(1, |p| p.len());
        if forced_eos(self.gen, cur_len).is_some() {
            if let Some(forced) = &self.forced {
                return StepRule::Forced(forced);
            }
        }
        let row = if cur_len < self.gen.min_length {
            self.bans_and_eos.as_ref()
        } else {
            self.bans.as_ref()
        };
        // Longer bad words depend on each row's prefix: the few banned entries are found on
        // the host.
        let sequence = prefixes
            .iter()
            .enumerate()
            .flat_map(|(r, prefix)| {
                self.sequence_bans
                    .iter()
                    .filter(|(head, t)| prefix.ends_with(head) && (*t as usize) < self.vocab)
                    .map(move |&(_, t)| (r * self.vocab) as u32 + t)
            })
            .collect();
        StepRule::Bans { row, sequence }
    }

    /// The ban row of a beam step the fused operation can take under `rule`, or `None` when
    /// the step needs candle's operations: the first step (one row per sentence), forced EOS,
    /// a longer bad word that bans here, or a shape the kernels do not serve.
    fn fused_ban<'r>(
        &self,
        rule: &StepRule<'r>,
        query: &BeamQuery<'_>,
    ) -> Option<Option<&'r Tensor>> {
        if !self.fused
            || query.rows_per_item != query.beams
            || !BeamCandidates::fits(query.beams, query.want, self.vocab)
        {
            return None;
        }
        match rule {
            StepRule::Bans { row, sequence } if sequence.is_empty() => Some(*row),
            _ => None,
        }
    }

    /// The decoder's next-token logits (rows × vocab, f32, on the device).
    fn logits(&self, tokens: &[u32], state: &mut TensorState) -> Result<Tensor> {
        check_step(self.model.config(), tokens, state)?;
        self.model.step_logits(tokens, state)
    }

    /// `rule` applied to `scores` (rows × vocab).
    fn process(&self, scores: Tensor, rule: StepRule<'_>) -> Result<Tensor> {
        let (row, sequence) = match rule {
            StepRule::Forced(forced) => {
                return Ok(forced.broadcast_as(scores.shape())?.contiguous()?)
            }
            StepRule::Bans { row, sequence } => (row, sequence),
        };
        let mut scores = match row {
            Some(row) => scores.broadcast_add(row)?,
            None => scores,
        };
        if !sequence.is_empty() {
            let device = scores.device();
            let n = sequence.len();
            let idx = Tensor::from_vec(sequence, n, device)?;
            let minus = Tensor::full(f32::NEG_INFINITY, n, device)?;
            let shape = scores.shape().clone();
            scores = scores
                .flatten_all()?
                .index_add(&idx, &minus, 0)?
                .reshape(shape)?;
        }
        Ok(scores)
    }
}

/// What the logits processors do at one step.
enum StepRule<'s> {
    /// Every row becomes the forced-EOS row.
    Forced(&'s Tensor),
    /// The ban row, when there is one, is added to every row, and longer bad words ban the
    /// `sequence` entries (flat: row · vocab + token).
    Bans {
        row: Option<&'s Tensor>,
        sequence: Vec<u32>,
    },
}

impl StepSearch<TensorState> for DeviceSearch<'_> {
    fn greedy_step(
        &mut self,
        tokens: &[u32],
        state: &mut TensorState,
        prefixes: &[&[u32]],
    ) -> Result<Vec<u32>> {
        let logits = self.logits(tokens, state)?;
        let _t = profile::time_on(Phase::Search, self.model.device());
        // No normalisation: it shifts a row by a constant, which cannot change its argmax.
        let next = self
            .process(logits, self.rule(prefixes))?
            .argmax(D::Minus1)?;
        to_host::<u32>(&next)
    }

    fn beam_step(
        &mut self,
        tokens: &[u32],
        state: &mut TensorState,
        prefixes: &[&[u32]],
        query: BeamQuery<'_>,
    ) -> Result<Vec<Vec<(usize, f32)>>> {
        let logits = self.logits(tokens, state)?;
        let _t = profile::time_on(Phase::Search, self.model.device());
        let rule = self.rule(prefixes);
        if let Some(ban) = self.fused_ban(&rule, &query) {
            let running = Tensor::from_slice(query.scores, tokens.len(), logits.device())?;
            let op = BeamCandidates {
                beams: query.beams,
                want: query.want,
                renormalize: self.gen.renormalize_logits,
            };
            let both = op.apply(&logits, &running, ban)?;
            return split_candidates(to_host::<f32>(&both)?, query.want);
        }
        let mut scores = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
        scores = self.process(scores, rule)?;
        if self.gen.renormalize_logits {
            scores = candle_nn::ops::log_softmax(&scores, D::Minus1)?;
        }
        best_by_ops(&scores, &query)
    }
}

/// Each sentence's `query.want` best (flat index `beam · vocab + token`, value) by candle's
/// operations, from its rows' processed log-probabilities `scores` (rows × vocab).
pub(super) fn best_by_ops(
    scores: &Tensor,
    query: &BeamQuery<'_>,
) -> Result<Vec<Vec<(usize, f32)>>> {
    let (rows, vocab) = scores.dims2()?;
    let items = rows / query.rows_per_item.max(1);
    // Accumulated log-prob of every (beam, token); on the first step every beam reads its
    // sentence's one row.
    let running = Tensor::from_slice(query.scores, (items, query.beams, 1), scores.device())?;
    let total = scores
        .reshape((items, query.rows_per_item, vocab))?
        .broadcast_add(&running)?
        .reshape((items, query.beams * vocab))?;
    let (values, indices) = top_k_rows(&total, query.want, SORT_LIMIT)?;
    let want = values.dim(1)?.max(1);
    if query.beams * vocab < EXACT_F32_INDEX {
        // One copy a step: each sentence's values, then its indices (exact as f32 here), as the
        // fused operation returns them.
        let both = Tensor::cat(&[&values, &indices.to_dtype(DType::F32)?], 1)?;
        return split_candidates(to_host::<f32>(&both)?, want);
    }
    let indices = to_host::<u32>(&indices)?;
    let values = to_host::<f32>(&values)?;
    Ok(indices
        .chunks(want)
        .zip(values.chunks(want))
        .map(|(i, v)| {
            i.iter()
                .map(|&i| i as usize)
                .zip(v.iter().copied())
                .collect()
        })
        .collect())
}

/// Sentences' candidates from rows of `want` values then `want` flat indices (as f32).
fn split_candidates(both: Vec<f32>, want: usize) -> Result<Vec<Vec<(usize, f32)>>> {
    Ok(both
        .chunks(2 * want)
        .map(|row| {
            let (v, i) = row.split_at(want);
            i.iter()
                .map(|&i| i as usize)
                .zip(v.iter().copied())
                .collect()
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::marian::search::top_k;

    /// Distinct values in a scrambled order, so that the top k are unambiguous.
    fn scrambled(rows: usize, len: usize) -> Vec<f32> {
        (0..rows * len)
            .map(|i| ((i * 7919 + 13) % (rows * len * 3 + 1)) as f32 * 0.25 - 100.0)
            .collect()
    }

    #[test]
    fn top_k_rows_equals_the_host_top_k_sorted_or_chunked() {
        let (rows, len, k) = (3, 1000, 8);
        let data = scrambled(rows, len);
        let x = Tensor::from_vec(data.clone(), (rows, len), &Device::Cpu).unwrap();
        // Whole rows sorted; rows cut into chunks once; twice (a limit smaller than the chunks).
        for limit in [4096, 64, 16] {
            let (values, indices) = top_k_rows(&x, k, limit).unwrap();
            let values = values.to_vec2::<f32>().unwrap();
            let indices = indices.to_vec2::<u32>().unwrap();
            for r in 0..rows {
                let want = top_k(&data[r * len..(r + 1) * len], k);
                let got: Vec<(usize, f32)> = indices[r]
                    .iter()
                    .map(|&i| i as usize)
                    .zip(values[r].iter().copied())
                    .collect();
                assert_eq!(got, want, "row {r}, sort limit {limit}");
            }
        }
    }

    #[test]
    fn top_k_rows_handles_padding_and_short_rows() {
        // 37 entries, at most 8 chunks: 8 chunks of 5 (no size up to 10 divides a prime), the
        // last one padded with -inf to 40.
        assert_eq!(chunk_size(37, 8), 5);
        let data = scrambled(2, 37);
        let x = Tensor::from_vec(data.clone(), (2, 37), &Device::Cpu).unwrap();
        for k in [3, 5] {
            let (values, indices) = top_k_rows(&x, k, 8).unwrap();
            let (values, indices) = (
                values.to_vec2::<f32>().unwrap(),
                indices.to_vec2::<u32>().unwrap(),
            );
            for r in 0..2 {
                let want = top_k(&data[r * 37..(r + 1) * 37], k);
                let got: Vec<(usize, f32)> = indices[r]
                    .iter()
                    .map(|&i| i as usize)
                    .zip(values[r].iter().copied())
                    .collect();
                assert_eq!(got, want, "row {r}, k {k}");
                assert!(values[r].iter().all(|v| v.is_finite()), "padding came back");
            }
        }
        // More wanted than there are entries: all of them.
        let (values, _) = top_k_rows(&x, 50, 4096).unwrap();
        assert_eq!(values.dims2().unwrap(), (2, 37));
    }

    #[test]
    fn chunks_divide_the_row_when_they_can() {
        // 4 beams × the opus-mt vocabulary of 58101 = 2²·3·107·181.
        assert_eq!(chunk_size(232_404, 4096), 107);
        // A prime length cannot be divided: the smallest size, padded.
        assert_eq!(chunk_size(1009, 16), 64);
        for len in [37usize, 1000, 1009, 116_202, 232_404, 929_616] {
            for limit in [4usize, 16, 64, 4096] {
                let c = chunk_size(len, limit);
                assert!(
                    len.div_ceil(c) <= limit,
                    "{len} in chunks of {c} > {limit} chunks"
                );
                let smallest = len.div_ceil(limit).max(2);
                let divisor = (smallest..=2 * smallest).any(|d| len.is_multiple_of(d));
                assert_eq!(len.is_multiple_of(c), divisor, "{len}, limit {limit}: {c}");
            }
        }
    }

    #[test]
    fn transfers_are_counted_per_thread() {
        let before = transfers();
        let t = Tensor::zeros((2, 3), DType::F32, &Device::Cpu).unwrap();
        to_host::<f32>(&t).unwrap();
        let after = transfers();
        assert_eq!(after.copies - before.copies, 1);
        assert_eq!(after.bytes - before.bytes, 24);
        let other = std::thread::spawn(transfers).join().unwrap();
        assert_eq!(other, Transfers::default());
    }
}
