#!/usr/bin/env python3
"""Reference embeddings for tests/embed.rs, computed by sentence-transformers itself.

1. tests/fixtures/embed/reference.json — the real all-MiniLM-L6-v2 (fetch it first with
   scripts/fetch-minilm.sh; the folder is $TIDINGS_MINILM_DIR or .cache/models/all-MiniLM-L6-v2):
   for each text its token ids as sentence-transformers feeds them to the model (truncated at
   max_seq_length) and its `model.encode([text])` vector; one `model.encode(batch_texts,
   batch_size=...)` call with its composition; and the chunked, weighted-mean vector of the long
   text as `Embedder::embed_long` defines it.
2. tests/fixtures/embed/tiny-xlmr/ — a tiny random XLM-RoBERTa sentence-transformers model
   (Unigram tokenizer trained here, mean pooling + Dense(tanh) + Normalize) with its own
   reference.json, to test the xlm-roberta position scheme and the Dense module.
3. tests/fixtures/embed/tiny-mpnet/ — a tiny random MPNet (WordPiece vocabulary trained here,
   mean pooling + Normalize, as all-mpnet-base-v2) with its reference.json and a text long enough
   to use every relative-position bucket.

Run with the fixture venv:  /work/pyenv/bin/python scripts/make_embed_fixtures.py
Versions used to write the committed fixtures (pip install into the venv):
    sentence-transformers==6.2.0 transformers==5.23.0 torch==2.15.0 tokenizers==0.23.3
Vectors are rounded to 7 significant digits to keep the files small.
"""

import json
import os
import pathlib
import shutil
import sys

import torch
import sentence_transformers
import tokenizers
import transformers
from sentence_transformers import SentenceTransformer, models

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fixtures" / "embed"
MINILM = pathlib.Path(
    os.environ.get("TIDINGS_MINILM_DIR", ROOT / ".cache" / "models" / "all-MiniLM-L6-v2")
)

LONG_TEXT = (
    "The regional council met on Tuesday evening to debate the future of the old harbour "
    "district, where warehouses built in the nineteenth century have stood empty for more than "
    "a decade. Supporters of the redevelopment plan argued that new housing, a public library "
    "and a small ferry terminal would bring jobs and life back to the waterfront, while "
    "opponents warned that rents in the surrounding streets would rise and that long-time "
    "residents would be pushed out. After three hours of discussion the council voted eleven to "
    "seven in favour of a revised plan that caps the share of luxury flats and sets aside land "
    "for a community garden. The mayor said the decision was a compromise that nobody loved but "
    "everybody could live with. Construction is expected to begin next spring, subject to an "
    "environmental review of the contaminated soil near the former gasworks. Meanwhile, the "
    "national weather service issued a warning for strong winds along the coast, advising "
    "fishermen to stay in port until Thursday. Schools in three villages closed early as a "
    "precaution, and the railway operator reduced services on the coastal line after a fallen "
    "tree blocked the tracks near the lighthouse. Engineers worked through the night to clear "
    "the line, and the first trains were running again by six in the morning, although with "
    "delays of up to forty minutes. In sport, the local football club secured promotion with a "
    "two-nil win over their closest rivals, sending thousands of fans into the streets to "
    "celebrate. The club's captain, who scored both goals, dedicated the victory to the "
    "volunteers who keep the small stadium running. Analysts expect the promotion to bring in "
    "additional television revenue, which the club plans to spend on its youth academy and on "
    "repairs to the ageing north stand. Finally, the city museum announced that its exhibition "
    "of medieval maps will be extended until the end of the summer because of record visitor "
    "numbers, with free entry on the first Sunday of every month."
)

TEXTS = [
    "The central bank raised interest rates by a quarter of a percentage point on Wednesday.",
    "Thousands of people were evacuated after heavy rain caused flooding in the north of the country.",
    "The prime minister is expected to announce a cabinet reshuffle later this week.",
    "Shares in the carmaker fell 7% after it cut its profit forecast for the year.",
    "Scientists have discovered a new species of frog in the rainforest of Ecuador.",
    "Die Regierung hat am Montag ein neues Gesetz zum Klimaschutz vorgestellt.",
    "В Москве прошли переговоры министров иностранных дел двух стран.",
    "",
    LONG_TEXT,
    "  Leading and trailing   spaces, and\ttabs\nand newlines.  ",
    "!!! ??? ... --- ;;; (((",
    "Ünïcödé àccénts, “curly quotes”, em—dashes… and the € sign: 1.000,50 €",
    "Emoji 🎉🚀 and CJK 東京都 and Arabic مرحبا and a combining e\u0301 and zero\u200bwidth",
    "URL https://example.com/news?id=42&lang=en #breaking @newsdesk",
    "COVID-19 vaccines: WHO says 5.5bn doses administered; U.S. & E.U. agree.",
]

