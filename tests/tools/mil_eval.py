#!/usr/bin/env python3
"""A test-only evaluator of ML Programs in numpy, for the ops the fixtures of
make_coreml_package.py use: const, constexpr_affine_dequantize, constexpr_sparse_to_dense,
constexpr_lut_to_dense (iOS18 form), constexpr_blockwise_shift_scale, linear, matmul, add, mul,
relu, silu, sigmoid, gelu (tanh), softmax, layer_norm, reshape, transpose, cast, conv (1x1).
Each op computes in float32 and rounds its result to its declared output type, so a program and
its chunks chained by value names give the same bits when the split is right.

  mil_eval.py compare ORIGINAL.mlpackage CHUNKS.json [--seed N]
      random inputs for ORIGINAL, run it, run the chunks (or the pipeline) the index lists in
      order feeding values by name, and print {"outputs": [...], "mismatches": [...]}.
"""
import json
import os
import sys

import numpy as np

import coreml_proto

pb = coreml_proto.load()

NP = {pb.FLOAT16: np.float16, pb.FLOAT32: np.float32, pb.INT32: np.int32, pb.INT8: np.int8, pb.UINT8: np.uint8,
      pb.UINT32: np.uint32, pb.BOOL: np.bool_}
BLOB_NP = {1: "<f2", 2: "<f4", 3: "u1", 4: "i1"}
SUB_BYTE = {8: (4, True), 11: (4, False), 9: (1, False), 10: (2, False), 12: (3, False), 13: (6, False)}
ARRAY_NP = {65552: np.float16, 65568: np.float32, 65600: np.float64, 131104: np.int32}


def unpack_bits(raw, bits, count, signed):
    stream = np.unpackbits(np.frombuffer(raw, np.uint8), bitorder="little")
    vals = stream[: count * bits].reshape(count, bits).astype(np.int64) @ (1 << np.arange(bits))
    if signed:
        vals = np.where(vals >= 1 << (bits - 1), vals - (1 << bits), vals)
    return vals


class Package:
    def __init__(self, path):
        self.path = path
        manifest = json.load(open(os.path.join(path, "Manifest.json")))
        entry = manifest["itemInfoEntries"][manifest["rootModelIdentifier"]]
        self.model_path = os.path.join(path, "Data", entry["path"])
        self.model = pb.Model()
        self.model.ParseFromString(open(self.model_path, "rb").read())
        self.weights_dir = os.path.join(os.path.dirname(self.model_path), "weights")

    def blob(self, ref, vtype):
        data = open(os.path.join(self.weights_dir, ref.file_name.split("/")[-1]), "rb").read()
        record = data[ref.offset:ref.offset + 64]
        assert int.from_bytes(record[0:4], "little") == 0xDEADBEEF, "bad sentinel"
        dtype = int.from_bytes(record[4:8], "little")
        size = int.from_bytes(record[8:16], "little")
        at = int.from_bytes(record[16:24], "little")
        raw = data[at:at + size]
        shape = [d.constant.size for d in vtype.tensor_type.dimensions]
        count = int(np.prod(shape)) if shape else 1
        if dtype in SUB_BYTE:
            bits, signed = SUB_BYTE[dtype]
            return unpack_bits(raw, bits, count, signed).reshape(shape)
        return np.frombuffer(raw, BLOB_NP[dtype]).reshape(shape)

    def value(self, v):
        if v.HasField("blob_file_value"):
            return self.blob(v.blob_file_value, v.type)
        t = v.immediate_value.tensor
        tt = v.type.tensor_type
        shape = [d.constant.size for d in tt.dimensions]
        kind = t.WhichOneof("value")
        if kind == "strings":
            return t.strings.values[0]
        if kind == "floats":
            arr = np.array(t.floats.values, np.float32)
        elif kind == "ints":
            arr = np.array(t.ints.values, np.int32)
        elif kind == "bools":
            arr = np.array(t.bools.values, np.bool_)
        elif tt.data_type in (pb.INT4, pb.UINT4):
            arr = unpack_bits(t.bytes.values, 4, int(np.prod(shape)) if shape else 1, tt.data_type == pb.INT4)
        else:
            arr = np.frombuffer(t.bytes.values, NP[tt.data_type])
        return arr.reshape(shape) if shape else arr.reshape(())


