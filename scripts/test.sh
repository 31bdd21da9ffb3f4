#!/usr/bin/env bash
# The whole test suite, as CI runs it:
#   1. ASan+UBSan build of the library and its tests (build-asan/, asserts on), ctest on it
#   2. a short libFuzzer run of every fuzz target (GGUF reader, tokenizers, command line)
#   3. the kernels cross-compiled for aarch64 and tested under qemu (NEON, as on Apple cores)
#   4. the Release build (build/) and the full ctest suite, whose summary closes the output
# Each phase's header says when it started (seconds since the script began), so CI logs show where time goes.
# Environment: KVTIER_FUZZ_SECONDS (default 60), KVTIER_SKIP_ARM64=1 to skip step 3.
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc)
scripts/install_deps.sh --test

echo "== [1/4] sanitizers (ASan+UBSan) (started at ${SECONDS} s) =="
# Every option is set explicitly: a build dir configured earlier by scripts/quickstart.sh (tests off) or by
# hand must not change what this script runs. --no-tests=error: a suite that finds no tests fails.
# -g1: line tables, all a sanitizer report needs (full debug info of the Highway-expanded kernels costs compile
# time and link size). No -DNDEBUG, and _GLIBCXX_ASSERTIONS: the asserts inside kernels and the standard containers' bounds
# checks run here.
# The test code itself is compiled at -O0 (the library at -O2): optimizing the GoogleTest-expanded test files
# took half of this build, and the tests spend their time in the library. No test runs the tools: not built here.
# Highway compiles each kernel once per x86 target (SSSE3, SSE4, AVX2, AVX-512, AVX-512 VNNI, and the scalar
# fallback); code for a target this CPU cannot run is never executed, so the sanitizer build leaves the AVX-512
# targets out on such a CPU (the Release build keeps every target).
skip_avx512=OFF
if [[ "$(uname -m)" == x86_64 ]] && ! grep -qw avx512f /proc/cpuinfo; then skip_avx512=ON; fi
cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O2 -g1 -D_GLIBCXX_ASSERTIONS" \
  -DKVTIER_SANITIZE=ON -DKVTIER_BUILD_TESTS=ON -DKVTIER_BUILD_FUZZ=OFF -DKVTIER_BUILD_BENCH=OFF \
  -DKVTIER_SKIP_AVX512_TARGETS=$skip_avx512 -DKVTIER_BUILD_TOOLS=OFF -DKVTIER_TEST_CODE_FLAGS=-O0 >/dev/null
cmake --build build-asan -j"$jobs"
# The long reference runs (perplexity over 7 models) run in the Release build only.
(cd build-asan && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
   ctest -j"$jobs" --output-on-failure --no-tests=error -E 'Perplexity')

echo "== [2/4] fuzz smoke run (GGUF reader, tokenizers, command line) (started at ${SECONDS} s) =="
scripts/fuzz_smoke.sh "${KVTIER_FUZZ_SECONDS:-60}"

echo "== [3/4] aarch64 (NEON) kernels under qemu (started at ${SECONDS} s) =="
if [[ "${KVTIER_SKIP_ARM64:-0}" == 1 ]]; then echo "skipped (KVTIER_SKIP_ARM64=1)"; else scripts/test_arm64.sh; fi

echo "== [4/4] Release build and the full suite (started at ${SECONDS} s) =="
# Test code at -O1 here: the library is what this phase measures at full optimization.
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DKVTIER_SANITIZE=OFF -DKVTIER_SKIP_AVX512_TARGETS=OFF -DKVTIER_BUILD_TESTS=ON \
  -DKVTIER_BUILD_TOOLS=ON -DKVTIER_TEST_CODE_FLAGS=-O1 \
  -DKVTIER_BUILD_FUZZ=OFF -DKVTIER_BUILD_BENCH=OFF >/dev/null
cmake --build build -j"$jobs"
cd build && ctest -j"$jobs" --output-on-failure --no-tests=error
