//! The project's CUDA kernels against the reference of their operation.
//!
//! Without a GPU: each kernel file is compiled with the host's C++ compiler under
//! `tests/cuda_emulation/emulate.h` (one thread per CUDA thread, one block at a time) and run
//! on the same inputs as the reference. That checks the kernels' logic: their reductions,
//! their merges, their ties, their edges. With a GPU (and `--features cuda`), the same
//! comparison runs on the device, as the model does before it first uses them.
//!
//! A missing C++ compiler skips the emulated tests loudly; with `TIDINGS_REQUIRE_CXX=1` (set by
//! CI) it fails them.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;

use candle_core::DType;
use candle_core::{Device, Tensor};
use tidings::model::marian::fused::beam_candidates::{check, compare, Case, CASES};
use tidings::model::marian::fused::decode_attention as attention;

/// The emulated kernels of `tests/cuda_emulation/{name}.cpp`, built once per test run;
/// `None` (after a loud skip) without a C++ compiler.
fn harness(name: &str) -> Option<PathBuf> {
    static BUILT: Mutex<Option<HashMap<String, Option<PathBuf>>>> = Mutex::new(None);
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    let built = built.get_or_insert_with(HashMap::new);
    built
        .entry(name.to_string())
        .or_insert_with(|| build(name))
        .clone()
}

fn build(name: &str) -> Option<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let exe = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}_emulated"));
    let source = root.join(format!("tests/cuda_emulation/{name}.cpp"));
    let compiler = std::env::var("CXX").unwrap_or_else(|_| "c++".into());
    let built = Command::new(&compiler)
        .args(["-std=c++20", "-O2", "-pthread", "-Wall", "-Werror", "-o"])
        .arg(&exe)
        .arg(&source)
        .output();
    match built {
        Ok(out) if out.status.success() => Some(exe),
        Ok(out) => panic!(
            "{compiler} could not build the emulated {name} kernels:\n{}",
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => {
            assert!(
                std::env::var("TIDINGS_REQUIRE_CXX").as_deref() != Ok("1"),
                "TIDINGS_REQUIRE_CXX=1 but {compiler} cannot run ({e}); apt-get install g++"
            );
            eprintln!(
                "\n*** SKIPPED: the emulated CUDA kernel tests need a C++20 compiler \
                 ({compiler}: {e}).\n*** Install one with `apt-get install g++`.\n"
            );
            None
        }
    }
}

/// Runs an emulated program on `input`; its stdout as f32s.
fn run_emulated(exe: &Path, input: &[u8], what: &str) -> Vec<f32> {
    let mut child = Command::new(exe)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the emulated kernels failed on {what}"
    );
    out.stdout
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

/// The emulated kernels' output for `case` on the inputs of `seed` (sentences × 2·want).
fn emulated(exe: &Path, case: &Case, seed: u32) -> Vec<Vec<f32>> {
    let (logits, running, ban) = case.inputs(seed);
    emulated_on(exe, case, &logits, &running, case.ban.then_some(&ban[..]))
}

fn emulated_on(
    exe: &Path,
    case: &Case,
    logits: &[f32],
    running: &[f32],
    ban: Option<&[f32]>,
) -> Vec<Vec<f32>> {
    let want = case.op.want;
    let mut input = header(&[
        case.rows(),
        case.vocab,
        case.op.beams,
        want,
        usize::from(ban.is_some()),
        usize::from(case.op.renormalize),
    ]);
    for v in logits.iter().chain(running).chain(ban.unwrap_or(&[])) {
        input.extend_from_slice(&v.to_le_bytes());
    }
    let floats = run_emulated(exe, &input, &case.to_string());
    assert_eq!(floats.len(), case.sentences * 2 * want, "{case}");
    floats.chunks(2 * want).map(<[f32]>::to_vec).collect()
}

/// A harness's input header: each number as a little-endian i32.
fn header(numbers: &[usize]) -> Vec<u8> {
    numbers
        .iter()
        .flat_map(|&n| i32::try_from(n).unwrap().to_le_bytes())
        .collect()
}

#[test]
fn emulated_beam_kernels_equal_their_reference() {
    let Some(exe) = harness("beam_candidates") else {
        return;
    };
    for (n, case) in CASES.iter().enumerate() {
        // Other inputs than the GPU's check takes.
        let seed = 100 + n as u32;
        let got = emulated(&exe, case, seed);
        let expected = case.run(seed, &Device::Cpu).unwrap();
        if let Some(diff) = compare(&got, &expected, case.op.want) {
            panic!("{case}: {diff}");
        }
    }
}

