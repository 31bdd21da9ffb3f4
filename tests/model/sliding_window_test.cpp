// Sliding-window attention through both caches (AttentionParams::window, softcap), and the tiered cache
// releasing a windowed layer's pages that fall behind its window (kv/tiered_store.h): attention over what stays
// equals attention over everything, the windowed layer's bytes stay bounded while the global layer's grow,
// and truncating back behind released pages empties the cache instead of attending to missing positions.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "kvtier/kv_options.h"
#include "kvtier/model.h"

namespace kvtier {
namespace {

constexpr int kWindow = 40;  // not a multiple of the 64-token page: windows cut pages in the middle

// Two layers, layer 0 windowed, layer 1 global (a Gemma-style pattern of 2).
ModelConfig windowed_config(int window) {
  ModelConfig c;
  c.n_layers = 2;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.head_dim = 64;
  c.sliding_window = window;
  c.sliding_window_pattern = 2;
  return c;
}

struct Rows {
  std::vector<float> k, v, q;  // [n, kv_dim], [n, kv_dim], [n, n_heads * head_dim]
};

Rows random_rows(const ModelConfig& c, int n, std::mt19937& rng) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  Rows r;
  r.k.resize(static_cast<size_t>(n) * c.n_kv_heads * c.head_dim);
  r.v.resize(r.k.size());
  r.q.resize(static_cast<size_t>(n) * c.n_heads * c.head_dim);
  for (auto* v : {&r.k, &r.v, &r.q}) {
    for (float& x : *v) x = normal(rng);
  }
  return r;
}

// Feeds n positions to every cache in batches of `batch` and checks layer by layer that each cache's attention
// agrees with the first one's (the reference), within tol.
void feed_and_compare(const ModelConfig& c, std::vector<KvCache*> caches, int n, int batch, float softcap, float tol,
                      std::mt19937& rng) {
  ThreadPool pool(2);
  const int q_dim = c.n_heads * c.head_dim;
  for (int pos = caches[0]->n_tokens(); pos < n; pos += batch) {
    const int count = std::min(batch, n - pos);
    for (int layer = 0; layer < c.n_layers; ++layer) {
      const Rows r = random_rows(c, count, rng);
      const AttentionParams params{0.125f, c.layer_window(layer), softcap};
      std::vector<float> expected(static_cast<size_t>(count) * q_dim);
      for (size_t i = 0; i < caches.size(); ++i) {
        ASSERT_TRUE(caches[i]->store(layer, pos, count, r.k.data(), r.v.data()).ok());
        std::vector<float> out(expected.size());
        ASSERT_TRUE(caches[i]->attend(layer, pos, count, c.n_heads, r.q.data(), out.data(), params, pool).ok());
        if (i == 0) {
          expected = out;
          continue;
        }
        for (size_t j = 0; j < out.size(); ++j) {
          ASSERT_NEAR(out[j], expected[j], tol) << "cache " << i << " layer " << layer << " pos " << pos;
        }
      }
    }
  }
}

// The contiguous cache attends the window alone: a window of the whole context is plain causal attention,
// and a window of 1 returns the query's own value.
TEST(SlidingWindow, ContiguousWindowOfOneIsTheOwnValue) {
  ModelConfig c = windowed_config(1);
  c.sliding_window_pattern = 1;  // every layer windowed
  auto cache = make_contiguous_kv_cache(c, 64, false);
  std::mt19937 rng(1);
  ThreadPool pool(1);
  for (int pos = 0; pos < 8; ++pos) {
    const Rows r = random_rows(c, 1, rng);
    ASSERT_TRUE(cache->store(0, pos, 1, r.k.data(), r.v.data()).ok());
    std::vector<float> out(r.q.size());
    ASSERT_TRUE(cache->attend(0, pos, 1, c.n_heads, r.q.data(), out.data(), {0.125f, 1, 0}, pool).ok());
    for (int h = 0; h < c.n_heads; ++h) {
      const int kv_head = h / (c.n_heads / c.n_kv_heads);
      for (int d = 0; d < c.head_dim; ++d) {
        EXPECT_FLOAT_EQ(out[h * c.head_dim + d], r.v[kv_head * c.head_dim + d]);
      }
    }
  }
}

// Paged f16 (which releases layer 0's old pages) against contiguous f32, prefill batches and decode steps,
// with and without Gemma 2's soft-cap.
TEST(SlidingWindow, PagedCacheWithReleasedPagesMatchesContiguous) {
  const ModelConfig c = windowed_config(kWindow);
  for (const float softcap : {0.0f, 3.0f}) {
    auto contiguous = make_contiguous_kv_cache(c, 512, false);
    auto paged = make_kv_cache(c, 512, {}).value();
    std::mt19937 rng(7);
    feed_and_compare(c, {contiguous.get(), paged.get()}, 200, 37, softcap, 2e-3f, rng);  // prefill
    feed_and_compare(c, {contiguous.get(), paged.get()}, 330, 1, softcap, 2e-3f, rng);   // decode
  }
}

// With a quantized ladder, releasing changes nothing the window can see: a windowed cache and one that keeps
// every page (the same config without the window in its geometry) attend alike.
TEST(SlidingWindow, LadderRungsApplyToWhatStays) {
  const ModelConfig c = windowed_config(kWindow);
  ModelConfig keep_all = c;
  keep_all.sliding_window = 0;
  KvCacheOptions ladder;
  ladder.ladder = "f16:64,q8:128,q4";
  auto keeping = make_kv_cache(keep_all, 1024, ladder).value();  // attends with c's windows (feed uses c)
  auto releasing = make_kv_cache(c, 1024, ladder).value();
  std::mt19937 rng(3);
  feed_and_compare(c, {keeping.get(), releasing.get()}, 100, 50, 0.0f, 1e-4f, rng);
  feed_and_compare(c, {keeping.get(), releasing.get()}, 700, 1, 0.0f, 1e-4f, rng);
  // The windowed layer holds its window (plus page granularity and the ring), the global layer everything.
  EXPECT_LT(releasing->resident_bytes(), keeping->resident_bytes());
}

TEST(SlidingWindow, WindowedLayerBytesStayBounded) {
  const ModelConfig c = windowed_config(kWindow);
  ModelConfig global_only = c;
  global_only.sliding_window = 0;
  auto windowed = make_kv_cache(c, 4096, {}).value();
  auto global = make_kv_cache(global_only, 4096, {}).value();
  std::mt19937 rng(5);
  feed_and_compare(c, {windowed.get()}, 256, 64, 0.0f, 0.0f, rng);
  const size_t at_256 = windowed->resident_bytes();
  feed_and_compare(c, {windowed.get()}, 2048, 128, 0.0f, 0.0f, rng);
  feed_and_compare(global_only, {global.get()}, 2048, 256, 0.0f, 0.0f, rng);
  // f16: 2 layers x 2 heads x 64 dims x 2 (K, V) x 2 bytes = 1 KiB per position for both layers.
  const size_t per_position_per_layer = static_cast<size_t>(c.n_kv_heads) * c.head_dim * 2 * 2;
  const size_t grown = windowed->resident_bytes() - at_256;
  // From 256 to 2048 positions only the global layer grew (pool slabs come in steps: allow one slab of slack).
  EXPECT_LE(grown, (2048 - 256) * per_position_per_layer + (256u << 10));
  EXPECT_GE(grown, (2048 - 256) * per_position_per_layer / 2);
  EXPECT_LT(windowed->resident_bytes(), global->resident_bytes() * 3 / 4);
  std::printf("2048 positions, window %d on 1 of 2 layers, paged f16: %zu bytes with release, %zu without\n", kWindow,
              windowed->resident_bytes(), global->resident_bytes());
}

TEST(SlidingWindow, TruncatingBehindReleasedPagesEmptiesTheCache) {
  const ModelConfig c = windowed_config(kWindow);
  auto paged = make_kv_cache(c, 1024, {}).value();
  std::mt19937 rng(9);
  feed_and_compare(c, {paged.get()}, 600, 100, 0.0f, 0.0f, rng);
  paged->truncate(590);  // the window of position 590 is still held
  EXPECT_EQ(paged->n_tokens(), 590);
  paged->truncate(300);  // position 300's window was released
  EXPECT_EQ(paged->n_tokens(), 0);
  feed_and_compare(c, {paged.get()}, 100, 100, 0.0f, 0.0f, rng);  // and the cache works again
  EXPECT_EQ(paged->n_tokens(), 100);
}

}  // namespace
}  // namespace kvtier
