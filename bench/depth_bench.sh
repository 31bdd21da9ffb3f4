#!/usr/bin/env bash
# Issue 3 "Speed": prefill (pp512) and decode (tg128) with a cache already holding DEPTH tokens, kvtier's
# tiered KV cache vs llama.cpp's KV types, both engines in one run on the same machine.
#
#   BENCH_NICE=-10 bench/depth_bench.sh                      # depths 4096 16384, every config, 3 reps
#   DEPTHS=16384 PEER_KV="f16" REPS=2 bench/depth_bench.sh   # a subset (16K fills are slow, see below)
#
# Environment (defaults in brackets):
#   MODEL [../shared/models/tiny-llama-31m.Q4_K_M.gguf]   DEPTHS ["4096 16384"]   THREADS [2]   REPS [3]
#   N_PROMPT [512]  N_GEN [128]  BENCH_NICE [unset; -10 as root runs ahead of other sessions' compiles]
#   PEER_KV    llama.cpp -ctk/-ctv types ["f16 q8_0 q4_0"]
#   KVTIER_KV  kvtier cache configs, ';'-separated kvtier options ["--kv f16;--kv q8;--kv q4;--kv q2;--kv-ladder f16:128,q4:512,q2"]
#   KVTIER_BIN [build-depth/kvtier, built here as Release if missing]   LLAMA_BENCH [peer/llama.cpp/build/bin/llama-bench]
# Each sample is one process per tool and config, `-r 1` (each tool warms up first, and fills the cache to
# DEPTH untimed before every measured test); repetitions alternate between the tools so that a burst of load
# from elsewhere hits both. The table shows the median with the range and the ratio to llama.cpp's f16-KV
# median at the same depth. llama-bench runs with flash attention on (-fa 1), as in the issue's figures.
# Cost: the untimed fill is quadratic in depth. At 16K, llama.cpp's fill takes about a minute with f16 KV and
# several with q8_0/q4_0 (its quantized-KV attention is slower); kvtier's takes ~10 s, 4 fills per process.
# Raw outputs and samples.tsv go to $KVTIER_PEER_DIR/results/depth-<UTC time>/; the table to stdout.
set -euo pipefail

REPO_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_DIR"
PEER_DIR="${KVTIER_PEER_DIR:-$REPO_DIR/peer}"
MODEL="${MODEL:-$REPO_DIR/../shared/models/tiny-llama-31m.Q4_K_M.gguf}"
DEPTHS="${DEPTHS:-4096 16384}"
THREADS="${THREADS:-2}"
REPS="${REPS:-3}"
N_PROMPT="${N_PROMPT:-512}"
N_GEN="${N_GEN:-128}"
PEER_KV="${PEER_KV:-f16 q8_0 q4_0}"
KVTIER_KV="${KVTIER_KV:---kv f16;--kv q8;--kv q4;--kv q2;--kv-ladder f16:128,q4:512,q2}"
KVTIER_BIN="${KVTIER_BIN:-build-depth/kvtier}"
LLAMA_BENCH="${LLAMA_BENCH:-$PEER_DIR/llama.cpp/build/bin/llama-bench}"

log() { echo "[depth] $*" >&2; }

# Same priority scheme as compare_llamacpp.sh: with sched_autogroup the session's autogroup needs the nice too.
PRIO=""
if [[ -n "${BENCH_NICE:-}" ]]; then
  PRIO="nice -n $BENCH_NICE"
  if [[ -w /proc/self/autogroup ]]; then
    echo "$BENCH_NICE" >/proc/$$/autogroup 2>/dev/null || log "could not renice the autogroup"
  fi
fi

if [[ ! -x "$KVTIER_BIN" ]]; then
  log "building kvtier in build-depth (Release, niced)"
  [[ -f build-depth/CMakeCache.txt ]] || cmake -S . -B build-depth -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
  nice -n 10 cmake --build build-depth --target kvtier -j 2 >/dev/null
  KVTIER_BIN=build-depth/kvtier
fi
[[ -x "$LLAMA_BENCH" ]] || LLAMA_BENCH="$(KVTIER_PEER_DIR="$PEER_DIR" bench/build_llamacpp.sh | tail -n 1)/llama-bench"
[[ -f "$MODEL" ]] || { log "error: model $MODEL not found"; exit 1; }

