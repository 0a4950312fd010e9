//! A beam-search step's candidates in one pass over the logits, as one operation: for every
//! sentence, its `want` best (log-probability + running beam score, flat index
//! `beam · vocab + token`) over its beams' rows.
//!
//! candle's operations take 12 to 20 passes over the rows × vocabulary logits for the same
//! result (log-softmax, again with `renormalize_logits`, the bans, the running scores, a
//! chunked sort); on a GPU at batch 128, beam 4, a pass is 119 MB. Here a CUDA kernel
//! (`cuda/beam_candidates.cu`, compiled to PTX at build time) reads each row once, keeping its log-sum-exp and its best tokens, and a
//! second one merges a sentence's beams. On the CPU, [`BeamCandidates`] runs a plain reference
//! of the same contract, which the tests hold to candle's operations and to transformers.
//!
//! A GPU's kernels are used only after [`check`] has held them there to the reference (see
//! [`super::FusedKernels`]).

use candle_core::{CpuStorage, CustomOp3, Device, Layout, Shape, Tensor};

/// The most candidates a sentence may ask for (2 × beams): the kernel's per-thread lists.
pub const MAX_WANT: usize = 32;

/// Flat candidate indices below this are exact as f32, so they can travel beside the values in
/// one f32 output (one copy to the host).
pub const EXACT_F32_INDEX: usize = 1 << 24;

/// The operation on logits (rows × vocab, f32; rows are sentences × `beams`), running scores
/// (one a row) and an optional ban row (vocab: 0 or -inf); its output is sentences ×
/// 2·`want`: a sentence's values best first, then their flat indices as f32. The values are
/// transformers' beam scores: log_softmax(logits) + ban, or with `renormalize`
/// log_softmax(logits + ban) (transformers takes log-softmax again after the ban; in one step
/// it is equal to rounding), plus the running score. A NaN counts as -inf in the order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BeamCandidates {
    pub beams: usize,
    pub want: usize,
    pub renormalize: bool,
}

/// [`BeamCandidates`] with whether its third input is a ban row.
#[derive(Debug, Clone, Copy)]
struct Op {
    c: BeamCandidates,
    has_ban: bool,
}

impl BeamCandidates {
    /// Whether the operation can serve `beams` beams over `vocab` tokens wanting `want`.
    pub fn fits(beams: usize, want: usize, vocab: usize) -> bool {
        beams > 0
            && (1..=MAX_WANT).contains(&want)
            && want <= vocab
            && beams.saturating_mul(vocab) < EXACT_F32_INDEX
    }

    /// Each sentence's `want` best candidates: `logits` rows × vocab, `running` one score per
    /// row, `ban` an additive row of 0 and -inf (1 × vocab).
    pub fn apply(
        &self,
        logits: &Tensor,
        running: &Tensor,
        ban: Option<&Tensor>,
    ) -> candle_core::Result<Tensor> {
        super::count_run(super::Kernel::BeamCandidates);
        let op = Op {
            c: *self,
            has_ban: ban.is_some(),
        };
        // Without a ban row the third input is never read: any tensor on the device will do.
        let ban = ban.unwrap_or(running);
        logits
            .contiguous()?
            .apply_op3_no_bwd(&running.contiguous()?, &ban.contiguous()?, &op)
    }
}

impl Op {
    /// The number of sentences, once the shapes are checked.
    fn check(&self, logits: &Shape, running: &Shape, ban: &Shape) -> candle_core::Result<usize> {
        let (rows, vocab) = logits.dims2()?;
        let (beams, want) = (self.c.beams, self.c.want);
        let fail = |what: String| Err(candle_core::Error::Msg(format!("beam candidates: {what}")));
        if !BeamCandidates::fits(beams, want, vocab) {
            return fail(format!("{beams} beams × {vocab} tokens, {want} wanted"));
        }
        if !rows.is_multiple_of(beams) || running.elem_count() != rows {
            return fail(format!(
                "{rows} rows, {} running scores",
                running.elem_count()
            ));
        }
        if self.has_ban && ban.elem_count() != vocab {
            return fail(format!(
                "a ban row of {} for {vocab} tokens",
                ban.elem_count()
            ));
        }
        Ok(rows / beams)
    }
}

/// Is `a` ahead of `b`: value descending, then index ascending (NaN counts as -inf).
fn ahead(a: (f32, usize), b: (f32, usize)) -> bool {
    let key = |v: f32| if v.is_nan() { f32::NEG_INFINITY } else { v };
    let (av, bv) = (key(a.0), key(b.0));
    av > bv || (av == bv && a.1 < b.1)
}

