#!/usr/bin/python3
"""Makes the torch checkpoint fixtures in this directory (a few KB each) and expected.json, the
values the tests compare against. Needs PyTorch (Debian's python3-torch, 1.13 here); the tests do
not: they read the files this script wrote, which are committed.

    /usr/bin/python3 tests/data/torch/make_fixtures.py

Fixtures:
  state_dict.bin         f32/f16/bf16/f64/int8/uint8/int16/int32/int64/bool tensors, a 0-d scalar,
                         a Parameter, a tied weight (two names, one storage), a transposed view,
                         a view at a storage offset, a non-tensor entry; made by torch.save.
  lightning.ckpt         {"state_dict": {...}, "global_step": 7} as PyTorch Lightning saves.
  sharded/               pytorch_model-0000{1,2}-of-00002.bin + pytorch_model.bin.index.json.
  legacy.bin             torch.save(..., _use_new_zipfile_serialization=False).
  fp8.bin                float8_e4m3fn / float8_e5m2 tensors via _rebuild_tensor_v3 on an
                         UntypedStorage, written opcode by opcode as torch >= 2.1 writes them
                         (torch 1.13 has no float8).
  hostile_posix_system.bin   data.pkl calls posix.system (a __reduce__ payload).
  hostile_builtins_eval.bin  data.pkl calls builtins.eval (pickled as __builtin__ eval).
  hostile_stack_global.bin   a protocol-4 pickle reaching posix.system through STACK_GLOBAL.
  hostile_truncated.bin      state_dict.bin cut in half.
  hostile_overlap.bin        state_dict.bin with data.pkl's directory sizes grown over the next record.
"""
import collections
import json
import os
import pickle
import struct
import zipfile

import torch

HERE = os.path.dirname(os.path.abspath(__file__))


def tensor_bytes(t):
    flat = t.detach().contiguous().reshape(-1)
    if flat.dtype == torch.bool:
        flat = flat.to(torch.uint8)
    return bytes(flat.view(torch.uint8).numpy().tobytes()) if flat.numel() else b""


DTYPE_NAMES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64",
               torch.int8: "I8", torch.uint8: "U8", torch.int16: "I16", torch.int32: "I32", torch.int64: "I64",
               torch.bool: "BOOL"}


def describe(state):
    """dtype, shape and bytes of every tensor; for float tensors also the bytes torch's own
    .to(float16) and .to(bfloat16) give, the reference for dtype conversion."""
    out = {}
    for k, v in state.items():
        if not isinstance(v, torch.Tensor):
            continue
        out[k] = {"dtype": DTYPE_NAMES[v.dtype], "shape": list(v.shape), "hex": tensor_bytes(v).hex()}
        if v.is_floating_point():
            out[k]["f16_hex"] = tensor_bytes(v.detach().to(torch.float16)).hex()
            out[k]["bf16_hex"] = tensor_bytes(v.detach().to(torch.bfloat16)).hex()
            out[k]["f32_hex"] = tensor_bytes(v.detach().to(torch.float32)).hex()
    return out


def state_dict():
    g = torch.Generator().manual_seed(1234)
    sd = collections.OrderedDict()
    sd["embed.weight"] = torch.randn(6, 4, generator=g)
    sd["layers.0.attn.q_proj.weight"] = torch.randn(4, 4, generator=g).to(torch.float16)
    sd["layers.0.mlp.up.weight"] = torch.randn(8, 4, generator=g).to(torch.bfloat16)
    sd["layers.0.norm.weight"] = torch.nn.Parameter(torch.linspace(-1, 1, 4, dtype=torch.float64))
    sd["counts.i8"] = torch.tensor([-128, -1, 0, 127], dtype=torch.int8)
    sd["counts.u8"] = torch.tensor([0, 1, 254, 255], dtype=torch.uint8)
    sd["counts.i16"] = torch.tensor([-32768, 32767], dtype=torch.int16)
    sd["counts.i32"] = torch.tensor([-(2**31), 2**31 - 1], dtype=torch.int32)
    sd["position_ids"] = torch.arange(5, dtype=torch.int64).reshape(1, 5)
    sd["mask"] = torch.tensor([True, False, True])
    sd["scale"] = torch.tensor(0.5)
    base = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    sd["proj.weight"] = base
    sd["proj_t.weight"] = base.t()                 # a strided view of proj.weight's storage
    row = torch.arange(10, dtype=torch.float32)
    sd["tail.bias"] = row[6:]                      # a view at storage offset 6
    sd["lm_head.weight"] = sd["embed.weight"]      # tied: same storage, offset, shape, strides
    sd["config_version"] = 3                       # not a tensor
    return sd


def save_zip_pickle(path, pickle_bytes, storages, prefix="archive"):
    """A torch-style archive (stored records) around hand-made pickle bytes."""
    def record(z, name, data):  # fixed timestamps: the same bytes on every run
        z.writestr(zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0)), data)

    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as z:
        record(z, f"{prefix}/data.pkl", pickle_bytes)
        record(z, f"{prefix}/byteorder", "little")
        for key, data in storages.items():
            record(z, f"{prefix}/data/{key}", data)
        record(z, f"{prefix}/version", "3\n")


