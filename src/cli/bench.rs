//! `tidings bench`: translation and embedding speed on this machine.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context};
use candle_core::Device;
use serde::Serialize;
use tidings::app::bench::{
    cycle_to, hardware, load_model_only, peak_rss_bytes, read_input, run_embedding,
    run_translation, sort_longest_first, synthetic_rows, BenchInput, EmbeddingRun, Hardware,
    TranslationRun, NEWS_SENTENCES,
};
use tidings::model::device::{self, DeviceChoice};
use tidings::model::embed::Embedder;
use tidings::model::hub::{ModelRepo, ModelSource};
use tidings::model::marian::{
    profile, random, FusedKernels, GenerationConfig, MarianModel, Translator,
};

use super::ComputeArgs;
use super::SourceArgs;

const AFTER_HELP: &str = "\
Every sentence generates exactly --max-new-tokens tokens (EOS is held back until the last step),
so runs compare engines, not what random weights happen to say. Sentences are sorted longest
first and cut into batches, as `tidings translate` does; one untimed batch warms up each setting.

Input: built-in news sentences (tokenized with --model's tokenizer; for --random-weights only
their lengths are used, as random token ids), or --input FILE: text, one segment per line (needs
a tokenizer: --model or --embed-model), or a JSON list of token id rows [[ids...], ...] (for
translation only; --model then needs just config.json and the weights, no tokenizer files).

Reported per setting: generated tokens/s, sentences/s, source tokens/s of the encoder (timed on
its own), p50/p95 latency per batch; and model load time, peak resident memory (VmHWM, Linux
only), CPU, cores, SIMD, GPU, threads, dtype and version. scripts/peer_bench.py compares these
with transformers, CTranslate2 and sentence-transformers on the same input.

Examples:
  tidings bench --random-weights opus-mt-base
  tidings bench --random-weights opus-mt-base --batch-sizes 1,32 --beams 1,4 --json
  tidings bench --model Helsinki-NLP/opus-mt-de-en --threads 4
  tidings bench --model ./my-model --input ids.json --batch-sizes 32 --beams 4
  tidings bench --embed-model sentence-transformers/all-MiniLM-L6-v2 --input texts.txt
  tidings bench --store postgres://tidings:secret@db.example/scratch --json";

#[derive(Debug, clap::Args)]
#[command(after_help = AFTER_HELP)]
#[command(group(clap::ArgGroup::new("what").required(true).multiple(true)
    .args(["model", "random_weights", "embed_model", "store"])))]
pub struct BenchArgs {
    /// A translation model to measure: Hub id or local folder.
    #[arg(long, value_name = "HUB_ID|DIR", conflicts_with = "random_weights")]
    model: Option<String>,
    /// Measure a random-weight model of a real shape instead: opus-mt-base or opus-mt-tc-big.
    #[arg(long, value_name = "SHAPE")]
    random_weights: Option<String>,
    /// A sentence-transformers model to measure (texts/s and tokens/s): Hub id or local folder.
    #[arg(long, value_name = "HUB_ID|DIR")]
    embed_model: Option<String>,
    /// Measure what a store costs per article (no model runs): an SQLite file or a postgres://
    /// URL. It writes rows of its own (article ids bench-…): use a scratch store.
    #[arg(long, value_name = "PATH|URL")]
    store: Option<PathBuf>,
    /// Articles for --store (20 sentences each).
    #[arg(long, value_name = "N", default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    store_articles: u32,
    /// Revision of the Hub models.
    #[arg(long, value_name = "REV")]
    revision: Option<String>,
    /// Input: text lines, or a JSON list of token id rows (see below).
    #[arg(long, value_name = "FILE")]
    input: Option<PathBuf>,
    /// Batch sizes to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,32", allow_negative_numbers = true, value_parser = tidings::app::limits::cli::batch_sizes)]
    batch_sizes: Vec<usize>,
    /// Beam widths to measure, comma-separated (translation only).
    #[arg(long, value_delimiter = ',', default_value = "1,4", allow_negative_numbers = true, value_parser = tidings::app::limits::cli::beams)]
    beams: Vec<usize>,
    /// Tokens generated per sentence.
    #[arg(long, default_value_t = 32, allow_negative_numbers = true, value_parser = tidings::app::limits::cli::max_new_tokens)]
    max_new_tokens: usize,
    /// Sentences per setting, input repeated as needed (default: the whole --input file, or 64
    /// built-in sentences).
    #[arg(long)]
    sentences: Option<usize>,
    #[command(flatten)]
    threads: super::ThreadsArgs,
    #[arg(long, default_value = "auto")]
    device: DeviceChoice,
    #[command(flatten)]
    compute: ComputeArgs,
    /// One JSON document on stdout instead of a table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    source: SourceArgs,
}

