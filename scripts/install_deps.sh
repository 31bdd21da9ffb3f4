#!/usr/bin/env bash
# Installs the Debian packages kvtier needs, if any are missing (uses sudo when not root).
# Usage: scripts/install_deps.sh [--test]   (--test adds clang for the fuzzer, the arm64 cross tools,
# lavapipe + the Vulkan validation layers that the Vulkan shader tests run on, and Node.js with the pinned
# `openai` npm client of the server test, tests/server/package.json)
# libvulkan-dev and glslc are build-time only (headers, shader compiler; the Vulkan loader is opened at run
# time), so a plain build includes the Vulkan backend and still runs where no GPU or driver is present.
set -euo pipefail

packages=(build-essential cmake ninja-build pkg-config libhwy-dev libpcre2-dev libxxhash-dev libfmt-dev
          libcli11-dev nlohmann-json3-dev libedit-dev liburing-dev libcpp-httplib-dev libgtest-dev libbenchmark-dev
          libvulkan-dev glslc)
if [[ "${1:-}" == "--test" ]]; then
  packages+=(clang libclang-rt-14-dev g++-aarch64-linux-gnu qemu-user libhwy-dev:arm64 libgtest-dev:arm64
             mesa-vulkan-drivers vulkan-validationlayers)
  # Debian's nodejs and npm, unless a Node.js with npm is already there (NodeSource's nodejs bundles npm and
  # conflicts with Debian's npm package).
  command -v npm >/dev/null || packages+=(nodejs npm)
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
else
  echo "install_deps: installing ${missing[*]}" >&2
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# The server test's npm client, exactly as package-lock.json pins it (a failure leaves that test skipped).
if [[ "${1:-}" == "--test" ]]; then
  server_tests="$(cd "$(dirname "$0")/../tests/server" && pwd)"
  if [[ ! -d "$server_tests/node_modules/openai" ]]; then
    (cd "$server_tests" && npm ci --no-audit --no-fund --loglevel=error) ||
      echo "install_deps: npm ci in tests/server failed; the openai client test will be skipped" >&2
  fi
fi
