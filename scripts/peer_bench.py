#!/usr/bin/env python3
"""Compare tidings with its peers on the same model, the same token ids and the same settings.

One command (from the repository root):

    /work/pyenv/bin/python scripts/peer_bench.py --threads 2,1 --repeats 3 --write-docs

Translation. It makes ONE random-weight MarianMTModel of a real OPUS-MT shape (--shape
opus-mt-base: d_model 512, 6+6 layers, 8 heads, ffn 2048, vocab 58101, swish, scaled embeddings,
sinusoidal positions; or opus-mt-tc-big), saves it with save_pretrained as a Hub-style OPUS-MT
folder (config.json, generation_config.json with the keys real opus-mt repos have,
model.safetensors, and a small made-up SentencePiece tokenizer + a 58101-entry vocab.json, only
because CTranslate2's converter reads the vocabulary through the tokenizer), converts it to
CTranslate2 (fp32, and int8 weights), and writes source token id rows with the lengths of real
news sentences (the same sentences as `tidings bench`), sorted longest first. Every engine then
translates the SAME ids in the SAME batches with the same beam width, each sentence generating
exactly --max-new-tokens tokens (EOS banned until the last step, which forces it), so every
engine runs the same number of decoder steps:

  transformers  MarianMTModel.generate(num_beams=B, min_new_tokens=N, max_new_tokens=N) in torch
  ct2-fp32      ctranslate2.Translator(compute_type="float32").translate_batch(beam_size=B,
                min_decoding_length=N, max_decoding_length=N, max_batch_size=BATCH)
  ct2-int8      the same on the int8-quantized conversion (compute_type="int8")
  tidings       tidings bench --model DIR --input ids.json --json (release build; token ids
                need no tokenizer)

Embeddings: sentence-transformers `encode(texts, batch_size=B)` against
`tidings bench --embed-model DIR --input texts.txt` on the real all-MiniLM-L6-v2, same texts.

Every run is its own process (load, one untimed warm-up batch generating 2 tokens, then the
timed run), so each engine's peak resident memory (VmHWM; the Python engines' includes the
interpreter and torch) is its own. Settings x engines are run round-robin --repeats times and
the medians reported. All engines get --threads threads (torch.set_num_threads and
OMP/MKL_NUM_THREADS, CTranslate2 intra_threads with inter_threads=1, tidings --threads), and
OMP_WAIT_POLICY=PASSIVE (--omp-wait-policy): on a busy machine OpenMP's spinning barriers
otherwise make torch and CTranslate2 many times slower with 2 threads than with 1.

Outputs: a table on stdout, DIR/results.json, and with --write-docs BENCHMARKS.md and
docs/bench.svg (regenerated from scratch: edit this script, not those files).

Versions: scripts/requirements-bench.txt. Only for benchmarking; tidings never needs Python.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import math
import os
import platform
import random
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MINILM = Path("/work/main/.cache/models/all-MiniLM-L6-v2")
STAMP_VERSION = 1

SHAPES = {
    # What src/model/marian/config.rs calls opus_mt_base / opus_mt_tc_big.
    "opus-mt-base": dict(
        vocab=58101, d_model=512, layers=6, heads=8, ffn=2048, activation="swish",
        positions=512, eos=0, unk=1,
    ),
    "opus-mt-tc-big": dict(
        vocab=57060, d_model=1024, layers=6, heads=16, ffn=4096, activation="relu",
        positions=1024, eos=43741, unk=1,
    ),
}

# The built-in sentences of `tidings bench` (src/app/bench.rs reads the same file): their lengths
# shape the token id rows, and they are the embedding benchmark's texts.
NEWS_SENTENCES = [
    line for line in (ROOT / "benches" / "news-sentences.txt").read_text(encoding="utf-8").splitlines()
    if line.strip()
]

TRANSLATION_ENGINES = ["transformers", "ct2-fp32", "ct2-int8", "tidings", "tidings-int8"]
EMBED_ENGINES = ["sentence-transformers", "tidings"]
ENGINE_LABELS = {
    "transformers": "transformers (torch)",
    "ct2-fp32": "CTranslate2 fp32",
    "ct2-int8": "CTranslate2 int8",
    "tidings": "tidings f32",
    "tidings-int8": "tidings int8",
    "sentence-transformers": "sentence-transformers (torch)",
}


def log(*args):
    print(*args, file=sys.stderr, flush=True)


def peak_rss_bytes() -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        import resource

        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return rss if sys.platform == "darwin" else rss * 1024
    except (ImportError, OSError):
        return None


def chunks(rows, size):
    for i in range(0, len(rows), size):
        yield rows[i : i + size]


# ------------------------------------------------------------------ children ------------------
# Each engine runs in its own process: `peer_bench.py _child JSON`; it prints one JSON line.


def child_transformers(spec: dict) -> dict:
    import torch
    import transformers
    from transformers import MarianMTModel

    torch.set_num_threads(spec["threads"])
    t0 = time.perf_counter()
    model = MarianMTModel.from_pretrained(spec["model_dir"]).eval()
    load = time.perf_counter() - t0
    pad = model.config.pad_token_id
    rows = json.loads(Path(spec["ids"]).read_text())
    bs, beams = spec["batch_size"], spec["beams"]

    def run(rows, n):
        generated, lat = 0, []
        for batch in chunks(rows, bs):
            t = time.perf_counter()
            width = max(len(r) for r in batch)
            ids = torch.full((len(batch), width), pad, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for i, r in enumerate(batch):
                ids[i, : len(r)] = torch.tensor(r)
                mask[i, : len(r)] = 1
            out = model.generate(
                input_ids=ids, attention_mask=mask, num_beams=beams, do_sample=False,
                min_new_tokens=n, max_new_tokens=n, num_return_sequences=1,
            )
            generated += int((out[:, 1:] != pad).sum())
            lat.append(time.perf_counter() - t)
        return generated, lat

    with torch.inference_mode():
        run(rows[:bs], 2)
        t0 = time.perf_counter()
        generated, lat = run(rows, spec["max_new_tokens"])
        seconds = time.perf_counter() - t0
    return dict(
        generated_tokens=generated, seconds=seconds, load_seconds=load, batch_seconds=lat,
        versions={"torch": torch.__version__, "transformers": transformers.__version__},
        threads=torch.get_num_threads(),
    )


def child_ct2(spec: dict) -> dict:
    import ctranslate2

    vocab_map = json.loads((Path(spec["model_dir"]) / "vocab.json").read_text(encoding="utf-8"))
    vocab = [None] * (max(vocab_map.values()) + 1)
    for tok, i in vocab_map.items():
        vocab[i] = tok
    t0 = time.perf_counter()
    translator = ctranslate2.Translator(
        spec["ct2_dir"], device="cpu", compute_type=spec["compute_type"],
        intra_threads=spec["threads"], inter_threads=1,
    )
    load = time.perf_counter() - t0
    rows = json.loads(Path(spec["ids"]).read_text())
    tokens = [[vocab[i] for i in r] for r in rows]
    bs, beams = spec["batch_size"], spec["beams"]

    def run(batches, n):
        generated, lat = 0, []
        for batch in chunks(batches, bs):
            t = time.perf_counter()
            results = translator.translate_batch(
                batch, beam_size=beams, max_batch_size=bs, min_decoding_length=n,
                max_decoding_length=n, return_end_token=True,
            )
            generated += sum(len(r.hypotheses[0]) for r in results)
            lat.append(time.perf_counter() - t)
        return generated, lat

    run(tokens[:bs], 2)
    t0 = time.perf_counter()
    generated, lat = run(tokens, spec["max_new_tokens"])
    seconds = time.perf_counter() - t0
    return dict(
        generated_tokens=generated, seconds=seconds, load_seconds=load, batch_seconds=lat,
        versions={"ctranslate2": ctranslate2.__version__}, threads=spec["threads"],
    )


def child_sentence_transformers(spec: dict) -> dict:
    import torch
    import sentence_transformers
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(spec["threads"])
    t0 = time.perf_counter()
    model = SentenceTransformer(spec["model_dir"], device="cpu")
    load = time.perf_counter() - t0
    texts = [l.strip() for l in Path(spec["texts"]).read_text(encoding="utf-8").splitlines() if l.strip()]
    bs = spec["batch_size"]
    with torch.inference_mode():
        model.encode(texts[:bs], batch_size=bs)
        t0 = time.perf_counter()
        vectors = model.encode(texts, batch_size=bs)
        seconds = time.perf_counter() - t0
    enc = model.tokenizer(texts, truncation=True, max_length=model.max_seq_length)
    return dict(
        texts=len(vectors), tokens=sum(len(x) for x in enc["input_ids"]), seconds=seconds,
        load_seconds=load,
        versions={"torch": torch.__version__, "sentence-transformers": sentence_transformers.__version__},
        threads=torch.get_num_threads(),
    )


def child_baseline(spec: dict) -> dict:
    """Import an engine's libraries and nothing else: the floor under its peak RSS."""
    if spec["engine"] == "transformers":
        import torch  # noqa: F401
        import transformers  # noqa: F401
    elif spec["engine"] == "ct2":
        import ctranslate2  # noqa: F401
    elif spec["engine"] == "sentence-transformers":
        import sentence_transformers  # noqa: F401
    return {}


