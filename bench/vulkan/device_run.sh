#!/usr/bin/env bash
# The Vulkan tests and benchmark on a lent GPU machine (the `device` tool, docs/benchmarks.md), from a folder
# that holds this script, test_vulkan, vulkan_bench, lib/ (libhwy, libfmt of the build machine) and the
# vulkan-validationlayers .deb; the Vulkan loader comes from .gl/*.deb at the repository root, as the device
# tool's README describes. Arguments go to vulkan_bench. Logs land in $OUT.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
for f in .gl/*.deb; do dpkg -x "$f" /; done
ldconfig
mkdir -p /tmp/vvl && dpkg -x "$here"/vulkan-validationlayers_*.deb /tmp/vvl
export LD_LIBRARY_PATH="$here/lib:/tmp/vvl/usr/lib/x86_64-linux-gnu"
export VK_LAYER_PATH=/tmp/vvl/usr/share/vulkan/explicit_layer.d
if [[ -f /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json ]]; then
  export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
fi
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,temperature.gpu --format=csv
echo "== test_vulkan (validation on) =="
"$here"/test_vulkan 2>&1 | tee "$OUT/test_vulkan.log" | grep -E "FAILED|PASSED|SKIPPED|validation|error" | head -40
echo "== vulkan_bench $* =="
"$here"/vulkan_bench "$@" 2>&1 | tee "$OUT/bench.log"