fn order(a: &(f32, usize), b: &(f32, usize)) -> std::cmp::Ordering {
    if ahead(*a, *b) {
        std::cmp::Ordering::Less
    } else if ahead(*b, *a) {
        std::cmp::Ordering::Greater
    } else {
        std::cmp::Ordering::Equal
    }
}

/// The contract on host slices; what the kernels compute (to rounding of the log-sum-exp).
fn reference(
    op: &BeamCandidates,
    logits: &[f32],
    running: &[f32],
    ban: Option<&[f32]>,
    vocab: usize,
) -> Vec<f32> {
    let (beams, want) = (op.beams, op.want);
    let processed = |x: &[f32], j: usize| x[j] + ban.map_or(0.0, |ban| ban[j]);
    let items = logits.len() / vocab / beams;
    let mut out = Vec::with_capacity(items * 2 * want);
    for item in 0..items {
        let mut candidates = Vec::with_capacity(beams * want);
        for b in 0..beams {
            let row = item * beams + b;
            let x = &logits[row * vocab..(row + 1) * vocab];
            // The log-sum-exp of the logits, or renormalized, of the processed logits.
            let normalized = |j: usize| {
                if op.renormalize {
                    processed(x, j)
                } else {
                    x[j]
                }
            };
            let max = (0..vocab).fold(f32::NEG_INFINITY, |m, j| m.max(normalized(j)));
            let log_sum = (0..vocab)
                .map(|j| (normalized(j) - max).exp())
                .sum::<f32>()
                .ln();
            // A row's best by processed logit: the order of its log-probabilities.
            let mut by_logit: Vec<(f32, usize)> =
                (0..vocab).map(|j| (processed(x, j), j)).collect();
            by_logit.sort_by(order);
            for &(p, j) in by_logit.iter().take(want) {
                let v = if op.renormalize {
                    (p - max) - log_sum
                } else {
                    ((x[j] - max) - log_sum) + ban.map_or(0.0, |ban| ban[j])
                };
                candidates.push((v + running[row], b * vocab + j));
            }
        }
        candidates.sort_by(order);
        out.extend(candidates.iter().take(want).map(|c| c.0));
        out.extend(candidates.iter().take(want).map(|c| c.1 as f32));
    }
    out
}

fn contiguous<'a>(s: &'a CpuStorage, l: &Layout) -> candle_core::Result<&'a [f32]> {
    match l.contiguous_offsets() {
        Some((start, end)) => Ok(&s.as_slice::<f32>()?[start..end]),
        None => Err(candle_core::Error::Msg(
            "beam candidates: a strided input".into(),
        )),
    }
}

impl CustomOp3 for Op {
    fn name(&self) -> &'static str {
        "beam-candidates"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let items = self.check(l1.shape(), l2.shape(), l3.shape())?;
        let vocab = l1.shape().dims2()?.1;
        let ban = if self.has_ban {
            Some(contiguous(s3, l3)?)
        } else {
            None
        };
        let out = reference(
            &self.c,
            contiguous(s1, l1)?,
            contiguous(s2, l2)?,
            ban,
            vocab,
        );
        Ok((CpuStorage::F32(out), Shape::from((items, 2 * self.c.want))))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
        s3: &candle_core::CudaStorage,
        l3: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        let items = self.check(l1.shape(), l2.shape(), l3.shape())?;
        cuda::launch(self, items, (s1, l1), (s2, l2), (s3, l3))
    }
}

#[cfg(feature = "cuda")]
mod cuda {
    use candle_core::backend::BackendStorage;
    use candle_core::cuda_backend::cudarc::driver::{CudaView, LaunchConfig, PushKernelArg};
    use candle_core::cuda_backend::WrapErr;
    use candle_core::{CudaStorage, Layout, Shape};

    use super::Op;

    const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/beam_candidates.ptx"));
    const MODULE: &str = "tidings_beam_candidates";
    /// `ROW_THREADS` in the kernel.
    const ROW_THREADS: u32 = 256;
    const MERGE_THREADS: u32 = 128;

