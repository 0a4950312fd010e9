#!/usr/bin/env python3
"""Grouping experiments on the development set: similarity and linkage choices for events and
themes, scored with B-cubed F1 against the hand labels.

    python3 scripts/devset/experiments.py [--dir .cache/devset] [--bin target/debug/tidings]
                                          [--model .cache/models/all-MiniLM-L6-v2] [--steps 0,1,2,3,4,5,6,7]

Needs numpy (and the `tokenizers` package for chunking by word pieces; without it chunks are
cut at about 150 words). Runs only the existing binary, never builds it:

- `tidings align` on each half (and on a title-less copy) into SQLite stores under
  `<dir>/emb/`, to read the article vectors, cleaned texts and publication days exactly as
  `tidings align` makes them (whole text, chunked at the model's length, pooled);
- `tidings embed` for other texts (titles, sentence chunks, the first 256 tokens), cached in
  `<dir>/emb/embed-cache.npz` by the SHA-256 of the text.

The stores and the cache are made once and reused; delete `<dir>/emb/` after changing the
binary, the model or the built set.

Clustering is greedy agglomerative clustering over a similarity matrix: merge the two groups
with the highest linkage while it is at least the threshold; two articles published more than
7 days apart never share a group (cannot-link, carried through merges). Average linkage
reproduces `tidings align` (step 0 checks that the partitions, events and themes, are identical
to the ones `tidings align` printed).

Steps: 0 checks, 1 thresholds, 2 evidence mix (TF-IDF, names, numbers), 3 chunked embeddings,
4 title weighting, 5 linkage, 6 combinations, 7 a stress check with documents cut in four
(bigger events).

Tuning is on the tune half only. A setting is chosen by its smoothed tune F1 (the mean of the
F1 at the threshold and its two neighbours on the grid), so a lone spike does not win; the
test half is scored at the chosen setting. Output: markdown tables on stdout.
"""

import argparse
import datetime as dt
import hashlib
import itertools
import json
import math
import os
import re
import sqlite3
import subprocess
import sys
import tempfile
from collections import Counter

import numpy as np

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
HALVES = ("tune", "test")
EVENT_GRID = [round(0.40 + 0.025 * k, 3) for k in range(17)]  # 0.400 .. 0.800
THEME_GRID = [round(0.20 + 0.025 * k, 3) for k in range(25)]  # 0.200 .. 0.800
DEFAULT_T, DEFAULT_THEME_T, MAX_DAYS = 0.525, 0.40, 7


# --------------------------------------------------------------------------------------------
# Text features, after src/group/explain.rs (terms, names, numbers)

STOP_WORDS = set("""
a about above according across after again against ago all almost along already also although
always am among an and another any are around as at back be became because become been before
being below between both but by can could did do does doing done down during each early either
else enough even ever every few first for former from further get got had has have having he her
here hers herself him himself his how however i if in including into is it its itself just last
late later least less like made make many may me might more most much must my near nearly never
new next no nor not now of off often on once one only or other others our ours out over own per
please put quite rather really said same say says see seen several she should since so some
still such than that the their theirs them themselves then there these they this those though
through thus to told too toward towards two under until up upon us very was we well were what
when where whether which while who whom whose why will with within without would year years yet
you your yours yourself""".split())
CALENDAR = set("""Monday Tuesday Wednesday Thursday Friday Saturday Sunday January February March
April May June July August September October November December""".split())
CONNECTORS = set("al bin da de del della den der do dos du la le of van von y".split())


def terms(text):
    """Lower-case word tokens: at least 3 characters with a letter, no stop words."""
    out = []
    for w in re.split(r"[^\w]|_", text):
        if len(w) >= 3 and any(c.isalpha() for c in w):
            w = w.lower()
            if w not in STOP_WORDS:
                out.append(w)
    return out


def tokens(text):
    """(word, sentence_start, joined) as explain.rs `tokens`: a newline or . ! ? followed by a
    space starts a sentence; punctuation breaks a name run."""
    out = []
    sentence_start, joined = True, False
    word_char = lambda c: c.isalnum() or c in "'\u2019-"
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if word_char(c):
            j = i
            while j < n and word_char(text[j]):
                j += 1
            t = text[i:j].strip("'\u2019-")
            for suf in ("'s", "\u2019s"):
                if t.endswith(suf):
                    t = t[: -len(suf)]
            if not t:
                joined = False
            else:
                out.append((t, sentence_start, joined))
                sentence_start, joined = False, True
            i = j
            continue
        if c.isspace():
            if c == "\n":
                sentence_start, joined = True, False
        else:
            joined = False
            nxt = text[i + 1] if i + 1 < n else None
            if c in ".!?" and (nxt is None or nxt.isspace()):
                sentence_start = True
        i += 1
    return out


def capitalised(t):
    return (t[:1].isupper() and sum(c.isalpha() for c in t) >= 2
            and t.lower() not in STOP_WORDS and t not in CALENDAR)


