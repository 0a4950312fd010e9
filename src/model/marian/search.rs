//! The search over one decode step's logits, behind one trait ([`StepSearch`]) with two
//! implementations: [`HostSearch`] here (the logits come to the host, as the CPU kernels make
//! them) and [`super::device_search::DeviceSearch`] (the logits stay where the tensors are and
//! only the chosen ids and scores cross to the host).
//!
//! Both apply the logits processors OPUS-MT generation configs use, with transformers'
//! semantics: min-length, bad words (a lone EOS is never banned), forced EOS on the last step,
//! and the optional renormalisation.

use std::cmp::Ordering;

use rayon::prelude::*;

use super::backend::MarianBackend;
use super::config::GenerationConfig;
use super::profile::{self, Phase};
use super::TranslateError;
use crate::model::kernels::simd;

type Result<T> = std::result::Result<T, TranslateError>;

/// One beam search step's question: rows come in blocks of `rows_per_item` per sentence (1 on
/// the first step, when every beam of a sentence has the same input; the beam width after),
/// `scores` holds each sentence's running beam scores (`beams` per sentence), and the best
/// `want` continuations of each sentence are asked for.
#[derive(Debug, Clone, Copy)]
pub struct BeamQuery<'a> {
    pub rows_per_item: usize,
    pub beams: usize,
    pub scores: &'a [f32],
    pub want: usize,
}

/// Runs a decode step and searches its logits. `prefixes` holds each row's decoder input so
/// far, decoder start token included (the processors read them; all have the same length).
pub trait StepSearch<S> {
    /// Greedy: each row's next token.
    fn greedy_step(
        &mut self,
        tokens: &[u32],
        state: &mut S,
        prefixes: &[&[u32]],
    ) -> Result<Vec<u32>>;

    /// Beam search: per sentence, its best `want` continuations as (flat index
    /// `beam · vocab + token`, accumulated log-prob), best first.
    fn beam_step(
        &mut self,
        tokens: &[u32],
        state: &mut S,
        prefixes: &[&[u32]],
        query: BeamQuery<'_>,
    ) -> Result<Vec<Vec<(usize, f32)>>>;
}

/// The logits processors, applied to one row of scores on the host.
pub(super) struct Processors<'a> {
    pub gen: &'a GenerationConfig,
}

