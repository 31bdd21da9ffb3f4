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

  std::string policy() const override {
    return std::string("contiguous ") + (storage_.element_type() == kv::ElementType::F16 ? "f16" : "f32");
  }

  // Stream: u32 magic "KVCT", i32 n_tokens, u32 n_layers, u32 kv_dim, u32 element bytes, then per layer the
  // key rows [n_tokens, kv_dim] and value rows [n_tokens, kv_dim] as stored.
  Status save(ByteSink& out) override {
    const KvGeometry& g = geometry();
    const uint32_t header[5] = {kMagic, static_cast<uint32_t>(n_tokens_), static_cast<uint32_t>(g.n_layers),
                                static_cast<uint32_t>(g.kv_dim()), static_cast<uint32_t>(storage_.element_bytes())};
    if (Status s = out.write(header, sizeof header); !s.ok()) return s;
    const size_t bytes = static_cast<size_t>(n_tokens_) * g.kv_dim() * storage_.element_bytes();
    for (int layer = 0; layer < g.n_layers && n_tokens_ > 0; ++layer) {
      if (Status s = out.write(storage_.key_row(layer, 0), bytes); !s.ok()) return s;
      if (Status s = out.write(storage_.value_row(layer, 0), bytes); !s.ok()) return s;
    }
    return Status();
  }

  Status load(ByteSource& in) override {
    const KvGeometry& g = geometry();
    n_tokens_ = 0;
    uint32_t header[5];
    if (Status s = in.read(header, sizeof header); !s.ok()) return s;
    if (header[0] != kMagic) return Status::error("not a kvtier contiguous KV stream (bad magic)");
    if (header[2] != static_cast<uint32_t>(g.n_layers) || header[3] != static_cast<uint32_t>(g.kv_dim()) ||
        header[4] != storage_.element_bytes() || header[1] > static_cast<uint32_t>(g.max_tokens)) {
      return Status::error("saved contiguous cache has another shape (" + std::to_string(header[1]) + " positions, " +
                           std::to_string(header[2]) + " layers, kv_dim " + std::to_string(header[3]) + ")");
    }
    const int n = static_cast<int>(header[1]);
    const size_t bytes = static_cast<size_t>(n) * g.kv_dim() * storage_.element_bytes();
    for (int layer = 0; layer < g.n_layers && n > 0; ++layer) {
      if (Status s = in.read(const_cast<void*>(storage_.key_row(layer, 0)), bytes); !s.ok()) return s;
      if (Status s = in.read(const_cast<void*>(storage_.value_row(layer, 0)), bytes); !s.ok()) return s;
    }
    n_tokens_ = n;
    return Status();
  }

  Status store(int layer, int pos, int n, const float* k, const float* v) override {
    storage_.write_keys(layer, pos, n, k);
    storage_.write_values(layer, pos, n, v);
    // Positions become visible once the last layer has stored them.
    if (layer == geometry().n_layers - 1) n_tokens_ = std::max(n_tokens_, pos + n);
    return {};
  }

  Status attend(int layer, int pos, int n, int n_heads, const float* q, float* out, const AttentionParams& params,
                ThreadPool& pool) override {
    const KvGeometry& g = geometry();
    const int group = n_heads / g.n_kv_heads;
    const size_t q_dim = static_cast<size_t>(n_heads) * g.head_dim;
    kernels::ContiguousKv view;
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
        // The window's positions [first, pos + i] are one contiguous run of rows.
        const int first = params.first_visible(pos + i);
        kernels::ContiguousKv run = view;
        run.k = storage_.key_row(layer, first);
        run.v = storage_.value_row(layer, first);
        kernels::attend_one_head(q + offset, run, h / group, pos + i + 1 - first, params.scale, scores, out + offset,
                                 params.softcap);
      }
    });
    return {};
  }

 private:
  static constexpr uint32_t kMagic = 0x5443564Bu;  // "KVCT"
  kv::ContiguousStorage storage_;
  int n_tokens_ = 0;
  std::vector<std::vector<float>> scores_;  // per thread: [pos + n] attention scores
};

}  // namespace

std::unique_ptr<KvCache> make_contiguous_kv_cache(const ModelConfig& config, int max_tokens, bool f16) {
  return std::make_unique<ContiguousKvCache>(config.kv_geometry(max_tokens), f16);
}

}  // namespace kvtier