def child_make_model(spec: dict) -> dict:
    """Write the random-weight OPUS-MT folder and its CTranslate2 conversions."""
    import sentencepiece as spm
    import torch
    from transformers import GenerationConfig, MarianConfig, MarianMTModel, MarianTokenizer

    shape = SHAPES[spec["shape"]]
    out = Path(spec["model_dir"])
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    vocab_size, eos, unk = shape["vocab"], shape["eos"], shape["unk"]
    pad = vocab_size - 1
    torch.manual_seed(spec["seed"])
    cfg = MarianConfig(
        vocab_size=vocab_size, decoder_vocab_size=vocab_size,
        max_position_embeddings=shape["positions"], d_model=shape["d_model"],
        encoder_layers=shape["layers"], decoder_layers=shape["layers"],
        encoder_attention_heads=shape["heads"], decoder_attention_heads=shape["heads"],
        encoder_ffn_dim=shape["ffn"], decoder_ffn_dim=shape["ffn"],
        activation_function=shape["activation"], scale_embedding=True,
        pad_token_id=pad, eos_token_id=eos, bos_token_id=0, decoder_start_token_id=pad,
        forced_eos_token_id=eos, share_encoder_decoder_embeddings=True,
        tie_word_embeddings=True, architectures=["MarianMTModel"],
    )
    model = MarianMTModel(cfg).eval()
    # The generation keys of the Helsinki-NLP/opus-mt-* repos.
    model.generation_config = GenerationConfig(
        bad_words_ids=[[pad]], bos_token_id=0, decoder_start_token_id=pad, eos_token_id=eos,
        forced_eos_token_id=eos, max_length=512, num_beams=4, pad_token_id=pad,
        renormalize_logits=True,
    )
    model.save_pretrained(out)

    # A small SentencePiece model and a full-size vocab.json: CTranslate2's converter reads the
    # vocabulary through MarianTokenizer. The benchmark itself feeds token ids.
    proto = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(NEWS_SENTENCES), model_writer=proto, model_type="unigram",
        vocab_size=300, hard_vocab_limit=False, character_coverage=1.0, num_threads=1,
        minloglevel=2,
    )
    (out / "source.spm").write_bytes(proto.getvalue())
    (out / "target.spm").write_bytes(proto.getvalue())
    sp = spm.SentencePieceProcessor(model_proto=proto.getvalue())
    pieces = [
        sp.id_to_piece(i) for i in range(sp.get_piece_size())
        if not (sp.is_control(i) or sp.is_unknown(i))
    ]
    vocab = [None] * vocab_size
    vocab[eos], vocab[unk], vocab[pad] = "</s>", "<unk>", "<pad>"
    taken = set(vocab) - {None}
    free = (i for i in range(vocab_size) if vocab[i] is None)
    for piece in pieces:
        if piece not in taken:
            vocab[next(free)] = piece
            taken.add(piece)
    for i in free:
        name = f"<t{i}>"  # made-up pieces: only their ids matter
        vocab[i] = name
    (out / "vocab.json").write_text(
        json.dumps({tok: i for i, tok in enumerate(vocab)}, ensure_ascii=False), encoding="utf-8"
    )
    (out / "tokenizer_config.json").write_text(json.dumps({
        "source_lang": "xx", "target_lang": "en", "unk_token": "<unk>", "eos_token": "</s>",
        "pad_token": "<pad>", "model_max_length": 512, "separate_vocabs": False,
        "tokenizer_class": "MarianTokenizer",
    }, indent=2), encoding="utf-8")
    tok = MarianTokenizer.from_pretrained(out)
    if len(tok) != vocab_size:
        raise RuntimeError(f"tokenizer has {len(tok)} tokens, expected {vocab_size}")

    import ctranslate2

    for quant, name in [(None, "ct2-fp32"), ("int8", "ct2-int8")]:
        conv = ctranslate2.converters.TransformersConverter(str(out))
        conv.convert(str(out.parent / name), quantization=quant, force=True)
    return {"model_dir": str(out)}


