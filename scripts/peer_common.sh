# Shared steps of the scripts that record llama.cpp's outputs on test models (scripts/make_*_references.sh).
# Source it after setting REPO_DIR, PEER_DIR, SHARED_DIR, THREADS, WORK and a log() function:
#   peer_tools TOOL...            LLAMA_BIN = the peer's bin dir (bench/build_llamacpp.sh), each TOOL checked
#   peer_perplexity MODEL CTX [ARG...]
#                                 llama-perplexity on eval/eval.txt, 16 chunks of CTX tokens: sets PPL and
#                                 RUNNING (the running estimate after each chunk, comma-separated)
#   peer_greedy MODEL             llama-completion --temp 0 -n 64 --ignore-eos on PEER_PROMPTS (BOS added, f16 KV):
#                                 sets GREEDY_JSON, a JSON list of {"prompt", "greedy_continuation"}
#   json_string                   stdin as one JSON string
#   peer_commit                   the peer's commit (12 hex digits, or "unknown")

# The 4 prompts of ../shared/reference/greedy_cases.json.
PEER_PROMPTS=("The Linux kernel" "def fibonacci(n):" "Python is a programming language that" "And God said")

json_string() { python3 -c 'import json,sys; print(json.dumps(sys.stdin.read()))'; }

peer_tools() {
  LLAMA_BIN="$(KVTIER_PEER_DIR="$PEER_DIR" "$REPO_DIR/bench/build_llamacpp.sh" | tail -n 1)"
  local tool
  for tool in "$@"; do
    [[ -x "$LLAMA_BIN/$tool" ]] || { log "error: $LLAMA_BIN/$tool missing"; exit 1; }
  done
}

peer_perplexity() {
  local model="$1" ctx="$2"
  shift 2
  "$LLAMA_BIN/llama-perplexity" -m "$model" -f "$SHARED_DIR/eval/eval.txt" -c "$ctx" --chunks 16 -t "$THREADS" "$@" \
    >"$WORK/ppl.log" 2>&1 || { tail -n 20 "$WORK/ppl.log" >&2; exit 1; }
  PPL="$(grep -oE 'Final estimate: PPL = [0-9.]+' "$WORK/ppl.log" | awk '{print $NF}')"
  RUNNING="$(grep -oE '\[[0-9]+\][0-9.]+' "$WORK/ppl.log" | sed -E 's/\[[0-9]+\]//' | paste -sd, -)"
  log "  PPL $PPL"
}

peer_greedy() {
  local model="$1" prompt text
  local entries=()
  for prompt in "${PEER_PROMPTS[@]}"; do
    "$LLAMA_BIN/llama-completion" -m "$model" -p "$prompt" --temp 0 -n 64 --ignore-eos -t "$THREADS" \
      --no-display-prompt -no-cnv </dev/null >"$WORK/completion.txt" 2>"$WORK/completion.log" \
      || { tail -n 20 "$WORK/completion.log" >&2; exit 1; }
    # llama-completion ends its output with a newline of its own at exit.
    text="$(python3 -c 'import sys; t = open(sys.argv[1], encoding="utf-8", errors="replace").read(); print(t[:-1] if t.endswith("\n") else t, end="")' "$WORK/completion.txt" | json_string)"
    entries+=("{\"prompt\": $(printf '%s' "$prompt" | json_string), \"greedy_continuation\": $text}")
  done
  GREEDY_JSON="[$(IFS=,; echo "${entries[*]}")]"
}

peer_commit() { git -C "$PEER_DIR/llama.cpp" rev-parse --short=12 HEAD 2>/dev/null || echo unknown; }
