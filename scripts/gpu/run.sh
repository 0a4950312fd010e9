#!/usr/bin/env bash
# tidings on an NVIDIA GPU beside transformers and sentence-transformers, from the repository
# root of a machine whose python3 has torch, transformers and sentence-transformers (no Rust, no
# network needed):
#   1. parity: f32 must give transformers' ids on the committed fixtures; f16/bf16 are reported
#      (ids equal to transformers, batch 32 equal to batch 1) for bf16;
#   2. speed: random-weight opus-mt-base-shape Marian, 32 new tokens per sentence, 128 token-id
#      rows with news-like lengths: `tidings bench` at batch 1 greedy and batch 32/128 beam 4 in
#      f32, bf16 and f16; MiniLM-shape embeddings at batch 32/128 in f32 and bf16;
#   3. where the time goes: the decoder's sections at batch 1 greedy and batch 128 beam 4, f32
#      and bf16, timed on the host (TIDINGS_PROFILE=1) and on the device (=sync);
#   4. the peers on the same GPU, model folders and rows: transformers `generate` fp32 and fp16,
#      sentence-transformers fp32 and fp16;
#   5. tidings with candle's operations only (TIDINGS_FUSED_KERNELS=off), what the project's
#      fused kernels gain (f32 and bf16).
# usage: bash scripts/gpu/run.sh TIDINGS_BIN_OR_.xz OUT_DIR [MINILM_CONFIG_DIR]
# The binary comes from scripts/cuda-build.sh; MINILM_CONFIG_DIR needs only all-MiniLM-L6-v2's
# config and tokenizer files (the weights are made up here).
# Every step runs even when one before it failed; the exit status says whether any failed.
set -uo pipefail
status=0
step() { "$@" || { echo "FAILED ($?): $*"; status=1; }; }
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
bin=$1 out=$2 minilm=${3:-}
mkdir -p "$out"
case "$bin" in
  *.xz) xz -d -c "$bin" > /tmp/tidings-gpu && chmod +x /tmp/tidings-gpu && bin=/tmp/tidings-gpu ;;
esac
# The CUDA 13 libraries PyTorch's wheels bring (cuBLAS, cuRAND, cudart).
libs=$(find / -xdev \( -name 'libcublas.so.13' -o -name 'libcurand.so.10' -o -name 'libcudart.so.13' \) 2>/dev/null | xargs -r -n1 dirname | sort -u | paste -sd:)
export LD_LIBRARY_PATH=$libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/gpu.txt"
python3 -c 'import torch, transformers; print("torch", torch.__version__, "cuda", torch.version.cuda, "transformers", transformers.__version__)' | tee -a "$out/gpu.txt"
ldd "$bin" | grep -E "not found" && { echo "missing libraries"; exit 1; }

echo "== parity"
step timeout 150 python3 "$here/parity.py" "$bin" "$root/tests/fixtures" cuda f32 > "$out/parity-f32.txt" ||
  # With the fused kernels in use, a failure is also tried with candle's operations only.
  step env TIDINGS_FUSED_KERNELS=off timeout 150 python3 "$here/parity.py" "$bin" "$root/tests/fixtures" cuda f32 > "$out/parity-f32-candle-ops.txt"
tail -1 "$out"/parity-f32*.txt
step timeout 90 python3 "$here/parity.py" "$bin" "$root/tests/fixtures" cuda bf16 > "$out/parity-bf16.txt"; tail -1 "$out/parity-bf16.txt"

echo "== models"
step timeout 120 python3 "$here/make_models.py" /tmp/gpu-models $minilm
texts=/tmp/gpu-texts.txt
for _ in $(seq 32); do cat "$root/benches/news-sentences.txt"; done > "$texts"

echo "== tidings"
m=/tmp/gpu-models
for ct in f32 bf16 f16; do
  step timeout 60 "$bin" bench --model $m/marian --input $m/ids.json --device cuda --compute-type $ct \
    --batch-sizes 1 --beams 1 --sentences 16 --json > "$out/tidings-$ct-b1.json" 2> "$out/tidings-$ct-b1.err"
  step timeout 90 "$bin" bench --model $m/marian --input $m/ids.json --device cuda --compute-type $ct \
    --batch-sizes 32,128 --beams 4 --json > "$out/tidings-$ct-b32.json" 2> "$out/tidings-$ct-b32.err"
