#!/usr/bin/env bash
# Records what llama.cpp says on the Gemma 2 / Gemma 3 test models (tools/gemma_model.h: the trained
# tiny-llama-6m weights in Gemma's layout, sliding window 32, every 2nd layer global): greedy continuations
# (4 prompts, --temp 0 -n 64 --ignore-eos, BOS added, f16 KV) and perplexity on ../shared/eval/eval.txt at
# c 128 (16 chunks: the window of 32 matters in every chunk). Writes tests/data/gemma/references.json
# (committed); tests/engine/gemma_reference_test.cpp makes the same models at run time and compares, so tests
# never need llama.cpp. Rerun this when tools/gemma_model.h, the peer or the source F16 file changes.
#
#   scripts/make_gemma_references.sh      # needs build/tools/make_gemma_model (BUILD_DIR=... to choose)
#
# Environment: KVTIER_PEER_DIR (peer cache, default <repo>/peer), KVTIER_SHARED (default <repo>/../shared),
#   BUILD_DIR [build], OUT_DIR [tests/data/gemma], THREADS [2].
set -euo pipefail

REPO_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_DIR"
PEER_DIR="${KVTIER_PEER_DIR:-$REPO_DIR/peer}"
SHARED_DIR="${KVTIER_SHARED:-$REPO_DIR/../shared}"
BUILD_DIR="${BUILD_DIR:-build}"
OUT_DIR="${OUT_DIR:-tests/data/gemma}"
THREADS="${THREADS:-2}"
PROMPTS=("The Linux kernel" "def fibonacci(n):" "Python is a programming language that" "And God said")

log() { echo "[gemma_refs] $*" >&2; }

LLAMA_BIN="$(KVTIER_PEER_DIR="$PEER_DIR" bench/build_llamacpp.sh | tail -n 1)"
for tool in llama-perplexity llama-completion; do
  [[ -x "$LLAMA_BIN/$tool" ]] || { log "error: $LLAMA_BIN/$tool missing"; exit 1; }
done
MAKE_MODEL="$BUILD_DIR/tools/make_gemma_model"
[[ -x "$MAKE_MODEL" ]] || { log "error: $MAKE_MODEL missing (cmake --build $BUILD_DIR --target make_gemma_model)"; exit 1; }
SOURCE="$SHARED_DIR/models/tiny-llama-6m.f16.gguf"
[[ -f "$SOURCE" ]] || { log "error: $SOURCE not found"; exit 1; }
mkdir -p "$OUT_DIR"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

json_string() { python3 -c 'import json,sys; print(json.dumps(sys.stdin.read()))'; }

entries=()
for arch in gemma2 gemma3; do
  model="$WORK/$arch.gguf"
  "$MAKE_MODEL" --arch "$arch" --from "$SOURCE" -o "$model"
  log "$arch: llama-perplexity (c 128, 16 chunks)"
  "$LLAMA_BIN/llama-perplexity" -m "$model" -f "$SHARED_DIR/eval/eval.txt" -c 128 --chunks 16 -t "$THREADS" \
    >"$WORK/ppl.log" 2>&1 || { tail -n 20 "$WORK/ppl.log" >&2; exit 1; }
  ppl="$(grep -oE 'Final estimate: PPL = [0-9.]+' "$WORK/ppl.log" | awk '{print $NF}')"
  running="$(grep -oE '\[[0-9]+\][0-9.]+' "$WORK/ppl.log" | sed -E 's/\[[0-9]+\]//' | paste -sd, -)"
  log "  PPL $ppl"
  greedy=()
  for prompt in "${PROMPTS[@]}"; do
    "$LLAMA_BIN/llama-completion" -m "$model" -p "$prompt" --temp 0 -n 64 --ignore-eos -t "$THREADS" \
      --no-display-prompt -no-cnv </dev/null >"$WORK/completion.txt" 2>"$WORK/completion.log" \
      || { tail -n 20 "$WORK/completion.log" >&2; exit 1; }
    # llama-completion ends its output with a newline of its own at exit.
    text="$(python3 -c 'import sys; t = open(sys.argv[1], encoding="utf-8", errors="replace").read(); print(t[:-1] if t.endswith("\n") else t, end="")' "$WORK/completion.txt" | json_string)"
    greedy+=("{\"prompt\": $(printf '%s' "$prompt" | json_string), \"greedy_continuation\": $text}")
  done
  entries+=("\"$arch\": {\"ppl\": $ppl, \"running_ppl_after_each_chunk\": [$running], \"greedy\": [$(IFS=,; echo "${greedy[*]}")]}")
done

commit="$(git -C "$PEER_DIR/llama.cpp" rev-parse --short=12 HEAD 2>/dev/null || echo unknown)"
{
  echo "{\"tool\": \"llama.cpp (commit $commit): models from tools/make_gemma_model (defaults) on tiny-llama-6m.f16.gguf; llama-perplexity -c 128 --chunks 16 -t $THREADS on eval/eval.txt; llama-completion --temp 0 -n 64 --ignore-eos -t $THREADS (BOS added, f16 KV)\","
  echo "\"how_to_compare\": \"greedy: kvtier's 48-token continuation is a prefix of llama.cpp's 64-token one; perplexity within 0.5%\","
  echo "\"models\": {$(IFS=,; echo "${entries[*]}")}}"
} | python3 -c 'import json,sys; print(json.dumps(json.load(sys.stdin), indent=1, ensure_ascii=False))' >"$OUT_DIR/references.json"
log "wrote $OUT_DIR/references.json"