CHILDREN = {
    "transformers": child_transformers,
    "ct2": child_ct2,
    "sentence-transformers": child_sentence_transformers,
    "make-model": child_make_model,
    "baseline": child_baseline,
}


def measure_baselines(timeout: int) -> dict:
    out = {}
    for engine in ["transformers", "ct2", "sentence-transformers"]:
        out[engine] = run_child("baseline", {"engine": engine}, 1, timeout)["peak_rss_bytes"]
    return out


def child_main(kind: str, spec_json: str) -> None:
    result = CHILDREN[kind](json.loads(spec_json))
    result["peak_rss_bytes"] = peak_rss_bytes()
    print(json.dumps(result))


# ------------------------------------------------------------------ parent --------------------


def child_env(threads: int, omp_wait_policy: str) -> dict:
    env = dict(os.environ)
    for k in ["OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "RAYON_NUM_THREADS"]:
        env[k] = str(threads)
    if omp_wait_policy != "default":
        env["OMP_WAIT_POLICY"] = omp_wait_policy
    env["TOKENIZERS_PARALLELISM"] = "false"
    env["HF_HUB_OFFLINE"] = "1"
    env["TRANSFORMERS_VERBOSITY"] = "error"
    return env


OMP_WAIT_POLICY = "PASSIVE"  # set from --omp-wait-policy


def run_child(kind: str, spec: dict, threads: int, timeout: int) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "_child", kind, json.dumps(spec)]
    env = child_env(threads, OMP_WAIT_POLICY)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{kind} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_tidings(binary: Path, args: list[str], threads: int, timeout: int) -> dict:
    cmd = [str(binary), "-q", "bench", "--threads", str(threads), "--json", "--device", "cpu", *args]
    env = child_env(threads, OMP_WAIT_POLICY)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{shlex.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout)


def token_rows(n: int, shape: dict, seed: int) -> list[list[int]]:
    """`n` rows with the lengths of the news sentences (about 1.4 pieces per word, as OPUS-MT
    tokenizes news), random ordinary ids, ending in EOS; sorted longest first."""
    rng = random.Random(seed)
    special = {shape["eos"], shape["unk"], shape["vocab"] - 1}
    rows = []
    for i in range(n):
        words = len(NEWS_SENTENCES[i % len(NEWS_SENTENCES)].split())
        row = []
        while len(row) < math.ceil(words * 1.4):
            t = rng.randrange(shape["vocab"])
            if t not in special:
                row.append(t)
        rows.append(row + [shape["eos"]])
    rows.sort(key=len, reverse=True)
    return rows


def parse_setting(s: str) -> dict:
    # BATCHxBEAM:SENTENCES, e.g. 32x4:64
    try:
        head, n = s.split(":")
        bs, beams = head.lower().split("x")
        return dict(batch_size=int(bs), beams=int(beams), sentences=int(n))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected BATCHxBEAM:SENTENCES (like 32x4:64), got {s!r}")


def parse_threads(s: str) -> list[int]:
    try:
        out = [int(x) for x in s.split(",")]
    except ValueError:
        out = []
    if not out or min(out) < 1:
        raise argparse.ArgumentTypeError(f"expected thread counts like 2 or 1,2, got {s!r}")
    return out


