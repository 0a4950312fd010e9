#!/usr/bin/env bash
# Build tidings with `--features cuda` on a Linux x86-64 machine that needs neither a GPU nor a
# system CUDA toolkit: a CUDA 13.0 toolkit is assembled from NVIDIA's PyPI wheels under
# $TIDINGS_CUDA_TOOLS (default ~/.cache/tidings-cuda; ~1.2 GB, once), for Hopper GPUs (sm_90:
# H100/H200) with a driver of CUDA 13.0 or later. Idempotent.
#
#   bash scripts/cuda-build.sh                # the release binary: target/cuda/release/tidings
#   bash scripts/cuda-build.sh clippy         # clippy --all-targets --features cuda, -D warnings
#   bash scripts/cuda-build.sh env            # the exports any other cargo command needs
#   CUDA_COMPUTE_CAP=89 bash scripts/cuda-build.sh   # another GPU generation
#
# Why each step:
# - 13.0 exactly: candle's kernels are embedded as PTX, which the driver compiles when it loads
#   them; driver 580 (CUDA 13.0) takes PTX ISA 9.0, what nvcc 13.0 writes, and refuses newer.
# - candle's CUDA binding (cudarc) links cuBLAS, cuRAND, cudart and the driver library at build
#   time. The wheels ship only versioned names (libcublas.so.13), so unversioned links are made;
#   no wheel ships the driver (libcuda.so.1), so a stand-in exporting the driver's entry points
#   (each returning CUDA_ERROR_STUB_LIBRARY) is compiled for the linker. At run time the GPU
#   machine's own driver is loaded instead.
# - CUDA_COMPUTE_CAP: with no GPU there is nothing to ask; candle's kernel build reads it.
# - A cold release build took ~11 minutes on 2 cores (much of it compiling candle's kernels).
set -euo pipefail
cd "$(dirname "$0")/.."
tools=${TIDINGS_CUDA_TOOLS:-$HOME/.cache/tidings-cuda}
venv=$tools/venv
cuda=$tools/cuda
wheels=(
  "nvidia-cuda-nvcc==13.0.88" "nvidia-cuda-crt==13.0.88" "nvidia-nvvm==13.0.88"
  "nvidia-cuda-runtime==13.0.96" "nvidia-cuda-cccl==13.0.85" "nvidia-cublas==13.0.2.14"
  "nvidia-curand==10.4.0.35" "nvidia-cuda-nvrtc==13.0.88"
)
exports() {
  echo "export PATH=\"$cuda/bin:\$PATH\" CUDA_HOME=\"$cuda\" CUDA_ROOT=\"$cuda\" CUDARC_CUDA_VERSION=13000 CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}"
}
if [ ! -f "$cuda/lib64/stubs/libcuda.so" ]; then
  [ -x "$venv/bin/pip" ] || python3 -m venv "$venv"
  "$venv/bin/pip" install -q --no-deps "${wheels[@]}"
  cu13=$("$venv/bin/python" -c 'import os, nvidia; print(os.path.join(list(nvidia.__path__)[0], "cu13"))')
  mkdir -p "$cuda/lib64/stubs"
  for d in bin include nvvm; do ln -sfn "$cu13/$d" "$cuda/$d"; done
  for f in "$cu13"/lib/*.so.* "$cu13"/lib/*.a; do [ -e "$f" ] && ln -sfn "$f" "$cuda/lib64/$(basename "$f")"; done
  ( cd "$cuda/lib64"
    ln -sfn libcublas.so.13 libcublas.so; ln -sfn libcublasLt.so.13 libcublasLt.so
    ln -sfn libcurand.so.10 libcurand.so; ln -sfn libnvrtc.so.13 libnvrtc.so
    ln -sfn libcudart.so.13 libcudart.so )
  # The driver's entry points: those cudarc declares, and those cuda.h names. cargo metadata
  # fetches what the lock file names and says where the locked cudarc's sources are.
  cudarc=$(cargo metadata --locked --format-version 1 --features cuda | python3 -c '
import json, os, sys
pkgs = json.load(sys.stdin)["packages"]
print(next(os.path.dirname(p["manifest_path"]) for p in pkgs if p["name"] == "cudarc"))') ||
    { echo "cannot find the sources of cudarc (cargo metadata --features cuda failed)" >&2; exit 1; }
  stub=$tools/stub
  mkdir -p "$stub"
  { grep -ohE 'pub unsafe fn cu[A-Za-z0-9_]+\(' -r "$cudarc/src/driver/sys/" | sed -E 's/pub unsafe fn (.*)\(/\1/'
    grep -oE 'CUDAAPI cu[A-Za-z0-9_]+\(' "$cuda/include/cuda.h" | sed -E 's/CUDAAPI (.*)\(/\1/'
  } | sort -u > "$stub/symbols.txt"
  { echo '/* libcuda.so.1 for the linker only: every entry point fails with CUDA_ERROR_STUB_LIBRARY (34) */'
    while read -r sym; do echo "int $sym(void) { return 34; }"; done < "$stub/symbols.txt"
  } > "$stub/libcuda_stub.c"
  gcc -shared -fPIC -O0 -Wl,-soname,libcuda.so.1 -o "$cuda/lib64/stubs/libcuda.so" "$stub/libcuda_stub.c"
fi
eval "$(exports)"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target/cuda}
case "${1:-build}" in
  env) exports ;;
  # --release: the kernels' build script then runs once for both commands.
  clippy) cargo clippy --locked --release --all-targets --features cuda -- -D warnings ;;
  build)
    cargo build --locked --release --features cuda
    ls -la "$CARGO_TARGET_DIR/release/tidings" ;;
  *) echo "usage: $0 [build|clippy|env]" >&2; exit 2 ;;
esac
