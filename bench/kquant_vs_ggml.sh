#!/usr/bin/env bash
# kvtier's K-quant kernels vs GGML's (the peer llama.cpp build), one thread, one process:
# Q8_K bytes, dequantize and vec_dot differences, and vec_dot weight GB/s with ratios.
#
#   bench/kquant_vs_ggml.sh     # builds kvtier_kernels in build-kquant/ and the peer if missing
#
# Environment: KVTIER_BUILD_DIR [build-kquant], KVTIER_PEER_DIR [<repo>/peer].
set -euo pipefail
REPO_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_DIR"
BUILD_DIR="${KVTIER_BUILD_DIR:-build-kquant}"
PEER_DIR="${KVTIER_PEER_DIR:-$REPO_DIR/peer}"
GGML_LIBS="$PEER_DIR/llama.cpp/build/ggml/src"

if [[ ! -f "$GGML_LIBS/libggml-cpu.a" ]]; then
  KVTIER_PEER_DIR="$PEER_DIR" bench/build_llamacpp.sh >/dev/null
fi
[[ -f "$BUILD_DIR/CMakeCache.txt" ]] || cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$BUILD_DIR" --target kvtier_kernels -j2 >/dev/null

out="$BUILD_DIR/kquant_vs_ggml"
g++ -O2 -std=gnu++20 -Isrc -Iinclude bench/kquant_vs_ggml.cpp -o "$out" \
  "$BUILD_DIR/libkvtier_kernels.a" "$BUILD_DIR/libkvtier_base.a" \
  "$GGML_LIBS/libggml-cpu.a" "$GGML_LIBS/libggml-base.a" -lhwy -fopenmp -lpthread -lm
lscpu | grep -m1 'Model name' || true
"$out"
