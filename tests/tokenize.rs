//! Parity of `tidings::model::tokenize::MarianTokenizer` with Hugging Face `MarianTokenizer`, using
//! the committed fixtures in `tests/fixtures/marian-*` (each holds the tokenizer files and a
//! `reference.json` produced by transformers), plus robustness of the `.spm` reader.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use tidings::model::tokenize::sentencepiece_model::{ModelProto, ProtoError};
use tidings::model::tokenize::{MarianTokenizer, TokenizeError};

#[derive(Deserialize)]
struct DecodeCase {
    ids: Vec<u32>,
    #[serde(default)]
    text: Option<String>,
    /// Present when transformers raised instead of returning text.
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
struct Reference {
    inputs: Vec<String>,
    source_ids: Vec<Vec<u32>>,
    decode_cases: Vec<DecodeCase>,
}

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn fixture_dirs() -> Vec<PathBuf> {
    let root = manifest_dir().join("tests").join("fixtures");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| {
                    p.is_dir()
                        && p.file_name()
                            .and_then(|n| n.to_str())
                            .is_some_and(|n| n.starts_with("marian-"))
                        && p.join("reference.json").is_file()
                })
                .collect()
        })
        .unwrap_or_default();
    dirs.sort();
    dirs
}

fn load_reference(dir: &Path) -> Reference {
    let text = std::fs::read_to_string(dir.join("reference.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn seed_lines() -> Vec<String> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(manifest_dir().join("seeds"))
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "txt"))
        .collect();
    files.sort();
    files
        .iter()
        .flat_map(|f| {
            std::fs::read_to_string(f)
                .unwrap()
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn fixtures_exist() {
    assert!(
        !fixture_dirs().is_empty(),
        "no tests/fixtures/marian-*/reference.json found"
    );
}

#[test]
fn encode_matches_transformers_on_fixtures() {
    for dir in fixture_dirs() {
        let reference = load_reference(&dir);
        assert_eq!(reference.inputs.len(), reference.source_ids.len());
        let tok = MarianTokenizer::from_dir(&dir).unwrap();
        let mut failures = Vec::new();
        for (input, expected) in reference.inputs.iter().zip(&reference.source_ids) {
            let got = tok.encode(input).unwrap();
            if &got != expected {
                failures.push(format!(
                    "{input:?}\n  expected {expected:?}\n  got      {got:?}"
                ));
            }
        }
        assert!(
            failures.is_empty(),
            "{}: {} of {} inputs differ:\n{}",
            dir.display(),
            failures.len(),
            reference.inputs.len(),
            failures.join("\n")
        );
    }
}

#[test]
fn encode_batch_equals_encode() {
    for dir in fixture_dirs() {
        let reference = load_reference(&dir);
        let tok = MarianTokenizer::from_dir(&dir).unwrap();
        let texts: Vec<&str> = reference.inputs.iter().map(String::as_str).collect();
        let batch = tok.encode_batch(&texts).unwrap();
        assert_eq!(batch, reference.source_ids, "{}", dir.display());
    }
}

#[test]
fn decode_matches_transformers_on_fixtures() {
    for dir in fixture_dirs() {
        let reference = load_reference(&dir);
        let tok = MarianTokenizer::from_dir(&dir).unwrap();
        let mut failures = Vec::new();
        for case in &reference.decode_cases {
            let got = tok.decode(&case.ids);
            let ok = match (&got, &case.text, &case.error) {
                (Ok(text), Some(expected), None) => text == expected,
                (Err(TokenizeError::IdOutOfRange(_)), None, Some(_)) => true,
                _ => false,
            };
            if !ok {
                failures.push(format!(
                    "{:?}\n  expected {:?} / error {:?}\n  got      {:?}",
                    case.ids, case.text, case.error, got
                ));
            }
        }
        assert!(
            failures.is_empty(),
            "{}: {} of {} decode cases differ:\n{}",
            dir.display(),
            failures.len(),
            reference.decode_cases.len(),
            failures.join("\n")
        );
    }
}

#[test]
fn special_ids_come_from_the_vocabulary() {
    for dir in fixture_dirs() {
        let tok = MarianTokenizer::from_dir(&dir).unwrap();
        let vocab: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&std::fs::read_to_string(dir.join("vocab.json")).unwrap())
                .unwrap();
        let id = |t: &str| vocab.get(t).and_then(|v| v.as_u64()).map(|v| v as u32);
        assert_eq!(Some(tok.eos_id()), id("</s>"), "{}", dir.display());
        assert_eq!(Some(tok.unk_id()), id("<unk>"), "{}", dir.display());
        assert_eq!(Some(tok.pad_id()), id("<pad>"), "{}", dir.display());
        assert_eq!(tok.source_vocab_size(), vocab.len());
        assert!(tok.target_vocab_size() > 0);
        // Every encoding ends with </s>, even for empty input.
        assert_eq!(tok.encode("").unwrap(), vec![tok.eos_id()]);
        // Decoding only special ids gives the empty string.
        assert_eq!(tok.decode(&[tok.eos_id(), tok.pad_id()]).unwrap(), "");
    }
}

/// True when a fixture's tokenizer files only restate `MarianTokenizer`'s defaults
/// (the three special tokens, no extra or added tokens, no cleanup or splitting flags).
fn config_is_default(dir: &Path, config: &serde_json::Value) -> bool {
    let defaults = ["</s>", "<unk>", "<pad>"];
    let named_ok = ["eos_token", "unk_token", "pad_token"]
        .iter()
        .zip(["</s>", "<unk>", "<pad>"])
        .all(|(key, default)| config.get(key).is_none_or(|v| v.as_str() == Some(default)));
    let added_ok = config
        .get("added_tokens_decoder")
        .and_then(|v| v.as_object())
        .is_none_or(|o| {
            o.values().all(|t| {
                t.get("content")
                    .and_then(|c| c.as_str())
                    .is_some_and(|c| defaults.contains(&c))
            })
        });
    let no_extra = ["extra_special_tokens", "additional_special_tokens"]
        .iter()
        .all(|k| {
            config
                .get(k)
                .is_none_or(|v| v.as_array().is_some_and(|a| a.is_empty()))
        });
    let no_flags = ["clean_up_tokenization_spaces", "split_special_tokens"]
        .iter()
        .all(|k| config.get(k).and_then(|v| v.as_bool()) != Some(true));
    let legacy_ok = !dir.join("added_tokens.json").exists()
        && std::fs::read_to_string(dir.join("special_tokens_map.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .and_then(|v| {
                v.as_object()
                    .map(|o| o.keys().all(|k| k.ends_with("_token")))
            })
            .unwrap_or(true);
    named_ok && added_ok && no_extra && no_flags && legacy_ok
}

#[test]
fn from_files_agrees_with_from_dir() {
    let mut compared = 0;
    for dir in fixture_dirs() {
        let config: serde_json::Value = std::fs::read_to_string(dir.join("tokenizer_config.json"))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default();
        if !config_is_default(&dir, &config) {
            continue;
        }
        compared += 1;
        let separate = config
            .get("separate_vocabs")
            .and_then(|v| v.as_bool())
            .unwrap_or(false);
        let target_vocab = dir.join("target_vocab.json");
        let a = MarianTokenizer::from_files(
            &dir.join("source.spm"),
            &dir.join("target.spm"),
            &dir.join("vocab.json"),
            separate.then_some(target_vocab.as_path()),
            separate,
        )
        .unwrap();
        let b = MarianTokenizer::from_dir(&dir).unwrap();
        assert_eq!(a.eos_id(), b.eos_id());
        assert_eq!(a.pad_id(), b.pad_id());
        assert_eq!(a.target_vocab_size(), b.target_vocab_size());
        for line in seed_lines().iter().take(40) {
            let ids = b.encode(line).unwrap();
            assert_eq!(a.encode(line).unwrap(), ids);
            // Source ids may be out of range for a separate target vocabulary: then both
            // must fail alike.
            match (a.decode(&ids), b.decode(&ids)) {
                (Ok(x), Ok(y)) => assert_eq!(x, y),
                (Err(x), Err(y)) => assert_eq!(x.to_string(), y.to_string()),
                (x, y) => panic!("{x:?} vs {y:?}"),
            }
        }
    }
    assert!(compared > 0, "no fixture with a default configuration");
}

#[test]
fn tokenizers_pipeline_agrees_on_plain_text() {
    // The exported `tokenizers` pipeline segments ordinary text like sentencepiece.
    for dir in fixture_dirs() {
        let tok = MarianTokenizer::from_dir(&dir).unwrap();
        let pipeline = tok.source_tokenizer();
        for line in seed_lines() {
            let expected = tok.source_pieces(&line).unwrap();
            let enc = pipeline.encode(line.as_str(), false).unwrap();
            assert_eq!(
                expected.as_slice(),
                enc.get_tokens(),
                "{}: {line:?}",
                dir.display()
            );
        }
    }
}

#[test]
fn missing_files_and_bad_vocab_are_errors() {
    let Some(dir) = fixture_dirs().into_iter().next() else {
        panic!("no fixtures");
    };
    let tmp = tempfile::tempdir().unwrap();
    let err = MarianTokenizer::from_dir(tmp.path()).unwrap_err();
    assert!(matches!(err, TokenizeError::Io { .. }), "{err}");

    for f in ["source.spm", "target.spm"] {
        std::fs::copy(dir.join(f), tmp.path().join(f)).unwrap();
    }
    std::fs::write(tmp.path().join("vocab.json"), r#"{"</s>": 0, "<pad>": 1}"#).unwrap();
    let err = MarianTokenizer::from_dir(tmp.path()).unwrap_err();
    assert!(matches!(err, TokenizeError::MissingUnkToken(_)), "{err}");

    std::fs::write(tmp.path().join("vocab.json"), r#"{"<unk>": -1}"#).unwrap();
    let err = MarianTokenizer::from_dir(tmp.path()).unwrap_err();
    assert!(matches!(err, TokenizeError::InvalidVocab { .. }), "{err}");

    std::fs::write(tmp.path().join("vocab.json"), r#"["<unk>"]"#).unwrap();
    let err = MarianTokenizer::from_dir(tmp.path()).unwrap_err();
    assert!(matches!(err, TokenizeError::InvalidVocab { .. }), "{err}");

    std::fs::write(
        tmp.path().join("vocab.json"),
        r#"{"<unk>": 0, "</s>": 1, "<pad>": 2}"#,
    )
    .unwrap();
    std::fs::write(tmp.path().join("source.spm"), b"\x0a\x05ab").unwrap();
    let err = MarianTokenizer::from_dir(tmp.path()).unwrap_err();
    assert!(matches!(err, TokenizeError::Protobuf { .. }), "{err}");

    // A structurally valid proto without an unknown piece is rejected like sentencepiece does.
    std::fs::write(tmp.path().join("source.spm"), b"\x0a\x05\x0a\x03abc").unwrap();
    let err = MarianTokenizer::from_dir(tmp.path()).unwrap_err();
    assert!(matches!(err, TokenizeError::InvalidModel { .. }), "{err}");

    std::fs::copy(dir.join("source.spm"), tmp.path().join("source.spm")).unwrap();
    std::fs::write(
        tmp.path().join("tokenizer_config.json"),
        r#"{"separate_vocabs": true}"#,
    )
    .unwrap();
    let err = MarianTokenizer::from_dir(tmp.path()).unwrap_err();
    assert!(matches!(err, TokenizeError::MissingTargetVocab), "{err}");
}

#[test]
fn protobuf_reader_rejects_malformed_bytes() {
    // Truncated varint (continuation bit set on the last byte).
    assert!(matches!(
        ModelProto::parse(&[0x0a, 0x80]),
        Err(ProtoError::TruncatedVarint(_))
    ));
    assert!(matches!(
        ModelProto::parse(&[0x80]),
        Err(ProtoError::TruncatedVarint(_))
    ));
    // Varint longer than ten bytes.
    assert!(matches!(
        ModelProto::parse(&[0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]),
        Err(ProtoError::VarintOverflow(_))
    ));
    // Length-delimited field longer than the buffer, including a huge length.
    assert!(matches!(
        ModelProto::parse(&[0x0a, 0x05, 0x01]),
        Err(ProtoError::PastEnd { .. })
    ));
    assert!(matches!(
        ModelProto::parse(&[0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f]),
        Err(ProtoError::PastEnd { .. })
    ));
    // Nested message truncated inside.
    assert!(ModelProto::parse(&[0x0a, 0x03, 0x0a, 0x05, 0x41]).is_err());
    // Fixed32 score cut short.
    assert!(ModelProto::parse(&[0x0a, 0x03, 0x15, 0x00, 0x00]).is_err());
    // Wire types 6 and 7 do not exist; field number 0 is invalid.
    assert!(matches!(
        ModelProto::parse(&[0x0e]),
        Err(ProtoError::InvalidWireType { .. })
    ));
    assert!(matches!(
        ModelProto::parse(&[0x02, 0x00]),
        Err(ProtoError::InvalidFieldNumber(_))
    ));
    // Stray end-group.
    assert!(matches!(
        ModelProto::parse(&[0x0c]),
        Err(ProtoError::UnbalancedGroup(_))
    ));
    // Non-UTF-8 piece text.
    assert!(matches!(
        ModelProto::parse(&[0x0a, 0x03, 0x0a, 0x01, 0xff]),
        Err(ProtoError::InvalidUtf8 { .. })
    ));
    // Empty input is an empty (default) message.
    let empty = ModelProto::parse(&[]).unwrap();
    assert!(empty.pieces.is_empty());
    assert!(empty.normalizer_spec.add_dummy_prefix);
}

#[test]
fn protobuf_reader_never_panics_on_damaged_models() {
    let Some(dir) = fixture_dirs().into_iter().next() else {
        panic!("no fixtures");
    };
    let bytes = std::fs::read(dir.join("source.spm")).unwrap();
    let full = ModelProto::parse(&bytes).unwrap();
    assert!(!full.pieces.is_empty());
    assert!(!full.normalizer_spec.precompiled_charsmap.is_empty());

    // Every truncation point: parsing must return (mostly Err), never panic.
    let step = (bytes.len() / 2000).max(1);
    let mut errors = 0;
    for cut in (0..bytes.len()).step_by(step) {
        if ModelProto::parse(&bytes[..cut]).is_err() {
            errors += 1;
        }
    }
    assert!(errors > 0);

    // Deterministic pseudo-random byte corruption, then a full load and encode/decode.
    let tmp = tempfile::tempdir().unwrap();
    for f in ["target.spm", "vocab.json"] {
        std::fs::copy(dir.join(f), tmp.path().join(f)).unwrap();
    }
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..150 {
        let mut damaged = bytes.clone();
        for _ in 0..(1 + next() % 8) {
            let i = (next() % damaged.len() as u64) as usize;
            damaged[i] = next() as u8;
        }
        std::fs::write(tmp.path().join("source.spm"), &damaged).unwrap();
        if let Ok(tok) = MarianTokenizer::from_dir(tmp.path()) {
            for text in ["Ein Test, ﬁ ① ＡＢ é 😀😀 각 ｶﾞ", "", "  x  "] {
                let _ = tok.encode(text);
            }
            let _ = tok.decode(&[3, 4, 5, 6]);
            let _ = tok.source_tokenizer().encode("Ein Test ﬁ ｶﾞ", false);
        }
    }
}

/// Prints load time and encode throughput on the seed sentences; run with
/// `cargo test --release --test tokenize -- --ignored --nocapture`.
#[test]
#[ignore = "measurement, not a check"]
fn encode_throughput() {
    let lines = seed_lines();
    let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
    for dir in fixture_dirs() {
        let start = std::time::Instant::now();
        let tok = MarianTokenizer::from_dir(&dir).unwrap();
        let load = start.elapsed();
        let rounds = 200;
        let start = std::time::Instant::now();
        let mut tokens = 0usize;
        for _ in 0..rounds {
            for ids in tok.encode_batch(&refs).unwrap() {
                tokens += ids.len();
            }
        }
        let secs = start.elapsed().as_secs_f64();
        let sentences = (rounds * refs.len()) as f64;
        let ids = tok.encode_batch(&refs).unwrap();
        let start = std::time::Instant::now();
        for _ in 0..rounds {
            for i in &ids {
                let _ = std::hint::black_box(tok.decode(i));
            }
        }
        let dsecs = start.elapsed().as_secs_f64();
        println!(
            "{}: load {:.1} ms, encode {:.0} sentences/s ({:.0} tokens/s), decode {:.0} sentences/s",
            dir.file_name().unwrap().to_string_lossy(),
            load.as_secs_f64() * 1e3,
            sentences / secs,
            tokens as f64 / secs,
            sentences / dsecs
        );
    }
}

#[test]
fn tokenizer_is_shareable_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<MarianTokenizer>();
    let Some(dir) = fixture_dirs().into_iter().next() else {
        panic!("no fixtures");
    };
    let tok = MarianTokenizer::from_dir(&dir).unwrap();
    let lines = seed_lines();
    let expected: Vec<Vec<u32>> = lines.iter().map(|l| tok.encode(l).unwrap()).collect();
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                for (line, ids) in lines.iter().zip(&expected) {
                    assert_eq!(&tok.encode(line).unwrap(), ids);
                }
            });
        }
    });
}

