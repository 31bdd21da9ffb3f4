#!/usr/bin/env bash
# kvtier vs llama.cpp (npm node-llama-cpp@3.21.1), measured in one run on the same machine:
# prefill (pp512) and decode (tg128) tok/s, and the ratio kvtier / llama.cpp.
#
#   bench/compare_llamacpp.sh                 # everything: build both, generate models, benchmark
#   bench/compare_llamacpp.sh --peer-only     # only llama.cpp's column (kvtier shown as n/a)
#   bench/compare_llamacpp.sh --kvtier-only   # only kvtier's column
#
# Environment (defaults in brackets):
#   KVTIER_BUILD_DIR  kvtier build dir [build-bench]      KVTIER_PEER_DIR  peer cache [<repo>/peer]
#   THREADS [2]  N_PROMPT [512]  N_GEN [128]  REPS [3]  BENCH_NICE [unset; e.g. -5 to run ahead of compiles]
#   MODELS  space-separated GGUF paths [tiny-llama-31m.Q4_K_M + synthetic Llama-3.2-1B Q4_0 and Q4_K_M]
# Each repetition is one process per tool (its own warm-up, then one measured pp and one tg run:
# `llama-bench -r 1`, `kvtier bench -r 1`); repetitions alternate between the tools and the table
# shows the median with the range. llama-bench keeps its defaults otherwise (flash attention "auto",
# f16 KV cache, mmap, batch 2048 / ubatch 512, --poll 50).
# Raw outputs and samples.tsv go to $KVTIER_PEER_DIR/results/<UTC time>/; the table to stdout (Markdown).
set -euo pipefail

REPO_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_DIR"
BUILD_DIR="${KVTIER_BUILD_DIR:-build-bench}"
PEER_DIR="${KVTIER_PEER_DIR:-$REPO_DIR/peer}"
THREADS="${THREADS:-2}"
N_PROMPT="${N_PROMPT:-512}"
N_GEN="${N_GEN:-128}"
REPS="${REPS:-3}"
SHARED_DIR="${KVTIER_SHARED:-$REPO_DIR/../shared}"
SYNTH_DIR="$PEER_DIR/models"
# BENCH_NICE=-10 (as root) runs both tools ahead of background compiles on a shared machine. With
# sched_autogroup the kernel shares CPU between sessions first, so the session's autogroup gets the
# nice value too (this shell's session only; it ends with the script).
PRIO=""
if [[ -n "${BENCH_NICE:-}" ]]; then
  PRIO="nice -n $BENCH_NICE"
  if [[ -w /proc/self/autogroup ]]; then
    echo "$BENCH_NICE" >/proc/$$/autogroup 2>/dev/null || echo "[compare] could not renice the autogroup" >&2
  fi
fi

run_peer=1
run_kvtier=1
case "${1:-}" in
  --peer-only) run_kvtier=0 ;;
  --kvtier-only) run_peer=0 ;;
  "") ;;
  *) echo "usage: $0 [--peer-only|--kvtier-only]" >&2; exit 2 ;;
esac

log() { echo "[compare] $*" >&2; }

# 1. kvtier (Release) and the model generator.
log "building kvtier in $BUILD_DIR (Release, niced)"
if [[ ! -f "$BUILD_DIR/CMakeCache.txt" ]]; then
  cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
fi
grep -q '^CMAKE_BUILD_TYPE:STRING=Release$' "$BUILD_DIR/CMakeCache.txt" \
  || { log "error: $BUILD_DIR is not a Release build"; exit 1; }
