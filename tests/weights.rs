//! Reading weights from safetensors and both torch `.bin` layouts.
//! Fixtures come from scripts/make_weight_fixtures.py.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use tidings::model::weights::{detect_format, read_tensors, WeightsError, WeightsFormat};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/weights")
        .join(name)
}

const MODEL_FILES: [(&str, WeightsFormat); 3] = [
    ("model.safetensors", WeightsFormat::Safetensors),
    ("model_zip.bin", WeightsFormat::TorchZip),
    ("model_legacy.bin", WeightsFormat::TorchLegacy),
];

fn expected() -> serde_json::Map<String, serde_json::Value> {
    let text = std::fs::read_to_string(fixture("expected.json")).expect("expected.json");
    match serde_json::from_str(&text).expect("expected.json parses") {
        serde_json::Value::Object(map) => map,
        other => panic!("expected.json is not an object: {other}"),
    }
}

fn values_f64(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64)
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.to_vec1::<f64>())
        .expect("float values")
}

fn values_i64(t: &Tensor) -> Vec<i64> {
    t.to_dtype(DType::I64)
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.to_vec1::<i64>())
        .expect("integer values")
}

fn assert_matches_expected(file: &str) {
    let tensors = read_tensors(&fixture(file), &Device::Cpu)
        .unwrap_or_else(|e| panic!("reading {file}: {e}"));
    let want = expected();
    let got_names: BTreeSet<&str> = tensors.keys().map(String::as_str).collect();
    let want_names: BTreeSet<&str> = want.keys().map(String::as_str).collect();
    assert_eq!(got_names, want_names, "{file}: tensor names");

    for (name, spec) in &want {
        let t = &tensors[name];
        assert_eq!(t.dtype().as_str(), spec["dtype"], "{file}: dtype of {name}");
        let shape: Vec<usize> = spec["shape"]
            .as_array()
            .expect("shape")
            .iter()
            .map(|d| d.as_u64().expect("dim") as usize)
            .collect();
        assert_eq!(t.dims(), shape.as_slice(), "{file}: shape of {name}");
        let values = spec["values"].as_array().expect("values");
        if t.dtype().is_float() {
            let want: Vec<f64> = values.iter().map(|v| v.as_f64().expect("f64")).collect();
            assert_eq!(values_f64(t), want, "{file}: values of {name}");
        } else {
            let want: Vec<i64> = values.iter().map(|v| v.as_i64().expect("i64")).collect();
            assert_eq!(values_i64(t), want, "{file}: values of {name}");
        }
    }
}

#[test]
fn safetensors_reads_expected_values() {
    assert_matches_expected("model.safetensors");
}

#[test]
fn torch_zip_reads_expected_values() {
    assert_matches_expected("model_zip.bin");
}

#[test]
fn torch_legacy_reads_expected_values() {
    assert_matches_expected("model_legacy.bin");
}

#[test]
fn detect_format_goes_by_content_not_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (file, format) in MODEL_FILES {
        assert_eq!(detect_format(&fixture(file)).expect(file), format, "{file}");
        // Misleading names must not matter.
        for fake in ["model.safetensors", "pytorch_model.bin", "weights"] {
            let copy = dir.path().join(fake);
            std::fs::copy(fixture(file), &copy).expect("copy");
            assert_eq!(
                detect_format(&copy).expect(fake),
                format,
                "{file} as {fake}"
            );
        }
    }
}

/// A scratch folder for the many-files loops: in memory where Linux offers
/// one, so the loops do not wait on disk I/O.
fn scratch_dir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(dir) = tempfile::tempdir_in(shm) {
            return dir;
        }
    }
    tempfile::tempdir().expect("tempdir")
}

/// Writes `bytes` to a fresh file in `dir` and reads it.
fn read_bytes(
    dir: &Path,
    bytes: &[u8],
) -> Result<std::collections::HashMap<String, Tensor>, WeightsError> {
    let path = dir.join("weights.bin");
    std::fs::write(&path, bytes).expect("write");
    read_tensors(&path, &Device::Cpu)
}

