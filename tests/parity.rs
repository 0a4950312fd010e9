//! Parity with Hugging Face `transformers`: for each tiny random-weight Marian fixture (made by
//! scripts/make_fixtures.py), our tokenizer, model and generation must reproduce what
//! `MarianTokenizer` and `MarianMTModel.generate` recorded in reference.json. Generation is
//! checked through both backends: the CPU kernels (what the CPU runs) and candle tensors (what
//! every other device runs), here on the CPU.

use std::path::{Path, PathBuf};

use candle_core::Device;
use serde::Deserialize;
use tidings::model::hub::{HubOptions, ModelRepo, ModelSource};
use tidings::model::marian::device_search::transfers;
use tidings::model::marian::fused;
use tidings::model::marian::{
    BackendKind, ComputeType, FusedKernels, MarianModel, TranslateOptions, Translator,
};

#[derive(Deserialize)]
struct Generated {
    num_beams: usize,
    max_new_tokens: usize,
    alone: Vec<Vec<u32>>,
    batches: Vec<Vec<usize>>,
    batched: Vec<Vec<u32>>,
    texts: Vec<String>,
}

#[derive(Deserialize)]
struct Reference {
    inputs: Vec<String>,
    source_ids: Vec<Vec<u32>>,
    first_step_logits: Vec<Vec<f32>>,
    greedy: Generated,
    beam4: Generated,
}

fn fixtures() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .expect("tests/fixtures exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("marian-"))
        })
        .collect();
    dirs.sort();
    assert!(
        dirs.len() >= 3,
        "expected the three Marian fixtures, found {dirs:?}"
    );
    dirs
}

fn load(dir: &Path) -> (Translator, Reference) {
    load_on(dir, BackendKind::Auto)
}

fn load_on(dir: &Path, kind: BackendKind) -> (Translator, Reference) {
    load_as(dir, kind, ComputeType::F32)
}

fn load_as(dir: &Path, kind: BackendKind, compute: ComputeType) -> (Translator, Reference) {
    let source = ModelSource::parse(dir.to_str().unwrap(), None).unwrap();
    let repo = ModelRepo::open(source, &HubOptions::default()).unwrap();
    let translator = Translator::load_with_backend(&repo, &Device::Cpu, compute, kind)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    // On the CPU, Auto means the kernels.
    let on_tensors = translator.model().as_tensors().is_some();
    assert_eq!(on_tensors, kind == BackendKind::Tensors, "{kind:?}");
    let reference: Reference =
        serde_json::from_slice(&std::fs::read(dir.join("reference.json")).unwrap()).unwrap();
    assert!(reference.inputs.len() >= 20);
    (translator, reference)
}

fn name(dir: &Path) -> String {
    dir.file_name().unwrap().to_string_lossy().into_owned()
}

#[test]
fn source_ids_equal_marian_tokenizer() {
    for dir in fixtures() {
        let (t, r) = load(&dir);
        for (text, want) in r.inputs.iter().zip(&r.source_ids) {
            assert_eq!(&t.encode(text).unwrap(), want, "{}: {text:?}", name(&dir));
        }
    }
}

/// Within 1e-4 of the reference, element by element.
#[test]
fn first_step_logits_match() {
    for dir in fixtures() {
        let (t, r) = load(&dir);
        let mut worst = 0f32;
        for (ids, want) in r.source_ids.iter().zip(&r.first_step_logits) {
            let got = t
                .model()
                .first_step_logits(std::slice::from_ref(ids))
                .unwrap();
            assert_eq!(got[0].len(), want.len());
            for (a, b) in got[0].iter().zip(want) {
                let err = (a - b).abs();
                worst = worst.max(err);
                assert!(err <= 1e-4, "{}: logit {a} vs {b}", name(&dir));
            }
        }
        eprintln!(
            "{}: largest first-step logit difference {worst:e}",
            name(&dir)
        );
    }
}

