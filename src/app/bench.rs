//! Inference speed measurement, shared by `tidings bench` and `benches/`.
//!
//! Random-weight models emit EOS at random, so a run's amount of work would depend on the seed.
//! To measure the engine rather than the weights, every sentence generates exactly
//! `max_new_tokens` tokens (EOS is banned until the last step, which forces it), the same
//! "fixed output length" setting peers are compared under (`scripts/peer_bench.py`).

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::Device;
use serde::Serialize;

use crate::model::embed::{EmbedError, Embedder};
use crate::model::hub::{HubError, ModelRepo};
use crate::model::marian::config::load_configs;
use crate::model::marian::translator::WEIGHT_FILES;
use crate::model::marian::{GenerationConfig, MarianModel, TranslateError};

/// Built-in input: news sentences of realistic lengths (7 to 38 words), written for this
/// benchmark. With a real model they are tokenized; for random weights only their lengths are
/// used (see [`synthetic_rows`]).
pub static NEWS_SENTENCES: std::sync::LazyLock<Vec<&'static str>> =
    std::sync::LazyLock::new(|| {
        // One file for this and scripts/peer_bench.py, which gives the same texts to the peers.
        include_str!("../../benches/news-sentences.txt")
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect()
    });

/// Word counts of [`NEWS_SENTENCES`], in order.
pub fn news_sentence_words() -> Vec<usize> {
    NEWS_SENTENCES
        .iter()
        .map(|s| s.split_whitespace().count())
        .collect()
}