#[test]
fn special_tokens_language_codes_and_unknown_runs() {
    let mut saw_code = false;
    for dir in fixture_dirs() {
        let tok = MarianTokenizer::from_dir(&dir).unwrap();
        let vocab: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&std::fs::read_to_string(dir.join("vocab.json")).unwrap())
                .unwrap();
        let eos = tok.eos_id();
        let body = |text: &str| {
            let mut ids = tok.encode(text).unwrap();
            assert_eq!(ids.pop(), Some(eos));
            ids
        };

        // A literal </s> is cut out before sentencepiece; both sides are encoded alone.
        let mut expected = body("Die Sitzung");
        expected.push(eos);
        expected.extend(body("beginnt"));
        assert_eq!(
            body("Die Sitzung</s>beginnt"),
            expected,
            "{}",
            dir.display()
        );

        // A run of unknown characters is one unknown piece.
        assert_eq!(body("x 😀😀😀"), body("x 😀"), "{}", dir.display());
        assert!(body("x 😀").contains(&tok.unk_id()));

        // A leading >>code<< is one token; elsewhere it is ordinary text.
        if let Some(code) = vocab.get(">>deu<<").and_then(|v| v.as_u64()) {
            saw_code = true;
            let code = code as u32;
            let ids = body(">>deu<< Die Sitzung");
            assert_eq!(ids[0], code);
            assert_eq!(ids[1..], body("Die Sitzung")[..]);
            assert!(!body("Die >>deu<< Sitzung").contains(&code));
        }
    }
    assert!(saw_code, "no fixture vocabulary has >>deu<<");
}
