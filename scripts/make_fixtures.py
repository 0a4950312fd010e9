#!/usr/bin/env python3
"""Build tiny random-weight Marian (OPUS-MT style) fixtures and Hugging Face reference outputs.

Writes tests/fixtures/marian-tiny-{swish,relu,sep}/ : each folder looks like a Hub OPUS-MT repo
(config.json, generation_config.json, source.spm, target.spm, vocab.json [+ target_vocab.json],
tokenizer_config.json, special_tokens_map.json, weights) plus reference.json with what
`transformers` computes for a fixed list of inputs (token ids, first-step logits, greedy and
beam-search outputs, decoded texts).

Everything is deterministic: fixed seeds, single-threaded SentencePiece training and torch.
Run from anywhere:  python scripts/make_fixtures.py   (versions: scripts/requirements-fixtures.txt)
"""

from __future__ import annotations

import io
import copy
import json
import math
import pickle
import random
import shutil
import struct
import sys
import tempfile
from pathlib import Path

import sentencepiece as spm
import torch
import transformers
from transformers import GenerationConfig, MarianConfig, MarianMTModel, MarianTokenizer
from transformers.modeling_outputs import BaseModelOutput

ROOT = Path(__file__).resolve().parent.parent
SEEDS = ROOT / "seeds"
OUT = ROOT / "tests" / "fixtures"

MAX_NEW_TOKENS = 24
GEN_MAX_LENGTH = 64  # generation_config.json / config.json max_length (real repos say 512)
MAX_POSITIONS = 256
NEAR_TIE = 1e-3

# English target-side text for the target SentencePiece models (written for this script).
ENGLISH = [
    "The city party committee met on Monday afternoon to discuss the competition plan.",
    "Delegates agreed to finish the organisation of the contest before the twelfth of June.",
    "The provincial committee held an online conference to review the work of the year.",
    "More than two thousand new members joined the party in the province last year.",
    "The results reached 113.34 percent of the target set by the resolution.",
    "Leaders of the steering committee, the jury and the support groups attended the meeting.",
    "The mass mobilisation commission assigned tasks for the fourth quarter of 2024.",
    "He asked all levels to strengthen their sense of responsibility and complete their duties.",
    "The conference was chaired by the deputy secretary and the head of the organising board.",
    "Officials said the storm caused serious damage to houses, roads and crops.",
    "Local authorities will continue to support people affected by the flood.",
    "The government approved a new plan to build schools and hospitals in rural areas.",
    "Prices of rice and vegetables rose sharply in the markets of the capital.",
    "The ministry reported that exports grew by nine percent in the first half of the year.",
    "Police arrested two men suspected of smuggling goods across the border.",
    "The football team won the final match and returned home to a warm welcome.",
    "Scientists warned that rising temperatures could threaten the coastal region.",
    "A new bridge across the river was opened to traffic on Sunday morning.",
    "Students and teachers took part in a ceremony to celebrate the new school year.",
    "The company plans to hire five hundred workers for its new factory.",
    "Farmers in the northern provinces expect a good harvest this autumn.",
    "The president met foreign ministers to talk about trade and security.",
    "According to the report, unemployment fell to its lowest level in ten years.",
    "Heavy rain is forecast for the central provinces over the weekend.",
    "The museum will open a new exhibition about the history of the city.",
    "Doctors called on citizens to get vaccinated before the winter season.",
    "The committee praised the units that achieved excellent results in the movement.",
    "Thousands of people gathered in the square to watch the fireworks.",
    "The court sentenced the former director to six years in prison.",
    "Investors are waiting for the central bank to announce its decision on interest rates.",
    "The village has built a new road with money donated by local residents.",
    "Experts say the reform will make public services faster and cheaper.",
    "The festival attracted visitors from many countries around the world.",
    "Workers repaired the power lines after the storm knocked them down.",
    "The party secretary awarded certificates of merit to ten collectives.",
    "Officials promised to publish the full results of the inspection next week.",
    "The number of tourists visiting the province has doubled since last spring.",
    "Comment (0)  Source link  Photo: N.D.",
    "On the afternoon of May 22, the steering committee met in Lang Son.",
    "The programme runs from 2021 to 2023 and covers all districts and towns.",
    "\"We must listen to the people,\" the deputy secretary said at the meeting.",
    "The train was delayed for three hours because of a technical problem.",
    "Children in the mountain villages received warm clothes and books.",
    "The minister said the project would be completed by the end of 2025.",
    "Fishermen were told to stay in port until the weather improves.",
]

