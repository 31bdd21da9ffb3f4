#!/usr/bin/env bash
# Builds the benchmark peer: llama.cpp exactly as shipped in npm node-llama-cpp@3.21.1
# (its source bundle llama/gitRelease.bundle), CPU only, CMake Release.
#
#   bench/build_llamacpp.sh            # -> $KVTIER_PEER_DIR/llama.cpp/build/bin/llama-bench ...
#
# Environment:
#   KVTIER_PEER_DIR   cache dir outside git (default: <repo>/peer, which is gitignored)
#   KVTIER_PEER_JOBS  parallel compile jobs (default 2; the machine is shared)
#   KVTIER_PEER_NATIVE  ON (default) builds GGML with -march=native. This is the peer's best case on
#                       this machine; kvtier itself dispatches at runtime (Highway) instead.
#   KVTIER_PEER_SERVER  ON builds llama-server too (bench/serve_streams.py --peer); default OFF
# Idempotent: each step is skipped when its output is already there.
set -euo pipefail

REPO_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PEER_DIR="${KVTIER_PEER_DIR:-$REPO_DIR/peer}"
JOBS="${KVTIER_PEER_JOBS:-2}"
NATIVE="${KVTIER_PEER_NATIVE:-ON}"
SERVER="${KVTIER_PEER_SERVER:-OFF}"
NPM_PACKAGE="node-llama-cpp@3.21.1"

PKG_DIR="$PEER_DIR/node-llama-cpp"          # the unpacked npm tarball (package/...)
BUNDLE="$PKG_DIR/package/llama/gitRelease.bundle"
SRC_DIR="$PEER_DIR/llama.cpp"
BUILD_DIR="$SRC_DIR/build"
BIN_DIR="$BUILD_DIR/bin"

log() { echo "[build_llamacpp] $*" >&2; }

mkdir -p "$PEER_DIR"

# 1. The npm package (only its tarball; no install scripts run).
if [[ ! -f "$BUNDLE" ]]; then
  log "fetching $NPM_PACKAGE"
  rm -rf "$PKG_DIR" && mkdir -p "$PKG_DIR"
  tarball="$(cd "$PKG_DIR" && npm pack --silent "$NPM_PACKAGE" | tail -n 1)"
  tar -xzf "$PKG_DIR/$tarball" -C "$PKG_DIR"
  [[ -f "$BUNDLE" ]] || { log "error: $BUNDLE not found in the $NPM_PACKAGE tarball"; exit 1; }
else
  log "npm package already unpacked in $PKG_DIR"
fi

# 2. The llama.cpp source from the bundle.
if [[ ! -d "$SRC_DIR/.git" ]]; then
  log "cloning $BUNDLE"
  rm -rf "$SRC_DIR"
  git -c advice.detachedHead=false clone --quiet "$BUNDLE" "$SRC_DIR"
else
  log "llama.cpp source already cloned in $SRC_DIR"
fi

# 3. Configure (CPU only, static, no network features) and build the tools we compare against.
if [[ ! -f "$BUILD_DIR/CMakeCache.txt" ]]; then
  log "configuring (GGML_NATIVE=$NATIVE)"
  generator=()
  command -v ninja >/dev/null && generator=(-G Ninja)
  cmake -S "$SRC_DIR" -B "$BUILD_DIR" "${generator[@]}" \
    -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF -DGGML_NATIVE="$NATIVE" \
    -DGGML_CUDA=OFF -DGGML_VULKAN=OFF -DGGML_METAL=OFF -DGGML_BLAS=OFF \
    -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER="$SERVER" -DLLAMA_BUILD_EXAMPLES=OFF \
    >"$BUILD_DIR.configure.log" 2>&1 || { cat "$BUILD_DIR.configure.log" >&2; exit 1; }
fi

# An existing build asked for the server later: turn it on (adds targets, rebuilds nothing else).
if [[ "$SERVER" == ON ]] && grep -q "^LLAMA_BUILD_SERVER:BOOL=OFF" "$BUILD_DIR/CMakeCache.txt"; then
  cmake -S "$SRC_DIR" -B "$BUILD_DIR" -DLLAMA_BUILD_SERVER=ON >"$BUILD_DIR.configure.log" 2>&1 \
    || { cat "$BUILD_DIR.configure.log" >&2; exit 1; }
fi

# llama-completion is the plain completion CLI in this tree; llama-cli is built only with the server
# (LLAMA_BUILD_SERVER), which the comparison does not need. Build whichever of them exists.
available="$(cmake --build "$BUILD_DIR" --target help 2>/dev/null || true)"
targets=()
for t in llama-bench llama-perplexity llama-cli llama-completion llama-quantize llama-server; do
  if grep -qE "(^|[ /])$t(:|$| )" <<<"$available"; then targets+=("$t"); fi
done
[[ " ${targets[*]} " == *" llama-bench "* ]] || { log "error: no llama-bench target in $SRC_DIR"; exit 1; }
missing=0
for t in "${targets[@]}"; do [[ -x "$BIN_DIR/$t" ]] || missing=1; done
if (( missing )); then
  log "building ${targets[*]} with -j$JOBS (niced)"
  nice -n 10 cmake --build "$BUILD_DIR" --target "${targets[@]}" -j "$JOBS" >"$BUILD_DIR.build.log" 2>&1 \
    || { tail -n 40 "$BUILD_DIR.build.log" >&2; log "error: build failed, see $BUILD_DIR.build.log"; exit 1; }
else
  log "binaries already built: ${targets[*]}"
fi

# 4. Which llama.cpp this is.
release="$(grep -o '"release": *"[^"]*"' "$PKG_DIR/package/llama/binariesGithubRelease.json" 2>/dev/null | sed 's/.*"\([^"]*\)"$/\1/' || true)"
commit="$(git -C "$SRC_DIR" rev-parse --short=12 HEAD)"
log "node-llama-cpp 3.21.1: llama.cpp release ${release:-unknown}, commit $commit"
version_tool="$BIN_DIR/llama-completion"
[[ -x "$version_tool" ]] || version_tool="$BIN_DIR/llama-cli"
[[ -x "$version_tool" ]] && "$version_tool" --version 2>&1 | grep -E '^(version|built)' | sed 's/^/[build_llamacpp] /' >&2
echo "$BIN_DIR"