def binunicode(s):
    b = s.encode()
    return b"X" + struct.pack("<I", len(b)) + b


def fp8_pickle():
    """OrderedDict of two 2x2 float8 tensors, as torch >= 2.1 pickles them."""
    def tensor(key, dtype):
        return (b"ctorch._utils\n_rebuild_tensor_v3\n" + b"(" + b"(" + binunicode("storage") +
                b"ctorch\nUntypedStorage\n" + binunicode(key) + binunicode("cpu") + b"K\x04" + b"tQ" +
                b"K\x00" + b"K\x02K\x02\x86" + b"K\x02K\x01\x86" + b"\x89" +
                b"ccollections\nOrderedDict\n)R" + b"ctorch\n" + dtype + b"\n" + b"tR")
    return (b"\x80\x02ccollections\nOrderedDict\n)R(" + binunicode("w.e4m3") + tensor("0", b"float8_e4m3fn") +
            binunicode("w.e5m2") + tensor("1", b"float8_e5m2") + b"u.")


class Payload:
    def __init__(self, fn, arg):
        self.fn, self.arg = fn, arg

    def __reduce__(self):
        return (self.fn, (self.arg,))


def main():
    expected = {}
    sd = state_dict()
    torch.save(sd, os.path.join(HERE, "state_dict.bin"))
    expected["state_dict.bin"] = {"tensors": describe(sd), "aliases": {"lm_head.weight": "embed.weight"},
                                  "skipped": ["config_version"],
                                  "strided": ["proj_t.weight"]}

    inner = collections.OrderedDict((k, v) for k, v in list(sd.items())[:3])
    torch.save({"state_dict": inner, "global_step": 7}, os.path.join(HERE, "lightning.ckpt"))
    expected["lightning.ckpt"] = {"tensors": describe(inner), "aliases": {}, "skipped": [], "strided": []}

    shard_dir = os.path.join(HERE, "sharded")
    os.makedirs(shard_dir, exist_ok=True)
    items = [(k, v) for k, v in sd.items() if isinstance(v, torch.Tensor) and k not in ("proj_t.weight", "lm_head.weight")]
    halves = [collections.OrderedDict(items[:6]), collections.OrderedDict(items[6:])]
    weight_map = {}
    for i, half in enumerate(halves):
        name = f"pytorch_model-{i + 1:05d}-of-00002.bin"
        torch.save(half, os.path.join(shard_dir, name))
        weight_map.update({k: name for k in half})
    total = sum(v.numel() * v.element_size() for k, v in items)
    with open(os.path.join(shard_dir, "pytorch_model.bin.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2, sort_keys=True)
        f.write("\n")
    expected["sharded"] = {"tensors": describe(collections.OrderedDict(items)), "aliases": {}, "skipped": [],
                           "strided": []}

    torch.save(halves[0], os.path.join(HERE, "legacy.bin"), _use_new_zipfile_serialization=False)

    fp8_data = {"0": bytes([0x00, 0x38, 0xb8, 0x7e]), "1": bytes([0x00, 0x3c, 0xbc, 0x7b])}
    save_zip_pickle(os.path.join(HERE, "fp8.bin"), fp8_pickle(), fp8_data)
    expected["fp8.bin"] = {"tensors": {"w.e4m3": {"dtype": "F8_E4M3", "shape": [2, 2], "hex": fp8_data["0"].hex()},
                                       "w.e5m2": {"dtype": "F8_E5M2", "shape": [2, 2], "hex": fp8_data["1"].hex()}},
                           "aliases": {}, "skipped": [], "strided": []}

    save_zip_pickle(os.path.join(HERE, "hostile_posix_system.bin"),
                    pickle.dumps({"w": Payload(os.system, "echo pwned")}, protocol=2), {})
    save_zip_pickle(os.path.join(HERE, "hostile_builtins_eval.bin"),
                    pickle.dumps({"w": Payload(eval, "1+1")}, protocol=2), {})
    stack_global = (b"\x80\x04" + binunicode("posix") + binunicode("system") + b"\x93" +
                    binunicode("echo pwned") + b"\x85R.")
    save_zip_pickle(os.path.join(HERE, "hostile_stack_global.bin"), stack_global, {})

    with open(os.path.join(HERE, "state_dict.bin"), "rb") as f:
        whole = f.read()
    with open(os.path.join(HERE, "hostile_truncated.bin"), "wb") as f:
        f.write(whole[: len(whole) // 2])
    # Grow data.pkl's sizes in the central directory so that it runs over the next record.
    data = bytearray(whole)
    at = data.find(b"PK\x01\x02")
    grow = 200
    size = struct.unpack_from("<I", data, at + 20)[0] + grow
    struct.pack_into("<II", data, at + 20, size, size)
    with open(os.path.join(HERE, "hostile_overlap.bin"), "wb") as f:
        f.write(bytes(data))

    with open(os.path.join(HERE, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    main()
