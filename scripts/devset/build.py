#!/usr/bin/env python3
"""Build the event/theme grouping development set from the WMT news test sets.

The texts are the English reference translations of the news documents of the
WMT22 (ru-en, ja-en) and WMT23 (ru-en, uk-en) general test sets. Only the labels
(data/devset/labels.tsv) live in this repository; this script fetches the
sources at pinned commits, takes exactly the labelled documents, cuts each in
two parts and writes the articles (JSONL, the input of `tidings align`) and the
gold groupings (TSV, the gold of `tidings eval-groups`).

    python3 scripts/devset/build.py --wmt22 PATH --wmt23 PATH [--out DIR]
    python3 scripts/devset/build.py            # downloads the four XML files

PATH is a clone or a bare git directory of wmt-conference/wmt22-news-systems
(resp. wmt23-news-systems). Standard library only.
"""

import argparse
import collections
import hashlib
import json
import os
import re
import subprocess
import sys
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Source repositories at the commits the labels were made from.
SOURCES = {
    "wmt22": {
        "repo": "wmt-conference/wmt22-news-systems",
        "commit": "20240a2e96a50e823ea8cdf37fd8af52547146e3",
    },
    "wmt23": {
        "repo": "wmt-conference/wmt23-news-systems",
        "commit": "99b5b9de2a535c2c5542fd4ec404682903299894",
    },
}

# Value of the `set` column -> (source, path of the XML file in that repository).
SETS = {
    "wmt22.ru-en": ("wmt22", "xml/wmttest2022.ru-en.all.xml"),
    "wmt22.ja-en": ("wmt22", "xml/wmttest2022.ja-en.all.xml"),
    "wmt23.ru-en": ("wmt23", "xml/wmttest2023.ru-en.all.xml"),
    "wmt23.uk-en": ("wmt23", "xml/wmttest2023.uk-en.all.xml"),
}

RAW_URL = "https://raw.githubusercontent.com/{repo}/{commit}/{path}"

HEADER = ["doc_id", "set", "published", "event", "theme", "half"]
HALVES = ("tune", "test")
SLUG = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


class BuildError(Exception):
    pass


# --------------------------------------------------------------------------- labels


def read_labels(path):
    """Rows of labels.tsv as dicts, validated."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = [l.rstrip("\n") for l in f]
    except OSError as e:
        raise BuildError(f"cannot read labels {path}: {e}")
    lines = [l for l in lines if l.strip() and not l.startswith("#")]
    if not lines or lines[0].split("\t") != HEADER:
        raise BuildError(f"{path}: the first line must be the header {chr(9).join(HEADER)!r}")
    rows, errors, seen = [], [], set()
    for n, line in enumerate(lines[1:], start=2):
        cells = line.split("\t")
        if len(cells) != len(HEADER):
            errors.append(f"line {n}: {len(cells)} columns, expected {len(HEADER)}")
            continue
        row = dict(zip(HEADER, cells))
        key = (row["set"], row["doc_id"])
        if key in seen:
            errors.append(f"line {n}: {row['doc_id']} ({row['set']}) labelled twice")
        seen.add(key)
        if row["set"] not in SETS:
            errors.append(f"line {n}: unknown set {row['set']!r} (known: {', '.join(SETS)})")
        if not DATE.match(row["published"]):
            errors.append(f"line {n}: published {row['published']!r} is not YYYY-MM-DD")
        for col in ("event", "theme"):
            if not SLUG.match(row[col]):
                errors.append(f"line {n}: {col} {row[col]!r} is not a lower-case slug")
        if row["half"] not in HALVES:
            errors.append(f"line {n}: half {row['half']!r} is not one of {HALVES}")
        rows.append(row)
    theme_of, half_of = {}, {}
    for r in rows:
        if theme_of.setdefault(r["event"], r["theme"]) != r["theme"]:
            errors.append(f"event {r['event']} is in two themes: {theme_of[r['event']]}, {r['theme']}")
        if half_of.setdefault(r["theme"], r["half"]) != r["half"]:
            errors.append(f"theme {r['theme']} is in both halves")
    # Part ids are "<doc_id>#<n>", so a doc id must be unique across sets too.
    ids = collections.Counter(r["doc_id"] for r in rows)
    errors += [f"doc id {d} appears in more than one set" for d, c in ids.items() if c > 1]
    if errors:
        raise BuildError(f"{path}: invalid labels:\n  " + "\n  ".join(errors))
    return rows


def expected_halves(rows):
    """The split rule: themes in the order of the SHA-256 of their slug; each theme goes to the
    half that has fewer documents so far (a tie goes to tune). Deterministic, keeps every event
    and theme inside one half, and leaves the halves within one theme's size of each other."""
    size = collections.Counter(r["theme"] for r in rows)
    order = sorted(size, key=lambda t: hashlib.sha256(t.encode("utf-8")).hexdigest())
    docs = {h: 0 for h in HALVES}
    half = {}
    for theme in order:
        h = "tune" if docs["tune"] <= docs["test"] else "test"
        half[theme] = h
        docs[h] += size[theme]
    return half