def name_runs(text):
    """Maximal runs of capitalised words (connectors allowed inside), each as
    (name, sentence_initial)."""
    toks = tokens(text)
    out, k = [], 0
    while k < len(toks):
        if not capitalised(toks[k][0]):
            k += 1
            continue
        end, j = k + 1, k + 1
        while j < len(toks) and toks[j][2]:
            if capitalised(toks[j][0]):
                end = j + 1
            elif toks[j][0] not in CONNECTORS:
                break
            j += 1
        out.append((" ".join(t[0] for t in toks[k:end]), toks[k][1]))
        k = end
    return out


def numbers(text):
    """Numbers as explain.rs `numbers`: "6.1", "120,000", "7-2", "3.75%"; not inside words."""
    out, k, n = [], 0, len(text)
    while k < n:
        inside = k > 0 and (text[k - 1].isalnum()
                            or (text[k - 1] == "-" and k > 1 and text[k - 2].isalnum()))
        if not (text[k].isascii() and text[k].isdigit()) or inside:
            k += 1
            continue
        s, j = "", k
        while True:
            while j < n and text[j].isascii() and text[j].isdigit():
                s += text[j]
                j += 1
            if j + 1 < n and text[j] in ".,-" and text[j + 1].isascii() and text[j + 1].isdigit():
                s += text[j]
                j += 1
            else:
                break
        glued = j < n and text[j].isalpha()
        p = j + 1 if j < n and text[j] in " \u00a0\u202f" else j
        if p < n and text[p] == "%":
            s += "%"
            j = p + 1
        if not glued:
            out.append(s)
        k = j
    return out


def tfidf_matrix(docs):
    """Unit sublinear TF-IDF rows: (1 + ln tf) * (ln((1+N)/(1+df)) + 1)."""
    counts = [Counter(terms(d)) for d in docs]
    df = Counter(t for c in counts for t in c)
    vocab = {t: i for i, t in enumerate(sorted(df))}
    n = len(docs)
    m = np.zeros((n, len(vocab)))
    for r, c in enumerate(counts):
        for t, tf in c.items():
            m[r, vocab[t]] = (1 + math.log(tf)) * (math.log((1 + n) / (1 + df[t])) + 1)
    return unit_rows(m)


def unit_rows(m):
    norms = np.linalg.norm(m, axis=1, keepdims=True)
    return m / np.where(norms > 0, norms, 1)


def set_sim(sets, kind):
    """Pairwise Jaccard ("jac") or overlap coefficient ("ovl") of sets; 0 when either is empty."""
    n = len(sets)
    s = np.zeros((n, n))
    for i in range(n):
        for j in range(i + 1, n):
            a, b = sets[i], sets[j]
            if not a or not b:
                continue
            inter = len(a & b)
            d = len(a | b) if kind == "jac" else min(len(a), len(b))
            s[i, j] = s[j, i] = inter / d
    return s


def name_sets(docs, mode):
    """Per document, the names in it that are written away from a sentence start somewhere in
    the batch (a capital there may be grammar). mode "runs": maximal runs; "words": their
    single capitalised words."""
    per_doc = []
    for d in docs:
        runs = name_runs(d)
        if mode == "words":
            runs = [(w, ini and k == 0) for r, ini in runs for k, w in enumerate(r.split())
                    if capitalised(w)]
        per_doc.append(runs)
    non_initial = {r for runs in per_doc for r, ini in runs if not ini}
    return [{r for r, _ in runs if r in non_initial} for runs in per_doc]


def number_sets(docs):
    """Numbers of at least two characters (single digits say little)."""
    return [{x for x in numbers(d) if len(x) >= 2} for d in docs]


# --------------------------------------------------------------------------------------------
# Clustering and scoring

