// How to build a sequence's KV cache: the plain contiguous f16 cache, or the
// tiered paged cache with a precision ladder (docs/ARCHITECTURE.md).
#pragma once

#include <memory>
#include <string>

#include "kvtier/kv_cache.h"
#include "kvtier/status.h"

namespace kvtier {

struct ModelConfig;

struct KvCacheOptions {
  // "" = the contiguous f16 cache. Otherwise a ladder spec or a uniform preset:
  // "f16:128,q8:512,q4:4096,q2", "f16", "q8", "q4", "q3", "q2".
  std::string ladder;
  int sinks = 4;  // first positions kept in f16 (paged cache only)
  // Key grouping of quantized pages: "channel" (KIVI, per channel over a page's
  // tokens) or "rotated" (per token after a per-head Hadamard rotation).
  std::string key_mode = "channel";
};

// Builds a cache of max_tokens positions for the model. Errors name the bad option.
Result<std::unique_ptr<KvCache>> make_kv_cache(const ModelConfig& config, int max_tokens,
                                               const KvCacheOptions& options);

}  // namespace kvtier
