//! With the `cuda` feature: compile the project's CUDA kernels to PTX, which the driver turns
//! into machine code for the GPU it finds when a kernel is first loaded (candle does the same
//! for its own). nvcc is called directly: a few files, no build-time dependency needed.

use std::path::PathBuf;
use std::process::Command;

const KERNELS: &[&str] = &[
    "src/model/marian/cuda/beam_candidates.cu",
    "src/model/marian/cuda/decode_attention.cu",
];

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    if std::env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    println!("cargo::rerun-if-env-changed=CUDA_COMPUTE_CAP");
    println!("cargo::rerun-if-env-changed=CUDA_HOME");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let nvcc = std::env::var_os("CUDA_HOME")
        .map(|home| PathBuf::from(home).join("bin/nvcc"))
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("nvcc"));
    let cap = compute_cap();
    for source in KERNELS {
        println!("cargo::rerun-if-changed={source}");
        let stem = PathBuf::from(source);
        let ptx = out.join(stem.with_extension("ptx").file_name().expect("a file name"));
        let status = Command::new(&nvcc)
            .args(["--ptx", "-O3", "-std=c++17"])
            .arg(format!("--gpu-architecture=compute_{cap}"))
            .arg("-o")
            .arg(&ptx)
            .arg(source)
            .status()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run {} ({e}): the cuda feature needs the CUDA toolkit's nvcc \
                     (set CUDA_HOME, or see scripts/cuda-build.sh)",
                    nvcc.display()
                )
            });
        assert!(status.success(), "nvcc failed on {source}");
    }
}

/// The GPU generation to compile for: CUDA_COMPUTE_CAP (e.g. 90), else the first GPU's.
fn compute_cap() -> String {
    if let Ok(cap) = std::env::var("CUDA_COMPUTE_CAP") {
        return cap.replace('.', "");
    }
    let found = Command::new("nvidia-smi")
        .args(["--query-gpu=compute_cap", "--format=csv,noheader"])
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.lines().next().map(|l| l.trim().replace('.', "")))
        .filter(|s| !s.is_empty());
    found.expect("set CUDA_COMPUTE_CAP (e.g. 90 for H100/H200): no GPU to ask")
}
