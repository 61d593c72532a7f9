#!/usr/bin/env bash
# install-deps.sh — the one list of Debian 12 packages Modelsmith needs to build, run and test.
# Used by `make serve`, `make test` and the Dockerfile. Installs only what is missing, so a second
# run costs a dpkg query and nothing else. Must run as root (or with sudo available).
set -euo pipefail

# Build and runtime libraries (see shared/reference/toolchain.md for why each is named).
BUILD_PACKAGES=(
  build-essential cmake ninja-build pkg-config
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler grpc-proto
  libboost-dev prometheus-cpp-dev libspdlog-dev libgtest-dev libgmock-dev
  libcurl4-openssl-dev libsqlite3-dev nlohmann-json3-dev libssl-dev libcli11-dev
  libbenchmark-dev libtinyxml2-dev
)
# Tools the tests and the README tour use: python3 generates test checkpoints, curl scrapes
# /metrics, boto3 reads S3 artifacts back as an independent client, node + npm install the
# pinned test-only tools (tests/package-lock.json: buf, s3rver).
TEST_PACKAGES=(python3 curl python3-boto3)

wanted=("${BUILD_PACKAGES[@]}")
if [[ "${1:-}" != "--build-only" ]]; then wanted+=("${TEST_PACKAGES[@]}"); fi

missing=()
for p in "${wanted[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done
# Node may come from another source (nodesource bundles npm and conflicts with Debian's npm
# package), so ask for the commands, not the packages.
if [[ "${1:-}" != "--build-only" ]] && ! command -v npm >/dev/null 2>&1; then
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
