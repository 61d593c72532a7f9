#!/usr/bin/env bash
# fuzz.sh — the parser fuzzers: clang's libFuzzer + AddressSanitizer, in their own build tree.
#
#   fuzz.sh build                          configure and build every fuzzer in $FUZZ_DIR
#   fuzz.sh run NAME SECONDS [ARGS...]     seed NAME's corpus and fuzz it for SECONDS
#                                          (ARGS go to libFuzzer: -runs=N, -fork=N, ...)
#   fuzz.sh list                           the fuzzer names
#
# FUZZ_DIR defaults to build-fuzz/ beside the sources. A crash, a sanitizer report, a timeout
# (10 s on one input) or an RSS over 2 GiB fails the run; libFuzzer keeps the input under
# $FUZZ_DIR/artifacts/NAME/ and this script names it. `make test` runs each fuzzer for 20 s as a
# ctest case; `make fuzz` for FUZZ_SECONDS each.
set -euo pipefail

SRC="$(cd "$(dirname "$0")/.." && pwd)"
FUZZ_DIR="${FUZZ_DIR:-$SRC/build-fuzz}"
JOBS="${JOBS:-2}"
FUZZERS=(gguf_reader torch_pickle torch_checkpoint safetensors_header onnx_graph imatrix coreml_package diffusers_pipeline)
DEBIAN_PYTHON=/usr/bin/python3  # python3-onnx and python3-numpy are Debian's, not pyenv's

build() {
  CC=clang CXX=clang++ cmake -S "$SRC" -B "$FUZZ_DIR" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DMODELSMITH_FUZZ=ON -DMODELSMITH_TESTS=OFF \
    -DCMAKE_C_FLAGS="-fsanitize=fuzzer-no-link,address" -DCMAKE_CXX_FLAGS="-fsanitize=fuzzer-no-link,address" >/dev/null
  cmake --build "$FUZZ_DIR" -j "$JOBS" --target "${FUZZERS[@]/%/_fuzzer}"
}

# Seeds: the project's own fixtures, so the fuzzer starts from valid files and mutates inward.
seed() {
  local name="$1" corpus="$FUZZ_DIR/corpus/$1"
  mkdir -p "$corpus"
  [[ -n "$(ls -A "$corpus")" ]] && return 0
  case "$name" in
    gguf_reader) cp "$SRC"/tests/data/golden/gguf/*.gguf "$corpus"/ ;;
    torch_checkpoint) cp "$SRC"/tests/data/torch/*.bin "$SRC"/tests/data/torch/*.ckpt "$corpus"/ ;;
    torch_pickle) python3 "$SRC/scripts/extract_pickles.py" "$SRC/tests/data/torch" "$corpus" ;;
    safetensors_header)
      for dtype in F16 BF16 F32; do
        python3 "$SRC/tests/tools/make_checkpoint.py" "$corpus/$dtype.safetensors" --layers 1 --hidden 8 \
          --intermediate 8 --vocab 8 --dtype "$dtype" >/dev/null
      done ;;
    onnx_graph)
      for kind in qdq nbits; do
        "$DEBIAN_PYTHON" "$SRC/tests/tools/make_onnx_model.py" "$corpus/$kind.onnx" --layers 2 --hidden 32 \
          --vocab 32 --kind "$kind" >/dev/null
      done
      "$DEBIAN_PYTHON" "$SRC/tests/tools/make_onnx_model.py" "$corpus/external.onnx" --layers 2 --hidden 32 \
        --vocab 32 --external >/dev/null
      rm -f "$corpus"/*.data ;;
    imatrix) cp "$SRC"/tests/data/golden/gguf-v2/presets/imatrix.dat "$corpus"/ ;;
    coreml_package)
      # Each seed: the 4-byte little-endian model length, model.mlmodel, then weight.bin.
      for kind in fp16 affine8 sparse lut4 blockwise; do
        "$DEBIAN_PYTHON" "$SRC/tests/tools/make_coreml_package.py" "$corpus/$kind.mlpackage" --kind "$kind" \
          --layers 1 --dim 16 >/dev/null
        "$DEBIAN_PYTHON" - "$corpus/$kind.mlpackage" "$corpus/$kind" <<'PY'
import sys
d = sys.argv[1] + "/Data/com.apple.CoreML/"
model, weights = open(d + "model.mlmodel", "rb").read(), open(d + "weights/weight.bin", "rb").read()
open(sys.argv[2], "wb").write(len(model).to_bytes(4, "little") + model + weights)
PY
        rm -rf "$corpus/$kind.mlpackage"
      done ;;
    diffusers_pipeline)
      # Each seed: model_index.json, a NUL byte, then the pipeline's file paths, one per line.
      for kind in sd kolors flux; do
        "$DEBIAN_PYTHON" "$SRC/tests/tools/make_diffusers_pipeline.py" "$corpus/$kind" --kind "$kind" --fp16-copy \
          >/dev/null
        "$DEBIAN_PYTHON" - "$corpus/$kind" "$corpus/$kind.seed" <<'PY'
import os, sys
root = sys.argv[1]
paths = sorted(os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs)
index = open(os.path.join(root, "model_index.json"), "rb").read()
open(sys.argv[2], "wb").write(index + b"\0" + "\n".join(p for p in paths if p != "model_index.json").encode())
PY
        rm -rf "${corpus:?}/$kind"
      done ;;
    *) echo "fuzz.sh: unknown fuzzer '$name' (one of: ${FUZZERS[*]})" >&2; exit 2 ;;
  esac
}

run() {
  local name="$1" seconds="$2"
  shift 2
  local binary="$FUZZ_DIR/tests/fuzz/${name}_fuzzer"
  if [[ ! -x "$binary" ]]; then
    echo "fuzz.sh: $binary is not built (scripts/fuzz.sh build; \`make test\` builds it)" >&2
    # A ctest run outside `make test` skips (77); `make test` requires the fuzzers.
    [[ "${MODELSMITH_REQUIRE_FUZZ:-}" == 1 ]] && exit 1
    exit "${FUZZ_MISSING_EXIT:-1}"
  fi
  seed "$name"
  local artifacts="$FUZZ_DIR/artifacts/$name/"
  mkdir -p "$artifacts"
  local status=0
  "$binary" -max_total_time="$seconds" -max_len=16384 -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=2048 \
    -print_final_stats=1 -artifact_prefix="$artifacts" "$@" "$FUZZ_DIR/corpus/$name" || status=$?
  if [[ $status -ne 0 ]]; then
    echo "fuzz.sh: $name failed (exit $status); the input that did it is kept in $artifacts:" >&2
    ls -l "$artifacts" >&2 || true
  fi
  return $status
}

case "${1:-}" in
  build) build ;;
  run) [[ $# -ge 3 ]] || { echo "usage: $0 run NAME SECONDS [libFuzzer args...]" >&2; exit 2; }; shift; run "$@" ;;
  list) printf '%s\n' "${FUZZERS[@]}" ;;
  *) echo "usage: $0 build | run NAME SECONDS [ARGS...] | list" >&2; exit 2 ;;
esac
