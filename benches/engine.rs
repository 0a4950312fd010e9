//! `cargo bench --bench engine`: criterion benchmarks of the engine's parts, small enough to run
//! in about two minutes.
//!
//! Every `marian/*` benchmark runs twice, for f32 (`f32/...`) and int8 (`int8/...`) weights.
//!
//! - `marian/encode`: the encoder on 32 sentences of news-like lengths (random-weight model of
//!   the real opus-mt-base shape, so no download).
//! - `marian/decode_step`: one decoder step at position 8, for 32 rows (greedy) and 128 rows
//!   (32 sentences × 4 beams).
//! - `marian/translate`: a whole batch of 32 sentences, greedy and beam 4, 8 tokens each
//!   (EOS held back, as `tidings bench` does, so every run does the same work).
//! - `embed/minilm`: all-MiniLM-L6-v2 on 32 sentences, and tokenizing 512 on one thread and in
//!   parallel, when the real model is at
//!   `$TIDINGS_MINILM_DIR` or `.cache/models/all-MiniLM-L6-v2` (`scripts/fetch-minilm.sh`);
//!   skipped with a message otherwise.
//! - `cluster/group`: average-linkage grouping of 10,000 random unit vectors (384 dimensions).
//!
//! `benches/translate.rs` is the headline throughput number (32 new tokens, median of 3).

use std::path::{Path, PathBuf};
use std::time::Duration;

use candle_core::Device;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, SamplingMode, Throughput};
use tidings::app::bench::{run_translation, synthetic_rows};
use tidings::group::{group, ClusterOptions};
use tidings::model::embed::Embedder;
use tidings::model::hub::{HubOptions, ModelRepo, ModelSource};
use tidings::model::marian::{random, ComputeType, GenerationConfig, MarianBackend, MarianModel};

struct Setup {
    model: MarianModel,
    gen: GenerationConfig,
    rows: Vec<Vec<u32>>,
}

fn setup(format: ComputeType) -> Setup {
    let cfg = random::shape("opus-mt-base").expect("known shape");
    let tensors = random::random_weights(&cfg, 0x7d1d_1e55, &Device::Cpu).expect("weights");
    let model = MarianModel::with_compute_type(&cfg, tensors, &Device::Cpu, format).expect("model");
    let gen = GenerationConfig::defaults_for(&cfg);
    let rows = synthetic_rows(32, cfg.vocab_size as u32, 0, &[cfg.pad_token_id], 42);
    Setup { model, gen, rows }
}

fn marian(c: &mut Criterion) {
    let mut g = c.benchmark_group("marian");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .sampling_mode(SamplingMode::Flat);
    for format in [ComputeType::F32, ComputeType::Int8] {
        marian_format(&mut g, format);
    }
    g.finish();
}

fn marian_format(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    format: ComputeType,
) {
    let s = setup(format);
    let cpu = s.model.as_cpu().expect("the CPU kernels");
    let source_tokens: usize = s.rows.iter().map(Vec::len).sum();

    g.throughput(Throughput::Elements(source_tokens as u64));
    g.bench_function(format!("{format}/encode/batch32"), |b| {
        b.iter(|| cpu.encode(&s.rows).expect("encode"))
    });

    let start = s.gen.decoder_start_token_id;
    for (name, beams) in [("decode_step/32rows", 1usize), ("decode_step/128rows", 4)] {
        let encoded = cpu.encode(&s.rows).expect("encode");
        let expand: Vec<u32> = (0..s.rows.len() as u32)
            .flat_map(|r| std::iter::repeat_n(r, beams))
            .collect();
        let tokens = vec![start; expand.len()];
        g.throughput(Throughput::Elements(expand.len() as u64));
        g.bench_function(format!("{format}/{name}"), |b| {
            b.iter_batched(
                || {
                    let mut state = cpu.start_decoding(&encoded, Some(&expand)).expect("state");
                    let mut logits = Vec::new();
                    for _ in 0..8 {
                        cpu.decode_step_into(&tokens, &mut state, &mut logits)
                            .expect("step");
                    }
                    (state, logits)
                },
                |(mut state, mut logits)| {
                    cpu.decode_step_into(&tokens, &mut state, &mut logits)
                        .expect("step");
                    (state, logits)
                },
                BatchSize::PerIteration,
            )
        });
    }

    let new_tokens = 8;
    g.throughput(Throughput::Elements((s.rows.len() * new_tokens) as u64));
    for (name, beams) in [("translate/greedy", 1usize), ("translate/beam4", 4)] {
        g.bench_function(format!("{format}/{name}"), |b| {
            b.iter(|| {
                run_translation(&s.model, &s.gen, &s.rows, 32, beams, new_tokens)
                    .expect("translate")
            })
        });
    }
}