fn check_generation(t: &Translator, r: &Reference, g: &Generated, what: &str) {
    let opts = TranslateOptions {
        num_beams: Some(g.num_beams),
        max_new_tokens: Some(g.max_new_tokens),
        batch_size: 1,
    };
    let gen = t.generation_config(&opts);
    // Each sentence alone.
    for (i, ids) in r.source_ids.iter().enumerate() {
        let got = t.generate_batch(std::slice::from_ref(ids), &gen).unwrap();
        assert_eq!(
            got[0], g.alone[i],
            "{what}: input {i} {:?} alone",
            r.inputs[i]
        );
    }
    // The reference's padded batches (one mixes a 1-token and a ~100-token sentence): each
    // sentence inside a batch equals the reference and equals itself alone.
    let mut lengths_mixed = false;
    for batch in &g.batches {
        let rows: Vec<Vec<u32>> = batch.iter().map(|&i| r.source_ids[i].clone()).collect();
        let lens: Vec<usize> = rows.iter().map(Vec::len).collect();
        lengths_mixed |= lens.iter().min() <= Some(&2) && lens.iter().max() >= Some(&90);
        let got = t.generate_batch(&rows, &gen).unwrap();
        for (&i, out) in batch.iter().zip(got) {
            assert_eq!(out, g.batched[i], "{what}: input {i} in batch {batch:?}");
            assert_eq!(out, g.alone[i], "{what}: input {i} batched != alone");
        }
    }
    assert!(
        lengths_mixed,
        "{what}: no batch mixes a 1-token and a ~100-token sentence"
    );
    // Through the whole pipeline: text in, text out, in input order, several batch sizes.
    let texts: Vec<&str> = r.inputs.iter().map(String::as_str).collect();
    for batch_size in [1, 5, 32] {
        let opts = TranslateOptions {
            batch_size,
            ..opts.clone()
        };
        let out = t.translate(&texts, &opts, |_| {}).unwrap();
        assert_eq!(out.len(), texts.len());
        for (i, tr) in out.iter().enumerate() {
            if texts[i].trim().is_empty() {
                // Blank segments are passed through without running the model.
                assert!(tr.text.is_empty() && tr.token_ids.is_empty());
                continue;
            }
            assert_eq!(tr.token_ids, g.alone[i], "{what}: translate() input {i}");
            assert_eq!(tr.source_token_ids, r.source_ids[i]);
            assert_eq!(tr.text, g.texts[i], "{what}: decoded text of input {i}");
        }
    }
}

#[test]
fn greedy_ids_equal_generate() {
    for dir in fixtures() {
        let (t, r) = load(&dir);
        assert_eq!(r.greedy.num_beams, 1);
        check_generation(&t, &r, &r.greedy, &format!("{} greedy", name(&dir)));
    }
}

#[test]
fn beam4_ids_equal_generate() {
    for dir in fixtures() {
        let (t, r) = load(&dir);
        assert_eq!(r.beam4.num_beams, 4);
        check_generation(&t, &r, &r.beam4, &format!("{} beam 4", name(&dir)));
    }
}

/// The same references through the candle-tensor backend (on the CPU), which the product runs
/// on every other device.
#[test]
fn tensor_backend_ids_equal_generate() {
    for dir in fixtures() {
        let (t, r) = load_on(&dir, BackendKind::Tensors);
        for (ids, want) in r.source_ids.iter().zip(&r.first_step_logits) {
            let got = t
                .model()
                .first_step_logits(std::slice::from_ref(ids))
                .unwrap();
            for (a, b) in got[0].iter().zip(want) {
                assert!((a - b).abs() <= 1e-4, "{}: logit {a} vs {b}", name(&dir));
            }
        }
        check_generation(&t, &r, &r.greedy, &format!("{} tensors greedy", name(&dir)));
        check_generation(&t, &r, &r.beam4, &format!("{} tensors beam 4", name(&dir)));
    }
}

/// A tensor-backend translator that runs the fused kernels or not.
fn with_kernels(t: Translator, kernels: FusedKernels) -> Translator {
    let info = t.info().clone();
    let (model, tokenizer, generation) = t.into_parts();
    let MarianModel::Tensors(tensors) = model else {
        panic!("the tensor backend was asked for")
    };
    let model = MarianModel::Tensors(tensors.with_fused_kernels(kernels));
    Translator::from_parts(model, tokenizer, generation, info).unwrap()
}