done
if [ -d $m/minilm ]; then
  for ct in f32 bf16; do
    step timeout 60 "$bin" bench --embed-model $m/minilm --input "$texts" --device cuda --compute-type $ct \
      --batch-sizes 32,128 --json > "$out/tidings-embed-$ct.json" 2> "$out/tidings-embed-$ct.err"
  done
fi
echo "== profile"
# Where a decode step's time goes: TIDINGS_PROFILE=1 charges each section the host's time to
# launch its kernels, =sync the kernels' own time (the device is waited for around each one).
# Close totals mean the decoder is bound by launches; sync far above 1 means by the kernels.
for ct in f32 bf16; do
  for mode in 1 sync; do
    step env TIDINGS_PROFILE=$mode timeout 60 "$bin" bench --model $m/marian --input $m/ids.json --device cuda \
      --compute-type $ct --batch-sizes 1 --beams 1 --sentences 16 --json > /dev/null 2> "$out/profile-$ct-$mode-b1.txt"
    step env TIDINGS_PROFILE=$mode timeout 60 "$bin" bench --model $m/marian --input $m/ids.json --device cuda \
      --compute-type $ct --batch-sizes 128 --beams 4 --sentences 128 --json > /dev/null 2> "$out/profile-$ct-$mode-b128.txt"
  done
done
grep -H "| total" "$out"/profile-*.txt

echo "== peers"
step timeout 200 python3 "$here/peers.py" /tmp/gpu-models "$texts" "$out/peers.json" 2> "$out/peers.err"

echo "== fused kernels"
# The decoder with candle's operations only (TIDINGS_FUSED_KERNELS=off) beside the default (the
# project's kernels, each once its check passes on this GPU; the report's fused_kernels says
# which ran), batch 1 greedy and batch 32/128 beam 4 in f32 and bf16; then the checks' log.
for ct in f32 bf16; do
  step env TIDINGS_FUSED_KERNELS=off timeout 60 "$bin" bench --model $m/marian --input $m/ids.json --device cuda \
    --compute-type $ct --batch-sizes 1 --beams 1 --sentences 16 --json > "$out/tidings-$ct-b1-candle-ops.json" 2> "$out/tidings-$ct-b1-candle-ops.err"
  step env TIDINGS_FUSED_KERNELS=off timeout 90 "$bin" bench --model $m/marian --input $m/ids.json --device cuda \
    --compute-type $ct --batch-sizes 32,128 --beams 4 --json > "$out/tidings-$ct-b32-candle-ops.json" 2> "$out/tidings-$ct-b32-candle-ops.err"
done
python3 -c 'import json, sys; [print(f, json.load(open(f))["translation"]["fused_kernels"]) for f in sys.argv[1:]]' "$out"/tidings-*-b*.json
step env RUST_LOG=tidings=info timeout 60 "$bin" bench --model $m/marian --input $m/ids.json --device cuda \
  --batch-sizes 2 --beams 4 --sentences 2 --json 2>&1 >/dev/null | grep -i "fused" | tee "$out/fused-check.txt"
echo "== summary"
python3 - "$out" <<'PY'
import glob, json, os, sys
for f in sorted(glob.glob(os.path.join(sys.argv[1], "tidings-*.json"))):
    try:
        j = json.load(open(f))
    except Exception:
        print(os.path.basename(f), "no result")
        continue
    for part in ("translation", "embedding"):
        for r in ((j.get(part) or {}).get("runs") or []):
            keep = ("batch_size", "num_beams", "generated_tokens_per_s", "texts_per_s", "batch_p50_ms")
            print(os.path.basename(f), j.get("dtype"), (j.get("translation") or {}).get("fused_kernels", ""), part, {k: (round(v, 1) if isinstance(v, float) else v) for k, v in r.items() if k in keep},
                  "peak GPU MiB", round((j.get("peak_gpu_memory_bytes") or 0) / 2**20))
PY
exit $status