def setting_name(s: dict) -> str:
    if "beams" in s:
        kind = "greedy" if s["beams"] == 1 else f"beam {s['beams']}"
        return f"batch {s['batch_size']}, {kind}"
    return f"embed, batch {s['batch_size']}"


def run_gpu(args) -> int:
    """The GPU comparison: parity on the fixtures, then the same random-weight models and rows
    for tidings and its peers on one GPU (scripts/gpu/run.sh says what it runs)."""
    binary = args.tidings
    if binary is None:
        log("building tidings with CUDA (scripts/cuda-build.sh) ...")
        subprocess.run(["bash", str(ROOT / "scripts" / "cuda-build.sh")], cwd=ROOT, check=True)
        binary = ROOT / "target" / "cuda" / "release" / "tidings"
    out = args.workdir / "gpu"
    cmd = ["bash", str(ROOT / "scripts" / "gpu" / "run.sh"), str(binary), str(out)]
    if (args.minilm / "config.json").is_file():
        cmd.append(str(args.minilm))
    log("running", shlex.join(cmd))
    return subprocess.run(cmd, cwd=ROOT).returncode


def build_tidings() -> Path:
    log("building tidings (cargo build --release) ...")
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    return target / "release" / "tidings"


def prepare_model(work: Path, shape: str, seed: int) -> Path:
    model_dir = work / "model"
    stamp = work / "stamp.json"
    want = {"shape": shape, "seed": seed, "version": STAMP_VERSION}
    if stamp.exists() and json.loads(stamp.read_text()) == want and (work / "ct2-int8").is_dir():
        log(f"reusing {model_dir}")
        return model_dir
    log(f"making a random-weight {shape} model in {model_dir} and converting it to CTranslate2 ...")
    run_child("make-model", {"shape": shape, "seed": seed, "model_dir": str(model_dir)}, 2, 3600)
    stamp.write_text(json.dumps(want))
    return model_dir


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def main(argv=None) -> int:
    global OMP_WAIT_POLICY
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shape", choices=sorted(SHAPES), default="opus-mt-base")
    p.add_argument("--threads", type=parse_threads, default=[2],
                   help="threads for every engine; a list like 1,2 runs everything at each")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--setting", type=parse_setting, action="append",
                   help="translation setting BATCHxBEAM:SENTENCES, repeatable (default: 32x4:64 and 1x1:16)")
    p.add_argument("--embed-batch", type=int, action="append", help="embedding batch sizes (default: 32)")
    p.add_argument("--embed-texts", type=int, default=128, help="texts per embedding run")
    p.add_argument("--minilm", type=Path, default=Path(os.environ.get("TIDINGS_MINILM_DIR", DEFAULT_MINILM)))
    p.add_argument("--no-embed", action="store_true")
    p.add_argument("--engines", default=",".join(dict.fromkeys(TRANSLATION_ENGINES + EMBED_ENGINES)),
                   help="comma-separated subset of engines to run")
    p.add_argument("--omp-wait-policy", default="PASSIVE", choices=["PASSIVE", "ACTIVE", "default"],
                   help="OMP_WAIT_POLICY for every engine (PASSIVE: OpenMP threads sleep instead of "
                        "spinning, which keeps torch and CTranslate2 from collapsing on a busy machine)")
    p.add_argument("--tidings", type=Path, help="a tidings binary (default: cargo build --release)")
    p.add_argument("--workdir", type=Path, default=ROOT / "target" / "peer-bench")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--timeout", type=int, default=3600, help="seconds per engine run")
    p.add_argument("--write-docs", action="store_true", help="write BENCHMARKS.md and docs/bench.svg")
    p.add_argument("--from-results", type=Path, metavar="JSON",
                   help="measure nothing: render the tables (and with --write-docs the docs) from a results.json")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                   help="cuda: run scripts/gpu/run.sh instead (tidings f32/bf16/f16 beside transformers "
                        "fp32/fp16 and sentence-transformers on one GPU; --tidings defaults to "
                        "scripts/cuda-build.sh's binary, results under --workdir/gpu)")
    args = p.parse_args(argv)
    if args.device == "cuda":
        return run_gpu(args)
    if args.from_results:
        results = json.loads(args.from_results.read_text())
        print(render_tables(results))
        if args.write_docs:
            write_docs(results)
        return 0
    OMP_WAIT_POLICY = args.omp_wait_policy
    settings = args.setting or [parse_setting("32x4:64"), parse_setting("1x1:16")]
    embed_batches = args.embed_batch or [32]
    engines = set(args.engines.split(","))
    unknown = engines - set(TRANSLATION_ENGINES) - set(EMBED_ENGINES)
    if unknown:
        p.error(f"unknown engines {sorted(unknown)}")
    run_embed = not args.no_embed and bool(engines & set(EMBED_ENGINES))
    if run_embed and not (args.minilm / "modules.json").is_file():
        p.error(f"{args.minilm} is not a sentence-transformers folder (scripts/fetch-minilm.sh, --minilm, or --no-embed)")

    binary = args.tidings or build_tidings()
    work = args.workdir / args.shape
    work.mkdir(parents=True, exist_ok=True)
    shape = SHAPES[args.shape]
    model_dir = prepare_model(work, args.shape, args.seed)

    jobs = []  # (threads, setting, engine, callable), run round-robin
    for s in settings:
        ids = work / f"ids-{s['batch_size']}x{s['beams']}-{s['sentences']}.json"
        ids.write_text(json.dumps(token_rows(s["sentences"], shape, args.seed + s["sentences"])))
        for threads in args.threads:
            base = dict(model_dir=str(model_dir), ids=str(ids), batch_size=s["batch_size"],
                        beams=s["beams"], max_new_tokens=args.max_new_tokens, threads=threads)
            for engine in TRANSLATION_ENGINES:
                if engine not in engines:
                    continue
                if engine == "transformers":
                    fn = lambda base=base: run_child("transformers", base, base["threads"], args.timeout)
                elif engine.startswith("ct2"):
                    spec = dict(base, ct2_dir=str(work / engine),
                                compute_type="float32" if engine == "ct2-fp32" else "int8")
                    fn = lambda spec=spec: run_child("ct2", spec, spec["threads"], args.timeout)
                else:
                    targs = ["--model", str(model_dir), "--input", str(ids),
                             "--batch-sizes", str(s["batch_size"]), "--beams", str(s["beams"]),
                             "--max-new-tokens", str(args.max_new_tokens),
                             "--compute-type", "int8" if engine == "tidings-int8" else "f32"]
                    fn = lambda targs=targs, t=threads: tidings_translation(binary, targs, t, args.timeout)
                jobs.append((threads, s, engine, fn))
    embed_settings = []
    if run_embed:
        texts = work / "texts.txt"
        texts.write_text("\n".join(NEWS_SENTENCES[i % len(NEWS_SENTENCES)] for i in range(args.embed_texts)) + "\n",
                         encoding="utf-8")
        for bs in embed_batches:
            s = dict(batch_size=bs, texts=args.embed_texts)
            embed_settings.append(s)
            for threads in args.threads:
                if "sentence-transformers" in engines:
                    spec = dict(model_dir=str(args.minilm), texts=str(texts), batch_size=bs, threads=threads)
                    jobs.append((threads, s, "sentence-transformers",
                                 lambda spec=spec: run_child("sentence-transformers", spec, spec["threads"], args.timeout)))
                if "tidings" in engines:
                    targs = ["--embed-model", str(args.minilm), "--input", str(texts), "--batch-sizes", str(bs)]
                    jobs.append((threads, s, "tidings",
                                 lambda targs=targs, t=threads: tidings_embedding(binary, targs, t, args.timeout)))

    raw: dict[tuple, list] = {}
    meta: dict = {"versions": {}, "hardware": None}
    load_before = load_average()
    for r in range(args.repeats):
        for threads, s, engine, fn in jobs:
            key = (threads, setting_name(s), engine)
            log(f"[{r + 1}/{args.repeats}] {threads} threads  {key[1]:<18} {engine:<22} ...")
            out = fn()
            out["tokens_per_s"] = out.get("generated_tokens", out.get("tokens", 0)) / out["seconds"]
            meta["versions"].update(out.pop("versions", {}))
            if out.get("hardware"):
                meta["hardware"] = out.pop("hardware")
            raw.setdefault(key, []).append(out)
            log(f"    {out['tokens_per_s']:10.1f} tokens/s   peak RSS {fmt_mib(out.get('peak_rss_bytes'))}")

    summary = summarize(args.threads, settings, embed_settings, raw, args)
    command = list(sys.argv[1:] if argv is None else argv)
    # Where the binary and scratch files live does not change the numbers: show the command a
    # reader re-runs.
    for flag in ("--tidings", "--workdir"):
        while flag in command:
            i = command.index(flag)
            del command[i : i + 2]
        command = [c for c in command if not c.startswith(flag + "=")]
    results = {
        "command": "python scripts/peer_bench.py " + shlex.join(command),
        "date": dt.date.today().isoformat(),
        "shape": args.shape,
        "threads": args.threads,
        "omp_wait_policy": args.omp_wait_policy,
        "repeats": args.repeats,
        "max_new_tokens": args.max_new_tokens,
        "machine": machine_info(meta["hardware"]),
        "load_average": {"before": load_before, "after": load_average()},
        "baseline_rss_bytes": measure_baselines(args.timeout),
        "versions": meta["versions"],
        "summary": summary,
        "raw": {f"{k[0]} threads | {k[1]} | {k[2]}": v for k, v in raw.items()},
    }
    (work / "results.json").write_text(json.dumps(results, indent=2))
    print(render_tables(results))
    log(f"results: {work / 'results.json'}")
    if args.write_docs:
        write_docs(results)
    return 0


