#!/usr/bin/env python3
"""Digests llama-quantize's golden outputs in ../shared/golden/gguf-v2/types into types/expected.json.

For each expected-<TYPE>.gguf: every tensor's GGML type name and the SHA-256 of its data bytes,
the metadata as (key, GGUF value type) in file order, and the whole file's SHA-256 and size. The
tests compare Modelsmith's outputs against this instead of tracking 8 MB of GGUF files.

Usage: make_types_expected.py SHARED_TYPES_DIR OUT_JSON
"""
import hashlib
import json
import os
import struct
import sys

TYPE_NAMES = {0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 6: "Q5_0", 7: "Q5_1", 8: "Q8_0", 10: "Q2_K",
              11: "Q3_K", 12: "Q4_K", 13: "Q5_K", 14: "Q6_K", 16: "IQ2_XXS", 17: "IQ2_XS", 18: "IQ3_XXS",
              19: "IQ1_S", 20: "IQ4_NL", 21: "IQ3_S", 22: "IQ2_S", 23: "IQ4_XS", 29: "IQ1_M", 34: "TQ1_0",
              35: "TQ2_0"}
# (elements per block, bytes per block)
BLOCKS = {0: (1, 4), 1: (1, 2), 2: (32, 18), 3: (32, 20), 6: (32, 22), 7: (32, 24), 8: (32, 34),
          10: (256, 84), 11: (256, 110), 12: (256, 144), 13: (256, 176), 14: (256, 210), 16: (256, 66),
          17: (256, 74), 18: (256, 98), 19: (256, 50), 20: (32, 18), 21: (256, 110), 22: (256, 82),
          23: (256, 136), 29: (256, 56), 34: (256, 54), 35: (256, 66)}
SCALAR = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}


def read(path):
    data = open(path, "rb").read()
    off = 4
    _, n_tensors, n_kv = struct.unpack_from("<IQQ", data, off)
    off += 20

    def string():
        nonlocal off
        (n,) = struct.unpack_from("<Q", data, off)
        off += 8 + n
        return data[off - n:off].decode()

    def skip(t):
        nonlocal off
        if t in SCALAR:
            off += SCALAR[t]
        elif t == 8:
            string()
        else:
            at, n = struct.unpack_from("<IQ", data, off)
            off += 12
            for _ in range(n):
                skip(at)

    kvs = []
    alignment = 32
    for _ in range(n_kv):
        key = string()
        (t,) = struct.unpack_from("<I", data, off)
        off += 4
        if key == "general.alignment":
            (alignment,) = struct.unpack_from("<I", data, off)
        skip(t)
        kvs.append([key, t])
    tensors = []
    for _ in range(n_tensors):
        name = string()
        (n_dims,) = struct.unpack_from("<I", data, off)
        off += 4
        ne = struct.unpack_from("<%dQ" % n_dims, data, off)
        off += 8 * n_dims
        t, offset = struct.unpack_from("<IQ", data, off)
        off += 12
        tensors.append((name, ne, t, offset))
    start = (off + alignment - 1) // alignment * alignment
    out = {}
    for name, ne, t, offset in tensors:
        elements = 1
        for n in ne:
            elements *= n
        block, size = BLOCKS[t]
        chunk = data[start + offset:start + offset + elements // block * size]
        out[name] = [TYPE_NAMES[t], hashlib.sha256(chunk).hexdigest()]
    return {"tensors": out, "kvs": kvs, "file_sha256": hashlib.sha256(data).hexdigest(),
            "file_bytes": len(data)}


def main():
    src, dst = sys.argv[1], sys.argv[2]
    result = {}
    for name in sorted(os.listdir(src)):
        if name.startswith("expected-") and name.endswith(".gguf"):
            result[name[len("expected-"):-len(".gguf")]] = read(os.path.join(src, name))
    with open(dst, "w") as f:
        json.dump(result, f, indent=1, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    main()
