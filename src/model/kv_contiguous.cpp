// The plain contiguous KV cache: storage from kv/, attention from kernels/.
#include <algorithm>
#include <string>
#include <vector>

#include "kernels/attention.h"
#include "kv/contiguous_storage.h"
#include "kvtier/model.h"

namespace kvtier {

namespace {

class ContiguousKvCache final : public KvCache {
 public:
  ContiguousKvCache(const KvGeometry& geometry, bool f16)
      : storage_(geometry, f16 ? kv::ElementType::F16 : kv::ElementType::F32) {}

  const KvGeometry& geometry() const override { return storage_.geometry(); }
  int n_tokens() const override { return n_tokens_; }
  void truncate(int n_tokens) override { n_tokens_ = std::clamp(n_tokens, 0, n_tokens_); }
  size_t resident_bytes() const override { return storage_.bytes(); }
  std::string describe() const override {
    const KvGeometry& g = geometry();
    return "contiguous " + std::string(storage_.element_type() == kv::ElementType::F16 ? "f16" : "f32") +
           " KV cache: " + std::to_string(g.n_layers) + " layers x " + std::to_string(g.max_tokens) +
           " positions x " + std::to_string(g.kv_dim()) + " (K and V), " +
           std::to_string(resident_bytes() >> 20) + " MiB";
  }

  Status store(int layer, int pos, int n, const float* k, const float* v) override {
    storage_.write_keys(layer, pos, n, k);
    storage_.write_values(layer, pos, n, v);
    // Positions become visible once the last layer has stored them.
    if (layer == geometry().n_layers - 1) n_tokens_ = std::max(n_tokens_, pos + n);
    return {};
  }

  Status attend(int layer, int pos, int n, int n_heads, const float* q, float* out, float scale,
              ThreadPool& pool) override {
    const KvGeometry& g = geometry();
    const int group = n_heads / g.n_kv_heads;
    const size_t q_dim = static_cast<size_t>(n_heads) * g.head_dim;
    kernels::ContiguousKv view;
    view.k = storage_.key_row(layer, 0);
    view.v = storage_.value_row(layer, 0);
    view.f16 = storage_.element_type() == kv::ElementType::F16;
    view.n_kv_heads = g.n_kv_heads;
    view.head_dim = g.head_dim;
    scores_.resize(pool.size());
    for (auto& s : scores_) s.resize(static_cast<size_t>(pos + n));
    const int64_t items = static_cast<int64_t>(n) * n_heads;
    // Items are interleaved across threads because causal rows grow in length.
    pool.run([&](int thread, int n_threads) {
      float* scores = scores_[thread].data();
      for (int64_t item = thread; item < items; item += n_threads) {
        const int i = static_cast<int>(item / n_heads);
        const int h = static_cast<int>(item % n_heads);
        const size_t offset = i * q_dim + static_cast<size_t>(h) * g.head_dim;
        kernels::attend_one_head(q + offset, view, h / group, pos + i + 1, scale, scores, out + offset);
      }
    });
    return {};
  }

 private:
  kv::ContiguousStorage storage_;
  int n_tokens_ = 0;
  std::vector<std::vector<float>> scores_;  // per thread: [pos + n] attention scores
};

}  // namespace

std::unique_ptr<KvCache> make_contiguous_kv_cache(const ModelConfig& config, int max_tokens, bool f16) {
  return std::make_unique<ContiguousKvCache>(config.kv_geometry(max_tokens), f16);
}

}  // namespace kvtier
