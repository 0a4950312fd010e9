//! The `tidings` binary, run as a user would run it.

use std::path::{Path, PathBuf};
use std::process::Output;

#[path = "support/cli_run.rs"]
mod cli_run;
#[path = "support/minilm.rs"]
mod minilm;
use cli_run::{fixture, tidings};
use minilm::minilm_dir;
use serde::Deserialize;

#[derive(Deserialize)]
struct Generated {
    max_new_tokens: usize,
    alone: Vec<Vec<u32>>,
}

#[derive(Deserialize)]
struct Reference {
    inputs: Vec<String>,
    source_ids: Vec<Vec<u32>>,
    greedy: Generated,
    beam4: Generated,
}

#[derive(Deserialize)]
struct Line {
    text: String,
    source_token_ids: Vec<u32>,
    token_ids: Vec<u32>,
}

/// The JSON lines of a successful `translate --json` run.
fn json_lines(out: Output) -> Vec<Line> {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The reference inputs that fit on one line (blank ones and ones spanning lines can't be given
/// one per line), and the stdin that gives them.
fn one_line_inputs(r: &Reference) -> (Vec<usize>, String) {
    let picked: Vec<usize> = (0..r.inputs.len())
        .filter(|&i| !r.inputs[i].trim().is_empty() && !r.inputs[i].contains(['\n', '\r']))
        .collect();
    let stdin = picked
        .iter()
        .map(|&i| format!("{}\n", r.inputs[i]))
        .collect();
    (picked, stdin)
}

#[test]
fn translate_json_ids_equal_transformers() {
    let home = tempfile::tempdir().unwrap();
    for name in ["marian-tiny-swish", "marian-tiny-relu", "marian-tiny-sep"] {
        let dir = fixture(name);
        let r: Reference =
            serde_json::from_slice(&std::fs::read(dir.join("reference.json")).unwrap()).unwrap();
        let (picked, stdin) = one_line_inputs(&r);
        for (beam, g) in [("1", &r.greedy), ("4", &r.beam4)] {
            let max = g.max_new_tokens.to_string();
            let out = tidings(
                &[
                    "translate",
                    "--model",
                    dir.to_str().unwrap(),
                    "--beam",
                    beam,
                    "--max-new-tokens",
                    &max,
                    "--batch-size",
                    "4",
                    "--json",
                    "--device",
                    "cpu",
                ],
                &stdin,
                home.path(),
            );
            let lines = json_lines(out);
            assert_eq!(
                lines.len(),
                picked.len(),
                "{name}: one output line per input line"
            );
            for (line, &i) in lines.iter().zip(&picked) {
                assert_eq!(line.source_token_ids, r.source_ids[i], "{name} input {i}");
                assert_eq!(line.token_ids, g.alone[i], "{name} beam {beam} input {i}");
                assert!(!line.text.contains('\n'));
            }
        }
    }
}

#[test]
fn compute_type_int8_reaches_the_model_and_bad_types_are_refused() {
    use tidings::model::hub::{HubOptions, ModelRepo, ModelSource};
    use tidings::model::marian::{ComputeType, TranslateOptions, Translator};
    let home = tempfile::tempdir().unwrap();
    let dir = fixture("marian-tiny-swish");
    let r: Reference =
        serde_json::from_slice(&std::fs::read(dir.join("reference.json")).unwrap()).unwrap();
    let (picked, stdin) = one_line_inputs(&r);
    let max = r.greedy.max_new_tokens.to_string();
    let args = [
        "translate",
        "--model",
        dir.to_str().unwrap(),
        "--beam",
        "1",
        "--max-new-tokens",
        &max,
        "--json",
        "--device",
        "cpu",
        "--compute-type",
        "int8",
    ];
    let lines = json_lines(tidings(&args, &stdin, home.path()));
    // The same as the library's int8 model, and not simply the f32 output.
    let repo = ModelRepo::open(
        ModelSource::parse(dir.to_str().unwrap(), None).unwrap(),
        &HubOptions::default(),
    )
    .unwrap();
    let int8 = Translator::load_with(&repo, &candle_core::Device::Cpu, ComputeType::Int8).unwrap();
    let gen = int8.generation_config(&TranslateOptions {
        num_beams: Some(1),
        max_new_tokens: Some(r.greedy.max_new_tokens),
        batch_size: 1,
    });
    let mut differs_from_f32 = 0;
    for (line, &i) in lines.iter().zip(&picked) {
        let want = int8
            .generate_batch(std::slice::from_ref(&r.source_ids[i]), &gen)
            .unwrap();
        assert_eq!(line.token_ids, want[0], "input {i}");
        differs_from_f32 += usize::from(line.token_ids != r.greedy.alone[i]);
    }
    assert_eq!(lines.len(), picked.len());
    assert!(
        differs_from_f32 > 0,
        "int8 output equals f32 everywhere: was it used?"
    );
    fails_with(
        &[
            "translate",
            "--model",
            dir.to_str().unwrap(),
            "--compute-type",
            "int4",
        ],
        "Hallo\n",
        &["int4", "expected f32, int8, f16, bf16 or auto"],
    );
    // Half precision is for GPUs: on the CPU it is refused, saying what to use instead.
    fails_with(
        &[
            "translate",
            "--device",
            "cpu",
            "--model",
            dir.to_str().unwrap(),
            "--compute-type",
            "bf16",
        ],
        "Hallo\n",
        &["bf16 runs on a GPU only", "f32"],
    );
}

#[test]
fn plain_output_keeps_line_count_and_blank_lines() {
    let home = tempfile::tempdir().unwrap();
    let dir = fixture("marian-tiny-swish");
    let out = tidings(
        &[
            "translate",
            "--model",
            dir.to_str().unwrap(),
            "--max-new-tokens",
            "5",
            "-",
        ],
        "Guten Morgen.\n\nPraha, 23. října.\n",
        home.path(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text:?}");
    assert_eq!(lines[1], "");
}

fn fails_with(args: &[&str], stdin: &str, needles: &[&str]) {
    let home = tempfile::tempdir().unwrap();
    let out = tidings(args, stdin, home.path());
    assert!(!out.status.success(), "{args:?} should fail");
    let err = String::from_utf8_lossy(&out.stderr);
    for n in needles {
        assert!(err.contains(n), "{args:?}: stderr lacks {n:?}:\n{err}");
    }
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn unknown_language_lists_supported_ones() {
    // With no fallback in the user's manifest the error must list what is supported.
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("m.toml");
    std::fs::write(
        &manifest,
        "[[model]]\nlang = \"mul\"\nrepo = \"x/y\"\nfallback = false\n",
    )
    .unwrap();
    // The built-in fallback is replaced by a non-fallback "mul" entry.
    fails_with(
        &[
            "translate",
            "--from",
            "xx",
            "--manifest",
            manifest.to_str().unwrap(),
            "-",
        ],
        "hello\n",
        &["\"xx\"", "de", "ru", "cs"],
    );
}

#[test]
fn offline_miss_names_the_file_and_how_to_fetch_it() {
    fails_with(
        &["translate", "--from", "de", "--offline", "-"],
        "Hallo\n",
        &[
            "Helsinki-NLP/opus-mt-de-en",
            "config.json",
            "tidings models download",
        ],
    );
}

#[test]
fn unreadable_and_non_utf8_input_are_clear_errors() {
    let dir = fixture("marian-tiny-swish");
    fails_with(
        &[
            "translate",
            "--model",
            dir.to_str().unwrap(),
            "/no/such/file.txt",
        ],
        "",
        &["/no/such/file.txt"],
    );
    let bad = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(bad.path(), b"ok line\n\xff\xfe broken\n").unwrap();
    fails_with(
        &[
            "translate",
            "--model",
            dir.to_str().unwrap(),
            bad.path().to_str().unwrap(),
        ],
        "",
        &["line 2", "UTF-8"],
    );
}

#[test]
fn missing_model_folder_and_missing_flags_are_clear_errors() {
    fails_with(&["translate", "-"], "x\n", &["--from", "--model"]);
    let empty = tempfile::tempdir().unwrap();
    fails_with(
        &["translate", "--model", empty.path().to_str().unwrap(), "-"],
        "x\n",
        &["config.json"],
    );
}

#[test]
fn models_list_json_is_scriptable() {
    let home = tempfile::tempdir().unwrap();
    let out = tidings(&["models", "list", "--json"], "", home.path());
    assert!(out.status.success());
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert!(rows
        .iter()
        .any(|r| r["lang"] == "cs" && r["repo"] == "Helsinki-NLP/opus-mt-cs-en"));
    assert!(rows.iter().any(|r| r["fallback"] == true));
}

#[test]
fn inspect_json_removes_furniture_and_keeps_ordinal_dates() {
    let home = tempfile::tempdir().unwrap();
    let page = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds/000_074045f7313b7a51.txt");
    let out = tidings(
        &["inspect", page.to_str().unwrap(), "--json"],
        "",
        home.path(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["lang"], "de");
    let sentences: Vec<String> = v["paragraphs"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["sentences"].as_array().unwrap().iter())
        .map(|s| {
            s["text"]
                .as_str()
                .unwrap_or_else(|| s.as_str().unwrap())
                .to_string()
        })
        .collect();
    assert!(
        sentences.iter().any(|s| s.contains("22. Mai traf sich")),
        "{sentences:?}"
    );
    for furniture in ["[Anzeige_2]", "Quellenlink", "Kommentar (0)"] {
        assert!(
            !sentences.iter().any(|s| s.contains(furniture)),
            "{furniture} kept"
        );
        assert!(v["removed"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["text"] == furniture));
    }
}

#[test]
fn embed_json_gives_unit_vectors_of_the_model_dimension() {
    let home = tempfile::tempdir().unwrap();
    let dir = minilm_dir();
    let out = tidings(
        &[
            "embed",
            "--model",
            dir.to_str().unwrap(),
            "--json",
            "--offline",
        ],
        "The central bank raised rates.\nPrague hosts the summit.\n",
        home.path(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<Vec<f32>> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 2);
    for r in rows {
        assert_eq!(r.len(), 384);
        assert!((r.iter().map(|x| x * x).sum::<f32>() - 1.0).abs() < 1e-4);
    }
}

/// A manifest whose German model is one tiny fixture and whose fallback is another: nothing is
/// downloaded, and which of the two translated is visible in the output.
fn fixture_manifest(dir: &Path) -> PathBuf {
    let path = dir.join("fixture-manifest.toml");
    let de = fixture("marian-tiny-swish");
    let mul = fixture("marian-tiny-relu");
    std::fs::write(
        &path,
        format!(
            "[[model]]\nlang = \"de\"\nrepo = {:?}\n\n[[model]]\nlang = \"mul\"\nrepo = {:?}\nfallback = true\n",
            de.to_str().unwrap(),
            mul.to_str().unwrap()
        ),
    )
    .unwrap();
    path
}

/// `translate` with the fixture manifest: (success, stdout, stderr).
fn translate_with_fixtures(extra: &[&str], stdin: &str) -> (bool, String, String) {
    let home = tempfile::tempdir().unwrap();
    let manifest = fixture_manifest(home.path());
    let mut args = vec![
        "translate",
        "--manifest",
        manifest.to_str().unwrap(),
        "--offline",
        "--device",
        "cpu",
    ];
    args.extend_from_slice(extra);
    args.push("-");
    let out = tidings(&args, stdin, home.path());
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn malformed_from_values_are_errors_that_list_the_languages() {
    // Each of these used to go, silently, to the mul-en fallback model.
    for bad in ["german", "", "de,ru", "d3"] {
        fails_with(
            &["translate", "--from", bad, "--offline", "-"],
            "Hallo\n",
            &[
                "--from",
                "is not a language code",
                "ISO 639-1 or 639-3",
                "or auto",
                "cs, de",
            ],
        );
    }
    fails_with(
        &["align", "--model", "german=org/x", "/no/such/input"],
        "",
        &["--model german=org/x", "is not a language code"],
    );
}

#[test]
fn from_takes_either_iso_standard_in_any_case() {
    let text = "Der Bundestag hat am 22. Mai über das Gesetz abgestimmt.\n";
    let (ok, want, err) = translate_with_fixtures(&["--from", "de"], text);
    assert!(ok, "{err}");
    assert!(!err.contains("fallback"), "{err}");
    for from in ["DE", "deu", "ger", "de-AT", "De_de"] {
        let (ok, got, err) = translate_with_fixtures(&["--from", from], text);
        assert!(ok, "{from}: {err}");
        assert_eq!(got, want, "--from {from} must pick the German model");
        assert!(!err.contains("fallback"), "{from}: {err}");
    }
}

#[test]
fn from_en_passes_english_through_without_a_model() {
    let home = tempfile::tempdir().unwrap();
    let text = "Leaders met in Prague on Monday.\n\nMarkets fell.\n";
    for from in ["en", "EN", "eng"] {
        // No manifest, offline, empty cache: any model load would fail.
        let out = tidings(
            &["translate", "--from", from, "--offline", "-"],
            text,
            home.path(),
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{from}: {err}");
        assert_eq!(String::from_utf8_lossy(&out.stdout), text);
    }
}

#[test]
fn the_fallback_model_is_used_with_a_notice() {
    let text = "안녕하세요\n";
    let (ok, out, err) = translate_with_fixtures(&["--from", "ko"], text);
    assert!(ok, "{err}");
    assert_eq!(out.lines().count(), 1);
    assert!(
        err.contains("no model of its own for \"ko\"")
            && err.contains("fallback")
            && err.contains("marian-tiny-relu"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "one line of notice: {err}");
    // The same model as asking for it by name.
    let home = tempfile::tempdir().unwrap();
    let relu = fixture("marian-tiny-relu");
    let direct = tidings(
        &[
            "translate",
            "--model",
            relu.to_str().unwrap(),
            "--device",
            "cpu",
            "-",
        ],
        text,
        home.path(),
    );
    assert_eq!(String::from_utf8_lossy(&direct.stdout), out);
    // 639-3 codes without a 639-1 code are well-formed and go to the fallback too.
    let (ok, _, err) = translate_with_fixtures(&["--from", "gsw"], "Grüezi\n");
    assert!(
        ok && err.contains("\"gsw\"") && err.contains("fallback"),
        "{err}"
    );
}

#[test]
fn from_auto_detects_reliable_input_and_refuses_a_guess() {
    let text = "Der Bundestag hat am 22. Mai über das Gesetz abgestimmt.\nDie Opposition kritisierte den Entwurf scharf.\n";
    let (ok, want, err) = translate_with_fixtures(&["--from", "de"], text);
    assert!(ok, "{err}");
    for from in ["auto", "AUTO"] {
        let (ok, got, err) = translate_with_fixtures(&["--from", from], text);
        assert!(ok, "{err}");
        assert_eq!(got, want);
        assert!(err.contains("the input is de"), "{err}");
    }
    // Detected as French (confidence 0.145) by the trigram profiles: a guess, not an answer.
    let (ok, out, err) =
        translate_with_fixtures(&["--from", "auto"], "Leaders met in Prague on Monday.\n");
    assert!(!ok, "{out}");
    assert!(
        err.contains("cannot tell the language of the input reliably")
            && err.contains("--from LANG"),
        "{err}"
    );
}

#[test]
fn align_says_which_languages_go_to_the_fallback_model() {
    let home = tempfile::tempdir().unwrap();
    let manifest = fixture_manifest(home.path());
    let input = home.path().join("in.jsonl");
    std::fs::write(
        &input,
        concat!(
            "{\"id\": \"a\", \"lang\": \"DEU\", \"text\": \"Der Bundestag hat am 22. Mai über das Gesetz abgestimmt.\"}\n",
            "{\"id\": \"b\", \"lang\": \"ko\", \"text\": \"서울에서 정상회담이 열렸다.\"}\n"
        ),
    )
    .unwrap();
    let store = home.path().join("store.sqlite");
    let out = tidings(
        &[
            "align",
            input.to_str().unwrap(),
            "--manifest",
            manifest.to_str().unwrap(),
            "--embed-model",
            minilm_dir().to_str().unwrap(),
            "--store",
            store.to_str().unwrap(),
            "--device",
            "cpu",
            "--offline",
        ],
        "",
        home.path(),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("no model of its own for \"ko\" (1 article); using the fallback model")
            && err.contains("marian-tiny-relu"),
        "{err}"
    );
    assert!(!err.contains("\"de\""), "German has its own model: {err}");
}

/// Fails at once (well under a second: nothing is read, loaded or downloaded) with `needle`.
fn refused_before_any_work(args: &[&str], needle: &str) {
    let home = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    // The input and models do not exist: anything past option checking would fail otherwise.
    let out = tidings(args, "", home.path());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{args:?} should fail");
    assert!(
        err.contains(needle),
        "{args:?}: stderr lacks {needle:?}:\n{err}"
    );
    assert!(
        !err.contains("/no/such") && !err.contains("config.json") && !err.contains("cannot"),
        "{args:?}: refused for something else than the option:\n{err}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
}

#[test]
fn numeric_options_share_one_range_checked_before_any_work() {
    let model = ["--model", "org/does-not-exist", "/no/such/input.txt"];
    let align = [
        "align",
        "/no/such/folder",
        "--embed-model",
        "/no/such/minilm",
    ];
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--beam", "0"],
            "--beam must be between 1 and 16, not 0",
        ),
        (
            vec!["--beam", "1000"],
            "--beam must be between 1 and 16, not 1000",
        ),
        (
            vec!["--batch-size", "0"],
            "--batch-size must be between 1 and 1024, not 0",
        ),
    ];
    for (opt, needle) in &cases {
        let mut t = vec!["translate"];
        t.extend_from_slice(&model);
        t.extend_from_slice(opt);
        refused_before_any_work(&t, needle);
        let mut a = align.to_vec();
        a.extend_from_slice(opt);
        refused_before_any_work(&a, needle);
    }
    let mut a = align.to_vec();
    a.extend_from_slice(&["--max-days-apart", "-1"]);
    refused_before_any_work(&a, "--max-days-apart must be between 0 and 36500, not -1");
    let mut a = align.to_vec();
    a.extend_from_slice(&["--threshold", "2"]);
    refused_before_any_work(&a, "--threshold must be between -1 and 1, not 2");
    refused_before_any_work(
        &[
            "translate",
            "--max-new-tokens",
            "0",
            "--from",
            "de",
            "/no/such/input.txt",
        ],
        "--max-new-tokens must be between 1 and 4096, not 0",
    );
    refused_before_any_work(
        &[
            "embed",
            "--batch-size",
            "0",
            "--model",
            "/no/such/minilm",
            "/no/such/input.txt",
        ],
        "--batch-size must be between 1 and 1024, not 0",
    );
    refused_before_any_work(
        &[
            "bench",
            "--random-weights",
            "opus-mt-base",
            "--beams",
            "1,1000",
        ],
        "--beams must be between 1 and 16, not 1000",
    );
}