fn minilm_dir() -> PathBuf {
    match std::env::var_os("TIDINGS_MINILM_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join(".cache/models/all-MiniLM-L6-v2"),
    }
}

/// `n` news-like English sentences of varied length, deterministic.
fn sentences(n: usize) -> Vec<String> {
    const WORDS: &[&str] = &[
        "the",
        "central",
        "bank",
        "raised",
        "interest",
        "rates",
        "on",
        "Thursday",
        "after",
        "inflation",
        "rose",
        "in",
        "March",
        "government",
        "said",
        "minister",
        "election",
        "parliament",
        "voted",
        "for",
        "new",
        "law",
        "storm",
        "hit",
        "coast",
        "thousands",
        "without",
        "power",
        "police",
        "arrested",
        "two",
        "men",
        "city",
        "council",
        "budget",
    ];
    let mut state = 7u64;
    (0..n)
        .map(|i| {
            let len = 8 + (i * 7) % 25;
            let words: Vec<&str> = (0..len)
                .map(|_| {
                    state = state
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    WORDS[(state >> 33) as usize % WORDS.len()]
                })
                .collect();
            format!("{}.", words.join(" "))
        })
        .collect()
}

fn embed(c: &mut Criterion) {
    let dir = minilm_dir();
    if !dir.join("model.safetensors").is_file() {
        eprintln!(
            "embed/minilm skipped: all-MiniLM-L6-v2 is not at {} (run scripts/fetch-minilm.sh or set TIDINGS_MINILM_DIR)",
            dir.display()
        );
        return;
    }
    let repo = ModelRepo::open(ModelSource::Local(dir), &HubOptions::default()).expect("repo");
    let embedder = Embedder::load(&repo, &Device::Cpu).expect("MiniLM");
    let texts = sentences(32);
    let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
    let mut g = c.benchmark_group("embed");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    g.throughput(Throughput::Elements(texts.len() as u64));
    g.bench_function("minilm/batch32", |b| {
        b.iter(|| embedder.embed(&texts, 32).expect("embed"))
    });
    // Tokenizing alone, on one thread and in parallel (as `Embedder::embed` does): the part of
    // an embedding run that stays on the CPU when the encoder is on a GPU.
    let many = sentences(512);
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    g.throughput(Throughput::Elements(many.len() as u64));
    g.bench_function("minilm/tokenize512/one-thread", |b| {
        b.iter(|| {
            many.iter()
                .map(|t| embedder.token_ids(t).expect("tokenize"))
                .collect::<Vec<_>>()
        })
    });
    g.bench_function("minilm/tokenize512/parallel", |b| {
        b.iter(|| embedder.token_id_rows(&many).expect("tokenize"))
    });
    g.finish();
}

/// `n` random unit vectors of `dim` dimensions, deterministic.
fn unit_vectors(n: usize, dim: usize) -> Vec<Vec<f32>> {
    let mut state = 0x5eed_u64;
    (0..n)
        .map(|_| {
            let v: Vec<f32> = (0..dim)
                .map(|_| {
                    state = state
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    ((state >> 40) as f32 / (1u64 << 24) as f32) - 0.5
                })
                .collect();
            let norm = v
                .iter()
                .map(|x| x * x)
                .sum::<f32>()
                .sqrt()
                .max(f32::MIN_POSITIVE);
            v.into_iter().map(|x| x / norm).collect()
        })
        .collect()
}

fn cluster(c: &mut Criterion) {
    let vectors = unit_vectors(10_000, 384);
    let opts = ClusterOptions {
        max_days_apart: None,
        ..ClusterOptions::default()
    };
    let mut g = c.benchmark_group("cluster");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(5))
        .sampling_mode(SamplingMode::Flat);
    g.throughput(Throughput::Elements(vectors.len() as u64));
    g.bench_function("group/10k", |b| {
        b.iter(|| group(&vectors, &[], &opts).expect("group"))
    });
    g.finish();
}

criterion_group!(benches, marian, embed, cluster);
criterion_main!(benches);