/// The fused kernels' operations (what a GPU runs once each kernel passes its check: a beam
/// step's candidates, a decode step's attention), here through their CPU references: every id
/// equal to transformers', greedy and beam 4, alone and in the reference's batches.
#[test]
fn fused_kernels_ids_equal_generate() {
    for dir in fixtures() {
        let (t, r) = load_on(&dir, BackendKind::Tensors);
        let t = with_kernels(t, FusedKernels::On);
        let before = fused::runs();
        check_generation(&t, &r, &r.greedy, &format!("{} fused greedy", name(&dir)));
        let greedy = fused::runs();
        check_generation(&t, &r, &r.beam4, &format!("{} fused beam 4", name(&dir)));
        let beam = fused::runs();
        // The fused operations did run: attention at every step, beam candidates in beam
        // search only.
        assert_eq!(
            greedy[0],
            before[0],
            "{}: greedy ran the beam kernel",
            name(&dir)
        );
        assert!(
            greedy[1] > before[1],
            "{}: greedy without fused attention",
            name(&dir)
        );
        assert!(beam[0] > greedy[0] && beam[1] > greedy[1], "{}", name(&dir));
    }
}

/// f16 and bf16 on the tensor backend (run here on candle's CPU device; the product offers
/// them on GPUs only): first-step logits within a stated bound of transformers' f32 ones, the
/// top-1 token mostly the same, and every sentence's ids the same alone as in a batch.
#[test]
fn half_precision_stays_close_and_batch_invariant() {
    // candle's operations, then the fused kernels' references (on a GPU: their kernels).
    let runs = [ComputeType::F16, ComputeType::BF16]
        .into_iter()
        .flat_map(|c| [(c, FusedKernels::Off), (c, FusedKernels::On)]);
    for (compute, kernels) in runs {
        // bf16 keeps 8 bits of mantissa, f16 11: relative to the largest logit of a row.
        let bound = if compute == ComputeType::BF16 {
            0.1
        } else {
            0.02
        };
        let (mut rows, mut top1_same) = (0usize, 0usize);
        for dir in fixtures() {
            let (t, r) = load_as(&dir, BackendKind::Tensors, compute);
            let t = with_kernels(t, kernels);
            let runs_before = fused::runs();
            assert_eq!(t.model().compute_type(), compute);
            let mut worst = 0f32;
            for (ids, want) in r.source_ids.iter().zip(&r.first_step_logits) {
                let got = t
                    .model()
                    .first_step_logits(std::slice::from_ref(ids))
                    .unwrap();
                let scale = want.iter().fold(1f32, |m, x| m.max(x.abs()));
                let diff = got[0]
                    .iter()
                    .zip(want)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0f32, f32::max);
                worst = worst.max(diff / scale);
                let argmax =
                    |v: &[f32]| (0..v.len()).fold(0, |b, i| if v[i] > v[b] { i } else { b });
                rows += 1;
                top1_same += usize::from(argmax(&got[0]) == argmax(want));
            }
            eprintln!(
                "{} {compute} {kernels:?}: largest first-step logit difference {worst:.4} of the \
                 row's largest",
                name(&dir)
            );
            assert!(
                worst <= bound,
                "{} {compute} {kernels:?}: {worst} > {bound}",
                name(&dir)
            );
            // Not f32 in disguise: half precision does change the logits.
            assert!(worst > 0.0, "{} {compute}: logits equal f32's", name(&dir));
            // Batch invariance: the reference's batches, each sentence against itself alone.
            let opts = TranslateOptions {
                num_beams: Some(4),
                max_new_tokens: Some(16),
                batch_size: 1,
            };
            let gen = t.generation_config(&opts);
            for batch in &r.beam4.batches {
                let rows: Vec<Vec<u32>> = batch.iter().map(|&i| r.source_ids[i].clone()).collect();
                let together = t.generate_batch(&rows, &gen).unwrap();
                for (row, out) in rows.iter().zip(together) {
                    let alone = t.generate_batch(std::slice::from_ref(row), &gen).unwrap();
                    assert_eq!(
                        out,
                        alone[0],
                        "{} {compute} {kernels:?}: batched != alone",
                        name(&dir)
                    );
                }
            }
            // The fused operations ran exactly when asked for.
            let ran = fused::runs() != runs_before;
            assert_eq!(
                ran,
                kernels == FusedKernels::On,
                "{} {compute} {kernels:?}",
                name(&dir)
            );
        }
        assert!(
            top1_same * 10 >= rows * 9,
            "{compute} {kernels:?}: top-1 equal on {top1_same} of {rows} rows"
        );
    }
    // The product does not offer half precision on the CPU.
    let dir = &fixtures()[0];
    let source = ModelSource::parse(dir.to_str().unwrap(), None).unwrap();
    let repo = ModelRepo::open(source, &HubOptions::default()).unwrap();
    for compute in [ComputeType::F16, ComputeType::BF16] {
        let err = Translator::load_with(&repo, &Device::Cpu, compute)
            .err()
            .unwrap();
        let msg = format!("{err:#}");
        assert!(
            msg.contains(&format!("{compute} runs on a GPU only")),
            "{msg}"
        );
    }
}