# Texts encoded together in one `encode()` call (indices into TEXTS), and its batch size.
BATCH = [0, 7, 5, 8, 11, 2, 6, 12, 3]
BATCH_SIZE = 4


def round7(values):
    return [float(f"{float(v):.7g}") for v in values]


def versions():
    return {
        "sentence_transformers": sentence_transformers.__version__,
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "tokenizers": tokenizers.__version__,
    }


def features_of(model, rows):
    """Model input for token id rows (right-padded), as sentence-transformers builds it."""
    width = max(len(r) for r in rows)
    pad = model.tokenizer.pad_token_id
    ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    features = {"input_ids": ids, "attention_mask": mask, "modality": "text"}
    if "token_type_ids" in model.tokenizer.model_input_names:
        features["token_type_ids"] = torch.zeros_like(ids)
    return features


def long_reference(model, text):
    """embed_long as specified: token chunks with special tokens, token-count-weighted mean."""
    tok = model.tokenizer
    content = tok(text, add_special_tokens=False)["input_ids"]
    # Both BERT ([CLS] x [SEP]) and XLM-R (<s> x </s>) wrap a single text in cls ... sep.
    assert tok("x")["input_ids"][0] == tok.cls_token_id and tok("x")["input_ids"][-1] == tok.sep_token_id
    room = model.max_seq_length - 2
    pieces = [content[i : i + room] for i in range(0, len(content), room)] or [[]]
    rows = [[tok.cls_token_id] + p + [tok.sep_token_id] for p in pieces]
    with torch.no_grad():
        vecs = model(features_of(model, rows))["sentence_embedding"]
    weights = torch.tensor([float(len(r)) for r in rows]).unsqueeze(1)
    mean = (vecs * weights).sum(0) / weights.sum()
    return torch.nn.functional.normalize(mean, dim=0), [len(r) for r in rows]


def record(model, texts, batch, batch_size, long_index):
    entries = []
    for text in texts:
        ids = model.tokenize([text])["input_ids"][0].tolist()
        full = model.tokenizer(text)["input_ids"]
        vec = model.encode([text], convert_to_numpy=True)[0]
        entries.append(
            {"text": text, "ids": ids, "untruncated_len": len(full), "embedding": round7(vec)}
        )
    batch_vecs = model.encode([texts[i] for i in batch], batch_size=batch_size, convert_to_numpy=True)
    out = {
        "versions": versions(),
        "max_seq_length": model.max_seq_length,
        "dim": model.get_embedding_dimension(),
        "texts": entries,
        "batch": {
            "indices": batch,
            "batch_size": batch_size,
            "embeddings": [round7(v) for v in batch_vecs],
        },
    }
    if long_index is not None:
        vec, chunk_lens = long_reference(model, texts[long_index])
        out["long"] = {"index": long_index, "chunk_lens": chunk_lens, "embedding": round7(vec)}
    return out