# Inputs: sentences cut from the seed articles plus edge cases.  The one-token and ~100-token
# inputs are chosen per fixture below (they depend on the fixture's source.spm).
BASE_INPUTS = [
    "Die Vorsitzenden des Stadtparteikomitees sprechen auf der Sitzung",
    "Der Wettbewerb für herausragende Parteizellensekretäre auf Stadtebene 2023 soll wie geplant am 21. Juni 2023 stattfinden.",
    "Am Nachmittag des 22. Mai traf sich der Lenkungsausschuss des Wettbewerbs „Hervorragender Parteizellensekretär 2023“ in Lang Son , um die Inhalte des Umsetzungsplans zu verbreiten.",
    "Kommentar (0)",
    "Сегодня днем, 20 марта, Блок соревнований партийных органов провел конференцию для подписания соглашения о соревновании на 2024 год.",
    "В 2023 году вся провинция приняла 2041 члена партии, достигнув 113,34% от резолюции (1800 членов партии).",
    "Место проведения конференции сегодня днем 10 января. Фото: Н.Д.",
    "Нгуен Чин вручил Почетные грамоты 10 коллективам, добившимся успехов в номинации «Отличное выполнение заданий».",
    "Ráno 23. října rozvrhla komise pro masovou mobilizaci provinčního stranického výboru úkoly masové mobilizace na čtvrté čtvrtletí roku 2024.",
    "Pokračovat v přezkoumávání registrovaných úkolů v roce 2024 se zaměřením na plnění zbývajících úkolů.",
    "iniciativu „Kvalifikovaná masová mobilizace“ s tématem „Kvalifikovaná masová mobilizace – Všechno je úspěšné“.",
    "Komentář (0)",
    "",
    "   ",
    "  Die   Sitzung  beginnt  ",
    "Die\tSitzung\tder Jury",
    "Zeile eins\nZeile zwei",
    "ﬁnale ① ＡＢＣ Ｓｉｔｚｕｎｇ ㎏ Ⅻ",
    "Die\u00a0Sitzung\u200bheute … 2021–2023 гг.",
    "Emoji 😀 und 中文 Zeichen ✓",
    ">>deu<< Die Sitzung beginnt.",
    "113,34% und 3/6 Cluster, 12.06.2023",
    "„Hervorragender Parteizellensekretär“ und «Куангчи»",
    "Việt Nam 10/01/2024",
    "LAN NGUYENZdroj: https://baohaiduong.vn/tap-trung-396302.html",
]
ONE_TOKEN_CANDIDATES = [",", ".", "die", "2023", "в", "a", "-", "(", "s"]
LONG_TEXT = (
    "Товарищ Ле Ван Зунг сказал, что вся отрасль преодолела трудности, посоветовала организации "
    "тщательно, синхронно, научно и правильно усвоить и конкретизировать постановления Центрального "
    "Комитета. Наряду с этим, он консультировал, направлял, побуждал, создавал и совершенствовал "
    "лидерский потенциал, боевую мощь низовых партийных организаций и качество членов партии в "
    "соответствии с партийными уставами. Die Delegierten konzentrierten sich auf die Besprechung des "
    "Organisationsplans, die Aufgabenverteilung an die Mitglieder des Lenkungsausschusses und die "
    "Festlegung der Jury. Okresní výbory pro masovou mobilizaci i nadále radí stálým výborům okresního "
    "výboru strany, aby pokračovaly v efektivní realizaci projektu."
)

FIXTURES = [
    {
        # opus-mt base-like: swish, shared vocab with </s>=0 and <pad> last, model.safetensors
        "name": "marian-tiny-swish",
        "src_vocab_size": 260,
        "tgt_vocab_size": 170,
        "seed": 11,
        "vocab_layout": "opus",  # </s>=0, <unk>=1, pieces, language codes, <pad>=last
        "lang_codes": [">>deu<<", ">>ces<<", ">>rus<<"],
        "separate": False,
        "activation": "swish",
        "d_model": 24,
        "heads": 4,
        "enc_ffn": 48,
        "dec_ffn": 48,
        "layers": (2, 2),
        "weights": "safetensors",
        "source_lang": "de+ru+cs",
        "target_lang": "en",
    },
    {
        # opus-mt-tc-big-like: relu, </s> and <unk> inside the vocab, zip pytorch_model.bin only
        "name": "marian-tiny-relu",
        "src_vocab_size": 250,
        "tgt_vocab_size": 160,
        "seed": 23,
        "vocab_layout": "shuffled",
        "lang_codes": [],
        "separate": False,
        "activation": "relu",
        "d_model": 24,
        "heads": 2,
        "enc_ffn": 40,
        "dec_ffn": 64,
        "layers": (2, 2),
        "weights": "bin-zip",
        "source_lang": "deu+ces+rus",
        "target_lang": "eng",
    },
    {
        # separate source/target vocabularies, legacy (pre-zip) pytorch_model.bin only
        "name": "marian-tiny-sep",
        "src_vocab_size": 300,
        "tgt_vocab_size": 160,
        "seed": 37,
        "vocab_layout": "opus",
        "lang_codes": [],
        "separate": True,
        "activation": "swish",
        "d_model": 16,
        "heads": 4,
        "enc_ffn": 32,
        "dec_ffn": 40,
        "layers": (2, 2),
        "weights": "bin-legacy",
        "source_lang": "de+ru+cs",
        "target_lang": "en",
    },
]

# Weight scales (every weight is overwritten, so layer norms and biases are not the trivial 1/0).
# Token embeddings are kept small and attention sharp, so that outputs depend on the source and
# on positions rather than repeating one token; the last decoder layer norm gets a large gain so
# that logits are spread out and near ties are rare.
EMB_STD = 0.35
LIN_STD = 0.2
QK_STD = 0.4  # sharpish attention: outputs depend on the source and positions; much sharper
# saturates softmax and makes f32 logits ill-conditioned (see MAX_F32_ERROR)
BIAS_STD = 0.2
LN_STD = 0.15
OUT_LN_GAIN = 3.0
EOS_BIAS_GRID = [x / 2 for x in range(0, 81)]
SEED_TRIALS = 40
# robustness: outputs must not change when every logit gets this much random noise
NOISE_STD = 2e-4
NOISE_TRIALS = 3
# conditioning: transformers' own f32 first-step logits must be this close to a float64 run, so
# that two correct f32 implementations agree well within the 1e-4 the parity test asserts
MAX_F32_ERROR = 3e-5


