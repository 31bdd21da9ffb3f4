#!/usr/bin/env bash
# Fuzz smoke test for the GGUF reader.
# Builds fuzz/gguf_fuzz.cpp with clang, libFuzzer, ASan and UBSan in build-fuzz/ and runs
# it for N seconds (default 60) on a scratch copy of the seed corpus fuzz/corpus/gguf/.
# Exits non-zero if the fuzzer finds a crash, a sanitizer report, or a broken invariant;
# the reproducer is left at build-fuzz/crash-* (rerun: build-fuzz/gguf_fuzz <file>).
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
cmake --build "$build" --target gguf_fuzz -j2

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/corpus"
cp "$root"/fuzz/corpus/gguf/* "$work/corpus/"

echo "fuzzing the GGUF reader for ${seconds}s on $(ls "$work/corpus" | wc -l) seeds"
"$build/gguf_fuzz" \
  -max_total_time="$seconds" \
  -max_len=16384 \
  -timeout=10 \
  -rss_limit_mb=2048 \
  -dict="$root/fuzz/corpus/gguf.dict" \
  -artifact_prefix="$build/crash-" \
  -print_final_stats=1 \
  "$work/corpus"
echo "fuzz smoke: no crash in ${seconds}s"
