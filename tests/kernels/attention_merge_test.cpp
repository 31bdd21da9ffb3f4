// Attention over a page list split into disjoint parts and merged with merge_attention equals attention
// over the whole list: what the cold tier relies on to attend its pages in chunks. On every target.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include <hwy/targets.h>

#include "kernel_test_util.h"
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
    testing::TargetGuard guard(target);  // reset even when an ASSERT ends the test
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
}

// One call over segments (PagedKv::segment_starts) gives the same bits as one call per segment folded in order
// (fold = true), for decode and prefill, with and without a sliding window: what makes the paged cache's output
// independent of which segments came from disk (model/kv_paged.cpp). On every target.
TEST(AttentionMerge, SegmentedCallEqualsOneCallPerSegmentBitForBit) {
  ThreadPool pool(3);
  for (int64_t target : hwy::SupportedAndGeneratedTargets()) {
    testing::TargetGuard guard(target);  // reset even when an ASSERT ends the test
    for (const char* ladder : {"f16", "f16:64,q4:128,q2"}) {
      const int n_kv_heads = 2, head_dim = 32, n_heads = 4, n_tokens = 611;
      Filled f = fill_store(ladder, n_kv_heads, head_dim, n_tokens);
      const int n_pages = static_cast<int>(f.pages.size());
      ASSERT_GE(n_pages, 7);
      const std::vector<int> starts = {0, 3, 4, 7, n_pages};  // uneven, one of a single page
      for (int window : {0, 150}) {
        for (int n_q : {1, 40}) {
          const int pos = n_tokens - n_q;
          std::mt19937 rng(n_q + window);
          std::normal_distribution<float> normal;
          const size_t rows = static_cast<size_t>(n_q) * n_heads;
          std::vector<float> q(rows * head_dim);
          for (float& x : q) x = normal(rng);
          PagedKv whole{f.pages, n_kv_heads, head_dim};
          whole.window = window;
          whole.segment_starts = starts;
          std::vector<float> one(q.size()), one_lse(rows), per(q.size()), per_lse(rows);
          paged_attention(whole, pos, n_q, n_heads, q.data(), 0.125f, one.data(), pool, one_lse.data());
          for (size_t s = 0; s + 1 < starts.size(); ++s) {
            PagedKv part{std::span(f.pages).subspan(starts[s], starts[s + 1] - starts[s]), n_kv_heads, head_dim, false,
                         s + 2 < starts.size()};
            part.window = window;
            paged_attention(part, pos, n_q, n_heads, q.data(), 0.125f, per.data(), pool, per_lse.data(), s > 0);
          }
          EXPECT_EQ(std::memcmp(one.data(), per.data(), one.size() * sizeof(float)), 0)
              << hwy::TargetName(target) << " " << ladder << " n_q " << n_q << " window " << window;
          EXPECT_EQ(std::memcmp(one_lse.data(), per_lse.data(), rows * sizeof(float)), 0) << hwy::TargetName(target);
          // And it is the attention over the whole list (up to summation order).
          PagedKv plain{f.pages, n_kv_heads, head_dim};
          plain.window = window;
          std::vector<float> expected(q.size());
          paged_attention(plain, pos, n_q, n_heads, q.data(), 0.125f, expected.data(), pool);
          for (size_t i = 0; i < one.size(); ++i) ASSERT_NEAR(one[i], expected[i], 1e-5f * (1 + std::abs(expected[i])));
        }
      }
    }
  }
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
