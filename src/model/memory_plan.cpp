#include "kvtier/memory_plan.h"

#include <string>

#include "kv/capacity_plan.h"
#include "kv/tiered_store.h"
#include "kvtier/model.h"

namespace kvtier {

Result<uint64_t> kv_cache_bytes(const ModelConfig& c, const KvCacheOptions& kv, int max_tokens) {
  if (kv.ladder == "contiguous") {  // f16 keys and values, every position allocated up front
    return 2ull * c.n_layers * c.n_kv_heads * c.head_dim * sizeof(uint16_t) * static_cast<uint64_t>(max_tokens);
  }
  auto options = resolve_tiered_kv_options(kv);
  if (!options.ok()) return options.status();
  auto plan = kv::plan_capacity(c.kv_geometry(max_tokens), *options, max_tokens);
  if (!plan.ok()) return plan.status();
  return static_cast<uint64_t>(plan->ram_at_context);
}

Result<std::vector<MemoryItem>> plan_run_memory(const ModelConfig& c, const KvCacheOptions& kv,
                                                const RunMemoryRequest& request) {
  std::vector<MemoryItem> items;
  auto cache = kv_cache_bytes(c, kv, request.n_ctx);
  if (!cache.ok()) return cache.status();
  items.push_back({"KV cache at -c " + std::to_string(request.n_ctx), *cache});
  if (request.n_caches > 1) {
    auto baseline = kv_cache_bytes(c, KvCacheOptions{.ladder = "contiguous"}, request.n_ctx);
    items.push_back({"f16 baseline cache", baseline.ok() ? *baseline : 0});
  }
  const uint64_t vocab = static_cast<uint64_t>(c.n_vocab);
  items.push_back({"logits (" + std::to_string(request.logits_rows) + " x " + std::to_string(c.n_vocab) + " f32)",
                   static_cast<uint64_t>(request.logits_rows) * vocab * sizeof(float) *
                       static_cast<uint64_t>(request.n_caches)});
  // The forward pass's activations for one batch of up to 512 positions (kMaxBatch): x, xn, q, k, v,
  // attention output, gate, up, projection — f32 — plus the batch's logits.
  const uint64_t batch = static_cast<uint64_t>(std::min(request.n_ctx, kMaxBatch));
  const uint64_t q_dim = static_cast<uint64_t>(c.n_heads) * c.head_dim;
  const uint64_t kv_dim = static_cast<uint64_t>(c.n_kv_heads) * c.head_dim;
  const uint64_t per_position = 3ull * c.n_embd + 2 * q_dim + 2 * kv_dim + 2ull * c.n_ff;
  items.push_back({"batch activations", batch * per_position * sizeof(float)});
  if (request.input_tokens > 0) {
    items.push_back({"input tokens", static_cast<uint64_t>(request.input_tokens) * sizeof(int32_t)});
  }
  return items;
}

}  // namespace kvtier