def write_docs(results) -> None:
    (ROOT / "docs").mkdir(exist_ok=True)
    (ROOT / "docs" / "bench.svg").write_text(render_svg(results), encoding="utf-8")
    (ROOT / "BENCHMARKS.md").write_text(render_markdown(results), encoding="utf-8")
    log("wrote BENCHMARKS.md and docs/bench.svg")


def tidings_translation(binary, targs, threads, timeout) -> dict:
    out = run_tidings(binary, targs, threads, timeout)
    t = out["translation"]
    run = t["runs"][0]
    return dict(
        generated_tokens=run["generated_tokens"], seconds=run["seconds"],
        load_seconds=t["load_seconds"], peak_rss_bytes=out["peak_rss_bytes"],
        encoder_source_tokens_per_s=run["encoder_source_tokens_per_s"],
        versions={"tidings": out["version"]}, hardware=out["hardware"], threads=out["threads"],
    )


def tidings_embedding(binary, targs, threads, timeout) -> dict:
    out = run_tidings(binary, targs, threads, timeout)
    e = out["embedding"]
    run = e["runs"][0]
    return dict(
        texts=run["texts"], tokens=run["tokens"], seconds=run["seconds"],
        load_seconds=e["load_seconds"], peak_rss_bytes=out["peak_rss_bytes"],
        versions={"tidings": out["version"]}, hardware=out["hardware"], threads=out["threads"],
    )