#[test]
fn truncation_at_any_offset_is_an_error() {
    let dir = scratch_dir();
    for (file, _) in MODEL_FILES {
        let full = std::fs::read(fixture(file)).expect(file);
        assert!(read_bytes(dir.path(), &full).is_ok(), "{file}: full file");
        for len in 0..full.len() {
            if let Ok(map) = read_bytes(dir.path(), &full[..len]) {
                panic!(
                    "{file} truncated to {len} of {} bytes read as {} tensors",
                    full.len(),
                    map.len()
                );
            }
        }
    }
}

#[test]
fn truncated_legacy_storage_names_the_problem() {
    let dir = tempfile::tempdir().expect("tempdir");
    let full = std::fs::read(fixture("model_legacy.bin")).expect("fixture");
    let err = read_bytes(dir.path(), &full[..full.len() - 3]).expect_err("truncated");
    assert!(
        matches!(err, WeightsError::Truncated { .. }),
        "unexpected error: {err}"
    );
    assert!(err.to_string().contains("weights.bin"), "{err}");
}

#[test]
fn corrupted_bytes_never_panic() {
    // Every single-byte corruption must give a result or an error, not a panic
    // (allocation failures and stack overflows abort, which also fails the run).
    let dir = scratch_dir();
    let mut errors = 0usize;
    for (file, _) in MODEL_FILES {
        let full = std::fs::read(fixture(file)).expect(file);
        for at in 0..full.len() {
            // A low bit flip hits lengths and opcodes alike; 0xff makes lengths huge.
            for value in [0xff, full[at] ^ 0x01] {
                let mut bytes = full.clone();
                bytes[at] = value;
                if read_bytes(dir.path(), &bytes).is_err() {
                    errors += 1;
                }
            }
        }
    }
    // Structure bytes are everywhere in these tiny files, so most corruptions are caught.
    assert!(errors > 0);
}

#[test]
fn zip_storage_corruption_fails_the_crc_check() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut bytes = std::fs::read(fixture("model_zip.bin")).expect("fixture");
    // encoder.bias is [0.5, -0.5, 1.0, 2.0] as little-endian f32, stored verbatim.
    let needle: Vec<u8> = [0.5f32, -0.5, 1.0, 2.0]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle.as_slice())
        .expect("encoder.bias bytes in the archive");
    bytes[at + 5] ^= 0x40;
    let err = read_bytes(dir.path(), &bytes).expect_err("corrupted storage");
    assert!(err.to_string().contains("checksum"), "{err}");
}

fn assert_forbidden_global(file: &str) {
    let err = read_tensors(&fixture(file), &Device::Cpu).expect_err(file);
    match &err {
        WeightsError::ForbiddenGlobal { module, name, .. } => {
            assert_eq!((module.as_str(), name.as_str()), ("os", "system"));
        }
        other => panic!("{file}: expected ForbiddenGlobal, got {other}"),
    }
    let msg = err.to_string();
    assert!(msg.contains("os.system"), "{msg}");
    assert!(msg.contains(file), "{msg}");
}

#[test]
fn malicious_global_in_legacy_file_is_refused() {
    assert_forbidden_global("evil_legacy.bin");
}

#[test]
fn malicious_global_in_zip_file_is_refused() {
    assert_forbidden_global("evil_zip.bin");
}

#[test]
fn nested_checkpoint_is_explained() {
    let err = read_tensors(&fixture("nested_legacy.bin"), &Device::Cpu).expect_err("nested");
    assert!(matches!(err, WeightsError::NotStateDict { .. }), "{err}");
    assert!(err.to_string().contains("`state_dict`"), "{err}");
}