#[derive(Serialize)]
struct Report {
    version: &'static str,
    device: &'static str,
    threads: usize,
    dtype: &'static str,
    hardware: Hardware,
    /// Peak resident memory of the whole run (load included); null where unknown.
    peak_rss_bytes: Option<u64>,
    /// Peak GPU memory the run added (load included, sampled every 10 ms); null on the CPU.
    peak_gpu_memory_bytes: Option<u64>,
    translation: Option<TranslationReport>,
    embedding: Option<EmbeddingReport>,
    store: Option<tidings::app::bench_store::StoreRun>,
}

#[derive(Serialize)]
struct TranslationReport {
    model: String,
    input: String,
    load_seconds: f64,
    /// The project's fused GPU kernels in use on this device (each passed its check here; the
    /// beam kernels serve beam search only); empty on the CPU, or where candle's operations run.
    fused_kernels: Vec<&'static str>,
    runs: Vec<TranslationRun>,
}

#[derive(Serialize)]
struct EmbeddingReport {
    model: String,
    input: String,
    load_seconds: f64,
    runs: Vec<EmbeddingRun>,
}

const DEFAULT_SENTENCES: usize = 64;

pub fn run(args: BenchArgs, quiet: bool) -> anyhow::Result<()> {
    args.threads.apply();
    if args.batch_sizes.contains(&0) || args.beams.contains(&0) {
        bail!("--batch-sizes and --beams must be at least 1");
    }
    if args.sentences == Some(0) {
        bail!("--sentences must be at least 1");
    }
    let input = match &args.input {
        Some(path) => Some((path.display().to_string(), read_input(path)?)),
        None => None,
    };
    let device = device::open(args.device)?;
    let progress = !args.json && !quiet;
    let gpu_memory = tidings::app::bench::GpuMemoryWatch::start(&device);

    let translation = if args.model.is_some() || args.random_weights.is_some() {
        Some(bench_translation(&args, input.as_ref(), &device, progress)?)
    } else {
        None
    };
    let embedding = match &args.embed_model {
        Some(spec) => Some(bench_embedding(
            &args,
            spec,
            input.as_ref(),
            &device,
            progress,
        )?),
        None => None,
    };

    let store = match &args.store {
        Some(location) => {
            let opened = tidings::store::open(location).with_context(|| {
                format!(
                    "cannot open the store {}",
                    tidings::store::shown_location(location)
                )
            })?;
            if progress {
                eprintln!("measuring the store {} ...", opened.path());
            }
            Some(tidings::app::bench_store::run_store(
                &*opened,
                args.store_articles as usize,
                20,
            )?)
        }
        None => None,
    };
    let report = Report {
        version: env!("CARGO_PKG_VERSION"),
        device: device::describe(&device),
        threads: candle_core::utils::get_num_threads(),
        dtype: args.compute.on(&device).name(),
        hardware: hardware(&device),
        peak_rss_bytes: peak_rss_bytes(),
        peak_gpu_memory_bytes: gpu_memory.stop(),
        translation,
        embedding,
        store,
    };
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    if args.json {
        serde_json::to_writer_pretty(&mut out, &report)?;
        writeln!(out)?;
    } else {
        print_table(&mut out, &report)?;
    }
    out.flush()?;
    Ok(())
}

fn open_repo(args: &BenchArgs, spec: &str, quiet: bool) -> anyhow::Result<ModelRepo> {
    Ok(ModelRepo::open(
        ModelSource::parse(spec, args.revision.as_deref())?,
        &args.source.hub_options(quiet),
    )?)
}