def cluster(sim, days=None, threshold=DEFAULT_T, linkage="average", vectors=None,
            max_days=MAX_DAYS):
    """Greedy agglomerative clustering on a similarity matrix with cannot-link by date.
    linkage: average / complete / single (from `sim`); centroid (cosine of the unit means of
    `vectors`); "average-min<F>": average linkage that also needs every cross pair to be at
    least F; "hybrid<A>": A * complete + (1 - A) * average. Merges the best pair while its linkage is at least the threshold; returns one
    group number per item."""
    n = len(sim)
    if n == 0:
        return []
    cannot = np.zeros((n, n), bool)
    if days is not None and max_days is not None:
        d = np.asarray(days, float)
        cannot = np.abs(d[:, None] - d[None, :]) > max_days
    floor, alpha = None, None
    if linkage.startswith("average-min"):
        floor = float(linkage[len("average-min"):])
        linkage = "average"
    elif linkage.startswith("hybrid"):
        alpha = float(linkage[len("hybrid"):])
        floor, linkage = -np.inf, "average"
    size = np.ones(n)
    sums = None
    if linkage == "centroid":
        sums = np.array(vectors, float)
        link = unit_rows(sums) @ unit_rows(sums).T
    else:
        link = np.array(sim, float)  # average: sums over member pairs
    low = np.array(sim, float) if floor is not None else None
    alive = np.ones(n, bool)
    members = [[i] for i in range(n)]
    while True:
        val = link / np.outer(size, size) if linkage == "average" else link.copy()
        if alpha is not None:
            val = alpha * low + (1 - alpha) * val
        val[cannot] = -np.inf
        if low is not None:
            val[low < floor] = -np.inf
        val[~alive, :] = -np.inf
        val[:, ~alive] = -np.inf
        np.fill_diagonal(val, -np.inf)
        a, b = divmod(int(np.argmax(val)), n)
        if val[a, b] < threshold:
            break
        a, b = min(a, b), max(a, b)
        if linkage == "average":
            link[a, :] += link[b, :]
        elif linkage == "complete":
            link[a, :] = np.minimum(link[a, :], link[b, :])
        elif linkage == "single":
            link[a, :] = np.maximum(link[a, :], link[b, :])
        elif linkage == "centroid":
            sums[a] += sums[b]
            u = unit_rows(sums)
            link[a, :] = u @ u[a]
        else:
            raise ValueError(linkage)
        link[:, a] = link[a, :]
        if low is not None:
            low[a, :] = np.minimum(low[a, :], low[b, :])
            low[:, a] = low[a, :]
        cannot[a, :] |= cannot[b, :]
        cannot[:, a] = cannot[a, :]
        size[a] += size[b]
        alive[b] = False
        members[a] += members[b]
        members[b] = []
    labels = [0] * n
    for g, m in enumerate(x for x in members if x):
        for i in m:
            labels[i] = g
    return labels


def bcubed(gold, pred):
    """B-cubed precision, recall and F1 (src/group/eval.rs)."""
    g, p = Counter(gold), Counter(pred)
    both = Counter(zip(gold, pred))
    prec = sum(c * c / p[pl] for (gl, pl), c in both.items()) / len(gold)
    rec = sum(c * c / g[gl] for (gl, pl), c in both.items()) / len(gold)
    f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
    return f1, prec, rec


def theme_labels(event_labels, vectors, threshold, linkage="average", extra=None):
    """Themes as tidings makes them: one item per event, its unit centroid, average linkage, no
    dates. `extra(events)` may add a similarity matrix between events (evidence mix)."""
    events = sorted(set(event_labels))
    index = {e: k for k, e in enumerate(events)}
    members = [[i for i, e in enumerate(event_labels) if e == ev] for ev in events]
    cents = unit_rows(np.array([vectors[m].sum(0) for m in members]))
    sim = cents @ cents.T
    if extra is not None:
        sim = sim + extra(members)
    t = cluster(sim, None, threshold, linkage, vectors=cents)
    return [t[index[e]] for e in event_labels]


# --------------------------------------------------------------------------------------------
# Data and embeddings

def day_number(s):
    return (dt.date.fromisoformat(s[:10]) - dt.date(1970, 1, 1)).days


def read_jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def read_gold(path):
    out = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.rstrip("\r\n")
            if not line or line.startswith("#"):
                continue
            a, lab = line.split("\t")
            if a in ("id", "article", "article_id", "article-id"):
                continue
            out[a] = lab
    return out


class Env:
    def __init__(self, args):
        self.dir = args.dir
        self.bin = args.bin
        self.model = args.model
        self.emb_dir = os.path.join(args.dir, "emb")
        os.makedirs(self.emb_dir, exist_ok=True)
        self.cache_path = os.path.join(self.emb_dir, "embed-cache.npz")
        self.cache = {}
        if os.path.exists(self.cache_path):
            z = np.load(self.cache_path)
            self.cache = dict(zip(z["keys"].tolist(), z["vectors"]))
        try:
            import tokenizers
            self.tok = tokenizers.Tokenizer.from_file(os.path.join(args.model, "tokenizer.json"))
            self.tok.no_truncation()
            self.tok.no_padding()
        except Exception:  # noqa: BLE001 - optional
            self.tok = None

    def ntokens(self, text):
        if self.tok is None:
            return int(len(text.split()) * 1.35)
        return len(self.tok.encode(text, add_special_tokens=False).ids)

    def align_store(self, name, articles):
        """Runs `tidings align` on `articles` into <emb>/<name>.sqlite (once) and returns
        {id: result} with the cleaned texts, day and vector it stored."""
        store = os.path.join(self.emb_dir, name + ".sqlite")
        if not os.path.exists(store):
            with tempfile.TemporaryDirectory() as tmp:
                src = os.path.join(tmp, "in.jsonl")
                with open(src, "w", encoding="utf-8") as f:
                    for a in articles:
                        f.write(json.dumps(a, ensure_ascii=False) + "\n")
                subprocess.run([self.bin, "align", src, "--embed-model", self.model,
                                "--offline", "--device", "cpu", "--store", store + ".part",
                                "--format", "json", "-q", "-o", store[:-7] + ".pred.json"],
                               check=True)
            os.replace(store + ".part", store)
        con = sqlite3.connect(store)
        out = {}
        for aid, res in con.execute("select id, result from articles"):
            out[aid] = json.loads(res)
        con.close()
        return out

    def embed(self, texts):
        """`tidings embed` vectors (first 256 tokens) of texts, one row each, cached."""
        keys = [hashlib.sha256(t.encode()).hexdigest() for t in texts]
        missing = sorted({k: t for k, t in zip(keys, texts) if k not in self.cache}.items())
        if missing:
            with tempfile.TemporaryDirectory() as tmp:
                src = os.path.join(tmp, "in.txt")
                with open(src, "w", encoding="utf-8") as f:
                    for _, t in missing:
                        line = " ".join(t.split())
                        f.write((line or ".") + "\n")
                res = subprocess.run([self.bin, "embed", "--model", self.model, "--offline",
                                      "--device", "cpu", "-q", "--json", src],
                                     check=True, capture_output=True, text=True)
            rows = [json.loads(x) for x in res.stdout.splitlines()]
            assert len(rows) == len(missing), (len(rows), len(missing))
            for (k, _), v in zip(missing, rows):
                self.cache[k] = np.array(v, np.float32)
            np.savez(self.cache_path, keys=np.array(list(self.cache)),
                     vectors=np.array(list(self.cache.values())))
        return np.array([self.cache[k] for k in keys], float)


