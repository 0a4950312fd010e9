//! `tidings bench` run as a user runs it, on the tiny fixture models (no download).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn tidings(args: &[&str], home: &Path) -> Output {
    tidings_with(args, home, &[])
}

fn tidings_with(args: &[&str], home: &Path, env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tidings"))
        .arg("bench")
        .env_remove("TIDINGS_PROFILE")
        .envs(env.iter().copied())
        .args(args)
        .env("HF_HOME", home)
        .env("HF_ENDPOINT", "http://127.0.0.1:9") // nothing listens there: no real network
        .env_remove("HF_HUB_OFFLINE")
        .env_remove("RAYON_NUM_THREADS")
        .output()
        .expect("run tidings")
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn json_ok(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("stdout is one JSON document")
}

fn num(v: &Value, key: &str) -> f64 {
    v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} is not a number in {v}"))
}

/// Fields every report has, with sane values.
fn check_header(r: &Value, threads: usize) {
    assert_eq!(r["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(r["device"], "cpu");
    assert_eq!(r["dtype"], "f32");
    assert_eq!(r["threads"].as_u64(), Some(threads as u64));
    let hw = &r["hardware"];
    assert!(hw["cpu"].as_str().is_some_and(|s| !s.is_empty()), "{hw}");
    assert!(hw["cores"].as_u64().is_some_and(|c| c >= 1), "{hw}");
    assert!(hw["simd"].is_array(), "{hw}");
    assert!(hw["gpu"].is_null(), "{hw}");
    if cfg!(target_os = "linux") {
        // A process that loaded a model and ran it has used more than a megabyte.
        assert!(num(r, "peak_rss_bytes") > 1e6, "{r}");
    } else {
        assert!(r["peak_rss_bytes"].is_null());
    }
}

/// Every run generated exactly `new_tokens` per sentence, and the rates agree with the counts.
fn check_translation_runs(t: &Value, settings: &[(u64, u64)], sentences: u64, new_tokens: u64) {
    let runs = t["runs"].as_array().expect("runs");
    let got: Vec<(u64, u64)> = runs
        .iter()
        .map(|r| {
            (
                r["batch_size"].as_u64().unwrap(),
                r["num_beams"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(got, settings);
    for r in runs {
        assert_eq!(r["sentences"].as_u64(), Some(sentences), "{r}");
        assert_eq!(r["max_new_tokens"].as_u64(), Some(new_tokens), "{r}");
        assert_eq!(
            r["generated_tokens"].as_u64(),
            Some(sentences * new_tokens),
            "fixed output length: {r}"
        );
        let seconds = num(r, "seconds");
        let enc = num(r, "encoder_seconds");
        assert!(seconds > 0.0 && enc > 0.0 && enc <= seconds, "{r}");
        let rate = num(r, "generated_tokens_per_s");
        assert!(
            (rate * seconds - (sentences * new_tokens) as f64).abs() < 1e-6 * rate.max(1.0) + 1e-3
        );
        assert!((num(r, "sentences_per_s") * seconds - sentences as f64).abs() < 1e-3);
        let src = num(r, "source_tokens");
        assert!((num(r, "encoder_source_tokens_per_s") * enc - src).abs() < 1e-3 * src);
        let (p50, p95) = (num(r, "batch_p50_ms"), num(r, "batch_p95_ms"));
        assert!(
            p50 > 0.0 && p50 <= p95 && p95 <= seconds * 1e3 + 1e-6,
            "{r}"
        );
    }
    assert!(num(t, "load_seconds") >= 0.0);
    // The CPU runs its own kernels, none of the fused GPU ones.
    assert_eq!(t["fused_kernels"], serde_json::json!([]), "{t}");
}

#[test]
fn bench_json_on_a_fixture_model_with_text_input() {
    let home = tempfile::tempdir().unwrap();
    let input = home.path().join("news.txt");
    std::fs::write(
        &input,
        "The minister resigned.\n\nVoters go to the polls on Sunday.\nPrices rose again.\n",
    )
    .unwrap();
    let model = fixture("marian-tiny-swish");
    let out = tidings(
        &[
            "--model",
            model.to_str().unwrap(),
            "--input",
            input.to_str().unwrap(),
            "--sentences",
            "5",
            "--batch-sizes",
            "1,4",
            "--beams",
            "1,3",
            "--max-new-tokens",
            "4",
            "--threads",
            "1",
            "--json",
        ],
        home.path(),
    );
    let r = json_ok(&out);
    check_header(&r, 1);
    assert!(r["embedding"].is_null());
    let t = &r["translation"];
    assert!(t["input"].as_str().unwrap().contains("(text)"), "{t}");
    check_translation_runs(t, &[(1, 1), (1, 3), (4, 1), (4, 3)], 5, 4);
    // 5 sentences from 3 lines: the input repeats; the tokenizer gives each at least `</s>` and
    // one piece.
    assert!(t["runs"][0]["source_tokens"].as_u64().unwrap() >= 10);
}

#[test]
fn bench_json_on_token_id_rows_needs_no_tokenizer() {
    let home = tempfile::tempdir().unwrap();
    // Only the model's config and weights: an ids benchmark must not look for spm files.
    let model = home.path().join("model");
    std::fs::create_dir(&model).unwrap();
    for f in ["config.json", "generation_config.json", "model.safetensors"] {
        std::fs::copy(fixture("marian-tiny-swish").join(f), model.join(f)).unwrap();
    }
    let ids = home.path().join("ids.json");
    let rows: Vec<Vec<u32>> = vec![vec![5, 17, 30, 0], vec![8, 0], vec![40, 41, 42, 43, 44, 0]];
    std::fs::write(&ids, serde_json::to_string(&rows).unwrap()).unwrap();
    let out = tidings(
        &[
            "--model",
            model.to_str().unwrap(),
            "--input",
            ids.to_str().unwrap(),
            "--batch-sizes",
            "2",
            "--beams",
            "2",
            "--max-new-tokens",
            "6",
            "--threads",
            "2",
            "--json",
        ],
        home.path(),
    );
    let r = json_ok(&out);
    check_header(&r, 2);
    let t = &r["translation"];
    assert!(t["input"].as_str().unwrap().contains("(token ids)"), "{t}");
    check_translation_runs(t, &[(2, 2)], 3, 6);
    // The rows are used as given: their token count is the encoder's input.
    let total: usize = rows.iter().map(Vec::len).sum();
    assert_eq!(t["runs"][0]["source_tokens"].as_u64(), Some(total as u64));

    // An id outside the vocabulary is an error, not a crash.
    std::fs::write(&ids, "[[5, 999999, 0]]").unwrap();
    let bad = tidings(
        &[
            "--model",
            model.to_str().unwrap(),
            "--input",
            ids.to_str().unwrap(),
        ],
        home.path(),
    );
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("999999"), "{err}");
}

#[test]
fn bench_rejects_text_for_random_weights_and_ids_for_embeddings() {
    let home = tempfile::tempdir().unwrap();
    let text = home.path().join("t.txt");
    std::fs::write(&text, "A sentence.\n").unwrap();
    let out = tidings(
        &[
            "--random-weights",
            "opus-mt-base",
            "--input",
            text.to_str().unwrap(),
        ],
        home.path(),
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("tokenizer"));

    let ids = home.path().join("ids.json");
    std::fs::write(&ids, "[[1, 2, 0]]").unwrap();
    let embed = fixture("embed/tiny-xlmr");
    let out = tidings(
        &[
            "--embed-model",
            embed.to_str().unwrap(),
            "--input",
            ids.to_str().unwrap(),
        ],
        home.path(),
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs text"));

    let out = tidings(&["--json"], home.path());
    assert!(!out.status.success(), "a model of some kind is required");
}

#[test]
fn bench_embedding_json_counts_texts_and_tokens() {
    let home = tempfile::tempdir().unwrap();
    let input = home.path().join("texts.txt");
    std::fs::write(
        &input,
        "The central bank raised rates.\nFloods hit the north.\nA new bridge opened on Friday.\n",
    )
    .unwrap();
    let embed = fixture("embed/tiny-xlmr");
    let out = tidings(
        &[
            "--embed-model",
            embed.to_str().unwrap(),
            "--input",
            input.to_str().unwrap(),
            "--sentences",
            "7",
            "--batch-sizes",
            "1,4",
            "--threads",
            "1",
            "--json",
        ],
        home.path(),
    );
    let r = json_ok(&out);
    check_header(&r, 1);
    assert!(r["translation"].is_null());
    let e = &r["embedding"];
    let runs = e["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2);
    let tokens = runs[0]["tokens"].as_u64().unwrap();
    for (run, bs) in runs.iter().zip([1, 4]) {
        assert_eq!(run["batch_size"].as_u64(), Some(bs));
        assert_eq!(run["texts"].as_u64(), Some(7));
        // Same texts at every batch size; each has at least its special tokens and one piece.
        assert_eq!(run["tokens"].as_u64(), Some(tokens));
        assert!(tokens >= 7 * 3);
        let s = num(run, "seconds");
        assert!((num(run, "texts_per_s") * s - 7.0).abs() < 1e-3, "{run}");
        assert!((num(run, "tokens_per_s") * s - tokens as f64).abs() < 1e-3 * tokens as f64);
    }
}

#[test]
fn bench_table_is_the_default_output() {
    let home = tempfile::tempdir().unwrap();
    let ids = home.path().join("ids.json");
    std::fs::write(&ids, "[[5, 6, 0], [7, 0]]").unwrap();
    let model = fixture("marian-tiny-swish");
    let out = tidings(
        &[
            "--model",
            model.to_str().unwrap(),
            "--input",
            ids.to_str().unwrap(),
            "--batch-sizes",
            "2",
            "--beams",
            "1",
            "--max-new-tokens",
            "3",
        ],
        home.path(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "tokens/s",
        "p95 ms",
        "enc src tok/s",
        "peak RSS",
        "cpu:",
        "simd:",
    ] {
        assert!(table.contains(needle), "{needle} missing from\n{table}");
    }
}

#[test]
fn bench_random_weights_runs_offline() {
    let home = tempfile::tempdir().unwrap();
    let out = tidings(
        &[
            "--random-weights",
            "opus-mt-base",
            "--sentences",
            "2",
            "--batch-sizes",
            "2",
            "--beams",
            "1",
            "--max-new-tokens",
            "2",
            "--json",
        ],
        home.path(),
    );
    let r = json_ok(&out);
    let t = &r["translation"];
    assert_eq!(t["model"], "random weights, opus-mt-base shape");
    check_translation_runs(t, &[(2, 1)], 2, 2);
}

#[test]
fn bench_prints_where_the_time_went_when_profiling() {
    let home = tempfile::tempdir().unwrap();
    let model = fixture("marian-tiny-sep");
    let args = [
        "--model",
        model.to_str().unwrap(),
        "--batch-sizes",
        "2",
        "--beams",
        "2",
        "--sentences",
        "4",
        "--max-new-tokens",
        "5",
        "--json",
    ];
    let quiet = tidings(&args, home.path());
    json_ok(&quiet);
    assert!(!String::from_utf8_lossy(&quiet.stderr).contains("time per section"));
    for mode in ["1", "sync"] {
        let out = tidings_with(&args, home.path(), &[("TIDINGS_PROFILE", mode)]);
        // The table goes to stderr: stdout is still one JSON document.
        json_ok(&out);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("time per section, batch 2 beam 2"),
            "{mode}: {err}"
        );
        // The decoder ran: its sections were called, once per layer and step.
        let calls = |section: &str| -> u64 {
            let row = err
                .lines()
                .find(|l| l.starts_with(&format!("| {section} |")))
                .unwrap_or_else(|| panic!("{mode}: no {section} row in {err}"));
            row.split('|').nth(2).unwrap().trim().parse().unwrap()
        };
        assert!(calls("LmHead") > 0, "{err}");
        assert!(calls("SelfAttend") >= calls("LmHead"), "{err}");
    }
}
