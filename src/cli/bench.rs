//! `tidings bench`: translation speed on this machine.

use std::time::Instant;

use anyhow::Context;
use serde::Serialize;
use tidings::bench::{run_translation, synthetic_rows, TranslationRun};
use tidings::device::{self, DeviceChoice};
use tidings::hub::{ModelRepo, ModelSource};
use tidings::translate::{random, GenerationConfig, MarianModel, Translator};

use super::SourceArgs;

const AFTER_HELP: &str = "\
Every sentence generates exactly --max-new-tokens tokens (EOS is held back until the last step),
so runs compare engines, not what random weights happen to say.

Examples:
  tidings bench --random-weights opus-mt-base
  tidings bench --random-weights opus-mt-base --batch-sizes 1,32 --beams 1,4 --json
  tidings bench --model Helsinki-NLP/opus-mt-de-en --threads 4";

#[derive(Debug, clap::Args)]
#[command(after_help = AFTER_HELP)]
pub struct BenchArgs {
    /// A Hub model id or local folder to measure.
    #[arg(long, value_name = "HUB_ID|DIR", conflicts_with = "random_weights")]
    model: Option<String>,
    /// Measure a random-weight model of a real shape instead: opus-mt-base or opus-mt-tc-big.
    #[arg(long, value_name = "SHAPE", required_unless_present = "model")]
    random_weights: Option<String>,
    #[arg(long, value_name = "REV")]
    revision: Option<String>,
    /// Batch sizes to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,32")]
    batch_sizes: Vec<usize>,
    /// Beam widths to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,4")]
    beams: Vec<usize>,
    /// Tokens generated per sentence.
    #[arg(long, default_value_t = 32)]
    max_new_tokens: usize,
    /// Sentences per setting.
    #[arg(long, default_value_t = 64)]
    sentences: usize,
    /// CPU threads (default: all cores; RAYON_NUM_THREADS also works).
    #[arg(long)]
    threads: Option<usize>,
    #[arg(long, default_value = "auto")]
    device: DeviceChoice,
    /// One JSON document instead of a table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    source: SourceArgs,
}

#[derive(Serialize)]
struct Report {
    model: String,
    device: &'static str,
    threads: usize,
    dtype: &'static str,
    version: &'static str,
    load_seconds: f64,
    runs: Vec<TranslationRun>,
}

pub fn run(args: BenchArgs, quiet: bool) -> anyhow::Result<()> {
    if let Some(n) = args.threads {
        // Must happen before candle first touches rayon's global pool, which reads it once.
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
    }
    let device = device::open(args.device)?;
    let started = Instant::now();
    let (model, generation, name) = match (&args.random_weights, &args.model) {
        (Some(shape), _) => {
            let cfg = random::shape(shape)?;
            let tensors = random::random_weights(&cfg, 0x7d1d_1e55, &device)?;
            let generation = GenerationConfig::defaults_for(&cfg);
            (
                MarianModel::new(&cfg, tensors, &device)?,
                generation,
                format!("random weights, {shape} shape"),
            )
        }
        (None, Some(spec)) => {
            let repo = ModelRepo::open(
                ModelSource::parse(spec, args.revision.as_deref())?,
                &args.source.hub_options(quiet),
            )?;
            let t = Translator::load(&repo, &device)
                .with_context(|| format!("cannot load {}", repo.describe()))?;
            let generation = t.generation_config(&Default::default());
            let (model, _, _) = t.into_parts();
            (model, generation, repo.describe())
        }
        (None, None) => anyhow::bail!("give --model or --random-weights"),
    };
    let load_seconds = started.elapsed().as_secs_f64();
    let cfg = model.config().clone();
    let rows = synthetic_rows(
        args.sentences,
        cfg.vocab_size as u32,
        cfg.eos_token_ids[0],
        &[cfg.pad_token_id],
        42,
    );
    let mut runs = Vec::new();
    for &batch_size in &args.batch_sizes {
        for &beams in &args.beams {
            // One untimed batch first: allocator and thread-pool warm-up.
            run_translation(
                &model,
                &generation,
                &rows[..batch_size.min(rows.len())],
                batch_size,
                beams,
                2,
            )?;
            let run = run_translation(
                &model,
                &generation,
                &rows,
                batch_size,
                beams,
                args.max_new_tokens,
            )?;
            if !args.json && !quiet {
                eprintln!(
                    "batch {:>3} beam {:>2}: {:>8.1} tokens/s {:>7.2} sentences/s  p50 {:>8.1} ms  p95 {:>8.1} ms",
                    run.batch_size, run.num_beams, run.generated_tokens_per_s, run.sentences_per_s, run.batch_p50_ms, run.batch_p95_ms
                );
            }
            runs.push(run);
        }
    }
    let report = Report {
        model: name,
        device: device::describe(&device),
        threads: rayon_current_threads(),
        dtype: "f32",
        version: env!("CARGO_PKG_VERSION"),
        load_seconds,
        runs,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "model: {}  device: {}  threads: {}  dtype: f32  load: {:.2}s",
            report.model, report.device, report.threads, report.load_seconds
        );
        println!(
            "{:>5} {:>5} {:>10} {:>12} {:>11} {:>10} {:>10}",
            "batch", "beam", "new tok", "tokens/s", "sent/s", "p50 ms", "p95 ms"
        );
        for r in &report.runs {
            println!(
                "{:>5} {:>5} {:>10} {:>12.1} {:>11.2} {:>10.1} {:>10.1}",
                r.batch_size,
                r.num_beams,
                r.max_new_tokens,
                r.generated_tokens_per_s,
                r.sentences_per_s,
                r.batch_p50_ms,
                r.batch_p95_ms
            );
        }
    }
    Ok(())
}

fn rayon_current_threads() -> usize {
    candle_core::utils::get_num_threads()
}