def log(*args):
    print(*args, file=sys.stderr, flush=True)


def f32(x: float) -> float:
    """Shortest decimal that round-trips the float32 value."""
    return float(f"{float(x):.9g}")


# ---------------------------------------------------------------- SentencePiece ---------------


def seed_lines() -> list[str]:
    lines = []
    for path in sorted(SEEDS.glob("*.txt")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                lines.append(line.strip())
    if not lines:
        raise SystemExit(f"no seed text found in {SEEDS}")
    return lines


def train_spm(lines: list[str], vocab_size: int, seed: int) -> bytes:
    spm.set_random_generator_seed(seed)
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_writer=model,
        model_type="unigram",
        vocab_size=vocab_size,
        hard_vocab_limit=False,
        character_coverage=1.0,
        byte_fallback=False,
        normalization_rule_name="nmt_nfkc",
        num_threads=1,
        shuffle_input_sentence=False,
        input_sentence_size=0,
        minloglevel=2,
    )
    return model.getvalue()


def spm_pieces(proto: bytes) -> list[tuple[str, float]]:
    sp = spm.SentencePieceProcessor(model_proto=proto)
    out = []
    for i in range(sp.get_piece_size()):
        if sp.is_control(i) or sp.is_unknown(i):
            continue
        out.append((sp.id_to_piece(i), sp.get_score(i)))
    return out