IFS=';' read -r -a kvtier_configs <<<"$KVTIER_KV"
read -r -a peer_types <<<"$PEER_KV"

RESULTS="$PEER_DIR/results/depth-$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$RESULTS"
{
  echo "date: $(date -u +%FT%TZ)"
  echo "cpu: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores online"
  echo "kvtier: $(git rev-parse --short=12 HEAD)$(git diff --quiet HEAD -- src include || echo ' (+local changes)'), binary $KVTIER_BIN"
  echo "llama.cpp: $(git -C "$PEER_DIR/llama.cpp" rev-parse --short=12 HEAD 2>/dev/null || echo '?')"
  echo "model: $MODEL"
  echo "settings: depths $DEPTHS, -p $N_PROMPT -n $N_GEN -t $THREADS, $REPS alternating repetitions${BENCH_NICE:+, nice $BENCH_NICE}"
  echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee "$RESULTS/machine.txt" >&2

SAMPLES="$RESULTS/samples.tsv"  # depth, tool, config, test (pp/tg), repetition, tok/s
printf 'depth\ttool\tconfig\ttest\trep\ttok_s\n' >"$SAMPLES"

sample_llamacpp() {
  local depth="$1" type="$2" rep="$3" out="$RESULTS/llamacpp.d$1.$2.rep$3"
  $PRIO "$LLAMA_BENCH" -m "$MODEL" -p "$N_PROMPT" -n "$N_GEN" -d "$depth" -t "$THREADS" -fa 1 \
    -ctk "$type" -ctv "$type" -r 1 -o json >"$out.json" 2>"$out.log" \
    || { log "llama-bench failed (see $out.log)"; return 0; }
  python3 - "$out.json" "$depth" "-ctk/-ctv $type" "$rep" >>"$SAMPLES" <<'EOF'
import json, sys
for r in json.load(open(sys.argv[1])):
    test = "pp" if r["n_gen"] == 0 else "tg"
    print(f'{sys.argv[2]}\tllama.cpp\t{sys.argv[3]}\t{test}\t{sys.argv[4]}\t{r["avg_ts"]:.3f}')
EOF
}

# kvtier bench prints "pp512 @ d4096: X +/- Y tok/s" and "tg128 @ d4096: X +/- Y tok/s".
sample_kvtier() {
  local depth="$1" config="$2" rep="$3" tag
  tag="$(tr -c 'A-Za-z0-9.' '_' <<<"$config")"
  local out="$RESULTS/kvtier.d$depth.$tag.rep$rep"
  # shellcheck disable=SC2086  # config is a list of kvtier options
  $PRIO "$KVTIER_BIN" bench -m "$MODEL" -p "$N_PROMPT" -n "$N_GEN" -d "$depth" -t "$THREADS" -r 1 $config \
    >"$out.txt" 2>"$out.log" || { log "kvtier bench failed (see $out.log)"; return 0; }
  python3 - "$out.txt" "$depth" "$config" "$rep" >>"$SAMPLES" <<'EOF'
import re, sys
for m in re.finditer(r"^(pp|tg)\d+(?: @ d\d+)?:\s*([0-9.]+)", open(sys.argv[1]).read(), re.M):
    print(f"{sys.argv[2]}\tkvtier\t{sys.argv[3]}\t{m.group(1)}\t{sys.argv[4]}\t{float(m.group(2)):.3f}")
EOF
}

for depth in $DEPTHS; do
  for rep in $(seq 1 "$REPS"); do
    for type in "${peer_types[@]}"; do
      log "d$depth rep $rep/$REPS: llama-bench -ctk/-ctv $type"; sample_llamacpp "$depth" "$type" "$rep"
    done
    for config in "${kvtier_configs[@]}"; do
      log "d$depth rep $rep/$REPS: kvtier $config"; sample_kvtier "$depth" "$config" "$rep"
    done
  done
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$RESULTS/machine.txt" >&2

bench/depth_table.py "$SAMPLES" "$N_PROMPT" "$N_GEN" | tee "$RESULTS/table.md"
log "raw outputs in $RESULTS"