def fmt_mib(b) -> str:
    return "n/a" if b is None else f"{b / 2**20:.0f} MiB"


def summarize(thread_counts, settings, embed_settings, raw, args) -> list[dict]:
    out = []
    for threads in thread_counts:
        for s in settings:
            name = setting_name(s)
            expected = s["sentences"] * args.max_new_tokens
            rows = {}
            for engine in TRANSLATION_ENGINES:
                runs = raw.get((threads, name, engine))
                if not runs:
                    continue
                for run in runs:
                    if run["generated_tokens"] != expected:
                        log(f"WARNING: {engine} generated {run['generated_tokens']} tokens in {name}, expected {expected}")
                rows[engine] = dict(
                    tokens_per_s=median(r["tokens_per_s"] for r in runs),
                    sentences_per_s=median(s["sentences"] / r["seconds"] for r in runs),
                    peak_rss_bytes=median(r["peak_rss_bytes"] for r in runs),
                    load_seconds=median(r["load_seconds"] for r in runs),
                    generated_tokens=runs[0]["generated_tokens"],
                    all_tokens_per_s=[round(r["tokens_per_s"], 2) for r in runs],
                )
            out.append(dict(kind="translation", threads=threads, name=name, setting=s,
                            expected_tokens=expected, unit="generated tokens/s", engines=rows))
        for s in embed_settings:
            name = setting_name(s)
            rows = {}
            for engine in EMBED_ENGINES:
                runs = raw.get((threads, name, engine))
                if not runs:
                    continue
                rows[engine] = dict(
                    tokens_per_s=median(r["tokens_per_s"] for r in runs),
                    texts_per_s=median(r["texts"] / r["seconds"] for r in runs),
                    peak_rss_bytes=median(r["peak_rss_bytes"] for r in runs),
                    load_seconds=median(r["load_seconds"] for r in runs),
                    tokens=runs[0]["tokens"],
                    all_tokens_per_s=[round(r["tokens_per_s"], 2) for r in runs],
                )
            out.append(dict(kind="embedding", threads=threads, name=name, setting=s,
                            unit="tokens/s", engines=rows))
    return out


def load_average():
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def headline(results) -> str:
    """One line per setting and tidings variant: its speed relative to each peer."""
    out = []
    for b in results["summary"]:
        e = b["engines"]
        order = TRANSLATION_ENGINES if b["kind"] == "translation" else EMBED_ENGINES
        ours = [k for k in order if k.startswith("tidings") and (e.get(k) or {}).get("tokens_per_s")]
        peers = [k for k in order if not k.startswith("tidings") and k in e]
        for k in ours:
            t = e[k]["tokens_per_s"]
            rel = ", ".join(f"{ratio(t, e[p]['tokens_per_s'])} {ENGINE_LABELS[p]}" for p in peers)
            label = ENGINE_LABELS[k] if b["kind"] == "translation" else "tidings"
            out.append(f"- {block_title(b, results['max_new_tokens'])}: {label} {t:,.1f} {b['unit']} = {rel}")
    return "\n".join(out)


def machine_info(hw) -> dict:
    info = {"platform": platform.platform(), "python": platform.python_version()}
    if hw:
        info.update(cpu=hw["cpu"], cores=hw["cores"], simd=hw["simd"])
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                info["memory_gib"] = round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return info


def spread(r, digits=1) -> str:
    runs = r.get("all_tokens_per_s") or []
    return f"{min(runs):.{digits}f}–{max(runs):.{digits}f}" if len(runs) > 1 else "–"


def ratio(a, b) -> str:
    return "–" if not a or not b else f"{a / b:.2f}×"


def block_title(block, max_new_tokens) -> str:
    if block["kind"] == "translation":
        detail = f"{block['setting']['sentences']} sentences × {max_new_tokens} new tokens"
    else:
        detail = f"{block['setting']['texts']} texts"
    return f"{block['name']}, {block['threads']} thread{'s' if block['threads'] > 1 else ''} ({detail})"


def render_block(block, max_new_tokens, level="###") -> str:
    e = block["engines"]
    lines = [f"{level} {block_title(block, max_new_tokens)}", ""]
    if block["kind"] == "translation":
        lines.append("| engine | tokens/s | runs (min–max) | sentences/s | vs transformers | vs CT2 fp32 | vs CT2 int8 | peak RSS | load |")
        lines.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        ref = {k: (e.get(k) or {}).get("tokens_per_s") for k in TRANSLATION_ENGINES}
        for engine in TRANSLATION_ENGINES:
            if engine not in e:
                continue
            r = e[engine]
            name = f"**{ENGINE_LABELS[engine]}**" if engine.startswith("tidings") else ENGINE_LABELS[engine]
            lines.append(
                f"| {name} | {r['tokens_per_s']:.1f} | {spread(r)} | {r['sentences_per_s']:.2f} | "
                f"{ratio(r['tokens_per_s'], ref['transformers'])} | {ratio(r['tokens_per_s'], ref['ct2-fp32'])} | "
                f"{ratio(r['tokens_per_s'], ref['ct2-int8'])} | {fmt_mib(r['peak_rss_bytes'])} | {r['load_seconds']:.2f} s |"
            )
    else:
        lines.append("| engine | texts/s | tokens/s | runs (min–max) | vs sentence-transformers | peak RSS | load |")
        lines.append("|---|---:|---:|---:|---:|---:|---:|")
        ref = (e.get("sentence-transformers") or {}).get("tokens_per_s")
        for engine in EMBED_ENGINES:
            if engine not in e:
                continue
            r = e[engine]
            name = "**tidings**" if engine == "tidings" else ENGINE_LABELS[engine]
            lines.append(
                f"| {name} | {r['texts_per_s']:.1f} | {r['tokens_per_s']:.0f} | {spread(r, 0)} | "
                f"{ratio(r['tokens_per_s'], ref)} | {fmt_mib(r['peak_rss_bytes'])} | {r['load_seconds']:.2f} s |"
            )
    return "\n".join(lines) + "\n"


