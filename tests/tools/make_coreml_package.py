#!/usr/bin/env python3
"""Writes a small Core ML ML Program package (.mlpackage) for the bisect and inspect tests, with
Debian's python3-protobuf and numpy and our own proto/coreml/mlmodel.proto; no coremltools.

A transformer-like stack on input x (float16 [1, seq, dim]; float32 and cast for spec 6): per
layer layer_norm, q/k/v linears, reshape + transpose into heads, matmul, mul, softmax, matmul,
transpose + reshape back, an output linear and a residual add, then layer_norm, a feed-forward
linear, an activation (relu, silu, sigmoid, gelu in turn), a second linear and an add; at the
end a transpose, a 1x1 conv (its weight stored as the linears') and a cast to float32 output y.

--kind sets how the linear weights are stored:
  fp16      const ops, float16 blobs (spec 7 unless --spec)
  affine8   iOS16 constexpr_affine_dequantize: int8 data, per-row float16 scales (spec 7)
  sparse    iOS16 constexpr_sparse_to_dense: float16 non-zeros, a uint8 bit mask (spec 7)
  lut4      iOS18 constexpr_lut_to_dense: uint4 indices, a 16-entry float16 table (spec 9)
  blockwise iOS18 constexpr_blockwise_shift_scale: int4 data, float16 scales per 8 columns,
            int4 offsets (spec 9)
--top declares every compressed weight (and its parameters) at the top of the block, before
any compute op, as the torch frontend does (coremltools#2320's shape).
Usage: make_coreml_package.py OUT.mlpackage [--kind K] [--layers N] [--dim D] [--seq S]
       [--spec V] [--top] [--seed N]
"""
import argparse
import json
import os
import uuid

import numpy as np

import coreml_proto

pb = coreml_proto.load()

OPSETS = {6: "CoreML5", 7: "CoreML6", 8: "CoreML7", 9: "CoreML8"}
DTYPES = {"fp16": pb.FLOAT16, "fp32": pb.FLOAT32, "int32": pb.INT32, "int8": pb.INT8, "uint8": pb.UINT8,
          "uint4": pb.UINT4, "int4": pb.INT4, "uint32": pb.UINT32, "bool": pb.BOOL, "string": pb.STRING}
BLOB_DTYPES = {"fp16": 1, "fp32": 2, "uint8": 3, "int8": 4, "int4": 8, "uint4": 11}
BITS = {"int4": 4, "uint4": 4}


def value_type(dtype, shape):
    t = pb.ValueType()
    t.tensor_type.data_type = DTYPES[dtype]
    t.tensor_type.rank = len(shape)
    for d in shape:
        t.tensor_type.dimensions.add().constant.size = int(d)
    return t


def pack_bits(values, bits):
    """LSB-first bit stream of `values` (already in 0 .. 2^bits - 1)."""
    values = np.asarray(values, dtype=np.int64).reshape(-1)
    stream = ((values[:, None] >> np.arange(bits)) & 1).astype(np.uint8).reshape(-1)
    return np.packbits(stream, bitorder="little").tobytes()


class Weights:
    """weight.bin in MILBlob storage v2: header, then 64-aligned records, each followed by its data."""

    def __init__(self):
        self.data = bytearray(64)
        self.count = 0

    def add(self, dtype, array):
        flat = np.asarray(array).reshape(-1)
        if dtype in BITS:
            raw = pack_bits(flat.astype(np.int64) & 0xF, BITS[dtype])
            padding = (8 - (len(flat) * BITS[dtype]) % 8) % 8
        else:
            raw = flat.astype({"fp16": "<f2", "fp32": "<f4", "uint8": "u1", "int8": "i1"}[dtype]).tobytes()
            padding = 0
        while len(self.data) % 64:
            self.data.append(0)
        offset = len(self.data)
        record = bytearray(64)
        record[0:4] = (0xDEADBEEF).to_bytes(4, "little")
        record[4:8] = BLOB_DTYPES[dtype].to_bytes(4, "little")
        record[8:16] = len(raw).to_bytes(8, "little")
        record[16:24] = (offset + 64).to_bytes(8, "little")
        record[24:32] = padding.to_bytes(8, "little")
        self.data += record + raw
        self.count += 1
        self.data[0:4] = self.count.to_bytes(4, "little")
        self.data[4:8] = (2).to_bytes(4, "little")
        return offset


