#!/usr/bin/env python3
"""Writes the tiny weight fixtures under tests/fixtures/weights/.

The same small state dict is saved as safetensors, as a torch zip .bin and as
a torch legacy .bin, with expected.json holding every tensor's dtype (as
tidings reads it into candle), shape and row-major values. Also writes
hostile/odd files: pickles that name os.system (crafted bytes; nothing is ever
unpickled or run) and a checkpoint with the state dict nested under a key.

Needs torch and safetensors (the project's /work/pyenv). Run from anywhere:
    python scripts/make_weight_fixtures.py
All values are dyadic fractions or integers so JSON round-trips them exactly.

    python scripts/make_weight_fixtures.py --bench /tmp/wbench
instead writes a ~320 MB Marian-sized random state dict in all three formats
for the ignored `bench_large_files` test (never commit those).
"""

import argparse
import io
import json
import pickle
import struct
import zipfile
from collections import OrderedDict
from pathlib import Path

import torch
from safetensors.torch import save_file

OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "weights"

# candle dtype names for each torch dtype (i8 is widened, bool becomes u8).
CANDLE_DTYPE = {
    torch.float32: "f32",
    torch.float16: "f16",
    torch.bfloat16: "bf16",
    torch.float64: "f64",
    torch.int64: "i64",
    torch.int32: "i32",
    torch.int8: "i16",
    torch.bool: "u8",
}


def state_dict():
    sd = OrderedDict()
    sd["encoder.weight"] = torch.arange(12, dtype=torch.float32).reshape(3, 4) * 0.25 - 1.5
    sd["encoder.bias"] = torch.tensor([0.5, -0.5, 1.0, 2.0])
    sd["half"] = (torch.arange(6, dtype=torch.float32).reshape(2, 3) * 0.5 - 1.0).half()
    sd["bf16"] = torch.tensor([1.5, -2.0, 0.125], dtype=torch.bfloat16)
    sd["double"] = torch.tensor([2.5, -1024.0], dtype=torch.float64)
    sd["long"] = torch.tensor([1, -2, 2**40, -(2**62)], dtype=torch.int64)
    sd["int32"] = torch.tensor([7, -8, 2**30], dtype=torch.int32)
    sd["int8"] = torch.tensor([-3, 4, 127], dtype=torch.int8)
    sd["flag"] = torch.tensor([True, False, True])
    # Non-contiguous: a transposed view, strides (1, 2).
    w = torch.arange(8, dtype=torch.float32).reshape(4, 2) * 0.5
    sd["transposed"] = w.t()
    # Tied weights: two tensor objects over one storage, plus the same object twice.
    emb = torch.arange(6, dtype=torch.float32).reshape(3, 2) - 2.0
    sd["tied.a"] = emb
    sd["tied.b"] = emb.detach()
    sd["tied.same"] = emb
    # A 1-D slice at storage offset 4 of a 10-element storage.
    base = torch.arange(10, dtype=torch.float32) * 0.125
    sd["slice"] = base[4:8]
    # Rows 1..3 of a 4x3 matrix: contiguous at storage offset 3.
    m = torch.arange(12, dtype=torch.float32).reshape(4, 3) + 100.0
    sd["rows"] = m[1:3]
    sd["scalar"] = torch.tensor(3.5)
    sd["empty"] = torch.zeros(0, 3)
    sd["param"] = torch.nn.Parameter(torch.tensor([0.25, 0.75]))
    # state_dict() results carry _metadata, which the pickle restores with BUILD.
    sd._metadata = OrderedDict({"": {"version": 1}, "encoder": {"version": 1}})
    return sd


def expected(sd):
    out = {}
    for name, t in sd.items():
        t = t.detach()
        if t.dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
            values = t.double().flatten().tolist()
        else:
            values = t.long().flatten().tolist()
        out[name] = {
            "dtype": CANDLE_DTYPE[t.dtype],
            "shape": list(t.shape),
            "values": values,
        }
    return out