class Half:
    """One half: articles in gold order, gold labels, days, texts and vectors."""

    def __init__(self, env, half):
        self.name = half
        arts = read_jsonl(os.path.join(env.dir, f"{half}.jsonl"))
        gold_e = read_gold(os.path.join(env.dir, f"{half}.events.tsv"))
        gold_t = read_gold(os.path.join(env.dir, f"{half}.themes.tsv"))
        self.ids = [a["id"] for a in arts]
        assert set(self.ids) == set(gold_e) == set(gold_t)
        self.gold_events = [gold_e[i] for i in self.ids]
        self.gold_themes = [gold_t[i] for i in self.ids]
        self.days = [day_number(a["published_at"]) for a in arts]
        stored = env.align_store(f"align-{half}", arts)
        self.title = [stored[i]["title_en"] for i in self.ids]
        self.body = [stored[i]["translation"] for i in self.ids]
        self.sentences = [[s["translation"] for s in json.loads(stored[i]["sentences"])]
                          if isinstance(stored[i]["sentences"], str)
                          else [s["translation"] for s in stored[i]["sentences"]]
                          for i in self.ids]
        self.text = [f"{t}\n{b}" for t, b in zip(self.title, self.body)]
        emb = lambda r: json.loads(r) if isinstance(r, str) else r
        self.vec = {"long": unit_rows(np.array([emb(stored[i]["embedding"]) for i in self.ids],
                                               float))}
        self.env = env
        self._feat = {}

    # ---- embedding variants -------------------------------------------------------------

    def vectors(self, variant):
        if variant in self.vec:
            return self.vec[variant]
        env = self.env
        if variant == "first256":
            v = env.embed(self.text)
        elif variant == "body_long":
            body = [{"id": i, "text": b, "lang": "en"} for i, b in zip(self.ids, self.body)]
            stored = env.align_store(f"align-{self.name}-body", body)
            v = np.array([json.loads(stored[i]["embedding"]) if isinstance(
                stored[i]["embedding"], str) else stored[i]["embedding"] for i in self.ids])
        elif variant == "title":
            v = np.zeros_like(self.vectors("long"))
            has = [k for k, t in enumerate(self.title) if t.strip()]
            v[has] = env.embed([self.title[k] for k in has])
        elif variant.startswith("title"):  # title<w>: normalize(w*title + body), body whole
            w = float(variant[5:])
            v = w * self.vectors("title") + unit_rows(self.vectors("body_long"))
        elif variant.startswith("chunks"):  # chunks[-tok|-first2] of whole sentences
            v = self.chunk_vectors(variant)
        else:
            raise ValueError(variant)
        self.vec[variant] = unit_rows(np.asarray(v, float))
        return self.vec[variant]

    def chunks(self, k, budget=200):
        """Title and sentences packed greedily into chunks of at most `budget` word pieces."""
        units = ([self.title[k]] if self.title[k].strip() else []) + self.sentences[k]
        out, cur, n = [], [], 0
        for u in units:
            m = self.env.ntokens(u)
            if cur and n + m > budget:
                out.append(" ".join(cur))
                cur, n = [], 0
            cur.append(u)
            n += m
        if cur:
            out.append(" ".join(cur))
        return out

    def chunk_vectors(self, variant):
        per = [self.chunks(k) for k in range(len(self.ids))]
        flat = [c for cs in per for c in cs]
        vecs = unit_rows(self.env.embed(flat))
        out, pos = [], 0
        for cs in per:
            v = vecs[pos:pos + len(cs)]
            pos += len(cs)
            if variant == "chunks-tok":
                w = np.array([self.env.ntokens(c) for c in cs], float)
            elif variant == "chunks-first2":
                w = np.array([2.0] + [1.0] * (len(cs) - 1))
            else:
                w = np.ones(len(cs))
            out.append((w[:, None] * v).sum(0))
        return np.array(out)

    # ---- evidence --------------------------------------------------------------------------

    def feature(self, name):
        """Pairwise evidence matrices between articles: tfidf, names-{runs,words}-{jac,ovl},
        numbers-{jac,ovl}."""
        if name not in self._feat:
            self._feat[name] = feature_matrix(self.text, name)
        return self._feat[name]


