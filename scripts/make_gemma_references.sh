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

log() { echo "[gemma_refs] $*" >&2; }

source scripts/peer_common.sh
peer_tools llama-perplexity llama-completion
MAKE_MODEL="$BUILD_DIR/tools/make_gemma_model"
[[ -x "$MAKE_MODEL" ]] || { log "error: $MAKE_MODEL missing (cmake --build $BUILD_DIR --target make_gemma_model)"; exit 1; }
SOURCE="$SHARED_DIR/models/tiny-llama-6m.f16.gguf"
[[ -f "$SOURCE" ]] || { log "error: $SOURCE not found"; exit 1; }
mkdir -p "$OUT_DIR"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

entries=()
for arch in gemma2 gemma3; do
  model="$WORK/$arch.gguf"
  "$MAKE_MODEL" --arch "$arch" --from "$SOURCE" -o "$model"
  log "$arch: llama-perplexity (c 128, 16 chunks)"
  peer_perplexity "$model" 128
  peer_greedy "$model"
  entries+=("\"$arch\": {\"ppl\": $PPL, \"running_ppl_after_each_chunk\": [$RUNNING], \"greedy\": $GREEDY_JSON}")
done

commit="$(peer_commit)"
{
  echo "{\"tool\": \"llama.cpp (commit $commit): models from tools/make_gemma_model (defaults) on tiny-llama-6m.f16.gguf; llama-perplexity -c 128 --chunks 16 -t $THREADS on eval/eval.txt; llama-completion --temp 0 -n 64 --ignore-eos -t $THREADS (BOS added, f16 KV)\","
  echo "\"how_to_compare\": \"greedy: kvtier's 48-token continuation is a prefix of llama.cpp's 64-token one; perplexity within 0.5%\","
  echo "\"models\": {$(IFS=,; echo "${entries[*]}")}}"
} | python3 -c 'import json,sys; print(json.dumps(json.load(sys.stdin), indent=1, ensure_ascii=False))' >"$OUT_DIR/references.json"
log "wrote $OUT_DIR/references.json"
