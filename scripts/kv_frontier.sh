#!/usr/bin/env bash
# The KV-cache quality frontier: sweeps precision ladders and key modes with
# `kvtier perplexity --kl-divergence` (f16 cache vs the ladder on the same chunks)
# and writes (bits/element, KLD) tables, a markdown table and a PNG plot next to
# llama.cpp's KV types (../shared/reference/perplexity.json).
#
#   scripts/kv_frontier.sh            # full runs: 2K (-c 2048 --chunks 24) and 8K (-c 8192 --chunks 4)
#   CHUNKS_2K=3 ONLY=2k OUT=/tmp/kvq scripts/kv_frontier.sh   # a quick pass to choose ladders
#
# A quick-pass TSV kept as $OUT/kv_frontier_2k_quick.tsv (same columns) is plotted as its own series.
# Environment: KVTIER (binary, default build/kvtier), SHARED (../shared), THREADS (2), CHUNKS_2K (24),
# CHUNKS_8K (4), PARALLEL (1: runs at once; on a machine with C cores, C / THREADS),
# NAME_2K (2k: the TSV is kv_frontier_$NAME_2K.tsv; 2k_quick for a quick pass),
# ONLY (2k|8k|plot: run one part; the plot and table use whatever TSVs exist),
# REUSE (1: keep a configuration's log when it already holds a result — only after adding ladders to a list,
# with the same binary; the TSV is rebuilt from the logs either way),
# OUT (docs/). The markdown table replaces the block between the frontier markers in $OUT/kv_quality.md
# when that file has them. The plot needs gnuplot (Debian gnuplot-nox); it is skipped with a note if absent.
# Runs nice'd; about 50 minutes in all on 2 cores (PARALLEL=7 on 16 cores: about 8 minutes).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
KVTIER=${KVTIER:-$ROOT/build/kvtier}
SHARED=${SHARED:-$ROOT/../shared}
THREADS=${THREADS:-2}
CHUNKS_2K=${CHUNKS_2K:-24}
CHUNKS_8K=${CHUNKS_8K:-4}
PARALLEL=${PARALLEL:-1}
NAME_2K=${NAME_2K:-2k}
ONLY=${ONLY:-all}
OUT=${OUT:-$ROOT/docs}
TEXT=$SHARED/eval/eval.txt
MODEL_2K=$SHARED/models/tiny-llama-31m.Q4_K_M.gguf
MODEL_8K=$SHARED/models/tiny-llama-31m-8k.Q4_K_M.gguf

