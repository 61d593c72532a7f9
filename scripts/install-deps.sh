#!/usr/bin/env bash
# install-deps.sh — the one list of Debian 12 packages Modelsmith needs to build, run and test.
# Used by `make serve`, `make test` and the Dockerfile. Installs only what is missing, so a second
# run costs a dpkg query and nothing else. Must run as root (or with sudo available).
set -euo pipefail

# Usage: install-deps.sh [--build-only | --runtime-only]
#   (none)          build + test packages: what `make serve`, `make test` and `make fuzz` need
#   --build-only    what compiling needs (the Dockerfile's build stage)
#   --runtime-only  the shared libraries the binaries load, and CA certificates for https S3
#                   (the Dockerfile's runtime stage)

# Build libraries (see shared/reference/toolchain.md for why each is named).
BUILD_PACKAGES=(
  build-essential cmake ninja-build pkg-config
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler grpc-proto
  libboost-dev prometheus-cpp-dev libspdlog-dev libgtest-dev libgmock-dev libpq-dev
  libcurl4-openssl-dev libsqlite3-dev nlohmann-json3-dev libssl-dev libcli11-dev
  libbenchmark-dev libtinyxml2-dev zlib1g-dev libonnx-dev libre2-dev
)
# Tools the tests and the README tour use: python3 generates test checkpoints, curl scrapes
# /metrics, boto3 reads S3 artifacts back as an independent client, PyYAML checks the deploy
# manifests, python3-onnx (with numpy) builds the ONNX test graphs and runs the ONNX checker on
# bisected chunks, python3-protobuf builds the Core ML test packages and reads their chunks back,
# python3-sentencepiece trains the tiny SentencePiece tokenizers and encodes the reference text,
# python3-regex runs the reference byte-level BPE encoder's \p{L}-style split patterns, node + npm install the pinned test-only tools (tests/package-lock.json: buf,
# s3rver, onnxruntime-node); clang-format checks the tree against .clang-format.
# clang with its libFuzzer and AddressSanitizer runtime builds the parser fuzzers that `make test`
# runs (scripts/fuzz.sh); postgresql is the server the job store tests start on loopback.
TEST_PACKAGES=(python3 curl python3-boto3 python3-yaml python3-onnx python3-numpy python3-protobuf python3-sentencepiece python3-regex clang-format git
               clang libclang-rt-14-dev postgresql)

# What modelsmithd and modelsmith load at run time (ldd of both, mapped to packages).
RUNTIME_PACKAGES=(
  libgrpc++1.51 libprotobuf32 libabsl20220623 libspdlog1.10 libfmt9 libcurl4 libsqlite3-0 libpq5
  libtinyxml2-9 zlib1g libre2-9 libprometheus-cpp-core1.0 libprometheus-cpp-pull1.0 libcivetweb1 libssl3 libonnx1
  ca-certificates
)

mode="${1:-}"
case "$mode" in
  "") wanted=("${BUILD_PACKAGES[@]}" "${TEST_PACKAGES[@]}") ;;
  --build-only) wanted=("${BUILD_PACKAGES[@]}") ;;
  --runtime-only) wanted=("${RUNTIME_PACKAGES[@]}") ;;
  *) echo "usage: $0 [--build-only|--runtime-only]" >&2; exit 2 ;;
esac

missing=()
for p in "${wanted[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done
# Node may come from another source (nodesource bundles npm and conflicts with Debian's npm
# package), so ask for the commands, not the packages.
if [[ -z "$mode" ]] && ! command -v npm >/dev/null 2>&1; then
  command -v node >/dev/null 2>&1 || missing+=(nodejs)
  missing+=(npm)
fi

if [[ ${#missing[@]} -eq 0 ]]; then
  exit 0
fi

SUDO=""
if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get -o DPkg::Lock::Timeout=900 update -q
$SUDO apt-get -o DPkg::Lock::Timeout=900 install -y -q --no-install-recommends "${missing[@]}"
