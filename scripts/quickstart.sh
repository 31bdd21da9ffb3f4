#!/usr/bin/env bash
# Quick start: install what is missing, build, and generate text with the demo model in models/.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install_deps.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DKVTIER_SANITIZE=OFF -DKVTIER_BUILD_TESTS=OFF >/dev/null
cmake --build build --target kvtier -j"$(nproc)"
build/kvtier run -m models/tiny-llama-6m.Q4_0.gguf -p "The Linux kernel" -n 64 --temp 0
