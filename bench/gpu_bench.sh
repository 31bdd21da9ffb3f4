#!/usr/bin/env bash
# Issue 18's end-to-end GPU table on the lent H100: kvtier --device vulkan against llama.cpp's CUDA and Vulkan
# backends (one llama.cpp build holding both, from the peer's source), same synthetic model, same machine, one
# device session. Run from a folder (here .gpubench, excluded from git) that holds this script, kvtier and
# tools/gen_synthetic_model (stripped, from a Release build with Vulkan), lib/ (their shared libraries from this
# VM, as bench/device_cpu_bench.sh lists), shared/ (copies of ../shared/models/tiny-llama-6m.* and eval/eval.txt: the vocabulary and test_vulkan's data),
# llama-src.tar.xz (the peer's CMakeLists.txt, cmake, ggml with ggml-cuda and ggml-vulkan, src, common, tools,
# include, vendor, licenses, app), the debs glslc, libshaderc1, libvulkan-dev, spirv-headers (llama.cpp's Vulkan
# build needs glslc, the Vulkan headers and SPIRV-Headers' CMake package; the device image has none of them) and
# vulkan-validationlayers (test_vulkan asks for the validation layer); the Vulkan loader comes from .gl (the
# device README). The whole working tree that travels must stay under 64 MiB.
# LLAMA_CUDA=0 builds llama.cpp's Vulkan backend only (a shorter build when the CUDA rows are already measured);
# LLAMA_VULKAN=0 builds llama.cpp's CUDA backend only (2026-12-07's run: without spirv-headers its Vulkan
# configure failed, so that run has CUDA rows only).
#   run(command="bash .gpubench/gpu_bench.sh setup", carry=[".gl", ".gpubench"])   # starts the llama.cpp build
#   run(command="bash .gpubench/gpu_bench.sh table", carry=[".gl", ".gpubench"])   # back to back: same machine
# Phases:
#   setup   unpacks the loader, starts building llama-bench (CUDA + Vulkan, sm_90) in the background (setsid: it
#           outlives the call), writes the synthetic models, runs kvtier's Vulkan tests' binary if present and
#           kvtier's own rows once (a first look while llama.cpp builds)
#   table   waits for the build, then both engines in one run: decode (tg) and prefill (pp) at each depth
# Environment: DEPTHS ["0 32768"], N [64] decode tokens, P [512] prompt tokens, R [2] repetitions,
#   LADDER [f16:128,q4:2048,q2] (kvtier's ≤3-bit ladder row; skipped with a message where the GPU refuses it).
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
work=${WORK_DIR:-/tmp/gpub}
M="$work/models"
LB="$work/llama-build/bin/llama-bench"
DEPTHS=${DEPTHS:-0 32768}; N=${N:-64}; P=${P:-512}; R=${R:-2}
LADDER=${LADDER:-f16:128,q4:2048,q2}
log() { echo "[$(date +%T)] $*"; }

