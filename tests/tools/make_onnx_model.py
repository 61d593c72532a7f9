#!/usr/bin/python3
"""Makes a small transformer-like ONNX graph with quantized weights for the bisect tests.

    /usr/bin/python3 tests/tools/make_onnx_model.py OUT.onnx [--layers 8] [--hidden 64] [--vocab 128]
        [--kind qdq|nbits|mixed] [--external] [--seed 0]

Needs Debian's python3-onnx and python3-numpy (not the pyenv python). The graph:
  x [1, hidden] -> h0 = MatMul(x, embed)                        (float weight)
  per layer i:  w_i = DequantizeLinear(int8 weight, scales, zero points, axis=1)   (kind qdq)
                m_i = MatMul(h_i, w_i)
             or m_i = com.microsoft.MatMulNBits(h_i, packed 4-bit B, scales, zero points)  (kind nbits)
                h_{i+1} = Add(h_i, Tanh(m_i))                   (the residual stream: one tensor crosses)
  y = MatMul(h_L, head) [1, vocab], and h_L as a second output.
Weights are seeded random; --external keeps every initializer in OUT.onnx.data.
"""
import argparse
import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

BLOCK = 32


def qdq_layer(i, h, hidden, rng, inits, nodes):
    w = rng.integers(-127, 128, size=(hidden, hidden), dtype=np.int8)
    scale = (rng.random(hidden, dtype=np.float32) * 0.02 + 0.001).astype(np.float32)
    zero = rng.integers(-4, 5, size=hidden, dtype=np.int8)
    inits += [numpy_helper.from_array(w, f"layer{i}.w_q"), numpy_helper.from_array(scale, f"layer{i}.w_scale"),
              numpy_helper.from_array(zero, f"layer{i}.w_zero")]
    nodes.append(helper.make_node("DequantizeLinear", [f"layer{i}.w_q", f"layer{i}.w_scale", f"layer{i}.w_zero"], [f"layer{i}.w"],
                                  axis=1, name=f"layer{i}.dequantize"))
    nodes.append(helper.make_node("MatMul", [h, f"layer{i}.w"], [f"layer{i}.m"], name=f"layer{i}.matmul"))


def nbits_layer(i, h, hidden, rng, inits, nodes):
    blocks = hidden // BLOCK
    b = rng.integers(0, 256, size=(hidden, blocks, BLOCK // 2), dtype=np.uint8)
    scales = (rng.random((hidden, blocks), dtype=np.float32) * 0.01 + 0.001).astype(np.float32)
    zeros = rng.integers(0, 256, size=(hidden, (blocks * 4 + 7) // 8), dtype=np.uint8)
    inits += [numpy_helper.from_array(b, f"layer{i}.B"), numpy_helper.from_array(scales, f"layer{i}.scales"),
              numpy_helper.from_array(zeros, f"layer{i}.zero_points")]
    nodes.append(helper.make_node("MatMulNBits", [h, f"layer{i}.B", f"layer{i}.scales", f"layer{i}.zero_points"], [f"layer{i}.m"],
                                  domain="com.microsoft", K=hidden, N=hidden, bits=4, block_size=BLOCK, name=f"layer{i}.matmul_nbits"))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--vocab", type=int, default=128)
    parser.add_argument("--kind", choices=["qdq", "nbits", "mixed"], default="mixed")
    parser.add_argument("--external", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    hidden = args.hidden
    inits = [numpy_helper.from_array((rng.standard_normal((hidden, hidden)) * 0.1).astype(np.float32), "embed"),
             numpy_helper.from_array((rng.standard_normal((hidden, args.vocab)) * 0.1).astype(np.float32), "head")]
    nodes = [helper.make_node("MatMul", ["x", "embed"], ["h0"], name="embed")]
    for i in range(args.layers):
        h = f"h{i}"
        nbits = args.kind == "nbits" or (args.kind == "mixed" and i % 2 == 1)
        (nbits_layer if nbits else qdq_layer)(i, h, hidden, rng, inits, nodes)
        nodes.append(helper.make_node("Tanh", [f"layer{i}.m"], [f"layer{i}.t"], name=f"layer{i}.tanh"))
        nodes.append(helper.make_node("Add", [h, f"layer{i}.t"], [f"h{i + 1}"], name=f"layer{i}.residual"))
    last = f"h{args.layers}"
    nodes.append(helper.make_node("MatMul", [last, "head"], ["y"], name="head"))
    graph = helper.make_graph(nodes, "tiny_quantized", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, hidden])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, args.vocab]),
                               helper.make_tensor_value_info(last, TensorProto.FLOAT, [1, hidden])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)],
                              producer_name="make_onnx_model.py")
    model.ir_version = 8
    onnx.checker.check_model(model)
    if args.external:
        onnx.save_model(model, args.out, save_as_external_data=True, all_tensors_to_one_file=True,
                        location=os.path.basename(args.out) + ".data", size_threshold=0)
    else:
        onnx.save_model(model, args.out)


if __name__ == "__main__":
    main()