def check_halves(rows, path, fix):
    want = expected_halves(rows)
    wrong = sorted({r["theme"] for r in rows if r["half"] != want[r["theme"]]})
    if not wrong:
        return
    if not fix:
        raise BuildError(
            f"{path}: the half column does not follow the split rule for {len(wrong)} theme(s) "
            f"(e.g. {', '.join(wrong[:5])}); rerun with --fix-halves to rewrite it"
        )
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    out = []
    for line in lines:
        cells = line.split("\t")
        if len(cells) == len(HEADER) and cells != HEADER and not line.startswith("#"):
            cells[5] = want[cells[4]]
            line = "\t".join(cells)
        out.append(line)
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(out))
    for r in rows:
        r["half"] = want[r["theme"]]
    print(f"rewrote the half column of {path} for {len(wrong)} theme(s)", file=sys.stderr)


# --------------------------------------------------------------------------- sources


def git_show(gitdir, commit, path):
    """File content at `commit` (or HEAD when the commit is absent) of a clone or bare repo."""
    def run(*args):
        return subprocess.run(["git", "-C", gitdir, *args], capture_output=True)

    if not os.path.isdir(gitdir):
        raise BuildError(f"{gitdir} is not a directory")
    rev = commit
    if run("cat-file", "-e", f"{commit}^{{commit}}").returncode != 0:
        head = run("rev-parse", "HEAD")
        if head.returncode != 0:
            raise BuildError(f"{gitdir} is not a git repository: {head.stderr.decode().strip()}")
        print(
            f"warning: commit {commit} is not in {gitdir}; using HEAD "
            f"({head.stdout.decode().strip()}) instead",
            file=sys.stderr,
        )
        rev = "HEAD"
    res = run("show", f"{rev}:{path}")
    if res.returncode != 0:
        raise BuildError(f"git show {rev}:{path} in {gitdir} failed: {res.stderr.decode().strip()}")
    return res.stdout


def download(repo, commit, path):
    url = RAW_URL.format(repo=repo, commit=commit, path=path)
    print(f"downloading {url}", file=sys.stderr)
    try:
        with urllib.request.urlopen(url, timeout=120) as resp:
            return resp.read()
    except (urllib.error.URLError, OSError) as e:
        raise BuildError(
            f"could not download {url}: {e}\n"
            f"Without network access, clone https://github.com/{repo} and pass its folder with "
            f"--{repo.split('/')[1].split('-')[0]} DIR."
        )


def load_docs(set_name, xml_bytes):
    """doc id -> list of paragraphs (lists of segment strings) of the English reference, for the
    news documents of one test set. The first reference is used when there are several."""
    try:
        root = ET.fromstring(xml_bytes)
    except ET.ParseError as e:
        raise BuildError(f"{set_name}: XML does not parse: {e}")
    docs = {}
    for doc in root.iter("doc"):
        if doc.get("domain") != "news":
            continue
        ref = doc.find("ref")
        if ref is None:
            continue
        paras = []
        for p in ref.iter("p"):
            segs = [" ".join((s.text or "").split()) for s in p.iter("seg")]
            segs = [s for s in segs if s]
            if segs:
                paras.append(segs)
        if doc.get("id") in docs:
            raise BuildError(f"{set_name}: news doc id {doc.get('id')} appears twice")
        docs[doc.get("id")] = paras
    return docs


# --------------------------------------------------------------------------- splitting


def split_doc(segments):
    """Cut a document (list of segments, the first being the headline) in two at the segment
    boundary nearest the middle, in characters. Part 1 keeps at least one segment after the
    headline, part 2 at least one segment. Returns (title, part1 segments, part2 segments)."""
    if len(segments) < 3:
        raise BuildError(f"a document needs at least 3 segments to be cut, got {len(segments)}")
    lengths = [len(s) for s in segments]
    total = sum(lengths)
    best, best_gap, before = None, None, lengths[0]
    for k in range(1, len(segments) - 1):  # part 1 = segments[0..k], part 2 = segments[k+1..]
        before += lengths[k]
        gap = abs(2 * before - total)
        if best_gap is None or gap < best_gap:
            best, best_gap = k, gap
    return segments[0], segments[1 : best + 1], segments[best + 1 :]