class Program:
    def __init__(self, spec):
        self.spec = spec
        self.weights = Weights()
        self.top = []  # ops declared at the top (--top)
        self.ops = []
        self.counter = 0

    def fresh(self, prefix):
        self.counter += 1
        return "%s_%d" % (prefix, self.counter)

    def value(self, dtype, array):
        """A parameter value: a blob for 10 or more elements, else immediate."""
        array = np.asarray(array)
        v = pb.Value()
        v.type.CopyFrom(value_type(dtype, array.shape))
        if array.size >= 10 and dtype in BLOB_DTYPES:
            v.blob_file_value.file_name = "@model_path/weights/weight.bin"
            v.blob_file_value.offset = self.weights.add(dtype, array)
        elif dtype == "fp16":
            v.immediate_value.tensor.bytes.values = array.astype("<f2").tobytes()
        elif dtype == "fp32":
            v.immediate_value.tensor.floats.values.extend(array.reshape(-1).tolist())
        elif dtype in ("int32",):
            v.immediate_value.tensor.ints.values.extend(int(a) for a in array.reshape(-1))
        elif dtype in ("int8", "uint8", "uint32"):
            v.immediate_value.tensor.bytes.values = array.astype(
                {"int8": "i1", "uint8": "u1", "uint32": "<u4"}[dtype]).tobytes()
        elif dtype in BITS:
            v.immediate_value.tensor.bytes.values = pack_bits(array.astype(np.int64) & 0xF, 4)
        elif dtype == "bool":
            v.immediate_value.tensor.bools.values.extend(bool(a) for a in array.reshape(-1))
        elif dtype == "string":
            v.immediate_value.tensor.strings.values.extend([str(array.reshape(-1)[0])])
        return v

    def op(self, kind, params, out_dtype, out_shape, name=None, attributes=None, top=False):
        """Appends op `kind`: params maps a name to a value name (str) or a Value; attributes
        (iOS16 constexpr style) maps a name to a Value."""
        op = pb.Operation()
        op.type = kind
        name = name or self.fresh(kind)
        for key, p in params.items():
            b = op.inputs[key].arguments.add()
            if isinstance(p, str):
                b.name = p
            else:
                b.value.CopyFrom(p)
        for key, v in (attributes or {}).items():
            op.attributes[key].CopyFrom(v)
        op.attributes["name"].CopyFrom(self.value("string", np.array([name])))
        out = op.outputs.add()
        out.name = name
        out.type.CopyFrom(value_type(out_dtype, out_shape))
        (self.top if top else self.ops).append(op)
        return name

    def scalar(self, dtype, v):
        return self.value(dtype, np.array(v).reshape(()))

    def vector(self, dtype, v):
        return self.value(dtype, np.array(v))