def evil_state_dict_pickle():
    """A dict whose one value is os.system("echo pwned"), as raw protocol-2 opcodes."""
    cmd = b"echo pwned"
    return (
        b"\x80\x02"  # PROTO 2
        + b"}"  # EMPTY_DICT
        + b"X" + struct.pack("<I", 1) + b"x"  # BINUNICODE 'x'
        + b"cos\nsystem\n"  # GLOBAL os.system
        + b"X" + struct.pack("<I", len(cmd)) + cmd
        + b"\x85"  # TUPLE1
        + b"R"  # REDUCE
        + b"s"  # SETITEM
        + b"."  # STOP
    )


def legacy_header():
    """The three pickles torch's legacy format starts with."""
    magic = pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2)
    version = pickle.dumps(1001, protocol=2)
    sys_info = pickle.dumps(
        {"protocol_version": 1001, "little_endian": True,
         "type_sizes": {"short": 2, "int": 4, "long": 4}},
        protocol=2,
    )
    return magic + version + sys_info


def write_bench(out: Path):
    """Same shapes as an OPUS-MT Marian model (6+6 layers, d=512, 58k vocab), untied."""
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    sd = OrderedDict()
    sd["model.shared.weight"] = torch.randn(58101, 512)
    for side in ("encoder", "decoder"):
        for i in range(6):
            p = f"model.{side}.layers.{i}."
            for attn in ("self_attn", "encoder_attn"):
                for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
                    sd[f"{p}{attn}.{proj}.weight"] = torch.randn(512, 512)
                    sd[f"{p}{attn}.{proj}.bias"] = torch.randn(512)
            sd[p + "fc1.weight"] = torch.randn(2048, 512)
            sd[p + "fc2.weight"] = torch.randn(512, 2048)
    sd["final_logits_bias"] = torch.randn(1, 58101)
    save_file(sd, str(out / "model.safetensors"))
    torch.save(sd, out / "model_zip.bin")
    torch.save(sd, out / "model_legacy.bin", _use_new_zipfile_serialization=False)
    for p in sorted(out.iterdir()):
        print(f"{p.stat().st_size:11d}  {p}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bench", type=Path, help="write large benchmark files here instead")
    args = parser.parse_args()
    if args.bench:
        write_bench(args.bench)
        return

    OUT.mkdir(parents=True, exist_ok=True)
    sd = state_dict()

    torch.save(sd, OUT / "model_zip.bin")
    torch.save(sd, OUT / "model_legacy.bin", _use_new_zipfile_serialization=False)
    # safetensors refuses shared or strided tensors, so give it dense copies.
    save_file({k: v.detach().contiguous().clone() for k, v in sd.items()},
              str(OUT / "model.safetensors"))

    # Sanity: torch itself reads back the same values from both .bin files.
    want = expected(sd)
    for name in ("model_zip.bin", "model_legacy.bin"):
        assert expected(torch.load(OUT / name, weights_only=True)) == want, name
    (OUT / "expected.json").write_text(json.dumps(want, indent=1) + "\n")

    evil = evil_state_dict_pickle()
    empty_key_list = pickle.dumps([], protocol=2)
    (OUT / "evil_legacy.bin").write_bytes(legacy_header() + evil + empty_key_list)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        z.writestr("evil/data.pkl", evil)
        z.writestr("evil/byteorder", "little")
        z.writestr("evil/version", "3\n")
    (OUT / "evil_zip.bin").write_bytes(buf.getvalue())

    # A training checkpoint: the state dict sits under "state_dict".
    small = OrderedDict(bias=torch.tensor([1.0, 2.0]))
    torch.save({"state_dict": small, "epoch": 3}, OUT / "nested_legacy.bin",
               _use_new_zipfile_serialization=False)

    for p in sorted(OUT.iterdir()):
        print(f"{p.stat().st_size:7d}  {p.relative_to(OUT.parent.parent.parent)}")


if __name__ == "__main__":
    main()