# The Vulkan loader (from .gl, beside this folder) and the NVIDIA driver's ICD; glslc for llama.cpp's build.
for f in "$here"/../.gl/*.deb; do dpkg -x "$f" /; done
ldconfig
mkdir -p /tmp/vkdev
for f in "$here"/glslc_*.deb "$here"/libshaderc1_*.deb "$here"/libvulkan-dev_*.deb "$here"/spirv-headers_*.deb; do
  [[ -f "$f" ]] && dpkg -x "$f" /tmp/vkdev
done
mkdir -p /tmp/vvl && dpkg -x "$here"/vulkan-validationlayers_*.deb /tmp/vvl
export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
export LD_LIBRARY_PATH="$here/lib"
kv="$here/kvtier"
mkdir -p "$work" "$M" "${OUT:-/tmp/out}"
OUT=${OUT:-/tmp/out}

kvtier_rows() {  # $1: label for the log
  local f="$M/llama.gguf"
  for d in $DEPTHS; do
    log "kvtier vulkan f16 KV, depth $d ($1)"
    "$kv" bench -m "$f" --device vulkan -p "$P" -n "$N" -d "$d" -r "$R" 2>&1 | grep -vE "uploading|^\s*$"
    log "kvtier vulkan ladder $LADDER, depth $d ($1)"
    "$kv" bench -m "$f" --device vulkan -p 0 -n "$N" -d "$d" -r "$R" --kv-ladder "$LADDER" 2>&1 | grep -vE "uploading|^\s*$"
  done
}

case "$1" in
setup)
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem --format=csv
  lscpu | grep -E "Model name|^CPU\(s\)"
  if [[ ! -x "$LB" ]]; then
    rm -rf /tmp/llsrc && mkdir -p /tmp/llsrc && tar xJf "$here/llama-src.tar.xz" -C /tmp/llsrc
    nvcc=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)
    # The build runs on after this call returns (setsid); `table` waits for its marker file.
    setsid bash -c "PATH=/tmp/vkdev/usr/bin:\$PATH LD_LIBRARY_PATH=/tmp/vkdev/usr/lib/x86_64-linux-gnu \
      cmake -S /tmp/llsrc -B $work/llama-build -G Ninja -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF \
        -DCMAKE_CUDA_COMPILER=$nvcc -DGGML_CUDA=${LLAMA_CUDA:-1} -DCMAKE_CUDA_ARCHITECTURES=90 -DGGML_VULKAN=${LLAMA_VULKAN:-1} -DCMAKE_PREFIX_PATH=/tmp/vkdev/usr \
        -DVulkan_INCLUDE_DIR=/tmp/vkdev/usr/include -DVulkan_LIBRARY=/usr/lib/x86_64-linux-gnu/libvulkan.so.1 \
        -DVulkan_GLSLC_EXECUTABLE=/tmp/vkdev/usr/bin/glslc -DGGML_NATIVE=ON -DLLAMA_CURL=OFF \
        -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_EXAMPLES=OFF > $work/build.log 2>&1 && \
      cmake --build $work/llama-build --target llama-bench -j16 >> $work/build.log 2>&1; echo \$? > $work/build.rc" \
      < /dev/null > /dev/null 2>&1 &
    log "llama.cpp build started in the background"
  fi
  "$here/gen_synthetic_model" --arch llama --mix q4_k_m -c 140000 --vocab-from "$here/shared/models/tiny-llama-6m.f16.gguf" \
    -o "$M/llama.gguf" | tail -1
  ls -la "$M"
  if [[ -x "$here/test_vulkan" ]]; then
    log "test_vulkan on the GPU"
    LD_LIBRARY_PATH="$here/lib:/tmp/vvl/usr/lib/x86_64-linux-gnu" VK_LAYER_PATH=/tmp/vvl/usr/share/vulkan/explicit_layer.d \
      KVTIER_SHARED="$here/shared" "$here/test_vulkan" 2>&1 | grep -E "FAILED|PASSED|PPL|KLD" | head -30
  fi
  kvtier_rows "while llama.cpp builds"
  tail -3 "$work/build.log"
  log setup done ;;
table)
  while [[ ! -f "$work/build.rc" ]]; do sleep 5; done
  tail -3 "$work/build.log"; [[ "$(cat "$work/build.rc")" == 0 ]] || { log "llama.cpp build failed"; exit 1; }
  "$LB" --list-devices 2>&1 | tail -4
  f="$M/llama.gguf"
  dl=$(echo $DEPTHS | tr ' ' ,)
  devs=""; [[ "${LLAMA_CUDA:-1}" == 1 ]] && devs="CUDA0"
  [[ "${LLAMA_VULKAN:-1}" == 1 ]] && devs="$devs Vulkan0"
  for dev in $devs; do
    for ct in f16 q4_0; do
      log "llama.cpp $dev KV $ct, depths $dl"
      "$LB" -m "$f" -dev "$dev" -ngl 99 -fa 1 -ctk $ct -ctv $ct -p "$P" -n "$N" -d "$dl" -r "$R" 2>&1 | grep -E "^\|"
    done
  done
  kvtier_rows "same run as llama.cpp"
  log table done ;;
esac
