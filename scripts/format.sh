#!/usr/bin/env bash
# format.sh — formats the C++ tree with .clang-format (Debian 12's clang-format 14), or with
# --check reports every file that is not formatted and exits 1. `make format`, `make format-check`.
set -euo pipefail
cd "$(dirname "$0")/.."
mode="${1:-}"
command -v clang-format >/dev/null || { echo "clang-format is missing: apt-get install clang-format" >&2; exit 2; }
mapfile -t files < <(git ls-files --cached --others --exclude-standard '*.cc' '*.h' 2>/dev/null || find workers server client tests -name '*.cc' -o -name '*.h')
if [[ "$mode" == "--check" ]]; then
  clang-format --dry-run --Werror "${files[@]}"
else
  clang-format -i "${files[@]}"
fi