def write_json(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {path} ({path.stat().st_size} bytes)")


def minilm():
    if not (MINILM / "model.safetensors").is_file():
        sys.exit(f"{MINILM} has no model; run scripts/fetch-minilm.sh first")
    model = SentenceTransformer(str(MINILM), device="cpu")
    model.eval()
    long_index = TEXTS.index(LONG_TEXT)
    data = record(model, TEXTS, BATCH, BATCH_SIZE, long_index)
    assert data["texts"][long_index]["untruncated_len"] > model.max_seq_length
    write_json(OUT / "reference.json", data)


# ---- tiny random XLM-RoBERTa ------------------------------------------------------------------

TINY_MAX_SEQ = 24
TINY_DIR = OUT / "tiny-xlmr"

# Training text for the tiny Unigram vocabulary (and some of the reference texts).
CORPUS = [
    "The government announced new measures against rising prices on Monday.",
    "Heavy snow closed roads and schools across the mountain region.",
    "The football team won the cup after a dramatic penalty shootout.",
    "Researchers published a study on the effects of sleep on memory.",
    "Die Regierung kündigte am Montag neue Maßnahmen gegen steigende Preise an.",
    "Starker Schneefall sperrte Straßen und Schulen in der Bergregion.",
    "Le gouvernement a annoncé de nouvelles mesures contre la hausse des prix.",
    "La neige a fermé les routes et les écoles de la région.",
    "Правительство объявило новые меры против роста цен.",
    "Сильный снегопад закрыл дороги и школы в горном регионе.",
    "El gobierno anunció nuevas medidas contra la subida de los precios.",
    "Markets rose as investors welcomed the central bank decision.",
    "The minister resigned after the report was published.",
    "Die Mannschaft gewann den Pokal nach einem Elfmeterschießen.",
]

TINY_TEXTS = [
    CORPUS[0],
    CORPUS[4],
    CORPUS[8],
    "Prices, prices, PRICES!",
    "",
    "Zebra quokka 東京 🎉 ünknown",
    "   spaced    out   ",
    " ".join(CORPUS[1:4]),  # longer than TINY_MAX_SEQ tokens
    "la région",
]
TINY_BATCH = [7, 0, 4, 3, 2, 5]
TINY_BATCH_SIZE = 4


# The tiny encoders' shape and special ids (<s> 0, <pad> 1, </s> 2), shared by XLM-R and MPNet.
TINY_ENCODER = dict(
    hidden_size=16,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=32,
    hidden_act="gelu",
    pad_token_id=1,
    bos_token_id=0,
    eos_token_id=2,
    layer_norm_eps=1e-5,
    # Larger than the default 0.02 so that different texts get clearly different vectors.
    initializer_range=0.3,
)


def tiny_xlmr():
    import tempfile

    from tokenizers import Tokenizer, pre_tokenizers
    from tokenizers.models import Unigram
    from tokenizers.trainers import UnigramTrainer
    from transformers import XLMRobertaConfig, XLMRobertaModel, XLMRobertaTokenizer

    torch.manual_seed(20240607)
    with tempfile.TemporaryDirectory() as work:
        work = pathlib.Path(work)
        tok = Tokenizer(Unigram())
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Metaspace()]
        )
        specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
        trainer = UnigramTrainer(vocab_size=160, special_tokens=specials, unk_token="<unk>")
        tok.train_from_iterator(CORPUS, trainer)
        vocab = [(piece, score) for piece, score in json.loads(tok.to_str())["model"]["vocab"]]
        assert [p for p, _ in vocab[:5]] == specials
        # transformers' own XLM-R tokenizer pipeline (Metaspace, <s> $A </s>) over that vocab.
        XLMRobertaTokenizer(vocab=vocab).save_pretrained(work / "hf")

        config = XLMRobertaConfig(
            vocab_size=len(vocab),
            # Exactly enough positions for TINY_MAX_SEQ after the padding offset.
            max_position_embeddings=TINY_MAX_SEQ + 2,
            type_vocab_size=1,
            **TINY_ENCODER,
        )
        XLMRobertaModel(config, add_pooling_layer=False).save_pretrained(work / "hf")

        transformer = models.Transformer(str(work / "hf"), max_seq_length=TINY_MAX_SEQ, do_lower_case=True)
        pooling = models.Pooling(
            16, pooling_mode=("cls", "max", "mean", "mean_sqrt_len_tokens", "weightedmean", "lasttoken")
        )
        dense = models.Dense(16 * 6, 12, activation_function=torch.nn.Tanh())
        SentenceTransformer(modules=[transformer, pooling, dense, models.Normalize()]).save(str(work / "st"))
        # sentence-transformers 6 saves do_lower_case as a Lowercase normalizer in tokenizer.json;
        # older versions kept the plain tokenizer and `do_lower_case` in sentence_bert_config.json.
        # Write the older form, which sentence-transformers 6 still reads, so that loading has to
        # apply do_lower_case itself.
        shutil.copy(work / "hf" / "tokenizer.json", work / "st" / "tokenizer.json")
        sbert_path = work / "st" / "sentence_bert_config.json"
        sbert = json.loads(sbert_path.read_text())
        sbert["do_lower_case"] = True
        sbert_path.write_text(json.dumps(sbert, indent=4) + "\n")
        model = install(work / "st", TINY_DIR, TINY_MAX_SEQ)
    assert model.tokenize(["PRICES"])["input_ids"][0].tolist() == model.tokenize(["prices"])["input_ids"][0].tolist()
    write_reference(model, TINY_DIR, TINY_TEXTS, TINY_BATCH, long_index=7)


