"""Python bindings for proto/coreml/mlmodel.proto, compiled on first use with protoc into a
temporary directory (Debian's protobuf-compiler and python3-protobuf; nothing is downloaded).
Shared by make_coreml_package.py and mil_eval.py."""
import importlib
import os
import subprocess
import sys
import tempfile

_SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "proto")


def load():
    out = tempfile.mkdtemp(prefix="coreml_proto_")
    subprocess.run(["protoc", "--proto_path=" + _SOURCE, "--python_out=" + out, "coreml/mlmodel.proto"], check=True)
    sys.path.insert(0, out)
    return importlib.import_module("coreml.mlmodel_pb2")
