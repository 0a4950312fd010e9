//! Sentence embeddings against sentence-transformers' own output.
//!
//! The real all-MiniLM-L6-v2 is not in the repo (90 MB): `scripts/fetch-minilm.sh` puts it at
//! `.cache/models/all-MiniLM-L6-v2` (or `$TIDINGS_MINILM_DIR`). Its reference vectors, token ids
//! and batch were written by `scripts/make_embed_fixtures.py` into
//! `tests/fixtures/embed/reference.json`. The tiny random XLM-R model in
//! `tests/fixtures/embed/tiny-xlmr` is small enough to live in the repo.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use candle_core::Device;
use serde::Deserialize;
#[path = "support/minilm.rs"]
mod minilm;
use minilm::minilm_dir;
use tidings::model::embed::{EmbedError, Embedder};
use tidings::model::hub::{HubOptions, ModelRepo, ModelSource};

#[derive(Deserialize)]
struct Reference {
    max_seq_length: usize,
    dim: usize,
    texts: Vec<TextRef>,
    batch: BatchRef,
    long: Option<LongRef>,
}

#[derive(Deserialize)]
struct TextRef {
    text: String,
    ids: Vec<u32>,
    untruncated_len: usize,
    embedding: Vec<f32>,
}

#[derive(Deserialize)]
struct BatchRef {
    indices: Vec<usize>,
    batch_size: usize,
    embeddings: Vec<Vec<f32>>,
}

#[derive(Deserialize)]
struct LongRef {
    index: usize,
    chunk_lens: Vec<usize>,
    embedding: Vec<f32>,
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/embed")
}

fn open(dir: &Path) -> ModelRepo {
    ModelRepo::open(
        ModelSource::Local(dir.to_path_buf()),
        &HubOptions::default(),
    )
    .expect("open model folder")
}

fn load(dir: &Path) -> Result<Embedder, EmbedError> {
    Embedder::load(&open(dir), &Device::Cpu)
}

fn read_reference(path: &Path) -> Reference {
    let text = std::fs::read_to_string(path).expect("read reference.json");
    serde_json::from_str(&text).expect("parse reference.json")
}

/// The MiniLM model and its reference, loaded once for all tests of this binary.
fn minilm() -> &'static (Embedder, Reference) {
    static MODEL: OnceLock<(Embedder, Reference)> = OnceLock::new();
    MODEL.get_or_init(|| {
        let model = load(&minilm_dir()).expect("load all-MiniLM-L6-v2");
        (model, read_reference(&fixtures().join("reference.json")))
    })
}

fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| f64::from(*x) * f64::from(*y))
        .sum()
}

fn norm(a: &[f32]) -> f64 {
    dot(a, a).sqrt()
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len(), "vector lengths differ");
    dot(a, b) / (norm(a) * norm(b)).max(1e-30)
}

fn texts(reference: &Reference) -> Vec<&str> {
    reference.texts.iter().map(|t| t.text.as_str()).collect()
}

#[test]
fn minilm_shape_and_limits_match_sentence_transformers() {
    let (model, reference) = minilm();
    assert_eq!(model.dim(), reference.dim);
    assert_eq!(model.max_seq_length(), reference.max_seq_length);
}

#[test]
fn token_ids_match_sentence_transformers() {
    let (model, reference) = minilm();
    for t in &reference.texts {
        let ids = model.token_ids(&t.text).unwrap();
        assert_eq!(ids, t.ids, "token ids of {:?}", t.text);
        assert!(ids.len() <= model.max_seq_length());
    }
    assert!(
        reference
            .texts
            .iter()
            .any(|t| t.untruncated_len > reference.max_seq_length),
        "the reference must include a text longer than max_seq_length"
    );
}

#[test]
fn each_text_alone_matches_sentence_transformers() {
    let (model, reference) = minilm();
    for t in &reference.texts {
        let got = model.embed(&[t.text.as_str()], 1).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].len(), reference.dim);
        let cos = cosine(&got[0], &t.embedding);
        assert!(cos >= 0.9999, "cosine {cos} for {:?}", t.text);
        // all-MiniLM-L6-v2 ends with a Normalize module.
        assert!((norm(&got[0]) - 1.0).abs() < 1e-5, "norm of {:?}", t.text);
    }
}