/// Decoding on the tensor backend keeps the logits where the tensors are: per step, only the
/// chosen ids and scores (O(rows × beams) numbers) are copied to the host, never a row of the
/// vocabulary. The counter sees every copy the decoding path makes, so a step that read the
/// logits back would fail this.
#[test]
fn device_decoding_copies_only_ids_and_scores_to_the_host() {
    let dir = &fixtures()[0];
    let (t, r) = load_on(dir, BackendKind::Tensors);
    let vocab = t.model().config().target_vocab_size() as u64;
    let rows: Vec<Vec<u32>> = r.source_ids.iter().take(6).cloned().collect();
    // Beam steps by candle's operations, then by the fused operation (as on a GPU).
    let t = with_kernels(t, FusedKernels::Off);
    let fused = with_kernels(load_on(dir, BackendKind::Tensors).0, FusedKernels::On);
    for (t, beams) in [(&t, 1usize), (&t, 4), (&fused, 4)] {
        let opts = TranslateOptions {
            num_beams: Some(beams),
            max_new_tokens: Some(12),
            batch_size: rows.len(),
        };
        let gen = t.generation_config(&opts);
        let before = transfers();
        let runs_before = fused::runs();
        let out = t.generate_batch(&rows, &gen).unwrap();
        let after = transfers();
        // The fused run took the fused beam step; the others, candle's operations.
        let fused_beams = fused::runs()[0] > runs_before[0];
        assert_eq!(fused_beams, std::ptr::eq(t, &fused), "beams {beams}");
        assert_eq!(out.len(), rows.len());
        let copies = after.copies - before.copies;
        let steps = out.iter().map(Vec::len).max().unwrap() as u64;
        let max_steps = 12 + 1;
        // One copy per step: greedy, one id per row; beam search, the scores and ids of
        // 2·beams candidates per sentence.
        let per_copy = if beams == 1 {
            4
        } else {
            2 * (2 * beams as u64) * 4
        } * rows.len() as u64;
        let per_step_copies = 1;
        assert!(
            copies >= steps && copies <= per_step_copies * max_steps,
            "{copies} copies for {steps} steps"
        );
        assert!(
            after.largest <= per_copy,
            "a copy of {} bytes",
            after.largest
        );
        assert!(after.bytes - before.bytes <= per_copy * per_step_copies * max_steps);
        assert!(
            per_copy < vocab * 4,
            "the fixture's vocabulary must be larger than the bound"
        );
    }
    // The counter does see a vocabulary-sized read: the logits the host search asks for.
    let before = transfers();
    t.model().first_step_logits(&rows[..1]).unwrap();
    assert!(transfers().largest >= vocab * 4 && transfers().bytes - before.bytes >= vocab * 4);
}

#[test]
fn outputs_cover_early_eos_and_max_length() {
    // Guards the fixtures themselves: generation must be exercised on both ways of ending.
    for dir in fixtures() {
        let (t, r) = load(&dir);
        let eos = t.tokenizer().eos_id();
        for g in [&r.greedy, &r.beam4] {
            let ended_by_eos = g
                .alone
                .iter()
                .filter(|ids| ids.last() == Some(&eos))
                .count();
            let hit_max = g
                .alone
                .iter()
                .filter(|ids| ids.len() == g.max_new_tokens)
                .count();
            assert!(
                ended_by_eos > 0 && hit_max > 0,
                "{}: {ended_by_eos} eos, {hit_max} max",
                name(&dir)
            );
        }
    }
}
