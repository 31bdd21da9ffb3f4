#!/usr/bin/env bash
# Fuzz smoke test of every libFuzzer target in fuzz/: the GGUF reader, the tokenizers, the command line, the
# chat-template interpreter and the model loader's validation (seeds: tools/make_fuzz_seeds).
# Builds fuzz/*_fuzz.cpp with clang, libFuzzer, ASan and UBSan in build-fuzz/ and runs each for its share of
# N seconds (default 60 in all) on a scratch copy of its seed corpus fuzz/corpus/<name>/ (if any).
# Exits non-zero if a fuzzer finds a crash, a sanitizer report, a hang or a broken invariant; the reproducer is
# left at build-fuzz/crash-<name>-* (rerun: build-fuzz/<name>_fuzz <file>).
#   usage: scripts/fuzz_smoke.sh [seconds]
set -euo pipefail

seconds="${1:-60}"
root="$(cd "$(dirname "$0")/.." && pwd)"
build="${KVTIER_FUZZ_BUILD_DIR:-$root/build-fuzz}"
fuzzers=(gguf tokenizer app template model)

# fuzzer-no-link instruments the library code (what is being fuzzed) for coverage;
# the fuzz target itself adds -fsanitize=fuzzer for the libFuzzer driver.
# HWY_COMPILE_ONLY_STATIC: the SIMD kernels are compiled for one target only. No fuzz target runs them (the
# kernels are tested on every target by the test suites), and compiling them for six targets under
# clang+ASan+coverage was the largest part of CI. Line tables are all a sanitizer report needs.
CC=clang CXX=clang++ cmake -S "$root" -B "$build" -G Ninja \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O2 -gline-tables-only" \
  -DKVTIER_BUILD_FUZZ=ON -DKVTIER_SANITIZE=ON -DKVTIER_BUILD_TESTS=OFF -DKVTIER_BUILD_BENCH=OFF \
  -DKVTIER_VULKAN=OFF \
  -DCMAKE_CXX_FLAGS="-fsanitize=fuzzer-no-link -DHWY_COMPILE_ONLY_STATIC" >/dev/null
cmake --build "$build" --target "${fuzzers[@]/%/_fuzz}" -j2

share=$(( seconds / ${#fuzzers[@]} ))
(( share >= 5 )) || share=5
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
for name in "${fuzzers[@]}"; do
  mkdir -p "$work/$name"
  if [[ -d "$root/fuzz/corpus/$name" ]]; then cp "$root/fuzz/corpus/$name"/* "$work/$name/"; fi
  dict=()
  [[ -f "$root/fuzz/corpus/$name.dict" ]] && dict=(-dict="$root/fuzz/corpus/$name.dict")
  max_len=16384
  [[ "$name" == model ]] && max_len=24576  # its phi3 seeds (F16 layers) are ~20 KiB
  echo "fuzzing $name for ${share}s on $(ls "$work/$name" | wc -l) seeds"
  # -close_fd_mask=1: the targets' own stdout (CLI help text) is noise; libFuzzer reports on stderr.
  "$build/${name}_fuzz" \
    -max_total_time="$share" \
    -max_len="$max_len" \
    -timeout=10 \
    -rss_limit_mb=2048 \
    -close_fd_mask=1 \
    "${dict[@]}" \
    -artifact_prefix="$build/crash-$name-" \
    -print_final_stats=1 \
    "$work/$name" || { echo "fuzz smoke: $name failed"; exit 1; }
done
echo "fuzz smoke: no crash in ${seconds}s over ${#fuzzers[@]} targets"