kvtier_targets=()
[[ -z "${MODELS:-}" ]] && kvtier_targets+=(gen_synthetic_model)  # the default models include synthetic ones
(( run_kvtier )) && kvtier_targets+=(kvtier)
if ((${#kvtier_targets[@]})); then
  nice -n 10 cmake --build "$BUILD_DIR" --target "${kvtier_targets[@]}" -j 2 >"$BUILD_DIR/compare_build.log" 2>&1 \
    || { tail -n 30 "$BUILD_DIR/compare_build.log" >&2; log "error: kvtier build failed"; exit 1; }
fi
KVTIER="$BUILD_DIR/kvtier"

# 2. llama.cpp.
LLAMA_BIN=""
if (( run_peer )); then
  LLAMA_BIN="$(KVTIER_PEER_DIR="$PEER_DIR" bench/build_llamacpp.sh | tail -n 1)"
fi

# 3. Synthetic Llama-3.2-1B models (random weights; speed only), unless MODELS names other files.
mkdir -p "$SYNTH_DIR"
[[ -n "${MODELS:-}" ]] || for mix in Q4_0 Q4_K_M; do
  f="$SYNTH_DIR/synthetic-llama-3.2-1b.$mix.gguf"
  if [[ ! -f "$f" ]]; then
    log "generating $f"
    nice -n 10 "$BUILD_DIR/tools/gen_synthetic_model" --mix "${mix,,}" -o "$f" \
      --vocab-from "$SHARED_DIR/models/tiny-llama-6m.f16.gguf" 2> >(tr '\r' '\n' | tail -n 1 >&2)
  fi
done

if [[ -n "${MODELS:-}" ]]; then
  read -r -a models <<<"$MODELS"
else
  models=("$SHARED_DIR/models/tiny-llama-31m.Q4_K_M.gguf"
          "$SYNTH_DIR/synthetic-llama-3.2-1b.Q4_0.gguf"
          "$SYNTH_DIR/synthetic-llama-3.2-1b.Q4_K_M.gguf")
fi

RESULTS="$PEER_DIR/results/$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$RESULTS"
{
  echo "date: $(date -u +%FT%TZ)"
  echo "cpu: $(lscpu | sed -n 's/^Model name: *//p') (family $(lscpu | sed -n 's/^CPU family: *//p') model $(lscpu | sed -n 's/^Model: *//p')), $(nproc) cores online"
  echo "kvtier: $(git rev-parse --short=12 HEAD)$(git diff --quiet HEAD -- src include || echo ' (+local changes)')"
  (( run_peer )) && echo "llama.cpp: $(git -C "$PEER_DIR/llama.cpp" rev-parse --short=12 HEAD) (node-llama-cpp 3.21.1)"
  echo "settings: -p $N_PROMPT -n $N_GEN -t $THREADS, $REPS alternating repetitions${BENCH_NICE:+, nice $BENCH_NICE}"
  echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee "$RESULTS/machine.txt" >&2

SAMPLES="$RESULTS/samples.tsv"  # model, tool, test, repetition, tok/s
printf 'model\ttool\ttest\trep\ttok_s\n' >"$SAMPLES"

# One llama-bench run (its own warm-up, then one measured repetition of each test).
sample_llamacpp() {
  local model="$1" name="$2" rep="$3" out="$RESULTS/llamacpp.$2.rep$3"
  $PRIO "$LLAMA_BIN/llama-bench" -m "$model" -p "$N_PROMPT" -n "$N_GEN" -t "$THREADS" -r 1 -o json \
    >"$out.json" 2>"$out.log" || { log "llama-bench failed on $name (see $out.log)"; return; }
  python3 - "$out.json" "$name" "$rep" >>"$SAMPLES" <<'EOF'
import json, sys
for r in json.load(open(sys.argv[1])):
    test = f'pp{r["n_prompt"]}' if r["n_gen"] == 0 else f'tg{r["n_gen"]}'
    print(f'{sys.argv[2]}\tllama.cpp\t{test}\t{sys.argv[3]}\t{r["avg_ts"]:.3f}')
EOF
}

# One kvtier bench run; it prints "pp512: X [+/- Y] tok/s" and "tg128: X [+/- Y] tok/s".
sample_kvtier() {
  local model="$1" name="$2" rep="$3" out="$RESULTS/kvtier.$2.rep$3"
  $PRIO "$KVTIER" bench -m "$model" -p "$N_PROMPT" -n "$N_GEN" -t "$THREADS" -r 1 >"$out.txt" 2>"$out.log" \
    || { log "kvtier bench failed on $name (see $out.log)"; return; }
  python3 - "$out.txt" "$name" "$rep" >>"$SAMPLES" <<'EOF'
import re, sys
for m in re.finditer(r"^((?:pp|tg)\d+):\s*([0-9.]+)(?:\s*\+/-\s*[0-9.]+)?\s*tok/s", open(sys.argv[1]).read(), re.M):
    print(f"{sys.argv[2]}\tkvtier\t{m.group(1)}\t{sys.argv[3]}\t{float(m.group(2)):.3f}")
EOF
}

# Repetitions alternate between the two tools, so that a burst of load from
# elsewhere on the machine hits both rather than one.
for model in "${models[@]}"; do
  [[ -f "$model" ]] || { log "error: model $model not found"; exit 1; }
  name="$(basename "$model" .gguf)"
  for rep in $(seq 1 "$REPS"); do
    if (( run_peer )); then log "llama-bench $name ($rep/$REPS)"; sample_llamacpp "$model" "$name" "$rep"; fi
    if (( run_kvtier )); then log "kvtier bench $name ($rep/$REPS)"; sample_kvtier "$model" "$name" "$rep"; fi
  done
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$RESULTS/machine.txt" >&2

# Median of the repetitions (robust to a run that other processes slowed down), with the range.
python3 - "$SAMPLES" "$N_PROMPT" "$N_GEN" >"$RESULTS/table.md" <<'EOF'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
models = list(dict.fromkeys(r["model"] for r in rows)) or []
def cell(model, tool, test):
    v = [float(r["tok_s"]) for r in rows if (r["model"], r["tool"], r["test"]) == (model, tool, test)]
    return (statistics.median(v), min(v), max(v), len(v)) if v else None
def fmt(c):
    return "n/a" if c is None else f"{c[0]:.2f} ({c[1]:.2f}–{c[2]:.2f}, n={c[3]})"
print("| model | test | llama.cpp tok/s | kvtier tok/s | kvtier / llama.cpp |")
print("|---|---|---:|---:|---:|")
for model in models:
    for test in (f"pp{sys.argv[2]}", f"tg{sys.argv[3]}"):
        peer, ours = cell(model, "llama.cpp", test), cell(model, "kvtier", test)
        ratio = f"{ours[0] / peer[0]:.2f}" if peer and ours and peer[0] > 0 else "n/a"
        print(f"| {model} | {test} | {fmt(peer)} | {fmt(ours)} | {ratio} |")
print()
print("tok/s: median of the repetitions (min–max, n = repetitions); ratio of the medians.")
EOF
log "raw outputs in $RESULTS"
cat "$RESULTS/table.md"
