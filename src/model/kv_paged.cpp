// The tiered paged KV cache behind the KvCache interface: storage and the
// precision ladder from kv/tiered_store.h, attention from kernels/paged_attention.h.
#include <string>
#include <vector>

#include "kernels/paged_attention.h"
#include "kv/tiered_store.h"
#include "kvtier/kv_options.h"
#include "kvtier/model.h"

namespace kvtier {

namespace {

class PagedKvCache final : public KvCache {
 public:
  explicit PagedKvCache(std::unique_ptr<kv::TieredKvStore> store) : store_(std::move(store)) {}

  const KvGeometry& geometry() const override { return store_->geometry(); }
  int n_tokens() const override { return store_->n_tokens(geometry().n_layers - 1); }
  void truncate(int n_tokens) override { store_->truncate(n_tokens); }
  size_t resident_bytes() const override { return store_->memory().total_bytes; }
  std::string describe() const override {
    return "paged KV cache, ladder " + store_->ladder().describe() + ", keys " +
           (store_->keys_rotated() ? "rotated per-token" : "per-channel") + "\n" + store_->memory().describe() +
           "\nre-encoded " + std::to_string(store_->reencoded_pages()) + " pages in " +
           std::to_string(store_->reencode_seconds() * 1e3) + " ms";
  }

  Status store(int layer, int pos, int n, const float* k, const float* v) override {
    return store_->append(layer, pos, n, k, v);
  }

  Status attend(int layer, int pos, int n, int n_heads, const float* q, float* out, float scale,
              ThreadPool& pool) override {
    store_->gather_pages(layer, pages_);
    kernels::PagedKv view;
    view.pages = pages_;
    view.n_kv_heads = geometry().n_kv_heads;
    view.head_dim = geometry().head_dim;
    view.keys_rotated = store_->keys_rotated();
    kernels::paged_attention(view, pos, n, n_heads, q, scale, out, pool);
    // Pages that have wholly left their rung move down the ladder now that this
    // layer's attention no longer needs them (between layers, not inside the kernel).
    return store_->rebalance(layer);
  }

 private:
  std::unique_ptr<kv::TieredKvStore> store_;
  std::vector<kv::PageRef> pages_;  // scratch: the layer's pages in position order
};

}  // namespace

Result<std::unique_ptr<KvCache>> make_kv_cache(const ModelConfig& config, int max_tokens,
                                               const KvCacheOptions& options) {
  if (options.ladder == "contiguous") return make_contiguous_kv_cache(config, max_tokens);
  if (options.sinks < 0 || options.sinks > kv::kTokensPerPage) {
    return Status::error("--kv-sinks must be between 0 and " + std::to_string(kv::kTokensPerPage));
  }
  auto ladder = kv::parse_ladder(options.ladder, options.sinks);
  if (!ladder.ok()) return Status::error(ladder.error());
  kv::TieredKvOptions tiered;
  tiered.ladder = *ladder;
  if (options.key_mode == "channel") {
    tiered.key_mode = kv::KeyMode::PerChannel;
  } else if (options.key_mode == "rotated") {
    tiered.key_mode = kv::KeyMode::RotatedPerToken;
  } else {
    return Status::error("unknown key mode '" + options.key_mode + "' (--kv-keys: channel or rotated)");
  }
  auto store = kv::TieredKvStore::create(config.kv_geometry(max_tokens), tiered);
  if (!store.ok()) return Status::error(store.error());
  return std::unique_ptr<KvCache>(new PagedKvCache(std::move(*store)));
}

}  // namespace kvtier