def feature_matrix(docs, name):
    if name == "tfidf":
        m = tfidf_matrix(docs)
        return m @ m.T
    parts = name.split("-")
    if parts[0] == "names":
        return set_sim(name_sets(docs, parts[1]), parts[2])
    if parts[0] == "numbers":
        return set_sim(number_sets(docs), parts[1])
    raise ValueError(name)


# --------------------------------------------------------------------------------------------
# Experiment runner

class Setting:
    """How similarities are made: embedding variant, evidence weights, linkage."""

    def __init__(self, vec="long", mix=(), linkage="average", theme_mix=None,
                 theme_linkage="average"):
        self.vec, self.mix, self.linkage = vec, tuple(mix), linkage
        self.theme_linkage = theme_linkage
        # Themes: the same evidence over events' concatenated texts unless given.
        self.theme_mix = self.mix if theme_mix is None else tuple(theme_mix)

    def label(self):
        parts = [self.vec]
        parts += [f"{w:g}·{f}" for f, w in self.mix if w]
        if self.linkage != "average":
            parts.append(self.linkage)
        out = " + ".join(parts)
        if self.theme_mix != self.mix:
            out += " (themes: " + (" + ".join(f"{w:g}·{f}" for f, w in self.theme_mix if w)
                                   or "cos only") + ")"
        if self.theme_linkage != "average":
            out += f" (themes: {self.theme_linkage})"
        return out

    def sim(self, half):
        v = half.vectors(self.vec)
        s = v @ v.T
        for f, w in self.mix:
            if w:
                s = s + w * half.feature(f)
        return s

    def events(self, half, t):
        return cluster(self.sim(half), half.days, t, self.linkage, vectors=half.vectors(self.vec))

    def themes(self, half, ev_labels, t):
        def evidence(members):
            docs = ["\n".join(half.text[i] for i in m) for m in members]
            return sum(w * feature_matrix(docs, f) for f, w in self.theme_mix if w)
        extra = evidence if any(w for _, w in self.theme_mix) else None
        return theme_labels(ev_labels, half.vectors(self.vec), t, self.theme_linkage, extra)


def sweep(setting, half, grid=EVENT_GRID):
    return {t: bcubed(half.gold_events, setting.events(half, t)) for t in grid}


def smoothed(curve, t):
    keys = sorted(curve)
    k = keys.index(t)
    near = keys[max(k - 1, 0):k + 2]
    return sum(curve[x][0] for x in near) / len(near)


def choose(curve):
    """Threshold with the best smoothed F1; ties to the best raw F1, then the lower threshold."""
    return max(sorted(curve), key=lambda t: (round(smoothed(curve, t), 9), curve[t][0], -t))


def fmt(r):
    return f"{r[0]:.3f} ({r[1]:.3f}/{r[2]:.3f})"


def plateau(curve, best, tol=0.005):
    """The run of grid thresholds around `best` whose F1 is within `tol` of its F1."""
    keys = sorted(curve)
    k = keys.index(best)
    lo = hi = k
    while lo > 0 and abs(curve[keys[lo - 1]][0] - curve[best][0]) <= tol:
        lo -= 1
    while hi + 1 < len(keys) and abs(curve[keys[hi + 1]][0] - curve[best][0]) <= tol:
        hi += 1
    return f"{keys[lo]:.3f}–{keys[hi]:.3f}"


