"""`tidings translate --device DEVICE` on the committed fixtures (tests/fixtures/marian-tiny-*)
against transformers' reference.json, greedy and beam 4, batch 1 and 32.

f32 must give the reference's ids exactly: the exit status is 1 otherwise (or when a run fails).
Half precision (--compute-type f16|bf16) is not bit-equal: it reports how many sentences equal
the reference and whether batch 32 gives the same ids as batch 1 (batch invariance), and fails
only when a run fails.

usage: python3 parity.py TIDINGS_BIN FIXTURES_DIR DEVICE COMPUTE_TYPE"""
import json
import os
import subprocess
import sys

binary, fixtures, device, compute = sys.argv[1:5]
total = same = invariant = failed = 0
for fx in sorted(f for f in os.listdir(fixtures) if f.startswith("marian-tiny")):
    d = os.path.join(fixtures, fx)
    ref = json.load(open(os.path.join(d, "reference.json")))
    idx = [i for i, t in enumerate(ref["inputs"]) if t.strip() and "\n" not in t and "\r" not in t]
    src = "\n".join(ref["inputs"][i] for i in idx) + "\n"
    for key, beam in (("greedy", 1), ("beam4", 4)):
        by_batch = {}
        for batch in (1, 32):
            p = subprocess.run(
                [binary, "translate", "--device", device, "--compute-type", compute, "--model", d,
                 "--json", "--beam", str(beam), "--max-new-tokens", str(ref[key]["max_new_tokens"]),
                 "--batch-size", str(batch),
                 "--offline", "--quiet"],
                input=src, capture_output=True, text=True, timeout=300)
            outs = [json.loads(line) for line in p.stdout.splitlines() if line.strip()]
            if len(outs) != len(idx):
                print(fx, key, batch, "FAILED", p.returncode, p.stderr[-600:])
                total += len(idx)
                failed += 1
                continue
            ids = [o["token_ids"] for o in outs]
            by_batch[batch] = ids
            ok = sum(got == ref[key]["alone"][i] for got, i in zip(ids, idx))
            print(f"{fx} {compute} {key} batch {batch}: ids equal to transformers {ok}/{len(idx)}")
            total += len(idx)
            same += ok
        if len(by_batch) == 2:
            invariant += sum(a == b for a, b in zip(by_batch[1], by_batch[32]))
print(f"parity on {device} {compute}: {same}/{total} equal to transformers; "
      f"batch 32 equal to batch 1: {invariant}/{total // 2}")
sys.exit(1 if failed or (compute == "f32" and same != total) else 0)
