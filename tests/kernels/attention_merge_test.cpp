// Attention over a page list split into disjoint parts and merged with merge_attention equals attention
// over the whole list: what the cold tier relies on to attend its pages in chunks. On every target.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include <hwy/targets.h>

#include "kernels/paged_attention.h"
#include "kv/tiered_store.h"

namespace kvtier::kernels {
namespace {

struct Filled {
  std::unique_ptr<kv::TieredKvStore> store;
  std::vector<kv::PageRef> pages;
};

Filled fill_store(const char* ladder, int n_kv_heads, int head_dim, int n_tokens) {
  KvGeometry g{1, n_kv_heads, head_dim, n_tokens + 64};
  kv::TieredKvOptions options;
  options.ladder = *kv::parse_ladder(ladder, 4);
  Filled f;
  auto created = kv::TieredKvStore::create(g, options);
  f.store = std::move(created.value());
  std::mt19937 rng(7);
  std::normal_distribution<float> normal;
  std::vector<float> k(static_cast<size_t>(n_tokens) * g.kv_dim()), v(k.size());
  for (float& x : k) x = normal(rng);
  for (float& x : v) x = normal(rng);
  EXPECT_TRUE(f.store->append(0, 0, n_tokens, k.data(), v.data()).ok());
  EXPECT_TRUE(f.store->rebalance(0).ok());
  f.store->gather_pages(0, f.pages);
  return f;
}

TEST(AttentionMerge, ChunkedPrefixPlusRestEqualsWhole) {
  ThreadPool pool(2);
  for (int64_t target : hwy::SupportedAndGeneratedTargets()) {
    hwy::SetSupportedTargetsForTest(target);
    for (const char* ladder : {"f16", "f16:64,q4:128,q2"}) {
      const int n_kv_heads = 3, head_dim = 40, n_heads = 6, n_tokens = 611;
      Filled f = fill_store(ladder, n_kv_heads, head_dim, n_tokens);
      ASSERT_GE(f.pages.size(), 6u);
      for (int n_q : {1, 5}) {
        const int pos = n_tokens - n_q;  // queries are the last n_q cached positions
        std::mt19937 rng(n_q);
        std::normal_distribution<float> normal;
        const size_t rows = static_cast<size_t>(n_q) * n_heads;
        std::vector<float> q(rows * head_dim);
        for (float& x : q) x = normal(rng);
        PagedKv whole{f.pages, n_kv_heads, head_dim};
        std::vector<float> expected(q.size()), expected_lse(rows);
        paged_attention(whole, pos, n_q, n_heads, q.data(), 0.125f, expected.data(), pool, expected_lse.data());
        // Old pages (all positions < pos) in two chunks, then the rest with the causal tail.
        size_t split = 0;
        while (split < f.pages.size() && f.pages[split].first_pos + f.pages[split].n_tokens <= pos) ++split;
        ASSERT_GE(split, 3u);
        const size_t mid = split / 2;
        std::vector<float> out(q.size()), lse(rows), part(q.size()), part_lse(rows);
        PagedKv a{std::span(f.pages).subspan(0, mid), n_kv_heads, head_dim, false, true};
        PagedKv b{std::span(f.pages).subspan(mid, split - mid), n_kv_heads, head_dim, false, true};
        PagedKv c{std::span(f.pages).subspan(split), n_kv_heads, head_dim};
        paged_attention(a, pos, n_q, n_heads, q.data(), 0.125f, out.data(), pool, lse.data());
        paged_attention(b, pos, n_q, n_heads, q.data(), 0.125f, part.data(), pool, part_lse.data());
        merge_attention(out.data(), lse.data(), part.data(), part_lse.data(), static_cast<int64_t>(rows), head_dim);
        paged_attention(c, pos, n_q, n_heads, q.data(), 0.125f, part.data(), pool, part_lse.data());
        merge_attention(out.data(), lse.data(), part.data(), part_lse.data(), static_cast<int64_t>(rows), head_dim);
        for (size_t i = 0; i < rows; ++i) EXPECT_NEAR(lse[i], expected_lse[i], 1e-4f) << hwy::TargetName(target);
        for (size_t i = 0; i < out.size(); ++i) {
          ASSERT_NEAR(out[i], expected[i], 1e-5f * (1 + std::abs(expected[i])))
              << hwy::TargetName(target) << " " << ladder << " n_q " << n_q << " i " << i;
        }
      }
    }
  }
  hwy::SetSupportedTargetsForTest(0);
}

TEST(AttentionMerge, LseIsTheLogOfTheSoftmaxDenominator) {
  ThreadPool pool(1);
  Filled f = fill_store("f16", 1, 16, 70);
  std::vector<float> q(16, 0.0f), out(16), lse(1);
  PagedKv whole{f.pages, 1, 16};
  paged_attention(whole, 69, 1, 1, q.data(), 1.0f, out.data(), pool, lse.data());
  EXPECT_NEAR(lse[0], std::log(70.0f), 1e-5f);  // a zero query scores 0 everywhere: log(70 * e^0)
}

}  // namespace
}  // namespace kvtier::kernels