#[test]
fn reference_batch_matches_sentence_transformers() {
    let (model, reference) = minilm();
    let all = texts(reference);
    let batch: Vec<&str> = reference.batch.indices.iter().map(|&i| all[i]).collect();
    let got = model.embed(&batch, reference.batch.batch_size).unwrap();
    assert_eq!(got.len(), batch.len());
    for ((v, want), text) in got.iter().zip(&reference.batch.embeddings).zip(&batch) {
        let cos = cosine(v, want);
        assert!(cos >= 0.9999, "cosine {cos} for {text:?} in the batch");
    }
}

#[test]
fn a_text_inside_a_batch_equals_the_text_alone() {
    let (model, reference) = minilm();
    let all = texts(reference);
    // Every text in one call, in several batch sizes: sorting by length must not reorder the
    // output, and padding next to longer texts must not change a vector.
    for batch_size in [3, 5, all.len()] {
        let batched = model.embed(&all, batch_size).unwrap();
        assert_eq!(batched.len(), all.len());
        for (i, text) in all.iter().enumerate() {
            let alone = model.embed(&[text], 1).unwrap();
            let cos = cosine(&batched[i], &alone[0]);
            assert!(
                cos >= 0.99999,
                "cosine {cos} for {text:?} at batch size {batch_size}"
            );
            let cos_ref = cosine(&batched[i], &reference.texts[i].embedding);
            assert!(
                cos_ref >= 0.9999,
                "cosine {cos_ref} to the reference for {text:?}"
            );
        }
    }
}

#[test]
fn empty_inputs_do_not_panic() {
    let (model, reference) = minilm();
    assert!(model.embed(&[], 4).unwrap().is_empty());
    let empty = reference.texts.iter().find(|t| t.text.is_empty()).unwrap();
    let got = model.embed(&["", "x"], 2).unwrap();
    assert!(cosine(&got[0], &empty.embedding) >= 0.9999);
    let long = model.embed_long("").unwrap();
    assert!((norm(&long) - 1.0).abs() < 1e-5);
    assert!(matches!(model.embed(&["x"], 0), Err(EmbedError::Input(_))));
}

#[test]
fn embed_long_pools_chunks_of_the_whole_text() {
    let (model, reference) = minilm();
    let long_ref = reference.long.as_ref().expect("reference has a long text");
    let text = &reference.texts[long_ref.index];
    assert!(text.untruncated_len > model.max_seq_length());
    assert!(long_ref.chunk_lens.len() > 1);

    let long = model.embed_long(&text.text).unwrap();
    assert_eq!(long.len(), model.dim());
    assert!(
        (norm(&long) - 1.0).abs() < 1e-5,
        "embed_long is not unit-norm"
    );
    let truncated = model.embed(&[text.text.as_str()], 1).unwrap().remove(0);
    let to_truncated = cosine(&long, &truncated);
    assert!(
        to_truncated < 0.999,
        "embed_long equals the truncated embedding (cosine {to_truncated})"
    );
    let to_ref = cosine(&long, &long_ref.embedding);
    assert!(to_ref >= 0.9999, "cosine {to_ref} to the chunked reference");

    // A text that fits in one chunk embeds as `embed` does.
    let short = &reference.texts[0];
    let one = model.embed_long(&short.text).unwrap();
    assert!(cosine(&one, &short.embedding) >= 0.9999);
}

// ---- broken model folders -------------------------------------------------------------------

