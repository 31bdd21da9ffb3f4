#!/usr/bin/env bash
# Cross-compiles the kernel layer (kvtier_kernels and test_kernels, nothing else)
# for aarch64 and runs test_kernels under qemu-user as a Cortex-A76 (NEON with
# dotprod, no SVE: what Apple-class Arm cores offer). Checks that Highway picks
# the NEON target.
#
#   scripts/test_arm64.sh                 # build-arm64/, all kernel tests
#   scripts/test_arm64.sh --gtest_filter='EveryTarget.*'
#
# Needs (installed when missing, as root): arm64 multiarch, g++-aarch64-linux-gnu,
# qemu-user and the arm64 -dev packages the top-level CMakeLists finds.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="${KVTIER_ARM64_BUILD:-$REPO/build-arm64}"
JOBS="${KVTIER_ARM64_JOBS:-2}"
ARM_PACKAGES=(libhwy-dev:arm64 libgtest-dev:arm64 libxxhash-dev:arm64 libfmt-dev:arm64 libpcre2-dev:arm64 liburing-dev:arm64)
TOOL_PACKAGES=(g++-aarch64-linux-gnu qemu-user pkg-config)

log() { echo "[test_arm64] $*" >&2; }

missing=()
for p in "${ARM_PACKAGES[@]}" "${TOOL_PACKAGES[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if ((${#missing[@]})); then
  log "installing: ${missing[*]}"
  if [[ $(id -u) -ne 0 ]]; then
    log "not root: install them with apt-get first"
    exit 1
  fi
  dpkg --print-foreign-architectures | grep -qx arm64 || dpkg --add-architecture arm64
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi

# The whole project is configured (the top-level CMakeLists finds every
# dependency), but only the kernel layer and its tests are built.
cmake -S "$REPO" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_TOOLCHAIN_FILE="$REPO/cmake/aarch64.cmake" -DKVTIER_BUILD_BENCH=OFF >/dev/null
cmake --build "$BUILD" --target test_kernels -j "$JOBS"

# With arm64 multiarch installed, the dynamic loader from the cross sysroot would
# pick up the multiarch libc (a different build: pthread_create hangs), so the
# cross sysroot's libc is put first explicitly.
QEMU=(qemu-aarch64 -cpu cortex-a76 -L /usr/aarch64-linux-gnu -E LD_LIBRARY_PATH=/usr/aarch64-linux-gnu/lib)
log "running test_kernels under ${QEMU[*]}"
out="$(mktemp)"
trap 'rm -f "$out"' EXIT
set +e
"${QEMU[@]}" "$BUILD/test_kernels" "$@" 2>&1 | tee "$out"
status=${PIPESTATUS[0]}
set -e
target="$(grep -o 'kernels use Highway target [A-Z0-9_]*' "$out" | awk '{print $NF}' | head -1)"
if [[ -n "$target" ]]; then
  log "Highway target picked under qemu: $target"
  if [[ "$target" != NEON* ]]; then
    log "expected a NEON target on cortex-a76"
    status=1
  fi
fi
exit "$status"
