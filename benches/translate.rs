//! `cargo bench --bench translate`: batch translation speed of a random-weight model of the
//! real opus-mt-base shape (d_model 512, 6+6 layers, 8 heads, ffn 2048, vocab 58101), greedy and
//! beam 4, fixed output length, median of 3 runs. Needs no download. `tidings bench` reports the
//! same numbers.
//!
//! Besides wall-clock tokens/s it prints the process CPU time per run (Linux), which is what to
//! compare on a machine shared with other work: run with `RAYON_NUM_THREADS=1` and compare
//! tokens per CPU-second. `TIDINGS_BENCH_BEAMS=4` measures one beam width only;
//! `TIDINGS_BENCH_IDS=rows.json` translates those source id rows (a JSON list of lists, e.g. the
//! rows `scripts/peer_bench.py` gives every engine) instead of 32 synthetic ones;
//! `TIDINGS_PROFILE=1` adds a table of where the time went.
//! `TIDINGS_BENCH_BACKEND=tensors` runs the candle-tensor backend (the code every GPU runs) on
//! the CPU instead of the CPU kernels, and `TIDINGS_BENCH_SENTENCES=N` translates N sentences
//! (default 32): a proxy for the GPU path's per-step overhead where no GPU is at hand.

use candle_core::Device;
use tidings::app::bench::{run_translation, synthetic_rows};
use tidings::model::marian::profile;
use tidings::model::marian::{random, BackendKind, ComputeType, GenerationConfig, MarianModel};

/// User + system CPU seconds of this process so far, from /proc (None elsewhere).
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    // USER_HZ is 100 on every Linux this runs on.
    Some(ticks / 100.0)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let beams: Vec<usize> = std::env::var("TIDINGS_BENCH_BEAMS")
        .unwrap_or_else(|_| "1,4".into())
        .split(',')
        .filter_map(|b| b.trim().parse().ok())
        .collect();
    let cfg = random::shape("opus-mt-base")?;
    let tensors = random::random_weights(&cfg, 0x7d1d_1e55, &Device::Cpu)?;
    let kind = match std::env::var("TIDINGS_BENCH_BACKEND").as_deref() {
        Ok("tensors") => BackendKind::Tensors,
        Ok("kernels") | Err(_) => BackendKind::Auto,
        Ok(other) => {
            return Err(format!("TIDINGS_BENCH_BACKEND={other}: use kernels or tensors").into())
        }
    };
    let model = MarianModel::with_backend(&cfg, tensors, &Device::Cpu, ComputeType::F32, kind)?;
    let sentences: usize = match std::env::var("TIDINGS_BENCH_SENTENCES") {
        Ok(n) => n.parse()?,
        Err(_) => 32,
    };
    let gen = GenerationConfig::defaults_for(&cfg);
    let rows: Vec<Vec<u32>> = match std::env::var_os("TIDINGS_BENCH_IDS") {
        Some(path) => serde_json::from_slice(&std::fs::read(path)?)?,
        None => synthetic_rows(sentences, cfg.vocab_size as u32, 0, &[cfg.pad_token_id], 42),
    };
    let warm_up = &rows[..rows.len().min(4)];
    for beams in beams {
        run_translation(&model, &gen, warm_up, 4, beams, 2)?;
        profile::reset();
        let mut runs = Vec::new();
        for _ in 0..3 {
            let cpu_before = cpu_seconds();
            let run = run_translation(&model, &gen, &rows, 32, beams, 32)?;
            let cpu = cpu_before.zip(cpu_seconds()).map(|(a, b)| b - a);
            runs.push((run, cpu));
        }
        runs.sort_by(|a, b| {
            a.0.generated_tokens_per_s
                .total_cmp(&b.0.generated_tokens_per_s)
        });
        let (median, _) = &runs[1];
        let mut cpu: Vec<f64> = runs.iter().filter_map(|r| r.1).collect();
        cpu.sort_by(f64::total_cmp);
        let cpu_note = match cpu.get(1) {
            Some(&c) => format!(
                "; median CPU {c:.2} s per run = {:.1} tokens per CPU-second",
                median.generated_tokens as f64 / c
            ),
            None => String::new(),
        };
        println!(
            "opus-mt-base random, {} sentences in batches of 32, beam {beams}, 32 new tokens: median {:.1} tokens/s ({:.2} sentences/s) over 3 runs{cpu_note}",
            rows.len(),
            median.generated_tokens_per_s, median.sentences_per_s
        );
        if let Some(table) = profile::report() {
            println!("time per section over the 3 runs (TIDINGS_PROFILE):\n{table}");
        }
    }
    Ok(())
}
