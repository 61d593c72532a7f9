#!/usr/bin/env python3
"""Breaks a package written by make_coreml_package.py in one way, in place, for the tests that
show hostile packages are refused cleanly.

  corrupt_coreml_package.py PKG MODE
  MODE: blob-past-end     the first record's data runs past the end of weight.bin
        bad-sentinel      the first record's sentinel is not 0xDEADBEEF
        wrong-count       the header counts one blob more than the file holds
        bad-offset        an op refers to an offset where no record starts
        undefined-value   an op reads a value nothing defines
        cycle             an op reads the output of a later op
        truncated-model   model.mlmodel cut in half
        manifest-climb    the weights entry's path climbs out of the package ("../..")
        symlink           weights/weight.bin is a symlink to a file outside the package
        neural-network    the model is a neural network, not an ML Program
        wrong-dtype       a blob's dtype differs from the type its value declares
"""
import json
import os
import sys

import coreml_proto

pb = coreml_proto.load()


def main():
    pkg, mode = sys.argv[1], sys.argv[2]
    data = os.path.join(pkg, "Data", "com.apple.CoreML")
    model_path, weights_path = os.path.join(data, "model.mlmodel"), os.path.join(data, "weights", "weight.bin")
    model = pb.Model()
    model.ParseFromString(open(model_path, "rb").read())
    block = list(model.ml_program.functions["main"].block_specializations.values())[0]
    weights = bytearray(open(weights_path, "rb").read())
    if mode == "blob-past-end":
        weights[64 + 8:64 + 16] = (len(weights) * 2).to_bytes(8, "little")
    elif mode == "bad-sentinel":
        weights[64:68] = (0xDEADBEEE).to_bytes(4, "little")
    elif mode == "wrong-count":
        weights[0:4] = (int.from_bytes(weights[0:4], "little") + 1).to_bytes(4, "little")
    elif mode in ("bad-offset", "wrong-dtype"):
        for op in block.operations:
            if op.type == "const" and op.attributes["val"].HasField("blob_file_value"):
                if mode == "bad-offset":
                    op.attributes["val"].blob_file_value.offset += 8
                else:
                    op.attributes["val"].type.tensor_type.data_type = pb.FLOAT32
                break
    elif mode == "undefined-value":
        for op in block.operations:
            if op.type == "add":
                op.inputs["x"].arguments[0].name = "no_such_value"
                break
    elif mode == "cycle":
        ops = list(block.operations)
        adds = [op for op in ops if op.type == "add"]
        adds[0].inputs["x"].arguments[0].name = adds[1].outputs[0].name
    elif mode == "neural-network":
        model.ClearField("ml_program")
        model.neural_network = b"\x0a\x00"
    elif mode == "manifest-climb":
        manifest = json.load(open(os.path.join(pkg, "Manifest.json")))
        for entry in manifest["itemInfoEntries"].values():
            if entry["name"] == "weights":
                entry["path"] = "../../outside"
        json.dump(manifest, open(os.path.join(pkg, "Manifest.json"), "w"))
    elif mode == "symlink":
        outside = os.path.join(os.path.dirname(os.path.abspath(pkg)), "outside-weight.bin")
        open(outside, "wb").write(bytes(weights))
        os.remove(weights_path)
        os.symlink(outside, weights_path)
        return
    elif mode != "truncated-model":
        raise SystemExit("unknown mode " + mode)
    serialized = model.SerializeToString()
    if mode == "truncated-model":
        serialized = serialized[: len(serialized) // 2]
    open(model_path, "wb").write(serialized)
    open(weights_path, "wb").write(bytes(weights))


if __name__ == "__main__":
    main()
