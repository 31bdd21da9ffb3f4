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
#   THREADS [2]  N_PROMPT [512]  N_GEN [128]  REPS [3]
#   MODELS  space-separated GGUF paths [tiny-llama-31m.Q4_K_M + synthetic Llama-3.2-1B Q4_0 and Q4_K_M]
# Both tools warm up once and report the mean (± sample std) over REPS runs; llama-bench keeps its
# defaults otherwise (flash attention "auto", mmap, batch 2048 / ubatch 512).
# Raw outputs go to $KVTIER_PEER_DIR/results/<UTC time>/; the table to stdout (Markdown).
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
kvtier_targets=(gen_synthetic_model)
(( run_kvtier )) && kvtier_targets+=(kvtier)
nice -n 10 cmake --build "$BUILD_DIR" --target "${kvtier_targets[@]}" -j 2 >"$BUILD_DIR/compare_build.log" 2>&1 \
  || { tail -n 30 "$BUILD_DIR/compare_build.log" >&2; log "error: kvtier build failed"; exit 1; }
KVTIER="$BUILD_DIR/kvtier"

# 2. llama.cpp.
LLAMA_BIN=""
if (( run_peer )); then
  LLAMA_BIN="$(KVTIER_PEER_DIR="$PEER_DIR" bench/build_llamacpp.sh | tail -n 1)"
fi

# 3. Synthetic Llama-3.2-1B models (random weights; speed only).
mkdir -p "$SYNTH_DIR"
for mix in Q4_0 Q4_K_M; do
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
  echo "cpu: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores online"
  echo "kvtier: $(git rev-parse --short=12 HEAD)$(git diff --quiet HEAD -- src include || echo ' (+local changes)')"
  (( run_peer )) && echo "llama.cpp: $(git -C "$PEER_DIR/llama.cpp" rev-parse --short=12 HEAD) (node-llama-cpp 3.21.1)"
  echo "settings: -p $N_PROMPT -n $N_GEN -t $THREADS -r $REPS"
  echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee "$RESULTS/machine.txt" >&2

# Prints "<pp mean> <pp std> <tg mean> <tg std>" ("n/a" when a run failed).
bench_llamacpp() {
  local model="$1" out="$2"
  if ! "$LLAMA_BIN/llama-bench" -m "$model" -p "$N_PROMPT" -n "$N_GEN" -t "$THREADS" -r "$REPS" -o json \
       >"$out.json" 2>"$out.log"; then
    echo "n/a n/a n/a n/a"; return
  fi
  python3 - "$out.json" "$N_PROMPT" "$N_GEN" <<'EOF'
import json, sys
runs = json.load(open(sys.argv[1]))
n_prompt, n_gen = int(sys.argv[2]), int(sys.argv[3])
def pick(p, g):
    for r in runs:
        if r["n_prompt"] == p and r["n_gen"] == g:
            return f'{r["avg_ts"]:.2f} {r["stddev_ts"]:.2f}'
    return "n/a n/a"
print(pick(n_prompt, 0), pick(0, n_gen))
EOF
}

bench_kvtier() {
  local model="$1" out="$2"
  if ! "$KVTIER" bench -m "$model" -p "$N_PROMPT" -n "$N_GEN" -t "$THREADS" -r "$REPS" >"$out.txt" 2>"$out.log"; then
    echo "n/a n/a n/a n/a"; return
  fi
  # Lines "pp512: X +/- Y tok/s" and "tg128: X +/- Y tok/s" (the "+/- Y" is optional).
  python3 - "$out.txt" "$N_PROMPT" "$N_GEN" <<'EOF'
import re, sys
text = open(sys.argv[1]).read()
def pick(label):
    m = re.search(rf"^{label}:\s*([0-9.]+)(?:\s*\+/-\s*([0-9.]+))?\s*tok/s", text, re.M)
    return f"{m.group(1)} {m.group(2) or 'n/a'}" if m else "n/a n/a"
print(pick(f"pp{sys.argv[2]}"), pick(f"tg{sys.argv[3]}"))
EOF
}

ratio() { awk -v k="$1" -v l="$2" 'BEGIN { if (k == "n/a" || l == "n/a" || l == 0) print "n/a"; else printf "%.2f", k / l }'; }
fmt() { [[ "$1" == "n/a" ]] && echo "n/a" || echo "$1 ± $2"; }

table="$RESULTS/table.md"
{
  echo "| model | test | llama.cpp tok/s | kvtier tok/s | kvtier / llama.cpp |"
  echo "|---|---|---:|---:|---:|"
} >"$table"
for model in "${models[@]}"; do
  [[ -f "$model" ]] || { log "error: model $model not found"; exit 1; }
  name="$(basename "$model" .gguf)"
  peer=(n/a n/a n/a n/a)
  ours=(n/a n/a n/a n/a)
  if (( run_peer )); then
    log "llama-bench $name"
    read -r -a peer <<<"$(bench_llamacpp "$model" "$RESULTS/llamacpp.$name")"
  fi
  if (( run_kvtier )); then
    log "kvtier bench $name"
    read -r -a ours <<<"$(bench_kvtier "$model" "$RESULTS/kvtier.$name")"
  fi
  echo "| $name | pp$N_PROMPT | $(fmt "${peer[0]}" "${peer[1]}") | $(fmt "${ours[0]}" "${ours[1]}") | $(ratio "${ours[0]}" "${peer[0]}") |" >>"$table"
  echo "| $name | tg$N_GEN | $(fmt "${peer[2]}" "${peer[3]}") | $(fmt "${ours[2]}" "${ours[3]}") | $(ratio "${ours[2]}" "${peer[2]}") |" >>"$table"
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$RESULTS/machine.txt" >&2
log "raw outputs in $RESULTS"
cat "$table"
