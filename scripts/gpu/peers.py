"""transformers `generate` (fp32, fp16) and sentence-transformers on the GPU, on the same model
folders and token-id rows as `tidings bench --model DIR/marian --input DIR/ids.json`: the same
batches (rows sorted longest first), the same beams, 32 new tokens per sentence.

usage: python3 peers.py DIR TEXTS.txt OUT.json"""
import json
import sys
import time

import torch
from transformers import MarianMTModel

d, texts_file, out = sys.argv[1:4]
rows = json.load(open(f"{d}/ids.json"))
results = {}
base = MarianMTModel.from_pretrained(f"{d}/marian").eval().cuda()
pad = base.config.pad_token_id


def tokens_per_s(model, batch, beams, new=32):
    generated, seconds = 0, 0.0
    order = sorted(rows if batch > 1 else rows[:16], key=len, reverse=True)
    for i in range(0, len(order), batch):
        chunk = order[i:i + batch]
        width = max(map(len, chunk))
        ids = torch.tensor([r + [pad] * (width - len(r)) for r in chunk], device="cuda")
        torch.cuda.synchronize()
        t = time.time()
        with torch.no_grad():
            o = model.generate(input_ids=ids, attention_mask=(ids != pad).long(), num_beams=beams,
                               max_new_tokens=new, min_new_tokens=new, do_sample=False)
        torch.cuda.synchronize()
        seconds += time.time() - t
        generated += (o[:, 1:] != pad).sum().item()
    return generated / seconds


for name, dtype in (("fp32", torch.float32), ("fp16", torch.float16)):
    model = base.to(dtype)
    for batch, beams in ((1, 1), (32, 4), (128, 4)):
        tokens_per_s(model, batch, beams, new=4)  # warm-up
        results[f"transformers {name} batch {batch} beam {beams} tokens/s"] = tokens_per_s(model, batch, beams)
try:
    from sentence_transformers import SentenceTransformer
    st = SentenceTransformer(f"{d}/minilm", device="cuda")
    texts = [line.strip() for line in open(texts_file) if line.strip()]
    for name, half in (("fp32", False), ("fp16", True)):
        if half:
            st = st.half()
        st.encode(texts[:64], batch_size=32)
        for batch in (32, 128):
            torch.cuda.synchronize()
            t = time.time()
            st.encode(texts, batch_size=batch)
            torch.cuda.synchronize()
            results[f"sentence-transformers {name} batch {batch} texts/s"] = len(texts) / (time.time() - t)
except Exception as e:  # noqa: BLE001 - report and go on with the translation figures
    print("sentence-transformers skipped:", e)
json.dump(results, open(out, "w"), indent=1)
for k, v in results.items():
    print(f"{k:56s} {v:10.1f}")
