#!/usr/bin/env python3
"""Writes a tiny Llama-shaped safetensors checkpoint with random weights.

It shares no code with Modelsmith's writer, so tests that read its output check our reader
against an independent implementation of the format (huggingface/safetensors README "Format").

  make_checkpoint.py OUT.safetensors [--layers 2] [--hidden 64] [--intermediate 172]
                     [--vocab 256] [--dtype F16|BF16|F32] [--seed 0] [--shards N]

With --shards N > 1, OUT names a directory that receives model-0000i-of-0000N.safetensors and
model.safetensors.index.json, split greedily in state-dict order like huggingface_hub.
"""
import argparse
import json
import os
import random
import struct

ITEM_BYTES = {"F16": 2, "BF16": 2, "F32": 4}


def llama_tensors(layers, hidden, intermediate, vocab):
    """(name, shape) in the order transformers' LlamaForCausalLM.state_dict() lists them."""
    names = [("model.embed_tokens.weight", [vocab, hidden])]
    for i in range(layers):
        p = f"model.layers.{i}."
        names += [
            (p + "self_attn.q_proj.weight", [hidden, hidden]),
            (p + "self_attn.k_proj.weight", [hidden, hidden]),
            (p + "self_attn.v_proj.weight", [hidden, hidden]),
            (p + "self_attn.o_proj.weight", [hidden, hidden]),
            (p + "mlp.gate_proj.weight", [intermediate, hidden]),
            (p + "mlp.up_proj.weight", [intermediate, hidden]),
            (p + "mlp.down_proj.weight", [hidden, intermediate]),
            (p + "input_layernorm.weight", [hidden]),
            (p + "post_attention_layernorm.weight", [hidden]),
        ]
    names += [("model.norm.weight", [hidden]), ("lm_head.weight", [vocab, hidden])]
    return names


def random_bytes(rng, count, dtype):
    """Finite random values in [-1, 1) (no NaN/Inf, so dtype checks in tests stay meaningful)."""
    if dtype == "F32":
        return struct.pack(f"<{count}f", *(rng.uniform(-1, 1) for _ in range(count)))
    if dtype == "F16":
        return struct.pack(f"<{count}e", *(rng.uniform(-1, 1) for _ in range(count)))
    # BF16: the high half of an F32.
    raw = struct.pack(f"<{count}f", *(rng.uniform(-1, 1) for _ in range(count)))
    return b"".join(raw[i + 2:i + 4] for i in range(0, len(raw), 4))


def write_safetensors(path, tensors, metadata):
    """tensors: list of (name, dtype, shape, bytes) in the order they are laid out."""
    header = {"__metadata__": metadata} if metadata else {}
    offset = 0
    for name, dtype, shape, data in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for _, _, _, data in tensors:
            f.write(data)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--intermediate", type=int, default=172)
    ap.add_argument("--vocab", type=int, default=256)
    ap.add_argument("--dtype", choices=sorted(ITEM_BYTES), default="F16")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--shards", type=int, default=1)
    ap.add_argument("--fast", action="store_true", help="random bytes instead of values (large models)")
    args = ap.parse_args()

    rng = random.Random(args.seed)
    tensors = []
    for name, shape in llama_tensors(args.layers, args.hidden, args.intermediate, args.vocab):
        count = 1
        for d in shape:
            count *= d
        if args.fast:
            data = bytearray(rng.randbytes(count * ITEM_BYTES[args.dtype]))
            # Clear each element's top exponent bit so no value is NaN or Inf.
            step = ITEM_BYTES[args.dtype]
            data[step - 1::step] = bytes(b & 0xBF for b in data[step - 1::step])
            data = bytes(data)
        else:
            data = random_bytes(rng, count, args.dtype)
        tensors.append((name, args.dtype, shape, data))

    metadata = {"format": "pt"}
    if args.shards <= 1:
        write_safetensors(args.out, tensors, metadata)
        return
    os.makedirs(args.out, exist_ok=True)
    total = sum(len(t[3]) for t in tensors)
    limit = -(-total // args.shards)
    groups, current, size = [], [], 0
    for t in tensors:
        if current and size + len(t[3]) > limit:
            groups.append(current)
            current, size = [], 0
        current.append(t)
        size += len(t[3])
    groups.append(current)
    weight_map = {}
    for i, group in enumerate(groups):
        name = f"model-{i + 1:05d}-of-{len(groups):05d}.safetensors"
        write_safetensors(os.path.join(args.out, name), group, metadata)
        for t in group:
            weight_map[t[0]] = name
    with open(os.path.join(args.out, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    main()