/// The beam operation's reference on given logits and running scores (no ban).
fn reference_of(case: &Case, logits: &[f32], running: &[f32]) -> Vec<Vec<f32>> {
    let cpu = Device::Cpu;
    let rows = running.len();
    case.op
        .apply(
            &Tensor::from_slice(logits, (rows, logits.len() / rows), &cpu).unwrap(),
            &Tensor::from_slice(running, rows, &cpu).unwrap(),
            None,
        )
        .unwrap()
        .to_vec2::<f32>()
        .unwrap()
}

#[test]
fn emulated_beam_kernels_break_ties_by_index() {
    let Some(exe) = harness("beam_candidates") else {
        return;
    };
    // Two beams of 600 equal logits but for a few: the best are the few, then the lowest
    // indices, and the beams' equal values come lowest flat index first.
    let vocab = 600;
    let mut case = CASES[2];
    (case.sentences, case.vocab, case.op.want, case.ban) = (1, vocab, 6, false);
    let mut logits = vec![1.0f32; 2 * vocab];
    logits[599] = 3.0;
    logits[vocab + 300] = 3.0;
    logits[vocab + 2] = 2.0;
    let running = [0.0f32, 0.0];
    let got = emulated_on(&exe, &case, &logits, &running, None);
    let indices: Vec<usize> = got[0][6..].iter().map(|&i| i as usize).collect();
    assert_eq!(indices, [599, vocab + 300, vocab + 2, 0, 1, 2]);
    let expected = reference_of(&case, &logits, &running);
    assert_eq!(compare(&got, &expected, 6), None);
}

/// On a GPU: each kernel against its reference, as the model checks them before their first
/// use.
#[test]
fn gpu_kernels_equal_their_references() {
    match Device::cuda_if_available(0) {
        Ok(device) if device.is_cuda() => {
            check(&device).unwrap();
            attention::check(&device).unwrap();
        }
        _ => eprintln!("*** SKIPPED: no CUDA GPU (the emulated tests ran the kernels)"),
    }
}

/// The emulated decode-attention kernel's output for `case` on the inputs of `seed`.
fn emulated_attention(exe: &Path, case: &attention::Case, seed: u32) -> Vec<f32> {
    let dtype = match case.dtype {
        DType::F32 => 0,
        DType::F16 => 1,
        DType::BF16 => 2,
        other => panic!("{other:?}"),
    };
    let mut input = header(&[
        dtype,
        case.groups,
        case.heads,
        case.per,
        case.len,
        case.capacity,
        case.head_dim,
        usize::from(case.bias),
    ]);
    input.extend_from_slice(&case.scale.to_le_bytes());
    let [q, k, v, bias] = case.inputs(seed);
    let bias = if case.bias { bias } else { Vec::new() };
    for x in q.iter().chain(&k).chain(&v).chain(&bias) {
        input.extend_from_slice(&x.to_le_bytes());
    }
    run_emulated(exe, &input, &case.to_string())
}

#[test]
fn emulated_attention_kernels_equal_their_reference() {
    let Some(exe) = harness("decode_attention") else {
        return;
    };
    for (n, case) in attention::CASES.iter().enumerate() {
        let seed = 100 + n as u32;
        let got = emulated_attention(&exe, case, seed);
        let expected = case.run(seed, &Device::Cpu).unwrap();
        if let Some(diff) = attention::compare(case, &got, &expected) {
            panic!("{case}: {diff}");
        }
    }
}

#[test]
fn emulated_beam_kernels_put_a_nan_row_last() {
    let Some(exe) = harness("beam_candidates") else {
        return;
    };
    // Beam 0 would win but for one NaN logit, which makes its log-probabilities NaN (as
    // log-softmax does), and NaN counts as -inf: every pick comes from beam 1. The NaN is a
    // thread's only entry (token 150 of 300), and then one after others (token 280).
    let vocab = 300;
    let mut case = CASES[2];
    (case.sentences, case.vocab, case.op.want, case.ban) = (1, vocab, 4, false);
    for nan_at in [150, 280] {
        let mut logits: Vec<f32> = (0..2 * vocab).map(|i| (i % 17) as f32 * 0.1).collect();
        logits[10] = 9.0;
        logits[nan_at] = f32::NAN;
        let running = [0.0f32, -1.0];
        let got = emulated_on(&exe, &case, &logits, &running, None);
        assert!(
            got[0][4..].iter().all(|&i| i as usize >= vocab),
            "NaN at {nan_at}: {:?}",
            got[0]
        );
        let expected = reference_of(&case, &logits, &running);
        assert_eq!(compare(&got, &expected, 4), None, "NaN at {nan_at}");
    }
}