/// `n` source rows of token ids with the lengths of the built-in news sentences (OPUS-MT
/// averages about 1.4 SentencePiece tokens per word on news text), ending in `eos`,
/// deterministic in `seed`.
pub fn synthetic_rows(n: usize, vocab: u32, eos: u32, avoid: &[u32], seed: u64) -> Vec<Vec<u32>> {
    let words = news_sentence_words();
    // A vocabulary of only special ids cannot fill a row: leave rows short rather than spin.
    let usable = (0..vocab).any(|id| id != eos && !avoid.contains(&id));
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
    let mut next = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) as u32
    };
    (0..n)
        .map(|i| {
            let len = (words[i % words.len()] * 14).div_ceil(10);
            let mut row: Vec<u32> = Vec::with_capacity(len + 1);
            while usable && row.len() < len {
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

/// Rows sorted longest first (stable), as [`crate::model::marian::Translator::translate`] batches
/// them, so a benchmark pads as much as real use does.
pub fn sort_longest_first(rows: &mut [Vec<u32>]) {
    rows.sort_by_key(|r| std::cmp::Reverse(r.len()));
}

/// Repeat `items` in order until there are `n` of them (or none, if `items` is empty).
pub fn cycle_to<T: Clone>(items: &[T], n: usize) -> Vec<T> {
    items.iter().cycle().take(n).cloned().collect()
}

/// What went wrong reading a benchmark input file.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("cannot read {}: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not a JSON list of token id rows ([[ids...], ...]): {reason}", .path.display())]
    BadIds { path: PathBuf, reason: String },
    #[error("{} has no input: {what}", .path.display())]
    Empty { path: PathBuf, what: &'static str },
}

/// A benchmark input file's content.
#[derive(Debug, Clone, PartialEq)]
pub enum BenchInput {
    /// Source token id rows (a JSON file `[[ids...], ...]`), fed to the model as they are.
    Ids(Vec<Vec<u32>>),
    /// Text, one segment per non-blank line.
    Texts(Vec<String>),
}

/// Read `--input`: a file whose first non-blank character is `[` is a JSON list of token id
/// rows (every row non-empty); anything else is text, one segment per non-blank line.
pub fn read_input(path: &Path) -> Result<BenchInput, BenchError> {
    let text = std::fs::read_to_string(path).map_err(|source| BenchError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    if text.trim_start().starts_with('[') {
        let rows: Vec<Vec<u32>> = serde_json::from_str(&text).map_err(|e| BenchError::BadIds {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        if rows.is_empty() {
            return Err(BenchError::Empty {
                path: path.to_path_buf(),
                what: "the list of rows is empty",
            });
        }
        if let Some(i) = rows.iter().position(Vec::is_empty) {
            return Err(BenchError::BadIds {
                path: path.to_path_buf(),
                reason: format!("row {i} is empty"),
            });
        }
        return Ok(BenchInput::Ids(rows));
    }
    let lines: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    if lines.is_empty() {
        return Err(BenchError::Empty {
            path: path.to_path_buf(),
            what: "no non-blank line",
        });
    }
    Ok(BenchInput::Texts(lines))
}

/// A Marian model and its generation defaults from a repo or folder, without the tokenizer
/// (for benchmarks on token ids: the folder needs only `config.json` and the weights).
pub fn load_model_only(
    repo: &ModelRepo,
    device: &Device,
    format: crate::model::ComputeType,
) -> Result<(MarianModel, GenerationConfig), TranslateError> {
    let config = repo.get("config.json")?;
    let generation = match repo.get_optional("generation_config.json") {
        Ok(p) => p,
        // Offline with no record of the file: go on with config.json's generation keys.
        Err(HubError::OfflineMiss { .. }) => None,
        Err(e) => return Err(e.into()),
    };
    let (cfg, generation) = load_configs(&config, generation.as_deref())?;
    let mut weights = None;
    for &file in WEIGHT_FILES {
        if let Some(p) = repo.get_optional(file)? {
            weights = Some(p);
            break;
        }
    }
    let weights = weights.ok_or_else(|| {
        TranslateError::Weights(format!(
            "{} has neither model.safetensors nor pytorch_model.bin",
            repo.describe()
        ))
    })?;
    let tensors = crate::model::weights::read_tensors(&weights, &candle_core::Device::Cpu)?;
    Ok((
        MarianModel::with_compute_type(&cfg, tensors, device, format)?,
        generation,
    ))
}

#[derive(Debug, Clone, Serialize)]
pub struct TranslationRun {
    pub batch_size: usize,
    pub num_beams: usize,
    pub max_new_tokens: usize,
    pub sentences: usize,
    /// Source tokens (`</s>` included, padding not).
    pub source_tokens: usize,
    pub generated_tokens: usize,
    /// Wall time of the whole run: encoder and decoder.
    pub seconds: f64,
    /// Part of `seconds` spent in the encoder.
    pub encoder_seconds: f64,
    pub generated_tokens_per_s: f64,
    pub sentences_per_s: f64,
    /// Source tokens the encoder reads per second of encoder time.
    pub encoder_source_tokens_per_s: f64,
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

fn per_second(amount: usize, seconds: f64) -> f64 {
    if seconds > 0.0 {
        amount as f64 / seconds
    } else {
        0.0
    }
}

/// Translate `rows` in batches of `batch_size` (in the order given), each sentence generating
/// exactly `max_new_tokens` tokens, and time it.
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
    let device = model.device();
    let mut latencies = Vec::new();
    let mut generated = 0usize;
    let mut encoder_seconds = 0.0;
    let started = Instant::now();
    for batch in rows.chunks(batch_size.max(1)) {
        let t = Instant::now();
        let out = model.generate_with(batch, &gen, || {
            // GPU kernels run asynchronously: wait for them so the encoder's time is its own.
            device.synchronize()?;
            encoder_seconds += t.elapsed().as_secs_f64();
            Ok(())
        })?;
        generated += out.iter().map(Vec::len).sum::<usize>();
        latencies.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let seconds = started.elapsed().as_secs_f64();
    latencies.sort_by(f64::total_cmp);
    let source_tokens = rows.iter().map(Vec::len).sum();
    Ok(TranslationRun {
        batch_size,
        num_beams: gen.num_beams,
        max_new_tokens,
        sentences: rows.len(),
        source_tokens,
        generated_tokens: generated,
        seconds,
        encoder_seconds,
        generated_tokens_per_s: per_second(generated, seconds),
        sentences_per_s: per_second(rows.len(), seconds),
        encoder_source_tokens_per_s: per_second(source_tokens, encoder_seconds),
        batch_p50_ms: percentile(&latencies, 0.5),
        batch_p95_ms: percentile(&latencies, 0.95),
    })
}

#[derive(Debug, Clone, Serialize)]
pub struct EmbeddingRun {
    pub batch_size: usize,
    pub texts: usize,
    /// Tokens the encoder reads (special tokens included, after truncation).
    pub tokens: usize,
    pub seconds: f64,
    pub texts_per_s: f64,
    pub tokens_per_s: f64,
}

/// Embed `texts` with batches of at most `batch_size` (tokenizing included, as
/// `sentence-transformers`' `encode` does) and time it.
pub fn run_embedding(
    embedder: &Embedder,
    texts: &[&str],
    batch_size: usize,
) -> Result<EmbeddingRun, EmbedError> {
    let tokens = texts
        .iter()
        .map(|t| embedder.token_ids(t).map(|ids| ids.len()))
        .sum::<Result<usize, _>>()?;
    let started = Instant::now();
    let vectors = embedder.embed(texts, batch_size)?;
    let seconds = started.elapsed().as_secs_f64();
    if vectors.len() != texts.len() {
        return Err(EmbedError::Input(format!(
            "{} vectors for {} texts",
            vectors.len(),
            texts.len()
        )));
    }
    Ok(EmbeddingRun {
        batch_size,
        texts: texts.len(),
        tokens,
        seconds,
        texts_per_s: per_second(texts.len(), seconds),
        tokens_per_s: per_second(tokens, seconds),
    })
}

/// The machine a benchmark ran on.
#[derive(Debug, Clone, Serialize)]
pub struct Hardware {
    pub cpu: String,
    /// Logical cores this process may use.
    pub cores: usize,
    /// Vector instruction sets candle's kernels can use here.
    pub simd: Vec<&'static str>,
    pub os: &'static str,
    pub arch: &'static str,
    /// The GPU's name when running on CUDA or Metal.
    pub gpu: Option<String>,
}

/// Describe this machine (and the GPU behind `device`, if any).
pub fn hardware(device: &Device) -> Hardware {
    Hardware {
        cpu: cpu_model().unwrap_or_else(|| "unknown".to_string()),
        cores: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        simd: simd_features(),
        os: std::env::consts::OS,
        arch: std::env::consts::ARCH,
        gpu: gpu_name(device),
    }
}

fn cpu_model() -> Option<String> {
    if let Ok(info) = std::fs::read_to_string("/proc/cpuinfo") {
        // x86 says "model name"; some ARM kernels only give "Hardware" or "CPU part".
        for key in ["model name", "Hardware", "Processor"] {
            let found = info.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                (k.trim() == key && !v.trim().is_empty()).then(|| v.trim().to_string())
            });
            if found.is_some() {
                return found;
            }
        }
    }
    if cfg!(target_os = "macos") {
        let out = std::process::Command::new("sysctl")
            .args(["-n", "machdep.cpu.brand_string"])
            .output()
            .ok()?;
        let name = String::from_utf8_lossy(&out.stdout).trim().to_string();
        return (!name.is_empty()).then_some(name);
    }
    None
}

#[allow(unused_mut)]
fn simd_features() -> Vec<&'static str> {
    let mut found = Vec::new();
    #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
    {
        if is_x86_feature_detected!("avx") {
            found.push("avx");
        }
        if is_x86_feature_detected!("avx2") {
            found.push("avx2");
        }
        if is_x86_feature_detected!("fma") {
            found.push("fma");
        }
        if is_x86_feature_detected!("avx512f") {
            found.push("avx512f");
        }
        if is_x86_feature_detected!("f16c") {
            found.push("f16c");
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        if std::arch::is_aarch64_feature_detected!("neon") {
            found.push("neon");
        }
        if std::arch::is_aarch64_feature_detected!("fp16") {
            found.push("fp16");
        }
    }
    found
}

fn gpu_name(device: &Device) -> Option<String> {
    match device {
        Device::Cpu => None,
        Device::Cuda(_) => Some(nvidia_gpu_name().unwrap_or_else(|| "CUDA GPU".to_string())),
        Device::Metal(_) => Some("Apple GPU (Metal)".to_string()),
    }
}

/// The NVIDIA driver's name for the first GPU (Linux).
fn nvidia_gpu_name() -> Option<String> {
    let mut dirs: Vec<_> = std::fs::read_dir("/proc/driver/nvidia/gpus")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    dirs.sort();
    let info = std::fs::read_to_string(dirs.first()?.join("information")).ok()?;
    info.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim() == "Model").then(|| v.trim().to_string())
    })
}

/// Watches GPU memory in use while a benchmark runs: a thread samples it every 10 ms (the
/// driver offers no per-process peak), and [`GpuMemoryWatch::stop`] gives the most seen above
/// what was in use when the watch started (the CUDA context, other processes).
pub struct GpuMemoryWatch {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<Option<u64>>>,
}

impl GpuMemoryWatch {
    /// Starts watching `device`; on the CPU it watches nothing.
    pub fn start(device: &candle_core::Device) -> Self {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let Some(base) = crate::model::device::gpu_memory_used(device) else {
            return Self { stop, thread: None };
        };
        let (device, flag) = (device.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("tidings-gpu-memory".into())
            .spawn(move || {
                let mut peak = base;
                loop {
                    if let Some(used) = crate::model::device::gpu_memory_used(&device) {
                        peak = peak.max(used);
                    }
                    if flag.load(Ordering::Relaxed) {
                        return Some(peak - base);
                    }
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
            })
            .ok();
        Self { stop, thread }
    }

    /// The peak GPU memory this run added, in bytes; `None` on the CPU.
    pub fn stop(mut self) -> Option<u64> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.take()?.join().ok().flatten()
    }
}

/// This process's peak resident memory in bytes (`VmHWM`; Linux only, `None` elsewhere).
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_vm_hwm(&status)
}

fn parse_vm_hwm(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let mut parts = line["VmHWM:".len()..].split_whitespace();
    let value: u64 = parts.next()?.parse().ok()?;
    match parts.next() {
        Some("kB") | None => Some(value * 1024),
        Some(_) => None,
    }
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
    fn synthetic_rows_follow_the_news_sentence_lengths() {
        let words = news_sentence_words();
        let rows = synthetic_rows(words.len() + 3, 1000, 0, &[], 3);
        for (i, row) in rows.iter().enumerate() {
            let w = words[i % words.len()];
            assert_eq!(row.len(), (w * 14).div_ceil(10) + 1);
        }
        assert!(words.iter().any(|&w| w < 10) && words.iter().any(|&w| w > 30));
    }

    #[test]
    fn synthetic_rows_with_only_special_ids_do_not_hang() {
        let rows = synthetic_rows(2, 2, 0, &[1], 1);
        assert_eq!(rows, vec![vec![0], vec![0]]);
    }

    #[test]
    fn sorting_is_longest_first_and_stable() {
        let mut rows = vec![vec![1], vec![2, 2], vec![3], vec![4, 4, 4]];
        sort_longest_first(&mut rows);
        assert_eq!(rows, vec![vec![4, 4, 4], vec![2, 2], vec![1], vec![3]]);
        assert_eq!(cycle_to(&[1, 2], 5), vec![1, 2, 1, 2, 1]);
        assert!(cycle_to::<u8>(&[], 3).is_empty());
    }

    #[test]
    fn percentiles_pick_ranks() {
        let v = [1.0, 2.0, 3.0, 4.0, 5.0];
        assert_eq!(percentile(&v, 0.5), 3.0);
        assert_eq!(percentile(&v, 0.95), 5.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
    }

    #[test]
    fn input_files_are_ids_or_lines() {
        let dir = tempfile::tempdir().unwrap();
        let ids = dir.path().join("ids.json");
        std::fs::write(&ids, " [[5, 6, 0], [7, 0]]\n").unwrap();
        assert_eq!(
            read_input(&ids).unwrap(),
            BenchInput::Ids(vec![vec![5, 6, 0], vec![7, 0]])
        );
        let text = dir.path().join("t.txt");
        std::fs::write(&text, "First one.\n\n  Second one. \n").unwrap();
        assert_eq!(
            read_input(&text).unwrap(),
            BenchInput::Texts(vec!["First one.".into(), "Second one.".into()])
        );
        for (body, needle) in [
            ("[[1, 2], []]", "row 1 is empty"),
            ("[]", "empty"),
            ("[[1, -2]]", "token id rows"),
            ("\n \n", "no non-blank line"),
        ] {
            std::fs::write(&ids, body).unwrap();
            let err = read_input(&ids).unwrap_err().to_string();
            assert!(err.contains(needle), "{body}: {err}");
        }
        assert!(read_input(&dir.path().join("missing")).is_err());
    }

    #[test]
    fn vm_hwm_is_read_in_bytes() {
        let status = "Name:\ttidings\nVmPeak:\t  999 kB\nVmHWM:\t    2048 kB\nVmRSS:\t 1 kB\n";
        assert_eq!(parse_vm_hwm(status), Some(2048 * 1024));
        assert_eq!(parse_vm_hwm("Name: x\n"), None);
        if cfg!(target_os = "linux") {
            assert!(peak_rss_bytes().is_some_and(|b| b > 0));
        }
    }

    #[test]
    fn hardware_names_the_cpu_cores_and_simd() {
        let hw = hardware(&Device::Cpu);
        assert!(hw.cores >= 1);
        assert!(hw.gpu.is_none());
        assert!(!hw.cpu.is_empty());
        // Every x86-64 CPU candle runs well on has at least AVX; a feature list that is empty
        // there would mean detection is broken.
        if cfg!(target_arch = "x86_64") && std::path::Path::new("/proc/cpuinfo").exists() {
            let flags = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
            if flags.contains(" avx2") {
                assert!(hw.simd.contains(&"avx2"), "{:?}", hw.simd);
            }
        }
    }
}
