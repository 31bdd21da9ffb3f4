#!/usr/bin/env bash
# The decode step's overhead on a lent GPU (the `device` tool; docs/benchmarks.md, "Fewer commands per decode
# step"): two kvtier builds back to back on one synthetic Llama-3.2-1B Q4_K_M (tg64 at each depth), then
# test_vulkan with the validation layer on the GPU's driver. Run from a folder (ignored by git, e.g. build-gpustep/)
# that holds this script, kvtier (the build under test), kvtier-main (the baseline), gen_synthetic_model,
# test_vulkan, lib/ (their shared libraries from the build machine), shared/ (tiny-llama-6m.* and eval/eval.txt)
# and the vulkan-validationlayers .deb; the Vulkan loader comes from .gl (the device README):
#   run(command="bash build-gpustep/step_bench.sh", carry=[".gl", "build-gpustep"])
# Environment: DEPTHS ["0 32768"], N [64], R [2]; TV_FILTER [*] and TV_TIMEOUT [240 s] for test_vulkan. Logs land
# in $OUT.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT" /tmp/stepb /tmp/vvl
DEPTHS=${DEPTHS:-0 32768}; N=${N:-64}; R=${R:-2}
log() { echo "[$(date +%T)] $*"; }
for f in .gl/*.deb; do dpkg -x "$f" /; done
ldconfig
dpkg -x "$here"/vulkan-validationlayers_*.deb /tmp/vvl
export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
export LD_LIBRARY_PATH="$here/lib"
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,clocks.max.mem --format=csv,noheader
md5sum "$here"/kvtier "$here"/kvtier-main
m=/tmp/stepb/llama.gguf
"$here/gen_synthetic_model" --arch llama --mix q4_k_m -c 140000 --vocab-from "$here/shared/models/tiny-llama-6m.f16.gguf" \
  -o "$m" | tail -1
rows() {  # $1: depth
  local d=$1
  # Alternated at depth 0 (a few seconds a run); once each past it (filling the depth takes a while).
  local bins="kvtier-main kvtier"; [[ $d == 0 ]] && bins="kvtier-main kvtier kvtier-main kvtier"
  for bin in $bins; do
    log "$bin tg$N depth $d"
    "$here/$bin" bench -m "$m" --device vulkan -p 0 -n "$N" -d "$d" -r "$R" $([[ $bin == kvtier ]] && echo -v) 2>&1 |
      grep -E "tok/s|device commands|error"
  done
}
# Depth 0 first, then the GPU tests, then the deeper rows (their untimed fill is the slow part).
rows 0
log "test_vulkan (validation on)"
LD_LIBRARY_PATH="$here/lib:/tmp/vvl/usr/lib/x86_64-linux-gnu" VK_LAYER_PATH=/tmp/vvl/usr/share/vulkan/explicit_layer.d \
  KVTIER_SHARED="$here/shared" timeout "${TV_TIMEOUT:-240}" "$here/test_vulkan" --gtest_filter="${TV_FILTER:-*}" \
  > "$OUT/test_vulkan.log" 2>&1
echo "test_vulkan rc $?"
grep -E "^\[  (FAILED|PASSED|SKIPPED) |tests ran" "$OUT/test_vulkan.log" | head -30
for d in $DEPTHS; do [[ $d == 0 ]] || rows "$d"; done
log done