class Report:
    def __init__(self, tune, test):
        self.tune, self.test = tune, test
        self.rows, self.theme_rows = [], []

    def events(self, step, setting, fixed_t=None, grid=EVENT_GRID):
        ct = sweep(setting, self.tune, grid)
        cs = sweep(setting, self.test, grid)
        t = fixed_t if fixed_t is not None else choose(ct)
        row = dict(step=step, setting=setting.label(), t=t, tune=ct[t], test=cs[t],
                   smooth=smoothed(ct, t), plateau=plateau(ct, t),
                   test_range=(min(cs[x][0] for x in near(cs, t)),
                               max(cs[x][0] for x in near(cs, t))),
                   test_best=max(cs.items(), key=lambda kv: kv[1][0]), setting_obj=setting)
        self.rows.append(row)
        print(f"  {step:<4} {row['setting']:<55} t={t:.3f} tune {fmt(ct[t])} "
              f"test {fmt(cs[t])}", file=sys.stderr)
        return row

    def themes(self, step, setting, event_t, grid=THEME_GRID, fixed_t=None):
        res = {}
        for h in (self.tune, self.test):
            ev = setting.events(h, event_t)
            res[h.name] = {t: bcubed(h.gold_themes, setting.themes(h, ev, t)) for t in grid}
        ct, cs = res["tune"], res["test"]
        t = fixed_t if fixed_t is not None else choose(ct)
        row = dict(step=step, setting=f"{setting.label()} (events at {event_t:.3f})",
                   t=t, tune=ct[t], test=cs[t], smooth=smoothed(ct, t), plateau=plateau(ct, t),
                   test_range=(min(cs[x][0] for x in near(cs, t)),
                               max(cs[x][0] for x in near(cs, t))),
                   test_best=max(cs.items(), key=lambda kv: kv[1][0]))
        self.theme_rows.append(row)
        print(f"  {step:<4} themes {row['setting']:<55} t={t:.3f} tune {fmt(ct[t])} "
              f"test {fmt(cs[t])}", file=sys.stderr)
        return row

    def table(self, rows, title):
        print(f"\n### {title}\n")
        print("| step | setting | threshold | tune F1 (P/R) | tune smoothed | tune plateau (±0.005) "
              "| test F1 (P/R) | test F1 at t±0.025 | test best (t) |")
        print("|---|---|---|---|---|---|---|---|---|")
        for r in rows:
            tb_t, tb = r["test_best"]
            print(f"| {r['step']} | {r['setting']} | {r['t']:.3f} | {fmt(r['tune'])} | "
                  f"{r['smooth']:.3f} | {r['plateau']} | {fmt(r['test'])} | "
                  f"{r['test_range'][0]:.3f}–{r['test_range'][1]:.3f} | "
                  f"{tb[0]:.3f} ({tb_t:.3f}) |")


def near(curve, t):
    keys = sorted(curve)
    k = keys.index(t)
    return keys[max(k - 1, 0):k + 2]


# --------------------------------------------------------------------------------------------
# Steps

def step0_checks(env, rep):
    """Reproduce the default scores; check newline vs space and truncation."""
    print("\n### 0. Checks\n")
    base = Setting()
    for h in (rep.tune, rep.test):
        labels = base.events(h, DEFAULT_T)
        mine = bcubed(h.gold_events, labels)
        ref = {"tune": "0.903 (0.854/0.958)", "test": "0.919 (0.892/0.948)"}[h.name]
        line = f"- {h.name}: this script, defaults: B3 {fmt(mine)} (README reference: {ref})"
        # Same partition as tidings' own prediction of this run?
        pred = json.load(open(os.path.join(env.emb_dir, f"align-{h.name}.pred.json")))
        part = {m["id"]: e for e, ev in enumerate(pred["events"]) for m in ev["members"]}
        theirs = [part[i] for i in h.ids]
        same = canon(theirs) == canon(labels)
        line += f"; identical partition to `tidings align`: {same}"
        th = theme_labels(labels, h.vectors("long"), DEFAULT_THEME_T)
        tpart = {m["id"]: ev["theme"] for ev in pred["events"] for m in ev["members"]}
        line += (f"; themes at 0.40: {fmt(bcubed(h.gold_themes, th))}, identical: "
                 f"{canon([tpart[i] for i in h.ids]) == canon(th)}")
        print(line)
        # Newlines vs spaces, and what truncation at 256 tokens does.
        n_tok = np.array([env.ntokens(t) for t in h.text])
        short = n_tok <= 250
        first = h.vectors("first256")
        cos = (first * h.vectors("long")).sum(1)
        print(f"  - {h.name}: {short.sum()} of {len(short)} texts fit in one 256-token window; "
              f"cos(embed of text with spaces, align vector): min {cos[short].min():.6f} over those, "
              f"mean {cos[~short].mean():.4f} (min {cos[~short].min():.4f}) over the longer ones")


def canon(labels):
    seen = {}
    return [seen.setdefault(x, len(seen)) for x in labels]


