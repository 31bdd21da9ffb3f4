#!/usr/bin/env bash
# Issue 4 "What it must show": decode at depth with the cold tier on disk, against the disk's own read
# bandwidth and against the all-in-RAM cache, measured in one run on the same machine.
#
#   bench/cold_tier_bench.sh                         # speed: disk bandwidth + decode at depth 16K
#   QUALITY=1 bench/cold_tier_bench.sh               # + sparse-mode KLD and recall (quality harness, --decode)
#
# Environment (defaults in brackets):
#   MODEL [../shared/models/tiny-llama-31m.Q4_K_M.gguf]  DEPTH [16384]  N_GEN [64]  THREADS [2]  REPS [3]
#   SPILL [/work/spill or $TMPDIR: must be on the disk to measure; O_DIRECT bypasses the page cache]
#   BUDGET [16M: a quarter of the f16 KV at 16K]  READS ["2M 512K"]: sparse per-step read budgets
#   KVTIER_BIN [build/kvtier]  DISK_BW [build/tools/disk_bandwidth]
# Every kvtier sample is its own process (`kvtier bench -r 1`, after its warm-up); configurations alternate
# within each repetition so that load from elsewhere hits them alike. The table gives the median (range).
set -euo pipefail

REPO_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_DIR"
MODEL="${MODEL:-$REPO_DIR/../shared/models/tiny-llama-31m.Q4_K_M.gguf}"
DEPTH="${DEPTH:-16384}"
N_GEN="${N_GEN:-64}"
THREADS="${THREADS:-2}"
REPS="${REPS:-3}"
BUDGET="${BUDGET:-16M}"
READS="${READS:-2M 512K}"
SPILL="${SPILL:-$([[ -d /work ]] && echo /work/spill || echo "${TMPDIR:-/tmp}/kvtier-spill")}"
KVTIER_BIN="${KVTIER_BIN:-build/kvtier}"
DISK_BW="${DISK_BW:-build/tools/disk_bandwidth}"
log() { echo "[cold] $*" >&2; }

[[ -x "$KVTIER_BIN" && -x "$DISK_BW" ]] || { log "build first: cmake --build build --target kvtier disk_bandwidth"; exit 1; }
mkdir -p "$SPILL"
RESULTS="${RESULTS:-$REPO_DIR/peer/results/cold-$(date -u +%Y%m%dT%H%M%SZ)}"
mkdir -p "$RESULTS"
{
  echo "date: $(date -u +%FT%TZ)"
  echo "cpu: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores online"
  echo "disk: $(df -hT "$SPILL" | tail -1)"
  echo "kvtier: $(git rev-parse --short=12 HEAD)$(git diff --quiet HEAD -- src include || echo ' (+local changes)')"
  echo "settings: depth $DEPTH, tg$N_GEN, $THREADS threads, $REPS reps, budget $BUDGET, spill $SPILL"
  echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee "$RESULTS/machine.txt" >&2

log "disk read bandwidth (page file, O_DIRECT, io_uring)"
"$DISK_BW" --dir "$SPILL" --mib 1024 --slot-kib 32 | tee "$RESULTS/disk.txt" >&2

configs=("all in RAM|")
configs+=("exact|--kv-budget $BUDGET --kv-spill $SPILL --kv-cold exact")
for r in $READS; do configs+=("sparse $r/step|--kv-budget $BUDGET --kv-spill $SPILL --kv-cold sparse --kv-cold-read $r"); done

SAMPLES="$RESULTS/samples.tsv"  # config, rep, tok/s, MiB read per token, GB/s while decoding, stall %
printf 'config\trep\ttok_s\tmib_per_token\tgb_s\tstall_pct\n' >"$SAMPLES"
for rep in $(seq 1 "$REPS"); do
  for entry in "${configs[@]}"; do
    name="${entry%%|*}" options="${entry#*|}"
    log "rep $rep/$REPS: $name"
    out="$RESULTS/$(tr -c 'A-Za-z0-9.' '_' <<<"$name").rep$rep.txt"
    # shellcheck disable=SC2086  # options is a list of flags
    "$KVTIER_BIN" bench -m "$MODEL" -p 0 -n "$N_GEN" -d "$DEPTH" -t "$THREADS" -r 1 $options >"$out" 2>"$out.log" \
      || { log "kvtier bench failed (see $out.log)"; continue; }
    python3 - "$out" "$name" "$rep" >>"$SAMPLES" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
tg = re.search(r"^tg\d+ @ d\d+:\s*([0-9.]+)", text, re.M)
io = re.search(r"cold reads during decode: ([0-9.]+) MiB/token .*?, ([0-9.]+) GB/s while decoding, stalled ([0-9.]+)%", text)
print(f"{sys.argv[2]}\t{sys.argv[3]}\t{tg.group(1) if tg else 'nan'}\t" +
      ("\t".join(io.groups()) if io else "0\t0\t0"))
PY
  done
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$RESULTS/machine.txt" >&2

python3 - "$SAMPLES" "$RESULTS/disk.txt" <<'PY' | tee "$RESULTS/table.md"
import csv, statistics, sys, re
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
disk = float(re.search(r"read 1 MiB x16 in flight: ([0-9.]+) GB/s", open(sys.argv[2]).read()).group(1))
order = list(dict.fromkeys(r["config"] for r in rows))
def med(values): return statistics.median(values) if values else float("nan")
base = med([float(r["tok_s"]) for r in rows if r["config"] == "all in RAM"])
print(f"disk read bandwidth (1 MiB requests, O_DIRECT): {disk:.2f} GB/s\n")
print("| cache | decode tok/s | vs all in RAM | read MiB/token | read GB/s while decoding | vs disk | stalled |")
print("|---|---|---|---|---|---|---|")
for c in order:
    rs = [r for r in rows if r["config"] == c]
    tok = [float(r["tok_s"]) for r in rs]
    gbs = med([float(r["gb_s"]) for r in rs])
    print(f"| {c} | {med(tok):.1f} ({min(tok):.1f}–{max(tok):.1f}) | {med(tok)/base:.2f}× | "
          f"{med([float(r['mib_per_token']) for r in rs]):.2f} | {gbs:.2f} | {gbs/disk:.0%} | "
          f"{med([float(r['stall_pct']) for r in rs]):.0f}% |")
PY

if [[ -n "${QUALITY:-}" ]]; then
  EVAL="$REPO_DIR/../shared/eval/eval.txt"
  for r in $READS; do
    log "quality: sparse $r/step at -c 2048, budget 2M (a quarter of the f16 KV)"
    "$KVTIER_BIN" perplexity -m "$MODEL" -f "$EVAL" -c 2048 --chunks 4 -t "$THREADS" --kl-divergence --decode \
      --kv-budget 2M --kv-spill "$SPILL" --kv-cold-read "$r" >"$RESULTS/kld.$r.txt" 2>/dev/null
    "$KVTIER_BIN" recall -m "$MODEL" -f "$EVAL" -c 2048 --span 128 --filler 1200 --trials 4 -t "$THREADS" --decode \
      --kv-budget 2M --kv-spill "$SPILL" --kv-cold-read "$r" >"$RESULTS/recall.$r.txt" 2>/dev/null
    echo "sparse $r/step: $(grep -E 'Mean KLD|Same top-1|PPL ratio' "$RESULTS/kld.$r.txt" | tr '\n' ' ')"
    echo "  recall: $(grep -E 'Second copy NLL' "$RESULTS/recall.$r.txt")"
  done | tee "$RESULTS/quality.txt"
fi
log "raw outputs in $RESULTS"
