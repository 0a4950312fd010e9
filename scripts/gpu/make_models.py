"""Random-weight models of real shapes for speed runs on a GPU, made on the spot (nothing to
download): an opus-mt-base-shape Marian whose EOS logit is held down, so that every sentence runs
to the length limit and every engine does the same work; 128 token-id rows with the lengths of
news sentences; and, when MINILM_DIR holds all-MiniLM-L6-v2's config and tokenizer files, a
random-weight model of that shape (speed does not depend on the weights).

usage: python3 make_models.py OUT_DIR [MINILM_DIR]"""
import json
import os
import random
import shutil
import sys

import torch
from transformers import BertConfig, BertModel, MarianConfig, MarianMTModel

out = sys.argv[1]
os.makedirs(out, exist_ok=True)
torch.manual_seed(0)
cfg = MarianConfig(
    vocab_size=58101, decoder_vocab_size=58101, d_model=512, encoder_layers=6, decoder_layers=6,
    encoder_attention_heads=8, decoder_attention_heads=8, encoder_ffn_dim=2048, decoder_ffn_dim=2048,
    activation_function="swish", scale_embedding=True, max_position_embeddings=512,
    pad_token_id=58100, eos_token_id=0, decoder_start_token_id=58100, forced_eos_token_id=0,
    share_encoder_decoder_embeddings=True)
model = MarianMTModel(cfg).eval()
with torch.no_grad():
    for name, p in model.named_parameters():
        if p.dim() >= 2 and "embed_positions" not in name:
            p.normal_(0, 0.02)
    model.final_logits_bias[0, cfg.eos_token_id] = -1e4
model.save_pretrained(f"{out}/marian", safe_serialization=True)

rng = random.Random(0)
lengths = [min(128, max(6, int(rng.lognormvariate(3.25, 0.45)))) for _ in range(128)]
rows = [[rng.randrange(10, cfg.vocab_size - 10) for _ in range(n - 1)] + [cfg.eos_token_id] for n in lengths]
with open(f"{out}/ids.json", "w") as f:
    json.dump(rows, f)

if len(sys.argv) > 2 and os.path.exists(os.path.join(sys.argv[2], "config.json")):
    d = f"{out}/minilm"
    shutil.copytree(sys.argv[2], d, dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("*.safetensors", "*.bin", "*.onnx"))
    BertModel(BertConfig.from_pretrained(d)).eval().save_pretrained(d, safe_serialization=True)
print("models in", out, "rows", len(rows), "mean length", sum(lengths) / len(lengths))
