#!/usr/bin/env bash
# Score `tidings align` event and theme grouping on both halves of the development set.
#
#   scripts/devset/score.sh [-b BIN] [-m MODEL_DIR] [-d BUILT_DIR] [-- ALIGN_ARGS...]
#
#   -b  tidings binary (default: target/release/tidings, else target/debug/tidings)
#   -m  sentence-transformers model folder (default: .cache/models/all-MiniLM-L6-v2)
#   -d  folder written by scripts/devset/build.py (default: .cache/devset)
#   arguments after -- go to `tidings align`, e.g. -- --threshold 0.5 --max-days-apart 3
#
# The articles are declared English ("lang": "en"), so align embeds them without asking for a
# translation model; --offline keeps it off the network. Each half is aligned into a fresh
# temporary store, so nothing is reused between runs. The predictions and scores are kept in
# the built folder as <half>.pred.json, <half>.eval.json (events) and <half>.themes.eval.json.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"

bin=""
model=".cache/models/all-MiniLM-L6-v2"
dir=".cache/devset"
usage() { sed -n '2,14s/^# \{0,1\}//p' "$0"; }
while [ $# -gt 0 ]; do
    case "$1" in
        -b) bin="$2"; shift 2 ;;
        -m) model="$2"; shift 2 ;;
        -d) dir="$2"; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        --) shift; break ;;
        *) echo "score.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
    esac
done
extra=("$@")

if [ -z "$bin" ]; then
    if [ -x target/release/tidings ]; then bin=target/release/tidings
    elif [ -x target/debug/tidings ]; then bin=target/debug/tidings
    else echo "score.sh: no tidings binary in target/release or target/debug (use -b)" >&2; exit 1
    fi
fi
[ -x "$bin" ] || { echo "score.sh: $bin is not an executable" >&2; exit 1; }
[ -d "$model" ] || { echo "score.sh: model folder $model not found (scripts/fetch-minilm.sh fetches it)" >&2; exit 1; }
for half in tune test; do
    for f in "$dir/$half.jsonl" "$dir/$half.events.tsv"; do
        [ -f "$f" ] || { echo "score.sh: $f not found; run scripts/devset/build.py first" >&2; exit 1; }
    done
done

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

echo "binary: $bin   model: $model   align args: ${extra[*]:-(defaults)}"
for half in tune test; do
    start=$SECONDS
    "$bin" align "$dir/$half.jsonl" --embed-model "$model" --offline \
        --store "$tmp/$half.sqlite" --format json -q -o "$dir/$half.pred.json" ${extra[@]+"${extra[@]}"}
    "$bin" eval-groups --json --gold "$dir/$half.events.tsv" "$dir/$half.pred.json" >"$dir/$half.eval.json"
    "$bin" eval-groups --json --level themes --gold "$dir/$half.themes.tsv" "$dir/$half.pred.json" \
        >"$dir/$half.themes.eval.json"
    echo "$half: aligned and scored in $((SECONDS - start)) s"
done

python3 - "$dir" <<'PY'
import json, sys
d = sys.argv[1]
print(f"{'half':<6}{'parts':>6}{'gold ev':>9}{'pred ev':>9}{'B3 P':>8}{'B3 R':>8}{'B3 F1':>8}{'pair F1':>9}{'ARI':>8}{'NMI':>8}")
for level, suffix in (("events", "eval"), ("themes", "themes.eval")):
    print(level)
    for half in ("tune", "test"):
        r = json.load(open(f"{d}/{half}.{suffix}.json"))
        b = r["bcubed"]
        print(f"{half:<6}{r['items']:>6}{r['gold_events']:>9}{r['predicted_events']:>9}"
              f"{b['precision']:>8.4f}{b['recall']:>8.4f}{b['f1']:>8.4f}"
              f"{r['pairwise']['f1']:>9.4f}{r['ari']:>8.4f}{r['nmi']:>8.4f}")
PY