/// Load the translation model and build its source rows.
fn bench_translation(
    args: &BenchArgs,
    input: Option<&(String, BenchInput)>,
    device: &Device,
    progress: bool,
) -> anyhow::Result<TranslationReport> {
    let started = Instant::now();
    let (model, generation, name, rows, described): (
        MarianModel,
        GenerationConfig,
        String,
        Vec<Vec<u32>>,
        String,
    ) = match (&args.random_weights, &args.model) {
        (Some(shape), _) => {
            let cfg = random::shape(shape)?;
            let tensors = random::random_weights(&cfg, 0x7d1d_1e55, device)?;
            let generation = GenerationConfig::defaults_for(&cfg);
            let model =
                MarianModel::with_compute_type(&cfg, tensors, device, args.compute.on(device))?;
            let (rows, described) = match input {
                Some((path, BenchInput::Ids(rows))) => (rows.clone(), format!("{path} (token ids)")),
                Some((path, BenchInput::Texts(_))) => bail!(
                    "{path} is text, which needs the model's tokenizer: give --model, or a JSON list of token id rows for --random-weights"
                ),
                None => (
                    synthetic_rows(
                        args.sentences.unwrap_or(DEFAULT_SENTENCES),
                        cfg.vocab_size as u32,
                        cfg.eos_token_ids.first().copied().unwrap_or(0),
                        &[cfg.pad_token_id],
                        42,
                    ),
                    "random token ids with the lengths of the built-in news sentences".to_string(),
                ),
            };
            (
                model,
                generation,
                format!("random weights, {shape} shape"),
                rows,
                described,
            )
        }
        (None, Some(spec)) => {
            let repo = open_repo(args, spec, !progress)?;
            match input {
                Some((path, BenchInput::Ids(rows))) => {
                    // Token ids need no tokenizer: the folder may hold only config and weights.
                    let (model, generation) =
                        load_model_only(&repo, device, args.compute.on(device))
                            .with_context(|| format!("cannot load {}", repo.describe()))?;
                    (
                        model,
                        generation,
                        repo.describe(),
                        rows.clone(),
                        format!("{path} (token ids)"),
                    )
                }
                other => {
                    let t = Translator::load_with(&repo, device, args.compute.on(device))
                        .with_context(|| format!("cannot load {}", repo.describe()))?;
                    let (texts, described): (Vec<&str>, String) = match other {
                        Some((path, BenchInput::Texts(lines))) => (
                            lines.iter().map(String::as_str).collect(),
                            format!("{path} (text)"),
                        ),
                        _ => (
                            NEWS_SENTENCES.to_vec(),
                            "built-in news sentences".to_string(),
                        ),
                    };
                    let rows = texts
                        .iter()
                        .map(|s| t.encode(s))
                        .collect::<Result<Vec<_>, _>>()?;
                    let generation = t.generation_config(&Default::default());
                    let (model, _, _) = t.into_parts();
                    (model, generation, repo.describe(), rows, described)
                }
            }
        }
        (None, None) => bail!("give --model or --random-weights"),
    };
    let load_seconds = started.elapsed().as_secs_f64();
    let positions = model.config().max_position_embeddings;
    if args.max_new_tokens == 0 || args.max_new_tokens >= positions {
        bail!(
            "--max-new-tokens must be between 1 and {}",
            positions.saturating_sub(1)
        );
    }
    let n = args.sentences.unwrap_or(match input {
        Some(_) => rows.len(),
        None => DEFAULT_SENTENCES,
    });
    let mut rows = cycle_to(&rows, n);
    sort_longest_first(&mut rows);

    let mut runs = Vec::new();
    for &batch_size in &args.batch_sizes {
        for &beams in &args.beams {
            // One untimed batch first: allocator and thread-pool warm-up.
            let warm = &rows[..batch_size.min(rows.len())];
            run_translation(&model, &generation, warm, batch_size, beams, 2)?;
            profile::reset();
            let run = run_translation(
                &model,
                &generation,
                &rows,
                batch_size,
                beams,
                args.max_new_tokens,
            )?;
            if progress {
                eprintln!(
                    "batch {:>3} beam {:>2}: {:>8.1} tokens/s {:>7.2} sentences/s  p50 {:>8.1} ms  p95 {:>8.1} ms",
                    run.batch_size, run.num_beams, run.generated_tokens_per_s, run.sentences_per_s, run.batch_p50_ms, run.batch_p95_ms
                );
            }
            // TIDINGS_PROFILE: where this run's time went (stderr, so the JSON stays clean).
            if let Some(table) = profile::report() {
                eprintln!(
                    "time per section, batch {} beam {} (TIDINGS_PROFILE):\n{table}",
                    run.batch_size, run.num_beams
                );
            }
            runs.push(run);
        }
    }
    // The CPU runs its own kernels (no tensor backend), hence none of these.
    let fused_kernels = if device.is_cpu() {
        Vec::new()
    } else {
        FusedKernels::Auto.in_use(device)
    };
    Ok(TranslationReport {
        model: name,
        input: described,
        load_seconds,
        fused_kernels,
        runs,
    })
}