def step1(rep):
    print("\n## 1. Threshold sweep (current similarity)", file=sys.stderr)
    base = Setting()
    rep.events("0", base, fixed_t=DEFAULT_T)
    r = rep.events("1", base)
    rep.themes("0", base, DEFAULT_T, fixed_t=DEFAULT_THEME_T)
    rep.themes("1", base, DEFAULT_T)
    rep.themes("1", base, DEFAULT_T, grid=[9.0])  # no theme merges: themes = events
    rep.theme_rows[-1]["setting"] += ", no theme merges"
    if r["t"] != DEFAULT_T:
        rep.themes("1", base, r["t"])
    # Full curves for the record.
    print("\n### 1. Event threshold curve (current similarity)\n")
    print("| t | " + " | ".join(f"{t:.3f}" for t in EVENT_GRID) + " |")
    print("|---|" + "---|" * len(EVENT_GRID))
    for h in (rep.tune, rep.test):
        c = sweep(base, h)
        print(f"| {h.name} | " + " | ".join(f"{c[t][0]:.3f}" for t in EVENT_GRID) + " |")
    print("\n### 1. Theme threshold curve (events at 0.525)\n")
    print("| t | " + " | ".join(f"{t:.3f}" for t in THEME_GRID) + " |")
    print("|---|" + "---|" * len(THEME_GRID))
    for h in (rep.tune, rep.test):
        ev = base.events(h, DEFAULT_T)
        c = {t: bcubed(h.gold_themes, base.themes(h, ev, t)) for t in THEME_GRID}
        print(f"| {h.name} | " + " | ".join(f"{c[t][0]:.3f}" for t in THEME_GRID) + " |")


MIX_GRID = {
    "tfidf": [0, 0.1, 0.2, 0.3, 0.5],
    "names": [0, 0.05, 0.1, 0.2, 0.3],
    "numbers": [0, 0.05, 0.1, 0.2],
}


def best_mix(rep, vec="long", linkage="average", name_kinds=None, verbose=True, title="2"):
    """Grid over the evidence weights (each point with its own threshold sweep), chosen on the
    tune half by smoothed F1 then by fewer/smaller weights."""
    name_kinds = name_kinds or ["names-runs-jac", "names-runs-ovl", "names-words-jac",
                                "names-words-ovl"]
    results = []
    for nk in name_kinds:
        for wt, wn, wd in itertools.product(MIX_GRID["tfidf"], MIX_GRID["names"],
                                            MIX_GRID["numbers"]):
            if wn == 0 and nk != name_kinds[0]:
                continue
            mix = (("tfidf", wt), (nk, wn), ("numbers-jac", wd))
            s = Setting(vec, mix, linkage)
            c = sweep(s, rep.tune)
            t = choose(c)
            results.append((round(smoothed(c, t), 9), c[t][0], -(wt + wn + wd), s, t))
    results.sort(key=lambda r: r[:3], reverse=True)
    if verbose:
        print(f"\n### {title}. Evidence mix ({vec}, {linkage} linkage): ten best on tune "
              "(smoothed F1)\n")
        print("| setting | t | tune smoothed | tune F1 | test F1 at t |")
        print("|---|---|---|---|---|")
        for sm, f, _, s, t in results[:10]:
            print(f"| {s.label()} | {t:.3f} | {sm:.3f} | {f:.3f} | "
                  f"{bcubed(rep.test.gold_events, s.events(rep.test, t))[0]:.3f} |")
    return results


def step2(rep):
    print("\n## 2. Evidence mix", file=sys.stderr)
    # One feature at a time, then the grid.
    for f in ["tfidf", "names-runs-jac", "names-runs-ovl", "names-words-jac", "names-words-ovl",
              "numbers-jac", "numbers-ovl"]:
        ws = MIX_GRID["numbers" if f.startswith("numbers") else
                      "names" if f.startswith("names") else "tfidf"][1:]
        best = max(((w, choose(sweep(Setting(mix=((f, w),)), rep.tune))) for w in ws),
                   key=lambda wt: (smoothed(sweep(Setting(mix=((f, wt[0]),)), rep.tune), wt[1])))
        rep.events("2", Setting(mix=((f, best[0]),)))
    results = best_mix(rep)
    _, _, _, s, t = results[0]
    rep.events("2", s)
    ev_t = t
    rep.themes("2", s, ev_t)
    # Themes with the mix on themes only (events as default).
    for f, w in [("tfidf", 0.1), ("tfidf", 0.2), ("tfidf", 0.3), ("names-words-ovl", 0.1),
                 ("names-words-jac", 0.1)]:
        rep.themes("2t", Setting(theme_mix=((f, w),)), DEFAULT_T)
    return s


def step3(rep):
    print("\n## 3. Chunked embeddings", file=sys.stderr)
    for v in ["first256", "long", "chunks", "chunks-tok", "chunks-first2"]:
        r = rep.events("3", Setting(vec=v))
        rep.themes("3", Setting(vec=v), r["t"])


def step4(rep):
    print("\n## 4. Title weighting", file=sys.stderr)
    for w in ["0", "0.5", "1"]:
        r = rep.events("4", Setting(vec="title" + w))
        rep.themes("4", Setting(vec="title" + w), r["t"])


def step5(rep):
    print("\n## 5. Linkage", file=sys.stderr)
    for link in ["average", "complete", "single", "centroid", "average-min0.45"]:
        r = rep.events("5", Setting(linkage=link))
        if link in ("average", "complete"):
            rep.themes("5", Setting(linkage=link), r["t"])
            rep.themes("5", Setting(linkage=link, theme_linkage="complete"), r["t"])