    fn view<'a>(s: &'a CudaStorage, l: &Layout) -> candle_core::Result<CudaView<'a, f32>> {
        match l.contiguous_offsets() {
            Some((start, end)) => Ok(s.as_cuda_slice::<f32>()?.slice(start..end)),
            None => Err(candle_core::Error::Msg(
                "beam candidates: a strided input".into(),
            )),
        }
    }

    pub(super) fn launch(
        op: &Op,
        items: usize,
        logits: (&CudaStorage, &Layout),
        running: (&CudaStorage, &Layout),
        ban: (&CudaStorage, &Layout),
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        let dev = logits.0.device().clone();
        let (rows, vocab) = logits.1.shape().dims2()?;
        let (x, r, b) = (
            view(logits.0, logits.1)?,
            view(running.0, running.1)?,
            view(ban.0, ban.1)?,
        );
        let (has_ban, renormalize) = (i32::from(op.has_ban), i32::from(op.c.renormalize));
        let (vocab_i, k, beams, items_i) = (
            vocab as i32,
            op.c.want as i32,
            op.c.beams as i32,
            items as i32,
        );
        let want = op.c.want;
        // SAFETY: every entry is written by the kernel below (each row's block writes 2k).
        let per_row = unsafe { dev.alloc::<f32>(rows * 2 * want)? };
        let func = dev.get_or_load_custom_func("beam_row_candidates", MODULE, PTX)?;
        let mut args = func.builder();
        args.arg(&x)
            .arg(&r)
            .arg(&b)
            .arg(&has_ban)
            .arg(&renormalize)
            .arg(&vocab_i)
            .arg(&k)
            .arg(&per_row);
        let cfg = LaunchConfig {
            grid_dim: (rows as u32, 1, 1),
            block_dim: (ROW_THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: the arguments match the kernel's signature; the shapes were checked.
        unsafe { args.launch(cfg) }.w()?;

        // SAFETY: every entry is written by the merge (each sentence's thread writes 2k).
        let out = unsafe { dev.alloc::<f32>(items * 2 * want)? };
        let func = dev.get_or_load_custom_func("beam_merge_rows", MODULE, PTX)?;
        let mut args = func.builder();
        args.arg(&per_row)
            .arg(&items_i)
            .arg(&beams)
            .arg(&k)
            .arg(&vocab_i)
            .arg(&out);
        let cfg = LaunchConfig {
            grid_dim: ((items as u32).div_ceil(MERGE_THREADS), 1, 1),
            block_dim: (MERGE_THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: as above.
        unsafe { args.launch(cfg) }.w()?;
        Ok((
            CudaStorage::wrap_cuda_slice(out, dev),
            Shape::from((items, 2 * want)),
        ))
    }
}

/// One input shape on which the kernels are checked.
#[derive(Debug, Clone, Copy)]
pub struct Case {
    pub sentences: usize,
    pub vocab: usize,
    pub op: BeamCandidates,
    pub ban: bool,
    /// A NaN among the first row's logits (half precision can overflow).
    pub nan: bool,
}

const fn case(
    sentences: usize,
    beams: usize,
    vocab: usize,
    want: usize,
    ban: bool,
    renormalize: bool,
    nan: bool,
) -> Case {
    Case {
        sentences,
        vocab,
        op: BeamCandidates {
            beams,
            want,
            renormalize,
        },
        ban,
        nan,
    }
}

/// Shapes that exercise the kernels' paths: the opus-mt vocabulary, rows shorter than a
/// block's threads, as many wanted as a thread holds, one beam, odd beam counts, more
/// sentences than a merge block, with and without bans and renormalization.
pub const CASES: [Case; 8] = [
    case(3, 4, 58_101, 8, true, true, false),
    case(2, 4, 58_101, 8, false, false, false),
    case(2, 2, 300, 4, false, false, false),
    case(1, 1, 40, 32, true, true, false),
    case(5, 3, 1_000, 6, true, false, false),
    case(130, 2, 64, 4, true, true, false),
    case(2, 3, 500, 6, false, true, false),
    case(2, 2, 300, 4, true, true, true),
];

impl Case {
    /// The case's logits, running scores and ban row from `seed` ([`sample`], plus its NaN).
    pub fn inputs(&self, seed: u32) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let (mut logits, running, ban) = sample(seed, self.rows(), self.op.beams, self.vocab);
        if self.nan {
            logits[self.vocab / 2] = f32::NAN;
        }
        (logits, running, ban)
    }

    /// Logit rows: sentences × beams.
    pub fn rows(&self) -> usize {
        self.sentences * self.op.beams
    }

    /// The operation's output (sentences × 2·want) on `device` for the inputs of `seed`.
    pub fn run(&self, seed: u32, device: &Device) -> candle_core::Result<Vec<Vec<f32>>> {
        let rows = self.rows();
        let (logits, running, ban) = self.inputs(seed);
        let logits = Tensor::from_vec(logits, (rows, self.vocab), device)?;
        let running = Tensor::from_vec(running, rows, device)?;
        let ban = self
            .ban
            .then(|| Tensor::from_vec(ban, (1, self.vocab), device))
            .transpose()?;
        self.op
            .apply(&logits, &running, ban.as_ref())?
            .to_vec2::<f32>()
    }
}

impl std::fmt::Display for Case {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} sentences × {} beams × {} tokens, {} wanted, ban {}, renormalize {}, NaN {}",
            self.sentences,
            self.op.beams,
            self.vocab,
            self.op.want,
            self.ban,
            self.op.renormalize,
            self.nan
        )
    }
}