def render_tables(results, kind=None) -> str:
    blocks = [b for b in results["summary"] if kind is None or b["kind"] == kind]
    return "\n".join(render_block(b, results["max_new_tokens"]) for b in blocks)


def render_markdown(results) -> str:
    m = results["machine"]
    v = results["versions"]
    versions = ", ".join(f"{k} {v[k]}" for k in sorted(v))
    simd = ",".join(m.get("simd", [])) or "none detected"
    threads = " and ".join(str(t) for t in results["threads"])
    omp = results["omp_wait_policy"]
    base = results.get("baseline_rss_bytes") or {}
    baseline_note = ""
    if base:
        names = {"transformers": "torch + transformers", "ct2": "ctranslate2",
                 "sentence-transformers": "sentence-transformers"}
        baseline_note = " (importing them, before any model: " + ", ".join(
            f"{names.get(k, k)} {fmt_mib(v)}" for k, v in base.items()) + ")"
    load = results.get("load_average") or {}
    load_note = ""
    if load.get("before") and load.get("after"):
        fmt = lambda xs: "/".join(f"{x:.1f}" for x in xs)
        load_note = (f" (load average 1/5/15 min: {fmt(load['before'])} at the start, "
                     f"{fmt(load['after'])} at the end)")
    omp_note = (
        f"`OMP_WAIT_POLICY={omp}` was set for every engine"
        + (" (OpenMP threads sleep instead of spinning at barriers; see below)" if omp == "PASSIVE" else "")
        if omp != "default" else "OpenMP's default wait policy was left alone"
    )
    return f"""# Benchmarks

<!-- Generated by scripts/peer_bench.py --write-docs; edit the script, not this file. -->

How fast tidings translates and embeds, next to the engines people would otherwise use, on the
same model, the same input and the same settings. Measured {results['date']}.

![tokens per second, per engine and setting](docs/bench.svg)

**Command** (from the repository root, with a Python that has
`scripts/requirements-bench.txt` and `scripts/fetch-minilm.sh` run once; it rebuilds tidings in
release mode, re-runs everything and rewrites this file and the chart):

```sh
{results['command']}
```

**Machine:** {m.get('cpu', 'unknown CPU')}, {m.get('cores', '?')} cores available (SIMD:
{simd}), {m.get('memory_gib', '?')} GiB RAM, {m.get('platform')}. Every engine ran with the
same number of threads, {threads} (torch `set_num_threads` and `OMP_NUM_THREADS`,
CTranslate2 `intra_threads` with `inter_threads=1`, `tidings bench --threads`);
{omp_note}. This is a shared machine with other jobs running{load_note}: each number is the
median of {results['repeats']} runs, engines interleaved (every run is in
`target/peer-bench/{results['shape']}/results.json`).

**Versions:** {versions}. tidings: `cargo build --release`, default features, on the CPU through
its own kernels (`src/model/kernels`): **tidings f32** is the default (`--compute-type f32`, the
numerics tested equal to transformers), **tidings int8** is `--compute-type int8` (8-bit weights
per output feature, activations quantised per row, like CTranslate2 int8). Python packages:
`scripts/requirements-bench.txt`.

**tidings relative to each peer** (its tokens/s divided by theirs; above 1× = tidings is
faster):

{headline(results)}

## Translation: random-weight `{results['shape']}`

One random-weight MarianMTModel of the real {results['shape']} shape ({shape_words(results['shape'])}),
saved with `save_pretrained` as an OPUS-MT folder and converted to CTranslate2
(fp32, and int8 weights). Every engine translates the **same token id rows** (the lengths of
real news sentences at ~1.4 pieces per word, {row_lengths()} tokens with `</s>`, sorted longest
first) in the same batches, and every sentence generates **exactly {results['max_new_tokens']}
tokens** (EOS is banned until the last step: `min_new_tokens = max_new_tokens` in transformers,
`min_decoding_length = max_decoding_length` in CTranslate2, the same in `tidings bench`), so
every engine runs the same number of decoder steps and random weights cannot end a sentence
early (the script checks every engine's output count). tokens/s counts the output tokens of
the returned hypothesis (not beams × tokens); a warm-up batch generating 2 tokens is not timed;
model load is timed separately. Ratios are this engine's tokens/s divided by the other's
(above 1 = faster).

{render_tables(results, "translation")}
## Embeddings: all-MiniLM-L6-v2

The real `sentence-transformers/all-MiniLM-L6-v2`, the same news sentences (repeated), tokens
counted with special tokens: `SentenceTransformer.encode(texts, batch_size=B)` against
`tidings bench --embed-model DIR --input texts.txt --batch-sizes B`. Both sort texts by length
and tokenize inside the timed call; tidings' vectors match sentence-transformers' (cosine
≥ 0.9999, tests/embed.rs).

{render_tables(results, "embedding")}
## Reading these numbers

- **Where tidings' time goes** and how it got here: PROFILE.md.
- **GPU**: no table yet, because no GPU has been available to this project's work so far.
  `python scripts/peer_bench.py --device cuda` on a machine with an NVIDIA GPU times tidings
  (f32, bf16, f16) beside transformers (fp32, fp16) and sentence-transformers on that GPU, with
  the same models and rows, and checks f32 parity first (README, "NVIDIA GPUs").
- **Threads on a busy machine.** torch and CTranslate2 parallelise with OpenMP, whose threads
  spin at every barrier by default. When another process holds one of the two cores, a
  spinning barrier waits for a whole scheduler time slice: on this machine, with another job
  running, a 4×512×2048 f32 matmul in torch took 0.33 ms on 1 thread and 11–17 ms on 2 threads
  with the default policy, but 0.9 ms with `OMP_WAIT_POLICY=PASSIVE`. So the script sets
  PASSIVE for everyone (`--omp-wait-policy default` turns that off; on an idle machine the
  default may be slightly faster). tidings (rayon) is not affected by the setting. Even so,
  with the machine this loaded, 2 threads are often no faster than 1 (two busy threads cannot
  both get a core): compare engines within one table, and prefer the 1-thread tables when
  the 2-thread numbers look odd.
- Peak RSS is each engine's own process (VmHWM), measured for each setting separately; for
  the Python engines it includes the interpreter and its libraries{baseline_note}. tidings
  reads the weights into memory, then packs each layer for its kernels and frees the f32 copy;
  the output projection shares its matrix with the embedding table, which stays f32 for the
  row lookups, so that matrix is held twice in f32 (once in int8 mode).
- The int8 rows (CTranslate2's and tidings') compute with 8-bit weights; the others in f32, so
  int8 is faster but not numerically the same model (tidings' int8 error bounds: tests/int8.rs).
- Random weights give random tokens, but the work per step is that of a real model of this
  shape; real models also stop at EOS, which every engine handles alike.
- `tidings bench` measures tidings the same way without Python (its own built-in input):
  `tidings bench --random-weights {results['shape']} --threads {results['threads'][-1]}`.
"""