/// A copy of the MiniLM folder with `model.safetensors` linked rather than copied; `edit`
/// then breaks it.
fn broken_minilm(edit: impl FnOnce(&Path)) -> tempfile::TempDir {
    let src = minilm_dir();
    let dir = tempfile::tempdir().unwrap();
    for file in [
        "config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "modules.json",
        "sentence_bert_config.json",
        "1_Pooling/config.json",
    ] {
        let to = dir.path().join(file);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(src.join(file), &to).unwrap();
    }
    let weights = dir.path().join("model.safetensors");
    #[cfg(unix)]
    let linked = std::os::unix::fs::symlink(src.join("model.safetensors"), &weights).is_ok();
    #[cfg(not(unix))]
    let linked = false;
    if !linked {
        std::fs::copy(src.join("model.safetensors"), &weights).unwrap();
    }
    edit(dir.path());
    dir
}

fn load_err(dir: &Path) -> EmbedError {
    match load(dir) {
        Ok(_) => panic!("a broken model folder loaded"),
        Err(e) => e,
    }
}

#[test]
fn intact_copy_loads() {
    // The baseline for the tests below: the copy itself is fine.
    let dir = broken_minilm(|_| {});
    let model = load(dir.path()).unwrap();
    assert_eq!(model.dim(), 384);
}

#[test]
fn malformed_config_json_is_a_clear_error() {
    let dir =
        broken_minilm(|d| std::fs::write(d.join("config.json"), "{\"model_type\": ").unwrap());
    let err = load_err(dir.path());
    assert!(matches!(err, EmbedError::Config { .. }), "{err:?}");
    assert!(err.to_string().contains("config.json"), "{err}");
}

#[test]
fn unsupported_model_type_is_named() {
    let dir = broken_minilm(|d| {
        let path = d.join("config.json");
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, text.replace("\"bert\"", "\"gpt2\"")).unwrap();
    });
    let err = load_err(dir.path());
    assert!(err.to_string().contains("gpt2"), "{err}");
}