fn bench_embedding(
    args: &BenchArgs,
    spec: &str,
    input: Option<&(String, BenchInput)>,
    device: &Device,
    progress: bool,
) -> anyhow::Result<EmbeddingReport> {
    let (texts, described): (Vec<&str>, String) = match input {
        Some((path, BenchInput::Texts(lines))) => (
            lines.iter().map(String::as_str).collect(),
            format!("{path} (text)"),
        ),
        Some((path, BenchInput::Ids(_))) => {
            bail!("{path} holds token ids; the embedding benchmark needs text, one per line")
        }
        None => (
            NEWS_SENTENCES.to_vec(),
            "built-in news sentences".to_string(),
        ),
    };
    let n = args.sentences.unwrap_or(match input {
        Some(_) => texts.len(),
        None => DEFAULT_SENTENCES,
    });
    let texts = cycle_to(&texts, n);
    let repo = open_repo(args, spec, !progress)?;
    let started = Instant::now();
    let embedder = Embedder::load_with(&repo, device, args.compute.on(device))
        .with_context(|| format!("cannot load {}", repo.describe()))?;
    let load_seconds = started.elapsed().as_secs_f64();
    let mut runs = Vec::new();
    for &batch_size in &args.batch_sizes {
        embedder.embed(&texts[..batch_size.min(texts.len())], batch_size)?; // warm-up
        let run = run_embedding(&embedder, &texts, batch_size)?;
        if progress {
            eprintln!(
                "embed batch {:>3}: {:>8.1} texts/s {:>9.1} tokens/s",
                run.batch_size, run.texts_per_s, run.tokens_per_s
            );
        }
        runs.push(run);
    }
    Ok(EmbeddingReport {
        model: repo.describe(),
        input: described,
        load_seconds,
        runs,
    })
}

/// `items` joined by `sep`, or `none` when there are none.
fn listed<S: AsRef<str>>(items: &[S], sep: &str, none: &str) -> String {
    if items.is_empty() {
        none.to_string()
    } else {
        items
            .iter()
            .map(AsRef::as_ref)
            .collect::<Vec<_>>()
            .join(sep)
    }
}

fn print_table(out: &mut impl Write, report: &Report) -> std::io::Result<()> {
    let hw = &report.hardware;
    let rss = match report.peak_rss_bytes {
        Some(b) => format!("{:.0} MiB", b as f64 / (1024.0 * 1024.0)),
        None => "n/a".to_string(),
    };
    let gpu = report
        .peak_gpu_memory_bytes
        .map(|b| format!("  peak GPU memory: {:.0} MiB", b as f64 / (1024.0 * 1024.0)))
        .unwrap_or_default();
    writeln!(
        out,
        "tidings {}  device: {}{}  threads: {}  dtype: {}  peak RSS: {rss}{gpu}",
        report.version,
        report.device,
        hw.gpu
            .as_deref()
            .map(|g| format!(" ({g})"))
            .unwrap_or_default(),
        report.threads,
        report.dtype,
    )?;
    writeln!(
        out,
        "cpu: {}  cores: {}  simd: {}  {}/{}",
        hw.cpu,
        hw.cores,
        listed(&hw.simd, ",", "none detected"),
        hw.os,
        hw.arch
    )?;
    if let Some(st) = &report.store {
        writeln!(out)?;
        writeln!(
            out,
            "store: {}  {} articles of {} sentences",
            st.store, st.articles, st.sentences_per_article
        )?;
        writeln!(
            out,
            "  align path {:.3} ms/article  online assignment {:.3} ms/article  rerun {:.3} ms/article",
            st.align_ms_per_article, st.online_ms_per_article, st.reread_ms_per_article
        )?;
    }
    if let Some(t) = &report.translation {
        writeln!(out)?;
        writeln!(
            out,
            "translation: {}  load: {:.2}s  fused GPU kernels: {}",
            t.model,
            t.load_seconds,
            listed(&t.fused_kernels, ", ", "none")
        )?;
        writeln!(out, "input: {}", t.input)?;
        writeln!(
            out,
            "{:>5} {:>5} {:>7} {:>7} {:>11} {:>9} {:>13} {:>9} {:>9}",
            "batch",
            "beam",
            "sents",
            "new tok",
            "tokens/s",
            "sent/s",
            "enc src tok/s",
            "p50 ms",
            "p95 ms"
        )?;
        for r in &t.runs {
            writeln!(
                out,
                "{:>5} {:>5} {:>7} {:>7} {:>11.1} {:>9.2} {:>13.0} {:>9.1} {:>9.1}",
                r.batch_size,
                r.num_beams,
                r.sentences,
                r.max_new_tokens,
                r.generated_tokens_per_s,
                r.sentences_per_s,
                r.encoder_source_tokens_per_s,
                r.batch_p50_ms,
                r.batch_p95_ms
            )?;
        }
    }
    if let Some(e) = &report.embedding {
        writeln!(out)?;
        writeln!(out, "embedding: {}  load: {:.2}s", e.model, e.load_seconds)?;
        writeln!(out, "input: {}", e.input)?;
        writeln!(
            out,
            "{:>5} {:>7} {:>8} {:>10} {:>11}",
            "batch", "texts", "tokens", "texts/s", "tokens/s"
        )?;
        for r in &e.runs {
            writeln!(
                out,
                "{:>5} {:>7} {:>8} {:>10.1} {:>11.0}",
                r.batch_size, r.texts, r.tokens, r.texts_per_s, r.tokens_per_s
            )?;
        }
    }
    Ok(())
}