def install(saved, target, max_seq):
    """Copy a saved sentence-transformers folder (less its README) to the fixture folder
    `target` and load it from there."""
    (saved / "README.md").unlink(missing_ok=True)
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(saved, target)
    model = SentenceTransformer(str(target), device="cpu")
    model.eval()
    assert model.max_seq_length == max_seq
    return model


def write_reference(model, target, texts, batch, long_index):
    """Record the model's outputs on `texts` (the one at `long_index` longer than its
    max_seq_length) as `target`/reference.json, and list the fixture's files."""
    data = record(model, texts, batch, TINY_BATCH_SIZE, long_index)
    assert data["texts"][long_index]["untruncated_len"] > model.max_seq_length
    write_json(target / "reference.json", data)
    for path in sorted(target.rglob("*")):
        if path.is_file():
            print(f"  {path.relative_to(target)}: {path.stat().st_size} bytes")


# ---- tiny random MPNet ------------------------------------------------------------------------

TINY_MPNET_MAX_SEQ = 160
TINY_MPNET_DIR = OUT / "tiny-mpnet"
# Over 128 tokens apart, so that every relative-position bucket (up to the far ones) is used.
TINY_MPNET_LONG = " ".join(CORPUS * 4)


def tiny_mpnet():
    import tempfile

    from tokenizers import BertWordPieceTokenizer
    from transformers import MPNetConfig, MPNetModel, MPNetTokenizer

    torch.manual_seed(20261205)
    with tempfile.TemporaryDirectory() as work:
        work = pathlib.Path(work)
        # MPNet's specials in MPNet's order (<pad> is 1, the embeddings' padding index); like
        # all-mpnet-base-v2 it has both <unk> and the [UNK] its WordPiece model uses.
        specials = ["<s>", "<pad>", "</s>", "<unk>", "[UNK]", "<mask>"]
        wp = BertWordPieceTokenizer(lowercase=True, unk_token="[UNK]")
        wp.train_from_iterator(CORPUS, vocab_size=220, special_tokens=specials)
        wp.save_model(str(work))
        vocab = (work / "vocab.txt").read_text().split("\n")
        assert vocab[:6] == specials, vocab[:6]
        ids = {piece: i for i, piece in enumerate(v for v in vocab if v)}
        MPNetTokenizer(vocab=ids).save_pretrained(work / "hf")

        config = MPNetConfig(
            vocab_size=len([v for v in vocab if v]),
            max_position_embeddings=TINY_MPNET_MAX_SEQ + 2,
            relative_attention_num_buckets=32,
            **TINY_ENCODER,
        )
        MPNetModel(config, add_pooling_layer=False).save_pretrained(work / "hf")
        transformer = models.Transformer(str(work / "hf"), max_seq_length=TINY_MPNET_MAX_SEQ)
        pooling = models.Pooling(16, pooling_mode="mean")
        SentenceTransformer(modules=[transformer, pooling, models.Normalize()]).save(str(work / "st"))
        model = install(work / "st", TINY_MPNET_DIR, TINY_MPNET_MAX_SEQ)
    texts = TINY_TEXTS + [TINY_MPNET_LONG]
    long_index = len(texts) - 1
    write_reference(model, TINY_MPNET_DIR, texts, TINY_BATCH + [long_index], long_index)


if __name__ == "__main__":
    # Arguments name the fixtures to write (minilm, tiny-xlmr, tiny-mpnet); none: all.
    wanted = set(sys.argv[1:]) or {"minilm", "tiny-xlmr", "tiny-mpnet"}
    torch.manual_seed(0)
    if "minilm" in wanted:
        minilm()
    if "tiny-xlmr" in wanted:
        tiny_xlmr()
    if "tiny-mpnet" in wanted:
        tiny_mpnet()