# --------------------------------------------------------------------------- main


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--wmt22", metavar="DIR", help="clone or bare git dir of wmt22-news-systems")
    ap.add_argument("--wmt23", metavar="DIR", help="clone or bare git dir of wmt23-news-systems")
    ap.add_argument(
        "--labels",
        default=os.path.join(REPO_ROOT, "data", "devset", "labels.tsv"),
        help="labels file (default: data/devset/labels.tsv)",
    )
    ap.add_argument(
        "--out",
        default=os.path.join(REPO_ROOT, ".cache", "devset"),
        help="output folder (default: .cache/devset/)",
    )
    ap.add_argument(
        "--fix-halves",
        action="store_true",
        help="rewrite the half column of the labels file to follow the split rule",
    )
    args = ap.parse_args(argv)

    try:
        rows = read_labels(args.labels)
        check_halves(rows, args.labels, args.fix_halves)

        dirs = {"wmt22": args.wmt22, "wmt23": args.wmt23}
        needed = sorted({r["set"] for r in rows})
        docs = {}
        for set_name in needed:
            source, path = SETS[set_name]
            spec = SOURCES[source]
            if dirs[source]:
                data = git_show(dirs[source], spec["commit"], path)
            else:
                data = download(spec["repo"], spec["commit"], path)
            docs[set_name] = load_docs(set_name, data)

        missing = [f"{r['doc_id']} ({r['set']})" for r in rows if r["doc_id"] not in docs[r["set"]]]
        if missing:
            raise BuildError(
                f"{len(missing)} labelled doc(s) not found among the news documents of their "
                f"set: {', '.join(missing)}"
            )

        outputs = {h: {"articles": [], "events": [], "themes": []} for h in HALVES + ("all",)}
        for r in rows:
            segments = [s for p in docs[r["set"]][r["doc_id"]] for s in p]
            try:
                title, first, second = split_doc(segments)
            except BuildError as e:
                raise BuildError(f"{r['doc_id']} ({r['set']}): {e}")
            parts = [
                {"id": f"{r['doc_id']}#1", "title": title, "text": "\n".join(first)},
                {"id": f"{r['doc_id']}#2", "title": "", "text": "\n".join(second)},
            ]
            for part in parts:
                # Declared English, so that no part (however short) is routed to a translation model.
                part.update({"lang": "en", "published_at": r["published"]})
                for h in (r["half"], "all"):
                    outputs[h]["articles"].append(part)
                    outputs[h]["events"].append(f"{part['id']}\t{r['event']}")
                    outputs[h]["themes"].append(f"{part['id']}\t{r['theme']}")

        os.makedirs(args.out, exist_ok=True)
        for h, o in outputs.items():
            with open(os.path.join(args.out, f"{h}.jsonl"), "w", encoding="utf-8") as f:
                for a in o["articles"]:
                    f.write(json.dumps(a, ensure_ascii=False) + "\n")
            for kind in ("events", "themes"):
                with open(os.path.join(args.out, f"{h}.{kind}.tsv"), "w", encoding="utf-8") as f:
                    f.write("\n".join(o[kind]) + "\n")
    except BuildError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1

    def counts(sel):
        events = collections.Counter(r["event"] for r in sel)
        themes = collections.defaultdict(set)
        for r in sel:
            themes[r["theme"]].add(r["event"])
        return [
            len(sel),
            2 * len(sel),
            len(events),
            sum(1 for c in events.values() if c > 1),
            len(themes),
            sum(1 for e in themes.values() if len(e) > 1),
        ]

    print(f"wrote {args.out}")
    print(f"{'half':<6}{'docs':>6}{'parts':>7}{'events':>8}{'multi-doc ev':>14}{'themes':>8}{'multi-event th':>16}")
    for h in HALVES + ("all",):
        sel = rows if h == "all" else [r for r in rows if r["half"] == h]
        print(f"{h:<6}" + "".join(f"{v:>{w}}" for v, w in zip(counts(sel), (6, 7, 8, 14, 8, 16))))
    per_set = collections.Counter(r["set"] for r in rows)
    print("docs per set: " + ", ".join(f"{s} {n}" for s, n in sorted(per_set.items())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
