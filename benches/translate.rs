//! `cargo bench --bench translate`: batch translation speed of a random-weight model of the
//! real opus-mt-base shape (d_model 512, 6+6 layers, 8 heads, ffn 2048, vocab 58101), greedy and
//! beam 4, fixed output length. Needs no download. `tidings bench` reports the same numbers.

use candle_core::Device;
use tidings::bench::{run_translation, synthetic_rows};
use tidings::translate::{random, GenerationConfig, MarianModel};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cfg = random::shape("opus-mt-base")?;
    let tensors = random::random_weights(&cfg, 0x7d1d_1e55, &Device::Cpu)?;
    let model = MarianModel::new(&cfg, tensors, &Device::Cpu)?;
    let gen = GenerationConfig::defaults_for(&cfg);
    let rows = synthetic_rows(32, cfg.vocab_size as u32, 0, &[cfg.pad_token_id], 42);
    for beams in [1, 4] {
        run_translation(&model, &gen, &rows[..4], 4, beams, 2)?; // warm-up
        let mut runs: Vec<_> = (0..3)
            .map(|_| run_translation(&model, &gen, &rows, 32, beams, 32))
            .collect::<Result<_, _>>()?;
        runs.sort_by(|a, b| {
            a.generated_tokens_per_s
                .total_cmp(&b.generated_tokens_per_s)
        });
        let median = &runs[1];
        println!(
            "opus-mt-base random, batch 32, beam {beams}, 32 new tokens: median {:.1} tokens/s ({:.2} sentences/s) over 3 runs",
            median.generated_tokens_per_s, median.sentences_per_s
        );
    }
    Ok(())
}
