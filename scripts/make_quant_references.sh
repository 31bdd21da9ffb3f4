#!/usr/bin/env bash
# Makes the low-bit weight-type test models with llama.cpp's llama-quantize and records what llama.cpp
# says on them: perplexity (the protocol of ../shared/reference/perplexity.json: c 512, 16 chunks) and
# greedy continuations (the protocol of ../shared/reference/greedy_cases.json: the same 4 prompts,
# --temp 0 -n 64 --ignore-eos, BOS added, f16 KV cache).
#
#   scripts/make_quant_references.sh            # tiny-llama-6m files -> tests/data/quant/ (committed)
#   MODEL=tiny-llama-31m OUT_DIR=peer/quant scripts/make_quant_references.sh   # larger, not committed
#
# tests/engine/quant_reference_test.cpp checks kvtier against tests/data/quant/references.json, so tests
# never need llama.cpp. Rerun this when the peer (bench/build_llamacpp.sh) or the source F16 file changes.
#
# Environment: KVTIER_PEER_DIR (peer cache, default <repo>/peer), KVTIER_SHARED (default <repo>/../shared),
#   MODEL [tiny-llama-6m], TYPES [Q2_K Q3_K_M IQ4_NL IQ4_XS], OUT_DIR [tests/data/quant], THREADS [2].
set -euo pipefail

REPO_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_DIR"
PEER_DIR="${KVTIER_PEER_DIR:-$REPO_DIR/peer}"
SHARED_DIR="${KVTIER_SHARED:-$REPO_DIR/../shared}"
MODEL="${MODEL:-tiny-llama-6m}"
TYPES="${TYPES:-Q2_K Q3_K_M IQ4_NL IQ4_XS}"
OUT_DIR="${OUT_DIR:-tests/data/quant}"
THREADS="${THREADS:-2}"

log() { echo "[quant_refs] $*" >&2; }

source scripts/peer_common.sh
peer_tools llama-quantize llama-perplexity llama-completion
SOURCE="$SHARED_DIR/models/$MODEL.f16.gguf"
[[ -f "$SOURCE" ]] || { log "error: $SOURCE not found"; exit 1; }
mkdir -p "$OUT_DIR"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

entries=()
for type in $TYPES; do
  out="$OUT_DIR/$MODEL.$type.gguf"
  log "quantizing $SOURCE -> $out ($type)"
  "$LLAMA_BIN/llama-quantize" "$SOURCE" "$out" "$type" "$THREADS" >"$WORK/quantize.log" 2>&1 \
    || { tail -n 20 "$WORK/quantize.log" >&2; exit 1; }
  # Which types llama-quantize chose per tensor (mixes, and fallbacks where a row is not a multiple of 256).
  tensor_types="$(grep -oE '\[ *[0-9]+/ *[0-9]+\] +[a-z0-9_.]+ +- \[[^]]*\], type = +[A-Za-z0-9_]+, (converting to|size =) *[A-Za-z0-9_]*' \
    "$WORK/quantize.log" | sed -E 's/.*\] +([a-z0-9_.]+) .*type = +([A-Za-z0-9_]+), converting to ([A-Za-z0-9_]+).*/\1 \3/; s/.*\] +([a-z0-9_.]+) .*type = +([A-Za-z0-9_]+), size =.*/\1 \2/' \
    | awk '{c[$2]++} END {for (t in c) printf "%s%s:%d", (n++ ? " " : ""), t, c[t]}')"
  log "  tensor types: $tensor_types"

  log "  llama-perplexity (c 512, 16 chunks)"
  peer_perplexity "$out" 512 -fa on

  peer_greedy "$out"
  entries+=("\"$(basename "$out")\": {\"type\": \"$type\", \"tensor_types\": \"$tensor_types\", \"bytes\": $(stat -c %s "$out"), \"ppl\": $PPL, \"running_ppl_after_each_chunk\": [$RUNNING], \"greedy\": $GREEDY_JSON}")
done

commit="$(peer_commit)"
{
  echo "{\"tool\": \"llama.cpp (npm node-llama-cpp@3.21.1 source bundle, commit $commit): llama-quantize from $MODEL.f16.gguf; llama-perplexity -c 512 --chunks 16 -t $THREADS -fa on on eval/eval.txt; llama-completion --temp 0 -n 64 --ignore-eos -t $THREADS (BOS added, f16 KV)\","
  echo "\"how_to_compare\": \"perplexity within 1% (final) and 2% (first chunk); greedy: kvtier's 48-token continuations share with llama.cpp's at least 100 characters of common prefix over the four prompts together (activations are 8-bit in both, summed in different orders, so near-tied logits may part the texts; an exact match is not required, as for reference/greedy_cases.json's quantized files)\","
  echo "\"files\": {$(IFS=,; echo "${entries[*]}")}}"
} | python3 -c 'import json,sys; print(json.dumps(json.load(sys.stdin), indent=1, ensure_ascii=False))' >"$OUT_DIR/references.json"
log "wrote $OUT_DIR/references.json"
