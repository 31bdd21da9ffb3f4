// Contiguous attention (the plain f16/f32 cache): SIMD vs scalar reference on
// every compiled target, and agreement with the paged kernel on f16 pages.
#include <gtest/gtest.h>
#include <hwy/targets.h>

#include <cmath>
#include <random>
#include <vector>

#include "kernels/attention.h"
#include "kernels/paged_attention.h"
#include "kv/codec.h"
#include "kv/page_format.h"
#include "kvtier/f16.h"

namespace kvtier::kernels {
namespace {

struct Case {
  int n_kv_heads, head_dim, n_pos;
  bool f16;
};

// Random rows with a few large "outlier" channels, as real keys have.
std::vector<float> random_rows(size_t n, int head_dim, uint32_t seed, float outlier_scale = 20.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> x(n);
  for (size_t i = 0; i < n; ++i) x[i] = normal(rng) * ((i % head_dim) == 3 ? outlier_scale : 1.0f);
  return x;
}

TEST(ContiguousAttention, SimdMatchesReferenceOnEveryTarget) {
  const Case cases[] = {{2, 64, 1, true}, {2, 64, 37, true}, {1, 40, 129, false}, {3, 17, 5, true}, {2, 128, 300, true}};
  for (uint32_t target : hwy::SupportedAndGeneratedTargets()) {
    hwy::SetSupportedTargetsForTest(target);
    for (const Case& c : cases) {
      const size_t row = static_cast<size_t>(c.n_kv_heads) * c.head_dim;
      std::vector<float> kf = random_rows(c.n_pos * row, c.head_dim, 1), vf = random_rows(c.n_pos * row, c.head_dim, 2);
      std::vector<uint16_t> kh(kf.size()), vh(vf.size());
      for (size_t i = 0; i < kf.size(); ++i) {
        kh[i] = f32_to_f16(kf[i]);
        vh[i] = f32_to_f16(vf[i]);
      }
      ContiguousKv kv;
      kv.k = c.f16 ? static_cast<const void*>(kh.data()) : kf.data();
      kv.v = c.f16 ? static_cast<const void*>(vh.data()) : vf.data();
      kv.f16 = c.f16;
      kv.n_kv_heads = c.n_kv_heads;
      kv.head_dim = c.head_dim;
      const std::vector<float> q = random_rows(c.head_dim, c.head_dim, 3);
      std::vector<float> scores(c.n_pos), expected(c.head_dim), actual(c.head_dim);
      for (int h = 0; h < c.n_kv_heads; ++h) {
        attend_one_head_reference(q.data(), kv, h, c.n_pos, 0.125f, scores.data(), expected.data());
        attend_one_head(q.data(), kv, h, c.n_pos, 0.125f, scores.data(), actual.data());
        for (int d = 0; d < c.head_dim; ++d) {
          ASSERT_NEAR(actual[d], expected[d], 1e-4f * (1 + std::fabs(expected[d])))
              << hwy::TargetName(target) << " n_pos " << c.n_pos << " head " << h << " d " << d;
        }
      }
    }
  }
  hwy::SetSupportedTargetsForTest(0);
}

TEST(ContiguousAttention, AgreesWithThePagedKernelOnF16Pages) {
  const int n_kv_heads = 2, head_dim = 64, n_heads = 8, n_pos = 150, P = kv::kTokensPerPage;
  const size_t row = static_cast<size_t>(n_kv_heads) * head_dim;
  std::vector<float> k = random_rows(n_pos * row, head_dim, 4, 300.0f), v = random_rows(n_pos * row, head_dim, 5, 300.0f);
  // Round to f16 once so both caches hold identical values.
  for (float& x : k) x = f16_to_f32(f32_to_f16(x));
  for (float& x : v) x = f16_to_f32(f32_to_f16(x));
  std::vector<uint16_t> kh(k.size()), vh(v.size());
  for (size_t i = 0; i < k.size(); ++i) {
    kh[i] = f32_to_f16(k[i]);
    vh[i] = f32_to_f16(v[i]);
  }
  kv::PageFormat format;
  std::string error;
  ASSERT_TRUE(kv::make_page_format(kv::Precision::F16, kv::KeyMode::PerChannel, P, n_kv_heads, head_dim,
                                   kv::default_group(head_dim), &format, &error))
      << error;
  const int n_pages = (n_pos + P - 1) / P;
  std::vector<std::vector<uint8_t>> pages(n_pages, std::vector<uint8_t>(format.page_bytes));
  std::vector<kv::PageRef> refs;
  for (int p = 0; p < n_pages; ++p) {
    const int rows = std::min(P, n_pos - p * P);
    kv::write_rows(format, pages[p].data(), 0, rows, k.data() + p * P * row, v.data() + p * P * row);
    refs.push_back({pages[p].data(), &format, p * P, rows});
  }
  PagedKv paged;
  paged.pages = refs;
  paged.n_kv_heads = n_kv_heads;
  paged.head_dim = head_dim;
  const std::vector<float> q = random_rows(static_cast<size_t>(n_heads) * head_dim, head_dim, 6);
  std::vector<float> paged_out(q.size());
  ThreadPool pool(2);
  paged_attention(paged, n_pos - 1, 1, n_heads, q.data(), 0.125f, paged_out.data(), pool);
  ContiguousKv contiguous{kh.data(), vh.data(), true, n_kv_heads, head_dim};
  std::vector<float> scores(n_pos), out(head_dim);
  for (int h = 0; h < n_heads; ++h) {
    attend_one_head(q.data() + h * head_dim, contiguous, h / (n_heads / n_kv_heads), n_pos, 0.125f, scores.data(),
                    out.data());
    for (int d = 0; d < head_dim; ++d) {
      ASSERT_NEAR(paged_out[h * head_dim + d], out[d], 1e-4f * (1 + std::fabs(out[d]))) << "head " << h << " d " << d;
    }
  }
}

}  // namespace
}  // namespace kvtier::kernels