impl Processors<'_> {
    /// `prefix` is the decoder input so far, decoder start token included (its length is
    /// transformers' `cur_len`).
    pub fn apply(&self, prefix: &[u32], scores: &mut [f32]) {
        let cur_len = prefix.len();
        // MinLengthLogitsProcessor
        if cur_len < self.gen.min_length {
            for &eos in &self.gen.eos_token_ids {
                if let Some(s) = scores.get_mut(eos as usize) {
                    *s = f32::NEG_INFINITY;
                }
            }
        }
        // NoBadWordsLogitsProcessor
        for (head, last) in banned_words(self.gen) {
            if prefix.ends_with(head) {
                if let Some(s) = scores.get_mut(last as usize) {
                    *s = f32::NEG_INFINITY;
                }
            }
        }
        // ForcedEOSTokenLogitsProcessor: the last allowed step can only be EOS.
        if let Some(eos) = forced_eos(self.gen, cur_len) {
            scores.fill(f32::NEG_INFINITY);
            if let Some(s) = scores.get_mut(eos as usize) {
                *s = 0.0;
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

/// The bad words as (the prefix that bans, the banned token): a banned sequence's last token is
/// forbidden when the decoder input ends with the rest of it. A lone EOS is never banned.
pub(super) fn banned_words(gen: &GenerationConfig) -> impl Iterator<Item = (&[u32], u32)> {
    gen.bad_words_ids.iter().filter_map(|word| {
        let (&last, head) = word.split_last()?;
        let lone_eos = word.len() == 1 && gen.eos_token_ids.contains(&last);
        (!lone_eos).then_some((head, last))
    })
}

/// The EOS token every row must produce at decoder input length `cur_len`, if any.
pub(super) fn forced_eos(gen: &GenerationConfig, cur_len: usize) -> Option<u32> {
    gen.forced_eos_token_id
        .filter(|_| cur_len + 1 == gen.max_length)
}

/// log_softmax of one row, computed as torch does: x - max - log(sum(exp(x - max))).
pub(super) fn log_softmax_in_place(row: &mut [f32]) {
    simd::log_softmax_row(row);
}

/// Index of the first maximum (torch.argmax's choice on ties); NaNs never win.
pub(super) fn argmax(row: &[f32]) -> u32 {
    // Same answer as a left-to-right scan with `>`: the first occurrence of the largest
    // non-NaN value, or 0 when the first entry is NaN.
    if row.first().is_none_or(|x| x.is_nan()) {
        return 0;
    }
    let best = simd::max_row(row);
    row.iter().position(|&x| x == best).unwrap_or(0) as u32
}

/// The `k` largest values with their indices, largest first; ties keep the lower index first.
pub(super) fn top_k(values: &[f32], k: usize) -> Vec<(usize, f32)> {
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

/// Fails unless the decoder returned one row of `vocab` logits per token.
fn check_logits(logits: &[f32], rows: usize, vocab: usize) -> Result<()> {
    if logits.len() != rows * vocab {
        return Err(TranslateError::Input(
            "decoder returned a wrong logits size".into(),
        ));
    }
    Ok(())
}

/// The search on the host, over logits the backend writes into one reused buffer.
pub struct HostSearch<'a, B> {
    model: &'a B,
    gen: &'a GenerationConfig,
    logits: Vec<f32>,
}

impl<'a, B: MarianBackend> HostSearch<'a, B> {
    pub fn new(model: &'a B, gen: &'a GenerationConfig) -> Self {
        Self {
            model,
            gen,
            logits: Vec::new(),
        }
    }

    /// One decoder step into `self.logits`, checked; the vocabulary size.
    fn decode_logits(&mut self, tokens: &[u32], state: &mut B::State) -> Result<usize> {
        let vocab = self.model.config().target_vocab_size();
        self.model
            .decode_step_into(tokens, state, &mut self.logits)?;
        check_logits(&self.logits, tokens.len(), vocab)?;
        Ok(vocab)
    }
}

impl<B: MarianBackend> StepSearch<B::State> for HostSearch<'_, B> {
    fn greedy_step(
        &mut self,
        tokens: &[u32],
        state: &mut B::State,
        prefixes: &[&[u32]],
    ) -> Result<Vec<u32>> {
        let vocab = self.decode_logits(tokens, state)?;
        let _t = profile::time(Phase::Search);
        let processors = Processors { gen: self.gen };
        Ok(map_rows(
            &mut self.logits,
            vocab,
            prefixes,
            |scores, prefix| {
                processors.apply(prefix, scores);
                argmax(scores)
            },
        ))
    }

    fn beam_step(
        &mut self,
        tokens: &[u32],
        state: &mut B::State,
        prefixes: &[&[u32]],
        query: BeamQuery<'_>,
    ) -> Result<Vec<Vec<(usize, f32)>>> {
        let vocab = self.decode_logits(tokens, state)?;
        let _t = profile::time(Phase::Search);
        let processors = Processors { gen: self.gen };
        let per_item = query.rows_per_item;
        let items: Vec<(&[&[u32]], &[f32])> = prefixes
            .chunks(per_item)
            .zip(query.scores.chunks(query.beams))
            .collect();
        // Per sentence, in parallel: normalise its rows, then the best continuations of the
        // accumulated log-probs of every (beam, token), flattened beam-major.
        Ok(map_rows(
            &mut self.logits,
            per_item * vocab,
            &items,
            |block, &(prefixes, scores)| {
                for (row, prefix) in block.chunks_mut(vocab).zip(prefixes) {
                    log_softmax_in_place(row);
                    processors.apply_normalised(prefix, row);
                }
                let mut top = TopK::new(query.want);
                for (b, &score) in scores.iter().enumerate() {
                    // On the first step every beam reads the one shared row.
                    let row = if per_item == 1 { 0 } else { b };
                    top.scan(&block[row * vocab..(row + 1) * vocab], score, b * vocab);
                }
                top.into_sorted()
            },
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::marian::config::EarlyStopping;

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

    pub(crate) fn gen_config() -> GenerationConfig {
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