def shape_words(name: str) -> str:
    sh = SHAPES[name]
    return (f"d_model {sh['d_model']}, {sh['layers']}+{sh['layers']} layers, {sh['heads']} heads, "
            f"FFN {sh['ffn']}, vocabulary {sh['vocab']}, {sh['activation']}, scaled embeddings, "
            "sinusoidal positions")


def row_lengths() -> str:
    lens = [math.ceil(len(t.split()) * 1.4) + 1 for t in NEWS_SENTENCES]
    return f"{min(lens)} to {max(lens)} (mean {statistics.mean(lens):.0f})"


def render_svg(results) -> str:
    """Horizontal bar chart, one panel per setting and thread count, each on its own scale."""
    colors = {
        "transformers": "#9a9a9a", "ct2-fp32": "#6f9fc8", "ct2-int8": "#2f5f8a",
        "tidings": "#d9822b", "tidings-int8": "#a0521b", "sentence-transformers": "#9a9a9a",
    }
    width, label_w, bar_h, gap = 780, 240, 20, 5
    y = 58
    parts = []
    for block in results["summary"]:
        e = block["engines"]
        order = TRANSLATION_ENGINES if block["kind"] == "translation" else EMBED_ENGINES
        present = [k for k in order if k in e]
        if not present:
            continue
        top = max(e[k]["tokens_per_s"] for k in present)
        parts.append(
            f'<text x="10" y="{y}" font-size="14" font-weight="bold">'
            f'{esc(block_title(block, results["max_new_tokens"]))}</text>'
        )
        y += 8
        for k in present:
            v = e[k]["tokens_per_s"]
            w = max(1.0, (width - label_w - 130) * v / top)
            ty = y + bar_h * 0.75
            label = ENGINE_LABELS[k] if block["kind"] == "translation" or k != "tidings" else "tidings"
            parts.append(f'<text x="{label_w - 8}" y="{ty:.0f}" font-size="13" text-anchor="end">{esc(label)}</text>')
            parts.append(f'<rect x="{label_w}" y="{y}" width="{w:.1f}" height="{bar_h}" fill="{colors[k]}"/>')
            parts.append(f'<text x="{label_w + w + 6:.1f}" y="{ty:.0f}" font-size="13">{v:,.0f} {esc(block["unit"].split()[-1])}</text>')
            y += bar_h + gap
        y += 30
    title = f"tidings and its peers: {results['shape']} (random weights) and all-MiniLM-L6-v2"
    sub = (f"CPU, median of {results['repeats']} runs; translation: generated tokens/s, "
           f"{results['max_new_tokens']} tokens per sentence; embeddings: input tokens/s")
    height = y
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="Helvetica, Arial, sans-serif">\n'
        f'<rect width="{width}" height="{height}" fill="white"/>\n'
        f'<text x="10" y="22" font-size="16" font-weight="bold">{esc(title)}</text>\n'
        f'<text x="10" y="40" font-size="12" fill="#555">{esc(sub)}</text>\n'
        + "\n".join(parts) + "\n</svg>\n"
    )


def esc(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "_child":
        child_main(sys.argv[2], sys.argv[3])
    else:
        sys.exit(main())