#[test]
fn garbage_files_are_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut noise = Vec::with_capacity(4096);
    let mut x: u32 = 0x1234_5678;
    for _ in 0..4096 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        noise.push(x as u8);
    }
    let cases: [(&str, &[u8]); 4] = [
        ("empty", b""),
        (
            "text",
            b"version https://git-lfs.github.com/spec/v1\noid sha256:abc\n",
        ),
        ("noise", &noise),
        ("pickle of a list", b"\x80\x02]q\x00."),
    ];
    for (what, bytes) in cases {
        let path = dir.path().join(what);
        std::fs::write(&path, bytes).expect("write");
        let err = read_tensors(&path, &Device::Cpu).expect_err(what);
        assert!(
            matches!(err, WeightsError::UnknownFormat { .. }),
            "{what}: {err}"
        );
        assert!(err.to_string().contains(what), "{what}: {err}");
    }

    // Right magic, garbage after it.
    let mut fake_zip = b"PK\x03\x04".to_vec();
    fake_zip.extend_from_slice(&noise);
    let err = read_bytes(dir.path(), &fake_zip).expect_err("fake zip");
    assert!(matches!(err, WeightsError::Zip { .. }), "{err}");
}

#[test]
fn truncated_safetensors_header_is_reported_as_truncated() {
    let dir = tempfile::tempdir().expect("tempdir");
    let full = std::fs::read(fixture("model.safetensors")).expect("fixture");
    for len in [9, 20, 100] {
        let err = read_bytes(dir.path(), &full[..len]).expect_err("truncated");
        assert!(
            matches!(err, WeightsError::Truncated { .. }),
            "{len}: {err}"
        );
    }
}

#[test]
fn errors_work_with_anyhow() {
    fn assert_send_sync<T: Send + Sync + 'static>() {}
    assert_send_sync::<WeightsError>();
    let err = read_tensors(&fixture("evil_zip.bin"), &Device::Cpu).expect_err("evil");
    let err = anyhow::Error::from(err);
    assert!(err.to_string().contains("os.system"));
}

#[test]
fn missing_file_is_an_io_error() {
    let err = read_tensors(Path::new("/nonexistent/pytorch_model.bin"), &Device::Cpu)
        .expect_err("missing");
    assert!(matches!(err, WeightsError::Io { .. }), "{err}");
    assert!(err.to_string().contains("pytorch_model.bin"), "{err}");
}

/// Times reading one large state dict in all three formats and checks they agree.
/// Make the files with `python scripts/make_weight_fixtures.py --bench DIR`
/// and run with TIDINGS_WEIGHTS_BENCH_DIR=DIR and `--ignored --nocapture`.
#[test]
#[ignore = "needs large files in TIDINGS_WEIGHTS_BENCH_DIR"]
fn bench_large_files() {
    let Ok(dir) = std::env::var("TIDINGS_WEIGHTS_BENCH_DIR") else {
        eprintln!("TIDINGS_WEIGHTS_BENCH_DIR not set");
        return;
    };
    let dir = PathBuf::from(dir);
    let mut reference: Option<std::collections::HashMap<String, Tensor>> = None;
    for (file, _) in MODEL_FILES {
        let path = dir.join(file);
        let size = std::fs::metadata(&path).expect("bench file").len();
        let started = std::time::Instant::now();
        let tensors = read_tensors(&path, &Device::Cpu).expect("read");
        let elapsed = started.elapsed();
        eprintln!(
            "{file}: {} MB, {} tensors, {:.3} s",
            size / 1_000_000,
            tensors.len(),
            elapsed.as_secs_f64()
        );
        match &reference {
            None => reference = Some(tensors),
            Some(first) => {
                assert_eq!(first.len(), tensors.len(), "{file}");
                for (name, t) in first {
                    let diff = (t - &tensors[name])
                        .and_then(|d| d.abs())
                        .and_then(|d| d.flatten_all())
                        .and_then(|d| d.max(0))
                        .and_then(|d| d.to_dtype(DType::F64))
                        .and_then(|d| d.to_scalar::<f64>())
                        .expect("diff");
                    assert_eq!(diff, 0.0, "{file}: {name}");
                }
            }
        }
    }
}