def run_program(pkg, model, inputs):
    fn = model.ml_program.functions["main"]
    block = list(fn.block_specializations.values())[0]
    env = dict(inputs)

    def param(op, key):
        if key in op.inputs:
            b = op.inputs[key].arguments[0]
            return env[b.name] if b.HasField("name") else pkg.value(b.value)
        if key in op.attributes:
            return pkg.value(op.attributes[key])
        return None

    for op in block.operations:
        out = op.outputs[0]
        out_np = NP[out.type.tensor_type.data_type]
        p = lambda k: param(op, k)
        f = lambda k: np.asarray(p(k), np.float32)
        t = op.type
        if t == "const":
            r = p("val")
        elif t == "constexpr_affine_dequantize":
            q = np.asarray(p("quantized_data"), np.float32)
            axis = int(p("axis"))
            shape = [1] * q.ndim
            scale, zp = f("scale"), f("zero_point")
            if scale.ndim == 1:
                shape[axis] = -1
                scale = scale.reshape(shape)
            if zp.ndim == 1:
                zp = zp.reshape(shape)
            r = scale * (q - zp)
        elif t == "constexpr_sparse_to_dense":
            shape = [int(s) for s in p("shape")]
            n = int(np.prod(shape))
            mask = unpack_bits(np.asarray(p("mask"), np.uint8).tobytes(), 1, n, False).astype(bool)
            dense = np.zeros(n, np.float32)
            dense[mask] = f("nonzero_data")
            r = dense.reshape(shape)
        elif t == "constexpr_lut_to_dense":
            idx = np.asarray(p("indices"), np.int64)
            lut = f("lut")
            assert all(n == 1 for n in lut.shape[:-2]) and lut.shape[-1] == 1, "per-tensor LUT only"
            r = lut.reshape(-1)[idx]
        elif t == "constexpr_blockwise_shift_scale":
            data, scale = f("data"), f("scale")
            offset = p("offset")
            reps = [data.shape[i] // scale.shape[i] for i in range(data.ndim)]
            s = np.kron(scale, np.ones(reps, np.float32))
            o = np.kron(np.asarray(offset, np.float32), np.ones(reps, np.float32)) if offset is not None else 0
            r = s * (data - o)
        elif t == "linear":
            r = f("x") @ f("weight").T
            if p("bias") is not None:
                r = r + f("bias")
        elif t == "matmul":
            x, y = f("x"), f("y")
            if bool(p("transpose_x")):
                x = np.swapaxes(x, -1, -2)
            if bool(p("transpose_y")):
                y = np.swapaxes(y, -1, -2)
            r = x @ y
        elif t in ("add", "mul"):
            r = f("x") + f("y") if t == "add" else f("x") * f("y")
        elif t == "relu":
            r = np.maximum(f("x"), 0)
        elif t == "sigmoid":
            r = 1 / (1 + np.exp(-f("x")))
        elif t == "silu":
            x = f("x")
            r = x / (1 + np.exp(-x))
        elif t == "gelu":
            x = f("x")
            r = 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))
        elif t == "softmax":
            x = f("x")
            axis = int(p("axis"))
            e = np.exp(x - x.max(axis=axis, keepdims=True))
            r = e / e.sum(axis=axis, keepdims=True)
        elif t == "layer_norm":
            x = f("x")
            axes = tuple(int(a) for a in np.asarray(p("axes")).reshape(-1))
            mean = x.mean(axis=axes, keepdims=True)
            var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
            r = (x - mean) / np.sqrt(var + float(p("epsilon"))) * f("gamma") + f("beta")
        elif t == "reshape":
            r = np.asarray(p("x")).reshape([int(s) for s in p("shape")])
        elif t == "transpose":
            r = np.transpose(np.asarray(p("x")), [int(a) for a in p("perm")])
        elif t == "cast":
            r = np.asarray(p("x"))
        elif t == "conv":
            w = f("weight")
            assert all(k == 1 for k in w.shape[2:]), "1x1 conv only"
            x = f("x")
            r = np.einsum("oi,bi...->bo...", w.reshape(w.shape[0], w.shape[1]), x)
            if p("bias") is not None:
                r = r + f("bias").reshape([1, -1] + [1] * (x.ndim - 2))
        else:
            raise SystemExit("mil_eval: unsupported op " + t)
        env[out.name] = np.asarray(r).astype(out_np)
    return {name: env[name] for name in block.outputs}


def run_package(path, inputs):
    pkg = Package(path)
    if pkg.model.HasField("pipeline"):
        env = dict(inputs)
        for model in pkg.model.pipeline.models:
            fn = model.ml_program.functions["main"]
            env.update(run_program(pkg, model, {i.name: env[i.name] for i in fn.inputs}))
        return {o.name: env[o.name] for o in pkg.model.description.output}
    fn = pkg.model.ml_program.functions["main"]
    return run_program(pkg, pkg.model, {i.name: inputs[i.name] for i in fn.inputs})


def compare(original, index_path, seed):
    pkg = Package(original)
    rng = np.random.default_rng(seed)
    inputs = {f.name: rng.standard_normal(list(f.type.multi_array_type.shape)).astype(
        ARRAY_NP[f.type.multi_array_type.data_type]) for f in pkg.model.description.input}
    expected = run_package(original, inputs)
    index = json.load(open(index_path))
    base = os.path.dirname(index_path)
    env = dict(inputs)
    packages = []
    for chunk in index["chunks"]:
        if chunk["package"] not in packages:
            packages.append(chunk["package"])
    for package in packages:
        env.update(run_package(os.path.join(base, package), env))
    mismatches = [name for name, value in expected.items()
                  if name not in env or env[name].tobytes() != value.tobytes()]
    print(json.dumps({"outputs": sorted(expected), "mismatches": mismatches}))


if __name__ == "__main__":
    if len(sys.argv) < 4 or sys.argv[1] != "compare":
        raise SystemExit(__doc__)
    seed = int(sys.argv[sys.argv.index("--seed") + 1]) if "--seed" in sys.argv else 0
    compare(sys.argv[2], sys.argv[3], seed)
