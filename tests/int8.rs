//! int8 weights (`--compute-type int8`): not bit-equal to transformers, so these tests bound the
//! difference instead — first-step logits against the transformers reference of each Marian
//! fixture, and greedy output against f32 — and check what int8 must still guarantee exactly:
//! a sentence translates the same alone and inside any batch.

use std::path::{Path, PathBuf};

use candle_core::Device;
use serde::Deserialize;
use tidings::model::hub::{HubOptions, ModelRepo, ModelSource};
use tidings::model::marian::{ComputeType, TranslateOptions, Translator};

#[derive(Deserialize)]
struct Generated {
    max_new_tokens: usize,
    alone: Vec<Vec<u32>>,
}

#[derive(Deserialize)]
struct Reference {
    source_ids: Vec<Vec<u32>>,
    first_step_logits: Vec<Vec<f32>>,
    greedy: Generated,
}

const FIXTURES: [&str; 3] = ["marian-tiny-relu", "marian-tiny-sep", "marian-tiny-swish"];

fn dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn load(name: &str, format: ComputeType) -> Translator {
    let source = ModelSource::parse(dir(name).to_str().unwrap(), None).unwrap();
    let repo = ModelRepo::open(source, &HubOptions::default()).unwrap();
    let t = Translator::load_with(&repo, &Device::Cpu, format)
        .unwrap_or_else(|e| panic!("{name} ({format}): {e}"));
    assert_eq!(t.model().compute_type(), format);
    t
}

fn reference(name: &str) -> Reference {
    serde_json::from_slice(&std::fs::read(dir(name).join("reference.json")).unwrap()).unwrap()
}

/// ‖a − b‖ / ‖b − mean(b)‖: the error relative to the spread of the reference logits.
fn relative_error(a: &[f32], b: &[f32]) -> f64 {
    let mean = b.iter().map(|&x| x as f64).sum::<f64>() / b.len() as f64;
    let (mut err, mut spread) = (0f64, 0f64);
    for (&x, &y) in a.iter().zip(b) {
        err += (x as f64 - y as f64).powi(2);
        spread += (y as f64 - mean).powi(2);
    }
    (err / spread).sqrt()
}

#[test]
fn int8_first_step_logits_stay_close_to_transformers() {
    for name in FIXTURES {
        let t = load(name, ComputeType::Int8);
        let r = reference(name);
        let (mut worst, mut top1_same) = (0f64, 0);
        for (ids, want) in r.source_ids.iter().zip(&r.first_step_logits) {
            let got = t
                .model()
                .first_step_logits(std::slice::from_ref(ids))
                .unwrap();
            worst = worst.max(relative_error(&got[0], want));
            let argmax = |v: &[f32]| {
                v.iter()
                    .enumerate()
                    .max_by(|a, b| a.1.total_cmp(b.1))
                    .map(|(i, _)| i)
            };
            top1_same += usize::from(argmax(&got[0]) == argmax(want));
        }
        let n = r.source_ids.len();
        eprintln!(
            "{name}: int8 logit error {worst:.4} of their spread, top-1 same {top1_same}/{n}"
        );
        assert!(
            worst < 0.1,
            "{name}: int8 logits off by {worst:.4} of their spread"
        );
        assert!(
            top1_same * 10 >= n * 9,
            "{name}: top-1 same for {top1_same}/{n}"
        );
    }
}

#[test]
fn int8_greedy_output_mostly_agrees_with_f32() {
    for name in FIXTURES {
        let (f32_model, int8_model) = (load(name, ComputeType::F32), load(name, ComputeType::Int8));
        let r = reference(name);
        let opts = TranslateOptions {
            num_beams: Some(1),
            max_new_tokens: Some(r.greedy.max_new_tokens),
            batch_size: 8,
        };
        let gen = int8_model.generation_config(&opts);
        let got = int8_model.generate_batch(&r.source_ids, &gen).unwrap();
        let want = f32_model.generate_batch(&r.source_ids, &gen).unwrap();
        assert_eq!(
            want, r.greedy.alone,
            "{name}: f32 is the transformers reference"
        );
        // Tokens equal up to the first difference, over all sentences.
        let (mut same, mut total) = (0, 0);
        for (a, b) in got.iter().zip(&want) {
            same += a.iter().zip(b).take_while(|(x, y)| x == y).count();
            total += b.len();
        }
        eprintln!("{name}: int8 greedy shares {same}/{total} leading tokens with f32");
        assert!(
            same * 10 >= total * 7,
            "{name}: only {same}/{total} leading tokens agree"
        );
    }
}

#[test]
fn int8_sentence_is_the_same_alone_and_in_any_batch() {
    for name in FIXTURES {
        let t = load(name, ComputeType::Int8);
        let r = reference(name);
        for beams in [1, 4] {
            let opts = TranslateOptions {
                num_beams: Some(beams),
                max_new_tokens: Some(24),
                batch_size: 32,
            };
            let gen = t.generation_config(&opts);
            let alone: Vec<Vec<u32>> = r
                .source_ids
                .iter()
                .map(|ids| t.generate_batch(std::slice::from_ref(ids), &gen).unwrap()[0].clone())
                .collect();
            let batched = t.generate_batch(&r.source_ids, &gen).unwrap();
            assert_eq!(batched, alone, "{name} beam {beams}: batch != alone");
            let reversed: Vec<Vec<u32>> = r.source_ids.iter().rev().cloned().collect();
            let mut back = t.generate_batch(&reversed, &gen).unwrap();
            back.reverse();
            assert_eq!(back, alone, "{name} beam {beams}: order changed the output");
        }
    }
}