/// The first difference between the fused operation on `device` and its reference on the
/// host, over [`CASES`] (ties included: the sampled logits repeat).
pub fn check(device: &Device) -> Result<(), String> {
    super::check_cases(&CASES, device, Case::run, |c, g, e| {
        compare(g, e, c.op.want)
    })
}

/// Logits in coarse steps (so that many are equal), running scores (-inf for every second beam
/// of three or more) and a ban row, from `seed`.
pub fn sample(
    seed: u32,
    rows: usize,
    beams: usize,
    vocab: usize,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let mut state = seed.wrapping_mul(0x9e37_79b9) | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        state
    };
    let logits = (0..rows * vocab)
        .map(|_| (next() % 4001) as f32 / 200.0 - 10.0)
        .collect();
    let running = (0..rows)
        .map(|r| match r % beams {
            1 if beams > 2 => f32::NEG_INFINITY,
            _ => -((next() % 1000) as f32) / 100.0,
        })
        .collect();
    let ban = (0..vocab)
        .map(|j| if j % 7 == 3 { f32::NEG_INFINITY } else { 0.0 })
        .collect();
    (logits, running, ban)
}

/// The first difference between two outputs (sentences × values, then indices): indices
/// equal, values within 1e-4 (a log-sum-exp summed in another order).
pub fn compare(got: &[Vec<f32>], expected: &[Vec<f32>], want: usize) -> Option<String> {
    if got.len() != expected.len() {
        return Some(format!("{} sentences, not {}", got.len(), expected.len()));
    }
    for (item, (g, e)) in got.iter().zip(expected).enumerate() {
        if g.len() != 2 * want || e.len() != 2 * want {
            return Some(format!(
                "sentence {item}: {} numbers, not {}",
                g.len(),
                2 * want
            ));
        }
        if g[want..] != e[want..] {
            return Some(format!(
                "sentence {item}: indices {:?}, not {:?}",
                &g[want..],
                &e[want..]
            ));
        }
        for (a, b) in g[..want].iter().zip(&e[..want]) {
            if !(a == b || (a - b).abs() <= 1e-4 || (a.is_nan() && b.is_nan())) {
                return Some(format!("sentence {item}: value {a}, not {b}"));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::marian::device_search::best_by_ops;
    use crate::model::marian::search::BeamQuery;

    #[test]
    fn reference_equals_candle_operations() {
        // (sentences, beams, vocab, want): distinct logits, so that the best are unambiguous.
        for (items, beams, vocab, want) in [(2, 4, 5_000, 8), (3, 1, 700, 2), (1, 3, 64, 6)] {
            let rows = items * beams;
            let logits: Vec<f32> = (0..rows * vocab)
                .map(|i| ((i * 7919 + 13) % (rows * vocab * 3 + 1)) as f32 * 1e-3 - 9.0)
                .collect();
            let (_, running, ban) = sample(5, rows, beams, vocab);
            let cpu = Device::Cpu;
            let x = Tensor::from_slice(&logits, (rows, vocab), &cpu).unwrap();
            let r = Tensor::from_slice(&running, rows, &cpu).unwrap();
            for with_ban in [false, true] {
                let ban_row = with_ban.then(|| Tensor::from_slice(&ban, (1, vocab), &cpu).unwrap());
                let op = BeamCandidates {
                    beams,
                    want,
                    renormalize: false,
                };
                let fused = op
                    .apply(&x, &r, ban_row.as_ref())
                    .unwrap()
                    .to_vec2::<f32>()
                    .unwrap();
                let mut scores = candle_nn::ops::log_softmax(&x, candle_core::D::Minus1).unwrap();
                if let Some(ban_row) = &ban_row {
                    scores = scores.broadcast_add(ban_row).unwrap();
                }
                let query = BeamQuery {
                    rows_per_item: beams,
                    beams,
                    scores: &running,
                    want,
                };
                let by_ops = best_by_ops(&scores, &query).unwrap();
                for (item, (f, o)) in fused.iter().zip(&by_ops).enumerate() {
                    let ids: Vec<usize> = f[want..].iter().map(|&i| i as usize).collect();
                    let want_ids: Vec<usize> = o.iter().map(|c| c.0).collect();
                    assert_eq!(ids, want_ids, "sentence {item}, ban {with_ban}");
                    for (a, b) in f[..want].iter().zip(o.iter().map(|c| c.1)) {
                        assert!(a == &b || (a - b).abs() <= 1e-5, "{a} vs {b}");
                    }
                }
            }
        }
    }

    /// A GPU's log-sum-exp is summed in another order than the reference's, so candidates of
    /// different beams with values closer than its rounding could swap places there and fail
    /// the check for nothing. The check's inputs (and the emulated tests') have none: candidates
    /// of different beams next to each other in a sentence's best (and the first one left out)
    /// differ by more than 1e-4.
    #[test]
    fn check_inputs_leave_no_near_ties_between_beams() {
        for (n, case) in CASES.iter().enumerate() {
            let mut wider = *case;
            wider.op.want = (case.op.want + 1).min(MAX_WANT).min(case.vocab);
            for seed in [n as u32 + 1, 100 + n as u32] {
                for sentence in wider.run(seed, &Device::Cpu).unwrap() {
                    let k = wider.op.want;
                    let beam = |i: usize| sentence[k + i] as usize / case.vocab;
                    for i in 0..k - 1 {
                        let (a, b) = (sentence[i], sentence[i + 1]);
                        // NaN counts as -inf; equal -inf values are ordered by index.
                        let key = |v: f32| if v.is_nan() { f32::NEG_INFINITY } else { v };
                        let (a, b) = (key(a), key(b));
                        let apart = (a - b).abs() > 1e-4 || (a == f32::NEG_INFINITY && a == b);
                        assert!(
                            beam(i) == beam(i + 1) || apart,
                            "{case}, seed {seed}: {a} and {b} from beams {} and {}",
                            beam(i),
                            beam(i + 1)
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn compare_names_the_first_difference() {
        let a = vec![vec![-1.0, -2.0, 4.0, 9.0]];
        assert_eq!(compare(&a, &a, 2), None);
        let close = vec![vec![-1.00001, -2.0, 4.0, 9.0]];
        assert_eq!(compare(&close, &a, 2), None);
        let swapped = vec![vec![-1.0, -2.0, 9.0, 4.0]];
        assert!(compare(&swapped, &a, 2).unwrap().contains("indices"));
        let far = vec![vec![-1.0, -2.5, 4.0, 9.0]];
        assert!(compare(&far, &a, 2).unwrap().contains("value -2.5"));
        assert!(compare(&[], &a, 2).unwrap().contains("0 sentences"));
    }

    #[test]
    fn fits_only_what_the_kernels_hold() {
        assert!(BeamCandidates::fits(4, 8, 58_101));
        assert!(!BeamCandidates::fits(4, MAX_WANT + 1, 58_101));
        assert!(!BeamCandidates::fits(4, 8, 7));
        assert!(!BeamCandidates::fits(0, 8, 100));
        // Flat indices past 2^24 would not be exact as f32.
        assert!(!BeamCandidates::fits(300, 8, 58_101));
    }

    #[test]
    fn bad_shapes_are_errors() {
        let cpu = Device::Cpu;
        let x = Tensor::zeros((6, 50), candle_core::DType::F32, &cpu).unwrap();
        let r = Tensor::zeros(6, candle_core::DType::F32, &cpu).unwrap();
        let short = Tensor::zeros(5, candle_core::DType::F32, &cpu).unwrap();
        let op = |beams, want| BeamCandidates {
            beams,
            want,
            renormalize: true,
        };
        assert!(
            op(4, 8).apply(&x, &r, None).is_err(),
            "6 rows in beams of 4"
        );
        assert!(op(3, 4).apply(&x, &short, None).is_err());
        assert!(op(3, 4).apply(&x, &r, Some(&short)).is_err());
        assert!(op(3, 4).apply(&x, &r, None).is_ok());
    }
}
