// How to build a sequence's KV cache: the plain contiguous f16 cache, or the
// tiered paged cache with a precision ladder (docs/ARCHITECTURE.md).
#pragma once

#include <memory>
#include <string>

#include "kvtier/kv_cache.h"
#include "kvtier/status.h"

namespace kvtier {

struct ModelConfig;
class ThreadPool;
namespace kv {
struct TieredKvOptions;
}

struct KvCacheOptions {
  // A ladder spec or a uniform preset for the tiered paged cache:
  // "f16:128,q8:512,q4:4096,q2", "f16", "q8", "q4", "q3", "q2";
  // or "contiguous" for the plain contiguous f16 cache (kept for comparison).
  // The default, paged f16, holds exactly what llama.cpp's default f16 cache holds.
  std::string ladder = "f16";
  int sinks = 4;  // first positions kept in f16 (paged cache only)
  // Key grouping of quantized pages: "channel" (KIVI, per channel over a page's
  // tokens) or "rotated" (per token after a per-head Hadamard rotation).
  std::string key_mode = "channel";
  // Cold tier (paged cache only): keep the cache's RAM within budget_bytes (0 = no limit) by writing the
  // oldest pages at the ladder's last rung to a page file in spill_dir.
  size_t budget_bytes = 0;
  std::string spill_dir;
  std::string cold_mode = "sparse";  // "exact": read every cold page each step; "sparse": the best within
  size_t cold_read_bytes = 0;        // this many bytes per decode step (0 = default, 2 MiB)
};

// Parses a byte size: "4096", "256K", "512M", "2G" (binary units; "KiB"/"MB"-style suffixes accepted).
Result<size_t> parse_byte_size(const std::string& text);

// The typed options of the tiered store that `options` ask for (not "contiguous"): the ladder parsed, the
// enums resolved, the budget/spill pairing checked. Errors name the option. (Declared here, defined with the
// paged cache; callers include kv/tiered_store.h for the type.)
Result<kv::TieredKvOptions> resolve_tiered_kv_options(const KvCacheOptions& options);

// Builds a cache of max_tokens positions for the model. Errors name the bad option. The paged cache
// re-encodes pages in the background: as tasks posted to `pool` (which must outlive the cache; pass the
// pool that runs the model, so that on a machine whose cores it fills they run in its gaps between jobs),
// or, without one, on a thread of the cache's own.
Result<std::unique_ptr<KvCache>> make_kv_cache(const ModelConfig& config, int max_tokens,
                                               const KvCacheOptions& options, ThreadPool* pool = nullptr);

}  // namespace kvtier