def step6(rep, vecs):
    print("\n## 6. Combinations", file=sys.stderr)
    kinds = ["names-words-ovl", "names-words-jac", "names-runs-ovl"]
    rows = best_mix(rep, linkage="complete", name_kinds=kinds, title="6")
    rep.events("6", rows[0][3])
    for w in MIX_GRID["tfidf"][1:]:
        rep.events("6", Setting(mix=(("tfidf", w),), linkage="complete"))
    for vec in vecs:
        rep.events("6", Setting(vec, linkage="complete"))
        rep.events("6", Setting(vec, (("tfidf", 0.2),), "complete"))
    # The recommendation: complete linkage on cos + 0.2 tfidf, events and themes.
    rec = Setting(mix=(("tfidf", 0.2),), linkage="complete")
    r = rep.events("6*", rec)
    rep.themes("6*", rec, r["t"], fixed_t=DEFAULT_THEME_T)
    rep.themes("6*", rec, r["t"])
    rep.themes("6*", rec, r["t"], grid=[9.0])
    rep.theme_rows[-1]["setting"] += ", no theme merges"
    rep.themes("6*", Setting(mix=(("tfidf", 0.2),), linkage="complete", theme_mix=()), r["t"])


class Pieces(Half):
    """A stress variant of a half: each document (both parts) re-cut into `k` pieces of whole
    sentences of about equal length, each piece an article (vector: `tidings embed`, no title).
    Events and themes stay the document's, so events hold k times as many articles (up to 6
    documents x k pieces): a check that a linkage does not break up big events."""

    def __init__(self, half, k):
        self.name, self.env, self._feat = f"{half.name}×{k}", half.env, {}
        docs = {}
        for i, aid in enumerate(half.ids):
            d = docs.setdefault(aid.split("#")[0], {"units": [], "i": i})
            title = [half.title[i]] if half.title[i].strip() else []
            d["units"] += title + half.sentences[i]
        self.ids, self.days, self.gold_events, self.gold_themes, self.text = [], [], [], [], []
        for doc, d in docs.items():
            units, i = d["units"], d["i"]
            total = sum(len(u.split()) for u in units)
            pieces, seen = [[] for _ in range(k)], 0
            for u in units:
                pieces[min(k - 1, int(k * seen / max(total, 1)))].append(u)
                seen += len(u.split())
            for p, piece in enumerate(x for x in pieces if x):
                self.ids.append(f"{doc}@{p}")
                self.days.append(half.days[i])
                self.gold_events.append(half.gold_events[i])
                self.gold_themes.append(half.gold_themes[i])
                self.text.append("\n".join(piece))
        self.vec = {"long": unit_rows(self.env.embed(self.text))}

    def vectors(self, variant):
        return self.vec[variant]


def step7(rep, k=4):
    print(f"\n## 7. Bigger events: documents cut in {k}", file=sys.stderr)
    sub = Report(Pieces(rep.tune, k), Pieces(rep.test, k))
    grid = [round(0.30 + 0.025 * k, 3) for k in range(17)]  # 0.300 .. 0.700
    for setting in [Setting(), Setting(linkage="complete"),
                    Setting(mix=(("tfidf", 0.2),)),
                    Setting(mix=(("tfidf", 0.2),), linkage="complete")]:
        sub.events("7", setting, fixed_t=DEFAULT_T, grid=grid)
        sub.events("7", setting, grid=grid)
    sub.table(sub.rows, f"7. Documents cut in {k} pieces (events {k}× bigger; threshold "
                        "0.525, then the tune-chosen one)")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dir", default=os.path.join(ROOT, ".cache/devset"))
    ap.add_argument("--bin", default=None)
    ap.add_argument("--model", default=os.path.join(ROOT, ".cache/models/all-MiniLM-L6-v2"))
    ap.add_argument("--steps", default="0,1,2,3,4,5,6,7")
    ap.add_argument("--combine-vecs", default="first256,chunks-first2,title0.5",
                    help="embedding variants to combine with complete linkage in step 6")
    args = ap.parse_args()
    if args.bin is None:
        for b in ("target/release/tidings", "target/debug/tidings"):
            if os.access(os.path.join(ROOT, b), os.X_OK):
                args.bin = os.path.join(ROOT, b)
                break
    env = Env(args)
    rep = Report(Half(env, "tune"), Half(env, "test"))
    steps = set(args.steps.split(","))
    if "0" in steps:
        step0_checks(env, rep)
    if "1" in steps:
        step1(rep)
    if "2" in steps:
        step2(rep)
    if "3" in steps:
        step3(rep)
    if "4" in steps:
        step4(rep)
    if "5" in steps:
        step5(rep)
    if "6" in steps:
        step6(rep, [v for v in args.combine_vecs.split(",") if v])
    if "7" in steps:
        step7(rep)
    rep.table(rep.rows, "Events (B-cubed F1, precision/recall)")
    rep.table(rep.theme_rows, "Themes (B-cubed F1 against gold themes, on predicted events)")


if __name__ == "__main__":
    main()
