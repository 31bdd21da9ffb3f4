// What a run allocates in proportion to its request — the KV cache at full context, logits, batch buffers,
// the tokens of an input text — computed from the model's configuration before anything is allocated, so
// that a request the machine cannot hold is refused with one line (kvtier/resources.h: check_memory).
// The weights are not listed: they stay memory-mapped (the page cache can drop and re-read them); when they are
// read into memory instead (WeightResidency::kCopied), Model::load checks their bytes before reading them.
#pragma once

#include <cstdint>
#include <vector>

#include "kvtier/kv_options.h"
#include "kvtier/resources.h"
#include "kvtier/status.h"

namespace kvtier {

struct ModelConfig;

struct RunMemoryRequest {
  int n_ctx = 0;                // positions the KV cache must hold
  int64_t logits_rows = 1;      // rows of n_vocab f32 logits kept at once (perplexity: half a chunk)
  int n_caches = 1;             // caches alive at once (--kl-divergence: the f16 baseline and the one tested)
  int64_t input_tokens = 0;     // tokens of an input text held in memory (perplexity, recall)
};

// The line items of what a run will allocate; errors name a bad KV option.
Result<std::vector<MemoryItem>> plan_run_memory(const ModelConfig& config, const KvCacheOptions& kv,
                                                const RunMemoryRequest& request);

// RAM the KV cache holds at max_tokens positions (paged: at most --kv-budget when one is set).
Result<uint64_t> kv_cache_bytes(const ModelConfig& config, const KvCacheOptions& kv, int max_tokens);

}  // namespace kvtier
