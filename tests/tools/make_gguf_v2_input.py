#!/usr/bin/env python3
"""Writes tests/data/golden/gguf-v2/presets/input-f16.gguf again, byte for byte, without gguf-py.

The golden set's input was written by make_llama_gguf.py (beside the golden files) with llama.cpp's
gguf-py: `make_llama_gguf.py OUT 8 tiny 1`. This script makes the same file from the same numpy
random stream and the GGUF v3 layout gguf-py writes (metadata in the order added, tensor infos,
32-byte alignment), so the 10 MB input need not live in the repository; expected.json's hashes of
llama-quantize's outputs are checked against what our job makes of it.

  make_gguf_v2_input.py OUT.gguf [LAYERS [tiny|full [SEED]]]

Defaults: 8 tiny 1 (the golden input). `16 full 7` is make_llama_gguf.py's default, the 1.67 GB
TinyLlama-shaped model of issue 19's llama-quantize timings (quantize_bench uses it); tensors are
generated and written one at a time, so memory stays at one tensor.
"""
import struct
import sys

import numpy as np

TINY = (256, 512, 4, 2, 512)      # hidden, ffn, heads, KV heads, vocab
FULL = (2048, 5632, 32, 4, 32000)  # TinyLlama-1.1B
ALIGN = 32
U32, F32, STRING, ARRAY, I32 = 4, 6, 8, 9, 5


def string(s):
    b = s.encode() if isinstance(s, str) else s
    return struct.pack("<Q", len(b)) + b


def kv(key, vtype, payload):
    return string(key) + struct.pack("<I", vtype) + payload


def main():
    out = sys.argv[1]
    layers = int(sys.argv[2]) if len(sys.argv) > 2 else 8
    H, F, NH, NKV, V = FULL if len(sys.argv) > 3 and sys.argv[3] == "full" else TINY
    seed = int(sys.argv[4]) if len(sys.argv) > 4 else 1
    rng = np.random.default_rng(seed)
    kvs = [
        kv("general.architecture", STRING, string("llama")),
        kv("llama.context_length", U32, struct.pack("<I", 2048)),
        kv("llama.embedding_length", U32, struct.pack("<I", H)),
        kv("llama.block_count", U32, struct.pack("<I", layers)),
        kv("llama.feed_forward_length", U32, struct.pack("<I", F)),
        kv("llama.attention.head_count", U32, struct.pack("<I", NH)),
        kv("llama.attention.head_count_kv", U32, struct.pack("<I", NKV)),
        kv("llama.attention.layer_norm_rms_epsilon", F32, struct.pack("<f", 1e-5)),
        kv("llama.rope.dimension_count", U32, struct.pack("<I", H // NH)),
        kv("general.file_type", U32, struct.pack("<I", 1)),
        kv("tokenizer.ggml.model", STRING, string("llama")),
        kv("tokenizer.ggml.tokens", ARRAY,
           struct.pack("<IQ", STRING, V) + b"".join(string(f"t{i}") for i in range(V))),
        kv("tokenizer.ggml.scores", ARRAY, struct.pack("<IQ", F32, V) + np.zeros(V, "<f4").tobytes()),
        kv("tokenizer.ggml.token_type", ARRAY, struct.pack("<IQ", I32, V) + np.ones(V, "<i4").tobytes()),
    ]
    # (name, shape, is_f32) in write order; values are drawn in this order while writing.
    tensors = []

    def t(name, *shape, f32=False):
        tensors.append((name, shape, f32))

    t("token_embd.weight", V, H)
    for i in range(layers):
        p = f"blk.{i}."
        t(p + "attn_norm.weight", H, f32=True)
        t(p + "attn_q.weight", H, H)
        t(p + "attn_k.weight", H * NKV // NH, H)
        t(p + "attn_v.weight", H * NKV // NH, H)
        t(p + "attn_output.weight", H, H)
        t(p + "ffn_norm.weight", H, f32=True)
        t(p + "ffn_gate.weight", F, H)
        t(p + "ffn_up.weight", F, H)
        t(p + "ffn_down.weight", H, F)
    t("output_norm.weight", H, f32=True)
    t("output.weight", V, H)

    def pad(n):
        return (ALIGN - n % ALIGN) % ALIGN

    infos, offset = b"", 0
    for name, shape, f32 in tensors:
        nbytes = int(np.prod(shape)) * (4 if f32 else 2)
        dims = list(reversed(shape))
        infos += string(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims)
        infos += struct.pack("<IQ", 0 if f32 else 1, offset)
        offset += nbytes + pad(nbytes)
    header = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kvs)) + b"".join(kvs) + infos
    with open(out, "wb") as f:
        f.write(header + b"\0" * pad(len(header)))
        for _, shape, f32 in tensors:
            a = rng.standard_normal(shape, dtype=np.float32) * 0.02
            data = (a if f32 else a.astype(np.float16)).tobytes()
            f.write(data + b"\0" * pad(len(data)))


if __name__ == "__main__":
    main()
