#!/usr/bin/env bash
# Installs the Debian packages kvtier needs, if any are missing (uses sudo when not root).
# Usage: scripts/install_deps.sh [--test]   (--test adds clang for the fuzzer, the arm64 cross tools, and
# lavapipe + the Vulkan validation layers that the Vulkan shader tests run on)
# libvulkan-dev and glslc are build-time only (headers, shader compiler; the Vulkan loader is opened at run
# time), so a plain build includes the Vulkan backend and still runs where no GPU or driver is present.
set -euo pipefail

packages=(build-essential cmake ninja-build pkg-config libhwy-dev libpcre2-dev libxxhash-dev libfmt-dev
          libcli11-dev nlohmann-json3-dev libedit-dev liburing-dev libcpp-httplib-dev libgtest-dev libbenchmark-dev
          libvulkan-dev glslc)
if [[ "${1:-}" == "--test" ]]; then
  packages+=(clang libclang-rt-14-dev g++-aarch64-linux-gnu qemu-user libhwy-dev:arm64 libgtest-dev:arm64
             mesa-vulkan-drivers vulkan-validationlayers)
fi

sudo_cmd=()
[[ $(id -u) -eq 0 ]] || sudo_cmd=(sudo)

need_arm64=0
for p in "${packages[@]}"; do [[ "$p" == *:arm64 ]] && need_arm64=1; done
if [[ $need_arm64 -eq 1 ]] && ! dpkg --print-foreign-architectures | grep -qx arm64; then
  "${sudo_cmd[@]}" dpkg --add-architecture arm64
  force_update=1
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [[ ${#missing[@]} -eq 0 ]]; then
  echo "install_deps: all ${#packages[@]} packages present" >&2
  exit 0
fi
echo "install_deps: installing ${missing[*]}" >&2
"${sudo_cmd[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