#[test]
fn missing_pooling_config_is_a_clear_error() {
    let dir = broken_minilm(|d| std::fs::remove_file(d.join("1_Pooling/config.json")).unwrap());
    let err = load_err(dir.path());
    assert!(matches!(err, EmbedError::MissingFile { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("1_Pooling/config.json") && msg.contains("Pooling"),
        "{msg}"
    );
}

#[test]
fn malformed_pooling_config_is_a_clear_error() {
    let dir = broken_minilm(|d| {
        std::fs::write(
            d.join("1_Pooling/config.json"),
            "{\"pooling_mode\": \"median\"}",
        )
        .unwrap()
    });
    let err = load_err(dir.path());
    assert!(err.to_string().contains("1_Pooling"), "{err}");
}

#[test]
fn missing_modules_json_is_a_clear_error() {
    let dir = broken_minilm(|d| std::fs::remove_file(d.join("modules.json")).unwrap());
    let err = load_err(dir.path());
    assert!(err.to_string().contains("modules.json"), "{err}");
}

#[test]
fn missing_weights_are_a_clear_error() {
    let dir = broken_minilm(|d| std::fs::remove_file(d.join("model.safetensors")).unwrap());
    let err = load_err(dir.path());
    assert!(err.to_string().contains("model.safetensors"), "{err}");
}

#[test]
fn max_seq_length_follows_sentence_bert_config() {
    let dir = broken_minilm(|d| {
        std::fs::write(
            d.join("sentence_bert_config.json"),
            "{\"max_seq_length\": 16, \"do_lower_case\": false}",
        )
        .unwrap()
    });
    let model = load(dir.path()).unwrap();
    assert_eq!(model.max_seq_length(), 16);
    let (_, reference) = minilm();
    let long = &reference.texts[0];
    let ids = model.token_ids(&long.text).unwrap();
    assert_eq!(ids.len(), 16);
    // Truncation keeps the first 14 text tokens and the closing [SEP].
    assert_eq!(ids[..15], long.ids[..15]);
    assert_eq!(ids.last(), long.ids.last());
    // 16 tokens leave room for 14 text tokens per chunk.
    let v = model.embed_long(&long.text).unwrap();
    assert!((norm(&v) - 1.0).abs() < 1e-5);
}

// ---- tiny random XLM-RoBERTa ----------------------------------------------------------------

/// A random 2-layer XLM-R with a Unigram tokenizer, `do_lower_case`, all six pooling modes,
/// a Dense(tanh) and a Normalize module, saved by sentence-transformers 6.
#[test]
fn tiny_xlm_roberta_matches_sentence_transformers() {
    matches_its_reference(&fixtures().join("tiny-xlmr"), 2);
}

// ---- tiny random MPNet ----------------------------------------------------------------------

/// A random 2-layer MPNet (relative-position bias, no token types) with a WordPiece tokenizer,
/// mean pooling and a Normalize module, as all-mpnet-base-v2 is; one text is long enough to use
/// every relative-position bucket.
#[test]
fn tiny_mpnet_matches_sentence_transformers() {
    matches_its_reference(&fixtures().join("tiny-mpnet"), 10);
}

/// Token ids, each text alone, a batch and `embed_long` against sentence-transformers'
/// `reference.json` in `dir`; the long text has more than `min_chunks` chunks.
fn matches_its_reference(dir: &Path, min_chunks: usize) {
    let reference = read_reference(&dir.join("reference.json"));
    let model = load(dir).unwrap();
    assert_eq!(model.dim(), reference.dim);
    assert_eq!(model.max_seq_length(), reference.max_seq_length);

    for t in &reference.texts {
        assert_eq!(
            model.token_ids(&t.text).unwrap(),
            t.ids,
            "ids of {:?}",
            t.text
        );
        let got = model.embed(&[t.text.as_str()], 1).unwrap().remove(0);
        let cos = cosine(&got, &t.embedding);
        assert!(cos >= 0.9999, "cosine {cos} for {:?}", t.text);
    }

    let all = texts(&reference);
    let batch: Vec<&str> = reference.batch.indices.iter().map(|&i| all[i]).collect();
    let got = model.embed(&batch, reference.batch.batch_size).unwrap();
    for ((v, want), text) in got.iter().zip(&reference.batch.embeddings).zip(&batch) {
        let cos = cosine(v, want);
        assert!(cos >= 0.9999, "cosine {cos} for {text:?} in the batch");
    }

    let long_ref = reference.long.as_ref().expect("reference has a long text");
    assert!(long_ref.chunk_lens.len() > min_chunks);
    let long = model
        .embed_long(&reference.texts[long_ref.index].text)
        .unwrap();
    let cos = cosine(&long, &long_ref.embedding);
    assert!(
        cos >= 0.9999,
        "embed_long cosine {cos} to the chunked reference"
    );
}

/// Without a post-processor the tokenizer adds no special tokens, so an empty text has no
/// tokens at all: it must still embed (to the later modules' image of a zero pooled vector).
#[test]
fn a_text_without_any_token_still_embeds() {
    let src = fixtures().join("tiny-xlmr");
    let dir = tempfile::tempdir().unwrap();
    for entry in ["", "1_Pooling", "2_Dense", "3_Normalize"] {
        std::fs::create_dir_all(dir.path().join(entry)).unwrap();
        for file in std::fs::read_dir(src.join(entry)).unwrap() {
            let file = file.unwrap();
            if file.file_type().unwrap().is_file() {
                let to = dir.path().join(entry).join(file.file_name());
                std::fs::copy(file.path(), to).unwrap();
            }
        }
    }
    let path = dir.path().join("tokenizer.json");
    let mut tokenizer: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    tokenizer["post_processor"] = serde_json::Value::Null;
    std::fs::write(&path, tokenizer.to_string()).unwrap();

    let model = load(dir.path()).unwrap();
    assert!(model.token_ids("").unwrap().is_empty());
    let got = model.embed(&["", "la région", ""], 2).unwrap();
    assert_eq!(got.len(), 3);
    assert_eq!(got[0], got[2]);
    for v in &got {
        assert_eq!(v.len(), model.dim());
        assert!(v.iter().all(|x| x.is_finite()));
    }
    assert!(cosine(&got[0], &got[1]) < 0.9999);
    let long = model.embed_long("").unwrap();
    assert!(long.iter().all(|x| x.is_finite()));
}
