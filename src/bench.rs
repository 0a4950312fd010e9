//! Inference speed measurement, shared by `tidings bench` and `benches/`.
//!
//! Random-weight models emit EOS at random, so a run's amount of work would depend on the seed.
//! To measure the engine rather than the weights, every sentence generates exactly
//! `max_new_tokens` tokens (EOS is banned until the last step, which forces it), the same
//! "fixed output length" setting peers are compared under.

use std::time::Instant;

use serde::Serialize;

use crate::translate::{generate, GenerationConfig, MarianModel, TranslateError};

/// Word counts of real news sentences (from the sample articles), used to give synthetic inputs
/// realistic lengths; OPUS-MT averages about 1.4 SentencePiece tokens per word on news text.
const SENTENCE_WORDS: &[usize] = &[
    21, 9, 17, 30, 12, 25, 8, 19, 14, 27, 11, 22, 16, 35, 10, 18, 24, 13, 29, 7, 20, 15, 26, 12,
    23, 9, 31, 17, 14, 21, 28, 11,
];

/// `n` source rows of token ids with realistic lengths, ending in `eos`, deterministic in `seed`.
pub fn synthetic_rows(n: usize, vocab: u32, eos: u32, avoid: &[u32], seed: u64) -> Vec<Vec<u32>> {
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
    let mut next = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) as u32
    };
    (0..n)
        .map(|i| {
            let words = SENTENCE_WORDS[i % SENTENCE_WORDS.len()];
            let len = (words * 14).div_ceil(10);
            let mut row: Vec<u32> = Vec::with_capacity(len + 1);
            while row.len() < len {
                let id = next() % vocab;
                if id != eos && !avoid.contains(&id) {
                    row.push(id);
                }
            }
            row.push(eos);
            row
        })
        .collect()
}

#[derive(Debug, Clone, Serialize)]
pub struct TranslationRun {
    pub batch_size: usize,
    pub num_beams: usize,
    pub max_new_tokens: usize,
    pub sentences: usize,
    pub source_tokens: usize,
    pub generated_tokens: usize,
    pub seconds: f64,
    pub generated_tokens_per_s: f64,
    pub sentences_per_s: f64,
    pub batch_p50_ms: f64,
    pub batch_p95_ms: f64,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

/// Translate `rows` in batches of `batch_size`, each sentence generating exactly
/// `max_new_tokens` tokens, and time it.
pub fn run_translation(
    model: &MarianModel,
    base: &GenerationConfig,
    rows: &[Vec<u32>],
    batch_size: usize,
    num_beams: usize,
    max_new_tokens: usize,
) -> Result<TranslationRun, TranslateError> {
    let mut gen = base.clone().with_max_new_tokens(max_new_tokens);
    gen.num_beams = num_beams.max(1);
    gen.min_length = gen.max_length;
    gen.forced_eos_token_id = gen.eos_token_ids.first().copied();
    let mut latencies = Vec::new();
    let mut generated = 0usize;
    let started = Instant::now();
    for batch in rows.chunks(batch_size.max(1)) {
        let t = Instant::now();
        let encoded = model.encode(batch)?;
        let out = if gen.num_beams > 1 {
            generate::beam_search(model, &encoded, &gen)?
        } else {
            generate::greedy(model, &encoded, &gen)?
        };
        generated += out.iter().map(Vec::len).sum::<usize>();
        latencies.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let seconds = started.elapsed().as_secs_f64();
    latencies.sort_by(f64::total_cmp);
    Ok(TranslationRun {
        batch_size,
        num_beams: gen.num_beams,
        max_new_tokens,
        sentences: rows.len(),
        source_tokens: rows.iter().map(Vec::len).sum(),
        generated_tokens: generated,
        seconds,
        generated_tokens_per_s: generated as f64 / seconds,
        sentences_per_s: rows.len() as f64 / seconds,
        batch_p50_ms: percentile(&latencies, 0.5),
        batch_p95_ms: percentile(&latencies, 0.95),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthetic_rows_are_deterministic_and_avoid_special_ids() {
        let a = synthetic_rows(40, 100, 0, &[99], 1);
        assert_eq!(a, synthetic_rows(40, 100, 0, &[99], 1));
        assert_ne!(a, synthetic_rows(40, 100, 0, &[99], 2));
        for row in &a {
            assert_eq!(row.last(), Some(&0));
            assert!(row[..row.len() - 1]
                .iter()
                .all(|&id| id != 0 && id != 99 && id < 100));
        }
    }

    #[test]
    fn percentiles_pick_ranks() {
        let v = [1.0, 2.0, 3.0, 4.0, 5.0];
        assert_eq!(percentile(&v, 0.5), 3.0);
        assert_eq!(percentile(&v, 0.95), 5.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
    }
}
