#!/usr/bin/env bash
# small_gemm.sh - builds and runs bench/small_gemm.c (OpenBLAS against libxsmm for the products
# of experts that see 8..128 rows), installing Debian's libxsmm-dev if it is missing.
# usage: bench/small_gemm.sh [REPS] > bench/results/small-gemm-DATE.jsonl
set -euo pipefail
cd "$(dirname "$0")/.."
dpkg-query -W -f='${Status}' libxsmm-dev 2>/dev/null | grep -q "install ok installed" ||
  { echo "small_gemm: installing libxsmm-dev" >&2; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libxsmm-dev >/dev/null; }
out=$(mktemp -d)
gcc -O2 -march=native -o "$out/small_gemm" bench/small_gemm.c $(pkg-config --cflags --libs openblas 2>/dev/null || echo -lopenblas) \
  -lxsmm -lpthread -ldl -lm
"$out/small_gemm" "${1:-7}"
rm -rf "$out"
