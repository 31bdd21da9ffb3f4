#!/usr/bin/env bash
# Makes the architecture test models (tools/make_arch_model: qwen3, qwen3 with YaRN, qwen3moe, Mixtral-style
# llama MoE, smollm3, phi3, all from ../shared/models/tiny-llama-6m.f16.gguf) and records what llama.cpp says
# on them: perplexity (the protocol of ../shared/reference/perplexity.json: c 512, 16 chunks, -fa on) and
# greedy continuations (the 4 prompts of scripts/make_quant_references.sh, --temp 0 -n 64 --ignore-eos,
# BOS added, f16 KV cache).
#
#   scripts/make_arch_references.sh          # -> tests/data/arch/references.json (committed; no GGUFs)
#
# tests/model/arch_reference_test.cpp makes the same files at test time (tools/arch_model.h is deterministic)
# and checks kvtier against the JSON, so tests never need llama.cpp. Rerun this when tools/arch_model.h, the
# peer (bench/build_llamacpp.sh) or the source F16 file changes.
#
# Environment: KVTIER_PEER_DIR (peer cache, default <repo>/peer), KVTIER_SHARED (default <repo>/../shared),
#   BUILD_DIR [build] (where build/tools/make_arch_model is built), VARIANTS [all; others already in the JSON
#   are kept], THREADS [2].
set -euo pipefail

REPO_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_DIR"
PEER_DIR="${KVTIER_PEER_DIR:-$REPO_DIR/peer}"
SHARED_DIR="${KVTIER_SHARED:-$REPO_DIR/../shared}"
BUILD_DIR="${BUILD_DIR:-build}"
VARIANTS="${VARIANTS:-qwen3 qwen3-yarn qwen3moe llama-moe smollm3 phi3 phi3-longrope}"
OUT="tests/data/arch/references.json"
THREADS="${THREADS:-2}"

log() { echo "[arch_refs] $*" >&2; }

source scripts/peer_common.sh
peer_tools llama-perplexity llama-completion
SOURCE="$SHARED_DIR/models/tiny-llama-6m.f16.gguf"
[[ -f "$SOURCE" ]] || { log "error: $SOURCE not found"; exit 1; }
nice -n 10 cmake --build "$BUILD_DIR" -j2 --target make_arch_model >&2
mkdir -p "$(dirname "$OUT")"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

entries=()
for variant in $VARIANTS; do
  model="$WORK/tiny-$variant-6m.f16.gguf"
  "$BUILD_DIR/tools/make_arch_model" --arch "$variant" --from "$SOURCE" -o "$model"
  log "$variant: llama-perplexity (c 512, 16 chunks)"
  peer_perplexity "$model" 512 -fa on
  peer_greedy "$model"
  entries+=("\"$variant\": {\"sha256\": \"$(sha256sum "$model" | cut -c1-64)\", \"ppl\": $PPL, \"running_ppl_after_each_chunk\": [$RUNNING], \"greedy\": $GREEDY_JSON}")
done

commit="$(peer_commit)"
{
  echo "{\"tool\": \"llama.cpp (npm node-llama-cpp@3.21.1 source bundle, commit $commit) on tools/make_arch_model files made from tiny-llama-6m.f16.gguf: llama-perplexity -c 512 --chunks 16 -t $THREADS -fa on on eval/eval.txt; llama-completion --temp 0 -n 64 --ignore-eos -t $THREADS (BOS added, f16 KV)\","
  echo "\"how_to_compare\": \"F16 weights: kvtier's 48-token greedy continuation is a prefix of llama.cpp's 64-token one for every prompt; perplexity within 0.5%\","
  echo "\"variants\": {$(IFS=,; echo "${entries[*]}")}}"
} | python3 -c '
import json, os, sys
new = json.load(sys.stdin)
if os.path.exists(sys.argv[1]):  # keep the variants not rerun
    old = json.load(open(sys.argv[1], encoding="utf-8"))
    new["variants"] = {**old.get("variants", {}), **new["variants"]}
print(json.dumps(new, indent=1, ensure_ascii=False))' "$OUT" >"$WORK/references.json"
mv "$WORK/references.json" "$OUT"
log "wrote $OUT"
