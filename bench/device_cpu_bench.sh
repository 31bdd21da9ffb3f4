#!/usr/bin/env bash
# Issue 17's CPU measurements on the lent device machine's host (16 cores, an x86 CPU other than this VM's):
# both engines in one run, the same threads. Run from a folder (here called .devcarry, excluded from git) that
# holds this script, kvtier and tools/gen_synthetic_model (stripped), lib/ (their shared libraries from this VM:
# liburing, libpcre2-8, libhwy, libxxhash, libedit, libcpp-httplib, libbsd, libmd, libbrotli*, libtinfo, libfmt),
# ../shared/models/tiny-llama-6m.f16.gguf (the vocabulary), and llama-src.tar.xz (the peer's CMakeLists.txt,
# cmake, ggml, src, common, tools, include, vendor, app, licenses: ~6 MB), then with the device tool:
#   run(command="bash .devcarry/device_cpu_bench.sh setup && bash .devcarry/device_cpu_bench.sh q40", carry=[".devcarry"])
#   run(command="bash .devcarry/device_cpu_bench.sh gemma", carry=[".devcarry"])   # setup persists while warm
# Phases:
#   setup   builds llama-bench there (GGML_NATIVE=ON, fair to the peer) and writes the synthetic models
#   q40     Q4_0 pp512/tg128 at 2 threads, 3 alternating repetitions
#   gemma   Gemma-3-1B-shaped Q4_K_M: KV bytes (kvtier plan; llama.cpp's SWA cache log) and decode at depth D
#   llama   Llama-3.2-1B-shaped Q4_K_M: the same (the ladder's bytes-roofline row)
# Environment: T [16] threads at depth, D [32768], N [32] decode tokens, LADDER [f16:128,q4:2048,q2], WITH_F16 [1],
# ENGINES ["llama.cpp kvtier"]: a 32K fill takes minutes per engine, so one device call (10 minutes at most) may
# hold only one engine's rows; the machine stays warm between back-to-back calls, so the setup persists.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
export LD_LIBRARY_PATH="$here/lib"
T=${T:-16}; D=${D:-32768}; N=${N:-32}
LADDER=${LADDER:-f16:128,q4:2048,q2}
# Outside the carried folder: the device tool replaces that folder on every call, while /tmp persists as long as
# the machine stays warm (it is released after ~30 s idle, so issue the calls back to back).
work=${WORK_DIR:-/tmp/kvbench}
LB="$work/llama-build/bin/llama-bench"
M="$work/models"
log() { echo "[$(date +%T)] $*"; }
case "$1" in
setup)
  lscpu | grep -E "Model name|^CPU\(s\)|Flags" | cut -c1-400
  free -g | head -2
  if [[ ! -x "$LB" ]]; then
    mkdir -p /tmp/llsrc && tar xJf "$here/llama-src.tar.xz" -C /tmp/llsrc
    cmake -S /tmp/llsrc -B "$work/llama-build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF \
      -DGGML_NATIVE=ON -DGGML_CUDA=OFF -DGGML_VULKAN=OFF -DGGML_METAL=OFF -DGGML_BLAS=OFF -DLLAMA_CURL=OFF \
      -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_EXAMPLES=OFF >/dev/null && \
    cmake --build "$work/llama-build" --target llama-bench -j16 2>&1 | tail -2
  fi
  mkdir -p "$M"
  "$here/gen_synthetic_model" --arch gemma3 --mix q4_k_m -c 40960 --vocab-from "$here/tiny-llama-6m.f16.gguf" -o "$M/gemma.gguf" | tail -1
  "$here/gen_synthetic_model" --arch llama --mix q4_k_m -c 40960 --vocab-from "$here/tiny-llama-6m.f16.gguf" -o "$M/llama.gguf" | tail -1
  ls -la "$M"; log setup done ;;
q40)
  # Issue 17's Q4_0 row: pp512 and tg128 at 2 threads, both engines alternating, one process per repetition.
  [[ -f "$M/llama-q4_0.gguf" ]] || "$here/gen_synthetic_model" --arch llama --mix q4_0 --vocab-from "$here/tiny-llama-6m.f16.gguf" -o "$M/llama-q4_0.gguf" | tail -1
  for rep in 1 2 3; do
    "$LB" -m "$M/llama-q4_0.gguf" -p 512 -n 128 -t 2 -r 1 | grep -E "pp512|tg128"
    "$here/kvtier" bench -m "$M/llama-q4_0.gguf" -p 512 -n 128 -t 2 -r 1 2>&1 | grep -E "pp512|tg128"
  done
  log done ;;
gemma|llama)
  f="$M/$1.gguf"
  for kv in "--kv f16" "--kv-ladder $LADDER"; do
    "$here/kvtier" plan -m "$f" -c $((D + N)) $kv 2>&1 | tail -12
  done
  ENGINES=${ENGINES:-llama.cpp kvtier}
  if [[ " $ENGINES " == *" llama.cpp "* ]]; then
  log "llama.cpp f16 KV, depth $D"
  "$LB" -m "$f" -p 0 -n $N -d $D -t $T -fa 1 -ctk f16 -ctv f16 -r 1 -v 2>"$OUT/$1-llama-f16.err" | tee "$OUT/$1-llama-f16.md"
  grep -E "llama_kv_cache(_iswa)?: +(size|creating)" "$OUT/$1-llama-f16.err"
  fi
  [[ " $ENGINES " == *" kvtier "* ]] || { log done; exit 0; }
  log "kvtier ladder, depth $D"
  "$here/kvtier" bench -m "$f" -p 0 -n $N -d $D -t $T -r 1 --kv-ladder $LADDER 2>&1 | tee "$OUT/$1-kvtier-ladder.txt"
  if [[ "${WITH_F16:-1}" == 1 ]]; then
    log "kvtier f16, depth $D"
    "$here/kvtier" bench -m "$f" -p 0 -n $N -d $D -t $T -r 1 --kv f16 2>&1 | tee "$OUT/$1-kvtier-f16.txt"
  fi
  log done ;;
esac