def build_vocab(pieces: list[tuple[str, float]], layout: str, lang_codes: list[str], seed: int) -> dict:
    """OPUS-MT vocab.json: Marian's vocabulary (spm pieces, </s>, <unk>) plus <pad> appended last."""
    best: dict[str, float] = {}
    for piece, score in pieces:
        best[piece] = max(score, best.get(piece, -1e30))
    ordered = sorted(best, key=lambda p: (-best[p], p))
    if layout == "opus":
        tokens = ["</s>", "<unk>"] + ordered + lang_codes
    elif layout == "shuffled":
        tokens = ordered + lang_codes
        random.Random(seed).shuffle(tokens)
        tokens.insert(len(tokens) * 3 // 10, "<unk>")
        tokens.insert(len(tokens) * 6 // 10, "</s>")
    else:
        raise ValueError(layout)
    tokens.append("<pad>")
    return {tok: i for i, tok in enumerate(tokens)}


# ---------------------------------------------------------------- model files ------------------


def make_config(fx: dict, src_vocab: dict, tgt_vocab: dict) -> MarianConfig:
    pad = tgt_vocab["<pad>"]
    eos = tgt_vocab["</s>"]
    return MarianConfig(
        vocab_size=len(src_vocab),
        decoder_vocab_size=len(tgt_vocab),
        max_position_embeddings=MAX_POSITIONS,
        encoder_layers=fx["layers"][0],
        decoder_layers=fx["layers"][1],
        encoder_attention_heads=fx["heads"],
        decoder_attention_heads=fx["heads"],
        encoder_ffn_dim=fx["enc_ffn"],
        decoder_ffn_dim=fx["dec_ffn"],
        d_model=fx["d_model"],
        activation_function=fx["activation"],
        dropout=0.1,
        attention_dropout=0.0,
        activation_dropout=0.0,
        init_std=0.02,
        scale_embedding=True,
        pad_token_id=pad,
        eos_token_id=eos,
        bos_token_id=0,
        decoder_start_token_id=pad,
        forced_eos_token_id=eos,
        share_encoder_decoder_embeddings=not fx["separate"],
        tie_word_embeddings=True,
        architectures=["MarianMTModel"],
    )


def make_generation_config(pad: int, eos: int) -> GenerationConfig:
    # The keys of the generation_config.json files in the Helsinki-NLP/opus-mt-* repos.
    return GenerationConfig(
        bad_words_ids=[[pad]],
        bos_token_id=0,
        decoder_start_token_id=pad,
        eos_token_id=eos,
        forced_eos_token_id=eos,
        max_length=GEN_MAX_LENGTH,
        num_beams=4,
        pad_token_id=pad,
        renormalize_logits=True,
    )


# Keys that real opus-mt config.json files carry and MarianConfig no longer writes by itself.
LEGACY_CONFIG_KEYS = {
    "_num_labels": 3,
    "add_bias_logits": False,
    "add_final_layer_norm": False,
    "classif_dropout": 0.0,
    "classifier_dropout": 0.0,
    "gradient_checkpointing": False,
    "id2label": {"0": "LABEL_0", "1": "LABEL_1", "2": "LABEL_2"},
    "label2id": {"LABEL_0": 0, "LABEL_1": 1, "LABEL_2": 2},
    "normalize_before": False,
    "normalize_embedding": False,
    "static_position_embeddings": True,
    "torch_dtype": "float32",
}


def patch_config_json(folder: Path, cfg: MarianConfig, pad: int) -> None:
    path = folder / "config.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    extra = dict(LEGACY_CONFIG_KEYS)
    extra["num_hidden_layers"] = cfg.encoder_layers
    # old config.json files repeat these generation settings
    extra.update({"bad_words_ids": [[pad]], "max_length": GEN_MAX_LENGTH, "num_beams": 4})
    data.pop("dtype", None)
    for k, v in extra.items():
        data.setdefault(k, v)
    path.write_text(json.dumps(dict(sorted(data.items())), indent=2) + "\n", encoding="utf-8")


def write_tokenizer_files(folder: Path, fx: dict) -> None:
    # tokenizer_config.json as the converted OPUS-MT repos have it (transformers 5 writes a
    # different layout); special_tokens_map.json is no longer written by transformers 5.
    cfg = {
        "source_lang": fx["source_lang"],
        "target_lang": fx["target_lang"],
        "unk_token": "<unk>",
        "eos_token": "</s>",
        "pad_token": "<pad>",
        "model_max_length": 512,
        "sp_model_kwargs": {},
        "separate_vocabs": fx["separate"],
        "special_tokens_map_file": None,
        "tokenizer_class": "MarianTokenizer",
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2) + "\n", encoding="utf-8")
    special = {"eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>"}
    (folder / "special_tokens_map.json").write_text(json.dumps(special) + "\n", encoding="utf-8")


def save_weights(model: MarianMTModel, folder: Path, kind: str) -> None:
    for name in ("model.safetensors", "pytorch_model.bin"):
        (folder / name).unlink(missing_ok=True)
    if kind == "safetensors":
        model.save_pretrained(folder)
        return
    # transformers 5 only writes safetensors: write the pickle checkpoints ourselves
    model.config.save_pretrained(folder)
    model.generation_config.save_pretrained(folder)
    state = model.state_dict()
    path = folder / "pytorch_model.bin"
    if kind == "bin-zip":
        # like save_pretrained(safe_serialization=False) in transformers 4.x: no sinusoidal tables,
        # tied tensors share one storage
        state = {k: v for k, v in state.items() if "embed_positions" not in k}
        torch.save(state, path)
        if not path.read_bytes().startswith(b"PK"):
            raise RuntimeError("expected a zip-format pytorch_model.bin")
    elif kind == "bin-legacy":
        torch.save(state, path, _use_new_zipfile_serialization=False)
        if path.read_bytes().startswith(b"PK"):
            raise RuntimeError("expected a legacy (non-zip) pytorch_model.bin")
        rekey_legacy_checkpoint(path)
    else:
        raise ValueError(kind)


class _Anything(dict):
    """Stands in for every class while scanning a checkpoint pickle without building tensors."""

    def __init__(self, *args, **kwargs):
        super().__init__()

    def __setstate__(self, state):
        pass


def rekey_legacy_checkpoint(path: Path) -> None:
    """The legacy torch format names each storage after its memory address, so the file differs
    on every run. Rename the storages 0, 1, 2, ... in order of first use (all tensors here are
    float32) and write them in that order; torch.load reads the same tensors back."""
    data = path.read_bytes()
    f = io.BytesIO(data)
    for _ in range(3):  # magic number, protocol version, system info
        pickle.load(f)
    main_start = f.tell()
    pids = []

    class Scanner(pickle.Unpickler):
        def persistent_load(self, pid):
            pids.append(pid)
            return None

        def find_class(self, module, name):
            return _Anything

    Scanner(f).load()
    main_end = f.tell()
    keys = pickle.load(f)
    storages = {}
    for key in keys:
        count = int.from_bytes(f.read(8), "little")
        storages[key] = count.to_bytes(8, "little") + f.read(4 * count)
    if f.read() != b"":
        raise RuntimeError("unexpected legacy checkpoint layout")
    order = list(dict.fromkeys(pid[2] for pid in pids))
    if sorted(order) != sorted(keys):
        raise RuntimeError("storage keys do not match")
    main = data[main_start:main_end]
    for i, old in enumerate(order):
        new = str(i)
        pattern = b"X" + struct.pack("<I", len(old)) + old.encode()
        if pattern not in main:
            raise RuntimeError(f"storage key {old} not found")
        main = main.replace(pattern, b"X" + struct.pack("<I", len(new)) + new.encode())
    out = data[:main_start] + main + pickle.dumps([str(i) for i in range(len(order))], protocol=2)
    out += b"".join(storages[old] for old in order)
    before = torch.load(path, weights_only=True)
    path.write_bytes(out)
    after = torch.load(path, weights_only=True)
    if before.keys() != after.keys() or any(not torch.equal(before[k], after[k]) for k in before):
        raise RuntimeError("re-keyed checkpoint does not load the same tensors")

    def sharing(sd):
        groups = {}
        for k, v in sd.items():
            groups.setdefault(v.untyped_storage().data_ptr(), []).append(k)
        return sorted(sorted(g) for g in groups.values())

    if sharing(before) != sharing(after):
        raise RuntimeError("re-keyed checkpoint lost the storage sharing of tied tensors")


def new_model(cfg: MarianConfig, seed: int, eos_bias: float) -> MarianMTModel:
    torch.manual_seed(seed)
    model = MarianMTModel(cfg).eval()
    gen = torch.Generator().manual_seed(seed)
    last_out_ln = f"model.decoder.layers.{cfg.decoder_layers - 1}.final_layer_norm.weight"
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "embed_positions" in name:
                continue  # sinusoidal, every loader recomputes it
            noise = torch.randn(p.shape, generator=gen)
            if "layer_norm" in name:
                if name.endswith("weight"):
                    gain = OUT_LN_GAIN if name == last_out_ln else 1.0
                    p.copy_(gain * (1.0 + LN_STD * noise))
                else:
                    p.copy_(LN_STD * noise)
            elif "embed_tokens" in name or "shared" in name or "lm_head" in name:
                p.copy_(EMB_STD * noise)
            elif name.endswith("bias"):
                p.copy_(BIAS_STD * noise)
            elif name.endswith(("q_proj.weight", "k_proj.weight")):
                p.copy_(QK_STD * noise)
            else:
                p.copy_(LIN_STD * noise)
        bias = 0.3 * torch.randn(model.final_logits_bias.shape, generator=gen)
        bias[0, cfg.eos_token_id] += eos_bias
        model.final_logits_bias.copy_(bias)
    model.generation_config = make_generation_config(cfg.pad_token_id, cfg.eos_token_id)
    return model


# ---------------------------------------------------------------- generation helpers ----------


def strip_generated(row: list[int], eos: int, pad: int, start: int) -> list[int]:
    """generate() row -> generated ids: drop decoder start, keep EOS, drop the pads after it."""
    if not row or row[0] != start:
        raise RuntimeError(f"generated row does not start with decoder_start: {row[:3]}")
    row = row[1:]
    if eos in row:
        return row[: row.index(eos) + 1]
    while row and row[-1] == pad:
        row.pop()
    return row


def generate_ids(model, tok, texts: list[str], num_beams: int) -> list[list[int]]:
    enc = tok(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(
            input_ids=enc["input_ids"],
            attention_mask=enc["attention_mask"],
            num_beams=num_beams,
            max_new_tokens=MAX_NEW_TOKENS,
        )
    c = model.config
    return [strip_generated(r, c.eos_token_id, c.pad_token_id, c.decoder_start_token_id) for r in out.tolist()]


# Independent re-implementation of greedy and beam search as transformers 5.x runs them for these
# models (the description handed to the Rust port); it must reproduce generate() exactly, and it
# measures how close each decision was.


def _is_real(v: float) -> bool:
    return math.isfinite(v) and v > -1e8


def _step_scores(logits, cur_len: int, max_length: int, eos: int, pad: int, beam: bool):
    scores = torch.log_softmax(logits, dim=-1) if beam else logits.clone()
    scores[:, pad] = -math.inf  # NoBadWordsLogitsProcessor (bad_words_ids=[[pad]])
    if cur_len == max_length - 1:  # ForcedEOSTokenLogitsProcessor
        scores = torch.full_like(scores, -math.inf)
        scores[:, eos] = 0.0
    return torch.log_softmax(scores, dim=-1)  # LogitNormalization (renormalize_logits=True)


def _decode_step(model, enc, seqs: list[list[int]], noise=None):
    out = model(encoder_outputs=BaseModelOutput(last_hidden_state=enc), decoder_input_ids=torch.tensor(seqs))
    logits = out.logits[:, -1].float()
    if noise is not None:
        logits = logits + NOISE_STD * torch.randn(logits.shape, generator=noise)
    return logits


def my_greedy(model, src: torch.Tensor, noise=None):
    c = model.config
    eos, pad, start = c.eos_token_id, c.pad_token_id, c.decoder_start_token_id
    max_length = 1 + MAX_NEW_TOKENS
    enc = model.get_encoder()(input_ids=src).last_hidden_state
    seq = [start]
    margins = []
    while len(seq) < max_length:
        scores = _step_scores(_decode_step(model, enc, [seq], noise), len(seq), max_length, eos, pad, beam=False)[0]
        top = torch.topk(scores, 2)
        if _is_real(float(top.values[1])):
            margins.append(float(top.values[0] - top.values[1]))
        seq.append(int(top.indices[0]))
        if seq[-1] == eos:
            break
    return seq[1:], margins


def my_beam(model, src: torch.Tensor, num_beams: int, length_penalty: float, noise=None):
    c = model.config
    eos, pad, start = c.eos_token_id, c.pad_token_id, c.decoder_start_token_id
    max_length = 1 + MAX_NEW_TOKENS
    prompt_len = 1
    k = 2 * num_beams
    enc = model.get_encoder()(input_ids=src).last_hidden_state.expand(num_beams, -1, -1)
    running = [[start] for _ in range(num_beams)]
    running_scores = torch.tensor([0.0] + [-1e9] * (num_beams - 1), dtype=torch.float32)
    finished: list[tuple[float, list[int]]] = []  # best first, at most num_beams
    margins: list[float] = []
    cur_len = 1
    while True:
        logp = _step_scores(_decode_step(model, enc, running, noise), cur_len, max_length, eos, pad, beam=True)
        vocab = logp.shape[-1]
        acc = (logp + running_scores[:, None]).reshape(-1)
        vals, idxs = torch.sort(acc, descending=True, stable=True)
        vals_f = vals.tolist()
        last_step = cur_len + 1 >= max_length
        cands = []
        for r in range(k):
            b, t = divmod(int(idxs[r]), vocab)
            cands.append((vals[r], running[b] + [t], t == eos or last_step))
        # margin: which unfinished candidates go on as running beams
        if not last_step:
            alive = []
            for r, v in enumerate(vals_f):
                if not _is_real(v):
                    break
                if int(idxs[r]) % vocab != eos:
                    alive.append(v)
                    if len(alive) > num_beams:
                        margins.append(alive[num_beams - 1] - alive[num_beams])
                        break
        # margin: a finished candidate is only stored when ranked within the top num_beams
        t_in, t_out = int(idxs[num_beams - 1]) % vocab, int(idxs[num_beams]) % vocab
        if (eos in (t_in, t_out)) and _is_real(vals_f[num_beams - 1]) and _is_real(vals_f[num_beams]):
            margins.append(vals_f[num_beams - 1] - vals_f[num_beams])
        alive_c = [x for x in cands if not x[2]]
        if len(alive_c) < num_beams:  # only at max_length: finished ones fill up at -1e9
            alive_c += [(x[0] - 1e9, x[1], True) for x in cands if x[2]][: num_beams - len(alive_c)]
        new_running = alive_c[:num_beams]
        for r in range(num_beams):
            score, seq, done = cands[r]
            if done:
                norm = score / ((cur_len + 1 - prompt_len) ** length_penalty)
                finished.append((float(norm), seq))
        finished.sort(key=lambda x: -x[0])
        if len(finished) > num_beams:
            margins.append(finished[num_beams - 1][0] - finished[num_beams][0])
            finished = finished[:num_beams]
        all_done = all(x[2] for x in cands)
        running = [x[1] for x in new_running]
        running_scores = torch.stack([torch.as_tensor(x[0], dtype=torch.float32) for x in new_running])
        cur_len += 1
        best_possible = float(running_scores[0] / ((cur_len - prompt_len) ** length_penalty))
        improvable = True
        if len(finished) == num_beams:
            if not all_done and _is_real(best_possible):
                margins.append(abs(best_possible - finished[-1][0]))
            improvable = best_possible > finished[-1][0]
        if not improvable or all_done:
            break
    if len(finished) > 1:
        margins.append(finished[0][0] - finished[1][0])
    return finished[0][1][1:], margins


# ---------------------------------------------------------------- fixture ----------------------


def pick_inputs(tok: MarianTokenizer) -> list[str]:
    one = next((c for c in ONE_TOKEN_CANDIDATES if len(tok(c)["input_ids"]) == 2), None)
    if one is None:
        raise RuntimeError("no one-token candidate")
    words = LONG_TEXT.split(" ")
    long_text = ""
    for n in range(1, len(words) + 1):
        long_text = " ".join(words[:n])
        if len(tok(long_text)["input_ids"]) >= 100:
            break
    return [one, long_text] + BASE_INPUTS


def make_batches(n: int) -> list[list[int]]:
    # the first batch mixes the 1-token (0) and ~100-token (1) inputs with a short one and ""
    first = [0, 1, 2, 2 + BASE_INPUTS.index("")]
    rest = [i for i in range(n) if i not in first]
    sizes = [6, 8, 3, 5, 7, 4]
    batches = [first]
    pos = 0
    turn = 0
    while pos < len(rest):
        left = len(rest) - pos
        size = sizes[turn % len(sizes)]
        turn += 1
        if left <= 8 and left < size + 3:
            size = left  # take the rest rather than leave a batch of fewer than 3
        elif left - size < 3:
            size = left - 3
        batches.append(rest[pos : pos + size])
        pos += size
    if sorted(i for b in batches for i in b) != list(range(n)) or any(not 3 <= len(b) <= 8 for b in batches):
        raise RuntimeError(f"bad batches {batches}")
    return batches


def tune_eos_bias(cfg, tok, inputs: list[str], seed: int):
    """Pick the EOS logit bias that gives the most varied greedy lengths."""
    n = len(inputs)
    best = None
    for eos_bias in EOS_BIAS_GRID:
        model = new_model(cfg, seed, eos_bias)
        lengths = [len(ids) for ids in generate_ids(model, tok, inputs, 1)]
        early = sum(1 for x in lengths if x < MAX_NEW_TOKENS)
        full = n - early
        mid = sum(1 for x in lengths if 2 <= x < MAX_NEW_TOKENS)
        ones = sum(1 for x in lengths if x == 1)
        if full < n // 5:
            break  # a larger bias only stops more sequences early
        if early >= n // 4 and mid >= 4 and ones <= n // 5:
            score = (len(set(lengths)), mid)
            if best is None or score > best[0]:
                best = (score, eos_bias, lengths)
    return best


def f32_error(model, source_ids: list[list[int]], start: int) -> float:
    """Largest |f32 - f64| over the first-step logits of every input."""
    model64 = copy.deepcopy(model).double()
    worst = 0.0
    with torch.no_grad():
        for ids in source_ids:
            src = torch.tensor([ids])
            dec = torch.tensor([[start]])
            a = model(input_ids=src, decoder_input_ids=dec).logits[0, -1].double()
            b = model64(input_ids=src, decoder_input_ids=dec).logits[0, -1]
            worst = max(worst, float((a - b).abs().max()))
    return worst


def decision_margins(model, source_ids: list[list[int]], length_penalty: float):
    """Run the re-implementation on every input: outputs, decision margins, and how many outputs
    change when the logits get a little noise (what a different f32 implementation might add)."""
    out = {"greedy": ([], [], 0), "beam4": ([], [], 0)}
    gen = torch.Generator().manual_seed(1234)
    with torch.no_grad():
        for key in out:
            ids_all, margins, unstable = [], [], 0
            for ids in source_ids:
                src = torch.tensor([ids])
                run = (lambda noise: my_greedy(model, src, noise)) if key == "greedy" else (
                    lambda noise: my_beam(model, src, 4, length_penalty, noise)
                )
                res, m = run(None)
                ids_all.append(res)
                margins.extend(m)
                if any(run(gen)[0] != res for _ in range(NOISE_TRIALS)):
                    unstable += 1
            out[key] = (ids_all, margins, unstable)
    return out


def build_fixture(fx: dict, src_lines: list[str]) -> dict:
    folder = OUT / fx["name"]
    log(f"== {fx['name']}")
    src_proto = train_spm(src_lines, fx["src_vocab_size"], fx["seed"])
    tgt_proto = train_spm(ENGLISH, fx["tgt_vocab_size"], fx["seed"] + 1)
    if train_spm(src_lines, fx["src_vocab_size"], fx["seed"]) != src_proto:
        raise RuntimeError("SentencePiece training is not deterministic")
    src_pieces = spm_pieces(src_proto)
    tgt_pieces = spm_pieces(tgt_proto)
    if fx["separate"]:
        src_vocab = build_vocab(src_pieces, fx["vocab_layout"], fx["lang_codes"], fx["seed"])
        tgt_vocab = build_vocab(tgt_pieces, fx["vocab_layout"], [], fx["seed"] + 1)
        # config.pad_token_id (the target <pad>) must also be a valid encoder embedding row
        if len(tgt_vocab) >= len(src_vocab):
            raise RuntimeError("the separate-vocab fixture needs a smaller target vocab")
    else:
        src_vocab = build_vocab(src_pieces + tgt_pieces, fx["vocab_layout"], fx["lang_codes"], fx["seed"])
        tgt_vocab = src_vocab

    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "source.spm").write_bytes(src_proto)
        (tmp / "target.spm").write_bytes(tgt_proto)
        (tmp / "vocab.json").write_text(json.dumps(src_vocab), encoding="utf-8")
        kwargs = {}
        if fx["separate"]:
            (tmp / "target_vocab.json").write_text(json.dumps(tgt_vocab), encoding="utf-8")
            kwargs = {"target_vocab_file": str(tmp / "target_vocab.json"), "separate_vocabs": True}
        tok = MarianTokenizer(
            source_spm=str(tmp / "source.spm"),
            target_spm=str(tmp / "target.spm"),
            vocab=str(tmp / "vocab.json"),
            source_lang=fx["source_lang"],
            target_lang=fx["target_lang"],
            **kwargs,
        )
        tok.save_pretrained(folder)
    write_tokenizer_files(folder, fx)
    if (folder / "source.spm").read_bytes() != src_proto or (folder / "target.spm").read_bytes() != tgt_proto:
        raise RuntimeError("the tokenizer rewrote the spm files")

    cfg = make_config(fx, src_vocab, tgt_vocab)
    pad, eos, start = cfg.pad_token_id, cfg.eos_token_id, cfg.decoder_start_token_id
    tok = MarianTokenizer.from_pretrained(folder)
    inputs = pick_inputs(tok)
    batches = make_batches(len(inputs))
    source_ids = [tok(t)["input_ids"] for t in inputs]

    # random weights: take the first seed whose decisions (greedy and beam) have no near tie
    chosen = None
    for trial in range(SEED_TRIALS):
        seed = fx["seed"] * 1000 + trial
        tuned = tune_eos_bias(cfg, tok, inputs, seed)
        if tuned is None:
            log(f"  seed {seed}: no EOS bias gives varied lengths")
            continue
        (_, eos_bias, lengths) = tuned
        model = new_model(cfg, seed, eos_bias)
        err = f32_error(model, source_ids, start)
        if err > MAX_F32_ERROR:
            log(f"  seed {seed}: f32 logits {err:.2e} from float64, ill-conditioned")
            continue
        dm = decision_margins(model, source_ids, 1.0)
        near = {k: sum(1 for g in v[1] if g < NEAR_TIE) for k, v in dm.items()}
        unstable = {k: v[2] for k, v in dm.items()}
        distinct = len({tuple(x) for x in dm["greedy"][0] + dm["beam4"][0]})
        log(
            f"  seed {seed}: eos_bias {eos_bias}, near ties {near}, unstable {unstable}, "
            f"distinct outputs {distinct}, greedy lengths {lengths}"
        )
        if near["greedy"] == 0 and unstable["greedy"] == 0 and unstable["beam4"] == 0:
            chosen = (seed, eos_bias)
            break
    if chosen is None:
        raise RuntimeError("no seed gives stable outputs")
    seed, eos_bias = chosen

    save_weights(model, folder, fx["weights"])
    patch_config_json(folder, cfg, pad)

    # ---- reload what a user would load, and compute every reference from that
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model = MarianMTModel.from_pretrained(folder).eval()
    tok = MarianTokenizer.from_pretrained(folder)
    after = model.state_dict()
    for k, v in before.items():
        if not torch.equal(v, after[k]):
            raise RuntimeError(f"weight {k} changed on reload")
    if [tok(t)["input_ids"] for t in inputs] != source_ids:
        raise RuntimeError("reloaded tokenizer disagrees")
    gc = model.generation_config
    if gc.renormalize_logits is not True or gc.bad_words_ids != [[pad]] or gc.num_beams != 4:
        raise RuntimeError(f"generation config not loaded as written: {gc}")
    length_penalty = float(gc.length_penalty if gc.length_penalty is not None else 1.0)
    early_stopping = gc.early_stopping if gc.early_stopping is not None else False

    first_logits = []
    with torch.no_grad():
        for ids in source_ids:
            out = model(input_ids=torch.tensor([ids]), decoder_input_ids=torch.tensor([[start]]))
            first_logits.append([f32(x) for x in out.logits[0, 0].tolist()])

    ref = {
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
        "sentencepiece_version": spm.__version__,
        "inputs": inputs,
        "source_ids": source_ids,
        "decode_cases": [],
        "first_step_logits": first_logits,
    }
    dm = decision_margins(model, source_ids, length_penalty)
    model64 = MarianMTModel.from_pretrained(folder).double().eval()
    stats = {"seed": seed, "eos_bias": eos_bias}
    for key, beams in (("greedy", 1), ("beam4", 4)):
        alone = [generate_ids(model, tok, [t], beams)[0] for t in inputs]
        batched: list = [None] * len(inputs)
        for b in batches:
            for i, row in zip(b, generate_ids(model, tok, [inputs[i] for i in b], beams)):
                batched[i] = row
        bad = [i for i in range(len(inputs)) if alone[i] != batched[i]]
        if bad:
            raise RuntimeError(f"{key}: alone != batched for inputs {bad}")
        bad = [i for i in range(len(inputs)) if alone[i] != dm[key][0][i]]
        if bad:
            raise RuntimeError(f"{key}: the re-implementation differs on inputs {bad}")
        bad = [i for i, t in enumerate(inputs) if generate_ids(model64, tok, [t], beams)[0] != alone[i]]
        if bad:
            raise RuntimeError(f"{key}: float64 differs on inputs {bad}")
        margins = dm[key][1]
        stats[key] = {
            "decisions": len(margins),
            "near_ties": sum(1 for g in margins if g < NEAR_TIE),
            "min_gap": min(margins),
            "noise_unstable_outputs": dm[key][2],
            "lengths": [len(a) for a in alone],
        }
        ref[key] = {
            "num_beams": beams,
            "max_new_tokens": MAX_NEW_TOKENS,
            "length_penalty": length_penalty,
            "early_stopping": early_stopping,
            "alone": alone,
            "batches": batches,
            "batched": batched,
            "texts": tok.batch_decode(alone, skip_special_tokens=True),
        }

    # decode cases: every generated sequence, then random id lists
    cases: list[list[int]] = []
    for key in ("greedy", "beam4"):
        for ids in ref[key]["alone"]:
            if ids not in cases:
                cases.append(ids)
    rng = random.Random(seed)
    n_tgt = len(tgt_vocab)
    unk = tgt_vocab["<unk>"]
    src_sp = spm.SentencePieceProcessor(model_proto=src_proto)
    tgt_sp = spm.SentencePieceProcessor(model_proto=tgt_proto)

    def in_spm(sp, piece):
        return sp.piece_to_id(piece) != sp.unk_id()

    src_only = sorted(i for p, i in tgt_vocab.items() if in_spm(src_sp, p) and not in_spm(tgt_sp, p))
    tgt_only = sorted(i for p, i in tgt_vocab.items() if in_spm(tgt_sp, p) and not in_spm(src_sp, p))
    extra: list[list[int]] = [[], [eos], [pad], [unk], [start, eos], [pad, pad, eos], [unk, unk]]
    for _ in range(10):
        ids = [rng.randrange(n_tgt) for _ in range(rng.randint(3, 14))]
        for s in rng.sample([eos, pad, unk], rng.randint(1, 3)):
            ids.insert(rng.randint(1, len(ids) - 1), s)
        extra.append(ids)
    for _ in range(4):
        extra.append([rng.randrange(n_tgt) for _ in range(rng.randint(1, 20))])
    if src_only:
        for _ in range(4):
            ids = [rng.choice(src_only) for _ in range(rng.randint(2, 8))]
            ids.insert(rng.randint(0, len(ids)), rng.choice(tgt_only))
            extra.append(ids)
    space = tgt_vocab.get("\u2581")
    if space is not None:
        extra.append([space, space, rng.randrange(n_tgt), space])
        extra.append([rng.randrange(n_tgt), space, space, space, rng.randrange(n_tgt)])
    for code in fx["lang_codes"]:
        extra.append([tgt_vocab[code], rng.randrange(n_tgt), eos])
    for ids in extra:
        if ids not in cases:
            cases.append(ids)
    ref["decode_cases"] = [{"ids": ids, "text": tok.decode(ids, skip_special_tokens=True)} for ids in cases]
    if len(ref["decode_cases"]) < 30:
        raise RuntimeError("need at least 30 decode cases")

    (folder / "reference.json").write_text(json.dumps(ref, ensure_ascii=False) + "\n", encoding="utf-8")
    stats["source_only_pieces"] = len(src_only)
    stats["distinct_outputs"] = len({tuple(x) for x in ref["greedy"]["alone"] + ref["beam4"]["alone"]})
    log(f"  stats: {json.dumps(stats)}")
    return stats


def main() -> None:
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    transformers.logging.set_verbosity_error()
    try:
        transformers.utils.logging.disable_progress_bar()
    except AttributeError:
        pass
    src_lines = seed_lines()
    OUT.mkdir(parents=True, exist_ok=True)
    names = sys.argv[1:]
    report = {}
    for fx in FIXTURES:
        if names and fx["name"] not in names:
            continue
        report[fx["name"]] = build_fixture(fx, src_lines)
    for name, st in report.items():
        for key in ("greedy", "beam4"):
            s = st[key]
            print(
                f"{name} {key}: {s['decisions']} decisions, {s['near_ties']} near ties (gap < {NEAR_TIE}), "
                f"min gap {s['min_gap']:.4g}, lengths {s['lengths']}"
            )
        size = sum(p.stat().st_size for p in (OUT / name).iterdir())
        print(
            f"{name}: seed {st['seed']}, eos bias {st['eos_bias']}, "
            f"{st['distinct_outputs']} distinct outputs, {size} bytes"
        )


if __name__ == "__main__":
    main()
