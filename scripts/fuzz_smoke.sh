#!/usr/bin/env bash
# Fuzz smoke test for the GGUF reader and the chat-template interpreter.
# Builds fuzz/gguf_fuzz.cpp and fuzz/template_fuzz.cpp with clang, libFuzzer, ASan and UBSan in build-fuzz/
# and runs each for half of N seconds (default 60 in all) on a scratch copy of its seed corpus
# (fuzz/corpus/gguf/, fuzz/corpus/template/).
# Exits non-zero if a fuzzer finds a crash, a sanitizer report, a hang, or a broken invariant;
# the reproducer is left at build-fuzz/crash-<target>-* (rerun: build-fuzz/<target> <file>).
#   usage: scripts/fuzz_smoke.sh [seconds]
set -euo pipefail

seconds="${1:-60}"
root="$(cd "$(dirname "$0")/.." && pwd)"
build="${KVTIER_FUZZ_BUILD_DIR:-$root/build-fuzz}"

# fuzzer-no-link instruments the library code (what is being fuzzed) for coverage;
# the fuzz target itself adds -fsanitize=fuzzer for the libFuzzer driver.
CC=clang CXX=clang++ cmake -S "$root" -B "$build" -G Ninja \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DKVTIER_BUILD_FUZZ=ON -DKVTIER_SANITIZE=ON -DKVTIER_BUILD_TESTS=OFF \
  -DCMAKE_CXX_FLAGS="-fsanitize=fuzzer-no-link" >/dev/null
cmake --build "$build" --target gguf_fuzz template_fuzz -j2

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# The time budget is shared: the GGUF reader gets the first half (rounded up), the templates the rest.
gguf_seconds=$(( (seconds + 1) / 2 ))
template_seconds=$(( seconds - gguf_seconds ))
(( template_seconds > 0 )) || template_seconds=1

# run_fuzzer TARGET SECONDS CORPUS_DIR MAX_LEN DICT
run_fuzzer() {
  local target="$1" secs="$2" corpus="$3" max_len="$4" dict="$5"
  mkdir -p "$work/$target"
  cp "$corpus"/* "$work/$target/"
  echo "fuzzing $target for ${secs}s on $(ls "$work/$target" | wc -l) seeds"
  "$build/$target" \
    -max_total_time="$secs" \
    -max_len="$max_len" \
    -timeout=10 \
    -rss_limit_mb=2048 \
    -dict="$dict" \
    -artifact_prefix="$build/crash-$target-" \
    -print_final_stats=1 \
    "$work/$target"
}

run_fuzzer gguf_fuzz "$gguf_seconds" "$root/fuzz/corpus/gguf" 16384 "$root/fuzz/corpus/gguf.dict"
run_fuzzer template_fuzz "$template_seconds" "$root/fuzz/corpus/template" 8192 "$root/fuzz/corpus/template.dict"
echo "fuzz smoke: no crash in ${seconds}s (GGUF reader ${gguf_seconds}s, chat templates ${template_seconds}s)"