# One configuration per line: ladder  key-mode  sinks.
LADDERS_2K=${LADDERS_2K:-"
q8 channel 4
q4 channel 4
q4 rotated 4
q3 channel 4
q2 channel 4
k4v2 channel 4
k2v4 channel 4
q8:1024,q4 channel 4
q8:256,q4 channel 4
q8:128,q4 channel 4
q4:512,q3 channel 4
q4:256,q3:1024,q2 channel 4
q4:128,q3:256,q2 channel 4
q4:128,q3:256,q2 channel 1
q4:128,q3:192,q2 channel 1
q4:64,q2 channel 4
q4:64,q2 channel 2
q4:64,q2 channel 1
k4v3:64,q2 channel 1
"}
LADDERS_8K=${LADDERS_8K:-"
q8 channel 4
q4 channel 4
q3 channel 4
q2 channel 4
q3:512,q2 channel 4
q4:512,q2 channel 4
q4:1024,q3:1024,q2 channel 4
"}

mkdir -p "$OUT"
[[ -x $KVTIER ]] || { echo "kv_frontier: no kvtier binary at $KVTIER (build it, or set KVTIER)" >&2; exit 1; }

# run_one LOG MODEL CTX CHUNKS LADDER KEYS SINKS: one perplexity run into LOG.
run_one() {
  local log=$1 model=$2 ctx=$3 chunks=$4 ladder=$5 keys=$6 sinks=$7 start=$SECONDS
  if [[ ${REUSE:-0} == 1 ]] && grep -q '^Mean KLD' "$log" 2>/dev/null; then
    echo "kv_frontier: $ctx $ladder keys=$keys sinks=$sinks: kept $log" >&2
    return 0
  fi
  echo "kv_frontier: $ctx $ladder keys=$keys sinks=$sinks" >&2
  if nice -n 10 "$KVTIER" perplexity -m "$model" -f "$TEXT" -c "$ctx" --chunks "$chunks" -t "$THREADS" \
    --kv-ladder "$ladder" --kv-keys "$keys" --kv-sinks "$sinks" --kl-divergence >"$log" 2>&1; then
    echo "kv_frontier:   $ladder $keys s$sinks: $(sed -n 's/^Mean KLD: //p' "$log"), $((SECONDS - start)) s" >&2
  else
    echo "kv_frontier: failed, see $log" >&2
  fi
}

# sweep NAME MODEL CTX CHUNKS LADDERS -> $OUT/kv_frontier_NAME.tsv (+ raw logs in $OUT/kv_frontier_logs/)
sweep() {
  local name=$1 model=$2 ctx=$3 chunks=$4 ladders=$5
  local tsv=$OUT/kv_frontier_$name.tsv logs=$OUT/kv_frontier_logs
  mkdir -p "$logs"
  # Runs first, PARALLEL at a time; then one TSV row per configuration, in list order.
  local running=0
  while read -r ladder keys sinks; do
    [[ -z ${ladder:-} ]] && continue
    run_one "$logs/${name}_${ladder//[:,]/_}_${keys}_s${sinks}.log" "$model" "$ctx" "$chunks" "$ladder" "$keys" "$sinks" &
    if ((++running >= PARALLEL)); then
      wait -n || true
      ((running--))
    fi
  done <<<"$ladders"
  wait
  printf 'ladder\tkeys\tsinks\tbits_per_element\tmean_kld\tkld_error\tppl_ratio\tsame_top1_pct\tctx\tchunks\tbits_live\n' >"$tsv"
  while read -r ladder keys sinks; do
    [[ -z ${ladder:-} ]] && continue
    local log=$logs/${name}_${ladder//[:,]/_}_${keys}_s${sinks}.log
    grep -q '^Mean KLD' "$log" 2>/dev/null || continue
    local bits live kld err ratio top1
    # bits: the harness line (resident bytes: ring capacity, sinks, pool slabs incl. free pages and slack);
    # live: the store's own count (live pages, filled ring pages, sinks), i.e. the format without allocator slack.
    bits=$(sed -n 's/^Bits per element.*: \([0-9.]*\)$/\1/p' "$log")
    live=$(sed -n 's/^KV .*, \([0-9.]*\) bits\/element$/\1/p' "$log")
    read -r kld err < <(sed -n 's|^Mean KLD: \([0-9.e-]*\) +/- \([0-9.e-]*\)$|\1 \2|p' "$log")
    ratio=$(sed -n 's/.*PPL ratio = \([0-9.]*\)$/\1/p' "$log")
    top1=$(sed -n 's/^Same top-1: \([0-9.]*\)%$/\1/p' "$log")
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$ladder" "$keys" "$sinks" "$bits" "$kld" "$err" "$ratio" \
      "$top1" "$ctx" "$chunks" "$live" >>"$tsv"
  done <<<"$ladders"
}

case $ONLY in all | 2k) sweep "$NAME_2K" "$MODEL_2K" 2048 "$CHUNKS_2K" "$LADDERS_2K" ;; esac
case $ONLY in all | 8k) sweep 8k "$MODEL_8K" 8192 "$CHUNKS_8K" "$LADDERS_8K" ;; esac

# llama.cpp's KV types from the reference file: name, bits, KLD per context.
REF=$OUT/kv_frontier_llamacpp.tsv
python3 - "$SHARED/reference/perplexity.json" >"$REF" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
print("kv_type\tbits_per_element\tmean_kld\tctx")
for key, ctx in (("kv_types_tiny-llama-31m.Q4_K_M_c2048_chunks24", 2048), ("kv_types_tiny-llama-31m-8k.Q4_K_M_c8192_chunks4", 8192)):
    for name, row in d[key]["table"].items():
        if "mean_kld" in row:
            print(f"{name}\t{row['bits_per_element']}\t{row['mean_kld']}\t{ctx}")
EOF

# Markdown table of both sweeps, sorted by bits.
TABLE=$OUT/kv_frontier_table.md
{
  for name in 2k 8k; do
    tsv=$OUT/kv_frontier_$name.tsv
    [[ -f $tsv ]] || continue
    echo
    echo "**$name** ($(awk -F'\t' 'NR==2 {print "-c " $9 " --chunks " $10}' "$tsv"))"
    echo
    echo "| ladder | keys | sinks | bits/element | (live pages) | mean KLD | ± | PPL ratio | same top-1 |"
    echo "|---|---|---|---|---|---|---|---|---|"
    tail -n +2 "$tsv" | sort -t$'\t' -k4,4g |
      awk -F'\t' '{printf "| `%s` | %s | %s | %s | %s | %s | %s | %s | %s%% |\n", $1, $2, $3, $4, $11, $5, $6, $7, $8}'
  done
} >"$TABLE"
if [[ -f $OUT/kv_quality.md ]] && grep -q '<!-- frontier:begin -->' "$OUT/kv_quality.md"; then
  python3 - "$OUT/kv_quality.md" "$TABLE" <<'EOF'
import re, sys
doc, table = open(sys.argv[1]).read(), open(sys.argv[2]).read()
doc = re.sub(r"<!-- frontier:begin -->.*<!-- frontier:end -->",
             lambda m: "<!-- frontier:begin -->\n" + table + "\n<!-- frontier:end -->", doc, flags=re.S)
open(sys.argv[1], "w").write(doc)
EOF
fi

# The plot: our points per context against llama.cpp's.
if ! command -v gnuplot >/dev/null; then
  echo "kv_frontier: gnuplot not found (apt-get install gnuplot-nox); tables written, no plot" >&2
  exit 0
fi
plot_data=$(mktemp -d)
trap 'rm -rf "$plot_data"' EXIT
for name in 2k 8k 2k_quick; do
  [[ -f $OUT/kv_frontier_$name.tsv ]] && tail -n +2 "$OUT/kv_frontier_$name.tsv" |
    awk -F'\t' '$4 != "" && $5 != "" {print $4, $5, $1 "/" substr($2, 1, 3) "/s" $3}' >"$plot_data/$name.dat"
  touch "$plot_data/$name.dat"
done
awk -F'\t' 'NR > 1 && $4 == 2048 {print $2, $3, $1}' "$REF" >"$plot_data/ref2k.dat"
awk -F'\t' 'NR > 1 && $4 == 8192 {print $2, $3, $1}' "$REF" >"$plot_data/ref8k.dat"
gnuplot <<EOF
set terminal pngcairo size 1200,800 font ",10" noenhanced
set output "$OUT/kv_frontier.png"
set title "KV cache quality: mean KL divergence vs f16 KV (tiny-llama-31m Q4_K_M, eval.txt)"
set xlabel "bits per element of the whole cache (scales, sinks, f16 window included)"
set ylabel "mean KLD (nats, log scale)"
set logscale y
set grid
set key top right
plot "$plot_data/2k_quick.dat" using 1:2 with points pt 6 ps 1.1 lc rgb "#7f7f7f" title "kvtier, 2K quick pass (kv_frontier_2k_quick.tsv, -c 2048 --chunks 3)", \
     "$plot_data/2k_quick.dat" using 1:2:3 with labels offset 0.5,0.5 left font ",7" tc rgb "#7f7f7f" notitle, \
     "$plot_data/2k.dat" using 1:2 with points pt 7 ps 1.5 lc rgb "#1f77b4" title "kvtier, 2K (-c 2048, kv_frontier_2k.tsv)", \
     "$plot_data/2k.dat" using 1:2:3 with labels offset 0.5,-0.6 left font ",7" tc rgb "#1f77b4" notitle, \
     "$plot_data/8k.dat" using 1:2 with points pt 9 ps 1.5 lc rgb "#2ca02c" title "kvtier, 8K model (-c 8192, kv_frontier_8k.tsv)", \
     "$plot_data/8k.dat" using 1:2:3 with labels offset 0.5,-0.6 left font ",7" tc rgb "#2ca02c" notitle, \
     "$plot_data/ref2k.dat" using 1:2 with points pt 5 ps 1.3 lc rgb "#d62728" title "llama.cpp KV types, 2K", \
     "$plot_data/ref2k.dat" using 1:2:3 with labels offset -0.5,0.6 right font ",8" tc rgb "#d62728" notitle, \
     "$plot_data/ref8k.dat" using 1:2 with points pt 13 ps 1.5 lc rgb "#ff7f0e" title "llama.cpp KV types, 8K", \
     "$plot_data/ref8k.dat" using 1:2:3 with labels offset -0.5,-0.6 right font ",8" tc rgb "#ff7f0e" notitle
EOF
echo "kv_frontier: wrote $OUT/kv_frontier.png" >&2