def weight(prog, args, rng, shape, kind, top):
    """A weight of `shape` stored as `kind`; returns the value name compute ops read."""
    dense = (rng.standard_normal(shape) * 0.2).astype(np.float16)
    if kind == "fp16":
        return prog.op("const", {}, "fp16", shape, attributes={"val": prog.value("fp16", dense)}, top=top)
    rows = dense.reshape(shape[0], -1)
    if kind == "affine8":
        scale = (np.abs(rows).max(axis=1) / 127 + 1e-3).astype(np.float16)
        q = np.clip(np.round(rows / scale[:, None]), -127, 127).astype(np.int8).reshape(shape)
        attrs = {"quantized_data": prog.value("int8", q), "zero_point": prog.scalar("int8", 0),
                 "scale": prog.value("fp16", scale), "axis": prog.scalar("int32", 0)}
        return prog.op("constexpr_affine_dequantize", {}, "fp16", shape, attributes=attrs, top=top)
    if kind == "sparse":
        mask = rng.random(shape) < 0.5
        nonzero = dense[mask]
        bits = pack_bits(mask.astype(np.int64), 1)
        attrs = {"nonzero_data": prog.value("fp16", nonzero), "mask": prog.value("uint8", np.frombuffer(bits, np.uint8)),
                 "shape": prog.value("uint32", np.array(shape))}
        return prog.op("constexpr_sparse_to_dense", {}, "fp16", shape, attributes=attrs, top=top)
    if kind == "lut4":
        lut = np.linspace(-0.5, 0.5, 16).astype(np.float16)
        indices = rng.integers(0, 16, size=shape)
        lut_shape = [1] * len(shape) + [16, 1]
        params = {"indices": prog.value("uint4", indices), "lut": prog.value("fp16", lut.reshape(lut_shape))}
        return prog.op("constexpr_lut_to_dense", params, "fp16", shape, top=top)
    if kind == "blockwise":
        data = rng.integers(-8, 8, size=shape)
        blocks = [shape[0], shape[1] // 8] + list(shape[2:])
        scale = (rng.random(blocks) * 0.05 + 0.01).astype(np.float16)
        offset = rng.integers(-2, 2, size=blocks)
        params = {"data": prog.value("int4", data), "scale": prog.value("fp16", scale),
                  "offset": prog.value("int4", offset)}
        return prog.op("constexpr_blockwise_shift_scale", params, "fp16", shape, top=top)
    raise SystemExit("unknown kind " + kind)


def build(args):
    rng = np.random.default_rng(args.seed)
    prog = Program(args.spec)
    s, d, heads = args.seq, args.dim, 2
    dh = d // heads
    x = "x"
    inputs = [("x", "fp32" if args.spec == 6 else "fp16", [1, s, d])]
    if args.spec == 6:
        x = prog.op("cast", {"x": "x", "dtype": prog.scalar("string", "fp16")}, "fp16", [1, s, d])

    def small(shape, scale=0.1, offset=0.0):
        arr = (rng.standard_normal(shape) * scale + offset).astype(np.float16)
        return prog.op("const", {}, "fp16", list(shape), attributes={"val": prog.value("fp16", arr)})

    def linear(h, out_features, in_features, shape):
        w = weight(prog, args, rng, [out_features, in_features], args.kind, args.top)
        b = small([out_features], 0.02)
        return prog.op("linear", {"x": h, "weight": w, "bias": b}, "fp16", shape)

    def layer_norm(h):
        g, b = small([d], 0.1, 1.0), small([d], 0.05)
        return prog.op("layer_norm", {"x": h, "axes": prog.vector("int32", [-1]), "gamma": g, "beta": b,
                                      "epsilon": prog.scalar("fp16", 1e-5)}, "fp16", [1, s, d])

    def heads_of(h):
        r = prog.op("reshape", {"x": h, "shape": prog.vector("int32", [1, s, heads, dh])}, "fp16", [1, s, heads, dh])
        return prog.op("transpose", {"x": r, "perm": prog.vector("int32", [0, 2, 1, 3])}, "fp16", [1, heads, s, dh])

    activations = ["relu", "silu", "sigmoid", "gelu"]
    for layer in range(args.layers):
        h = layer_norm(x)
        q, k, v = (heads_of(linear(h, d, d, [1, s, d])) for _ in range(3))
        scores = prog.op("matmul", {"x": q, "y": k, "transpose_x": prog.scalar("bool", False),
                                    "transpose_y": prog.scalar("bool", True)}, "fp16", [1, heads, s, s])
        scaled = prog.op("mul", {"x": scores, "y": prog.scalar("fp16", 1.0 / np.sqrt(dh))}, "fp16", [1, heads, s, s])
        p = prog.op("softmax", {"x": scaled, "axis": prog.scalar("int32", -1)}, "fp16", [1, heads, s, s])
        a = prog.op("matmul", {"x": p, "y": v, "transpose_x": prog.scalar("bool", False),
                               "transpose_y": prog.scalar("bool", False)}, "fp16", [1, heads, s, dh])
        a = prog.op("transpose", {"x": a, "perm": prog.vector("int32", [0, 2, 1, 3])}, "fp16", [1, s, heads, dh])
        a = prog.op("reshape", {"x": a, "shape": prog.vector("int32", [1, s, d])}, "fp16", [1, s, d])
        x = prog.op("add", {"x": x, "y": linear(a, d, d, [1, s, d])}, "fp16", [1, s, d])
        h = layer_norm(x)
        u = linear(h, 2 * d, d, [1, s, 2 * d])
        act = activations[layer % len(activations)]
        params = {"x": u}
        if act == "gelu":
            params["mode"] = prog.scalar("string", "TANH_APPROXIMATION")
        u = prog.op(act, params, "fp16", [1, s, 2 * d])
        x = prog.op("add", {"x": x, "y": linear(u, d, 2 * d, [1, s, d])}, "fp16", [1, s, d])
    xt = prog.op("transpose", {"x": x, "perm": prog.vector("int32", [0, 2, 1])}, "fp16", [1, d, s])
    wc = weight(prog, args, rng, [d, d, 1], args.kind, args.top)
    c = prog.op("conv", {"x": xt, "weight": wc, "strides": prog.vector("int32", [1]),
                         "pad_type": prog.scalar("string", "valid"), "dilations": prog.vector("int32", [1]),
                         "groups": prog.scalar("int32", 1)}, "fp16", [1, d, s])
    prog.op("cast", {"x": c, "dtype": prog.scalar("string", "fp32")}, "fp32", [1, d, s], name="y")
    return prog, inputs, [("y", "fp32", [1, d, s])]


def length_delimited(field, payload):
    tag, out = (field << 3) | 2, bytearray()
    for v in (tag, len(payload)):
        while v >= 0x80:
            out.append((v & 0x7F) | 0x80)
            v >>= 7
        out.append(v)
    return bytes(out) + payload


def metadata_field():
    """description.metadata.author (Model 2 -> ModelDescription 100 -> Metadata 3), a field our
    proto does not declare: appended raw, it merges into the description, and every chunk must
    keep it."""
    return length_delimited(2, length_delimited(100, length_delimited(3, b"modelsmith-test-author")))


def write(args, prog, inputs, outputs):
    model = pb.Model()
    model.specification_version = args.spec
    array_types = {"fp16": 65552, "fp32": 65568}
    for features, items in ((model.description.input, inputs), (model.description.output, outputs)):
        for name, dtype, shape in items:
            f = features.add()
            f.name = name
            f.type.multi_array_type.data_type = array_types[dtype]
            f.type.multi_array_type.shape.extend(shape)
    program = model.ml_program
    program.version = 1
    function = program.functions["main"]
    function.opset = OPSETS[args.spec]
    for name, dtype, shape in inputs:
        i = function.inputs.add()
        i.name = name
        i.type.CopyFrom(value_type(dtype, shape))
    block = function.block_specializations[function.opset]
    block.operations.extend(prog.top + prog.ops)
    block.outputs.extend(name for name, _, _ in outputs)
    data = os.path.join(args.out, "Data", "com.apple.CoreML")
    os.makedirs(os.path.join(data, "weights"), exist_ok=True)
    with open(os.path.join(data, "model.mlmodel"), "wb") as f:
        f.write(model.SerializeToString(deterministic=True) + metadata_field())
    with open(os.path.join(data, "weights", "weight.bin"), "wb") as f:
        f.write(bytes(prog.weights.data))
    rng = np.random.default_rng(args.seed + 1)
    ids = [str(uuid.UUID(bytes=rng.bytes(16))).upper() for _ in range(2)]
    manifest = {"fileFormatVersion": "1.0.0",
                "itemInfoEntries": {
                    ids[0]: {"author": "com.apple.CoreML", "description": "CoreML Model Specification",
                             "name": "model.mlmodel", "path": "com.apple.CoreML/model.mlmodel"},
                    ids[1]: {"author": "com.apple.CoreML", "description": "CoreML Model Weights",
                             "name": "weights", "path": "com.apple.CoreML/weights"}},
                "rootModelIdentifier": ids[0]}
    with open(os.path.join(args.out, "Manifest.json"), "w") as f:
        json.dump(manifest, f, indent=4)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out")
    parser.add_argument("--kind", default="fp16", choices=["fp16", "affine8", "sparse", "lut4", "blockwise"])
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--dim", type=int, default=32)
    parser.add_argument("--seq", type=int, default=4)
    parser.add_argument("--spec", type=int, default=0)
    parser.add_argument("--top", action="store_true")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    if args.spec == 0:
        args.spec = 9 if args.kind in ("lut4", "blockwise") else 7
    prog, inputs, outputs = build(args)
    write(args, prog, inputs, outputs)


if __name__ == "__main__":
    main()
