// Decode attention over KV pages in the project's page format, decoded inside the shader (split-K over pages,
// log-sum-exp merge), against the CPU scalar reference (kernels/paged_attention.h) on pages built by the real
// page encoder (kv/codec.h): every supported width, GQA 1..8, head_dim 64, 128 and 256, a partial last page, and
// a mixed block table (f16 sink pages then quantized pages) run as two dispatches merged together.
#include <algorithm>
#include <cmath>
#include <random>

#include "kernels/paged_attention.h"
#include "kv/codec.h"
#include "vulkan_test_util.h"

namespace kvtier::vulkan {
namespace {

using testing::normal_rows;
using testing::VulkanTest;

// log sum_t e^(scale q.k_t) of each query head over every cached position, in double over the reference
// decoder's keys (the CPU SIMD kernel's lse is not exact on AVX-512 VNNI hosts: it rounds 2- and 4-bit
// pages' coefficients to 8 bits).
std::vector<double> reference_lse(const std::vector<kv::PageRef>& pages, int n_kv_heads, int head_dim, int n_heads,
                                  const std::vector<float>& q, float scale) {
  int n_total = 0;
  for (const kv::PageRef& p : pages) n_total += p.n_tokens;
  std::vector<float> k(static_cast<size_t>(n_total) * head_dim), v(k.size());  // [n_total][head_dim], one KV head
  std::vector<double> lse(n_heads);
  const int group = n_heads / n_kv_heads;
  for (int kvh = 0; kvh < n_kv_heads; ++kvh) {
    for (const kv::PageRef& p : pages) {
      const size_t at = static_cast<size_t>(p.first_pos) * head_dim;
      kv::decode_page_head(*p.format, p.data, kvh, p.n_tokens, k.data() + at, v.data() + at);
    }
    for (int h = kvh * group; h < (kvh + 1) * group; ++h) {
      std::vector<double> scores(n_total);
      double max_score = -INFINITY;
      for (int t = 0; t < n_total; ++t) {
        double dot = 0;
        for (int d = 0; d < head_dim; ++d) dot += static_cast<double>(q[h * head_dim + d]) * k[t * head_dim + d];
        scores[t] = dot * scale;
        max_score = std::max(max_score, scores[t]);
      }
      double sum = 0;
      for (double s : scores) sum += std::exp(s - max_score);
      lse[h] = max_score + std::log(sum);
    }
  }
  return lse;
}

struct AttentionCase {
  kv::Precision sink_precision;  // of the first `sink_pages` pages
  int sink_pages;
  kv::Precision precision;  // of the rest
  int n_heads, n_kv_heads, head_dim, n_tokens;
  uint32_t pages_per_split;
};

class VulkanAttentionTest : public VulkanTest, public ::testing::WithParamInterface<AttentionCase> {};

TEST_P(VulkanAttentionTest, MatchesTheScalarReference) {
  const AttentionCase& c = GetParam();
  kv::PageFormat sink_format, format;
  std::string error;
  ASSERT_TRUE(kv::make_page_format(c.sink_precision, kv::KeyMode::PerChannel, kv::kTokensPerPage, c.n_kv_heads,
                                   c.head_dim, 0, &sink_format, &error)) << error;
  ASSERT_TRUE(kv::make_page_format(c.precision, kv::KeyMode::PerChannel, kv::kTokensPerPage, c.n_kv_heads, c.head_dim,
                                   0, &format, &error)) << error;
  const int kv_dim = c.n_kv_heads * c.head_dim;
  const std::vector<float> k = normal_rows(static_cast<size_t>(c.n_tokens) * kv_dim, 21);
  const std::vector<float> v = normal_rows(static_cast<size_t>(c.n_tokens) * kv_dim, 22);

  // The pool: every page back to back; the page lists of the two formats: (byte offset, valid tokens).
  const int n_pages = (c.n_tokens + kv::kTokensPerPage - 1) / kv::kTokensPerPage;
  std::vector<uint8_t> pool;
  std::vector<kv::PageRef> refs;
  std::vector<uint32_t> sink_list, list;
  std::vector<size_t> offsets;
  for (int p = 0; p < n_pages; ++p) {
    const kv::PageFormat& f = p < c.sink_pages ? sink_format : format;
    const int first = p * kv::kTokensPerPage, n = std::min(kv::kTokensPerPage, c.n_tokens - first);
    offsets.push_back(pool.size());
    pool.resize(pool.size() + f.page_bytes);
    kv::encode_page(f, k.data() + static_cast<size_t>(first) * kv_dim, v.data() + static_cast<size_t>(first) * kv_dim,
                    n, pool.data() + offsets.back());
    std::vector<uint32_t>& l = p < c.sink_pages ? sink_list : list;
    l.push_back(static_cast<uint32_t>(offsets.back()));
    l.push_back(static_cast<uint32_t>(n));
    refs.push_back(kv::PageRef{nullptr, &f, first, n});
  }
  for (int p = 0; p < n_pages; ++p) refs[p].data = pool.data() + offsets[p];

  const std::vector<float> q = normal_rows(static_cast<size_t>(c.n_heads) * c.head_dim, 23);
  const float scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
  kernels::PagedKv view{refs, c.n_kv_heads, c.head_dim, false, false};
  std::vector<float> expected(q.size());
  kernels::paged_attention_reference(view, c.n_tokens - 1, 1, c.n_heads, q.data(), scale, expected.data());
  const std::vector<double> expected_lse = reference_lse(refs, c.n_kv_heads, c.head_dim, c.n_heads, q, scale);

  const uint32_t sink_splits = sink_list.empty() ? 0 : Kernels::attention_splits(sink_list.size() / 2, c.pages_per_split);
  const uint32_t splits = sink_splits + Kernels::attention_splits(list.size() / 2, c.pages_per_split);
  Buffer pool_b = upload(pool), q_b = upload(q);
  Buffer sink_list_b = sink_list.empty() ? Buffer() : upload(sink_list), list_b = upload(list);
  Buffer part_o = device_buffer(static_cast<size_t>(splits) * q.size() * 4);
  Buffer part_ml = device_buffer(static_cast<size_t>(splits) * c.n_heads * 8);
  Buffer out = device_buffer(q.size() * 4), lse = device_buffer(static_cast<size_t>(c.n_heads) * 4);
  Result<CommandBatch> batch = context_->begin();
  ASSERT_TRUE(batch.ok()) << batch.error();
  poison(*batch, part_o);
  poison(*batch, out);
  if (!sink_list.empty()) {
    Status s = kernels_->decode_attention(*batch, sink_format, pool_b, sink_list_b, sink_list.size() / 2, q_b,
                                          c.n_heads, scale, part_o, part_ml, 0, c.pages_per_split);
    ASSERT_TRUE(s.ok()) << s.message();
  }
  Status s = kernels_->decode_attention(*batch, format, pool_b, list_b, list.size() / 2, q_b, c.n_heads, scale, part_o,
                                        part_ml, sink_splits, c.pages_per_split);
  ASSERT_TRUE(s.ok()) << s.message();
  batch->barrier();
  s = kernels_->merge_attention(*batch, part_o, part_ml, splits, c.n_heads, c.head_dim, out, lse);
  ASSERT_TRUE(s.ok()) << s.message();
  s = context_->submit(*batch);
  ASSERT_TRUE(s.ok()) << s.message();
  const std::vector<float> got = download(out, q.size()), got_lse = download(lse, c.n_heads);
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_NEAR(got[i], expected[i], 1e-4f) << format.describe() << " head " << i / c.head_dim << " dim "
                                            << i % c.head_dim;
  }
  for (int h = 0; h < c.n_heads; ++h) EXPECT_NEAR(got_lse[h], expected_lse[h], 1e-5 * std::fabs(expected_lse[h]) + 1e-5);
}

using kv::Precision;
INSTANTIATE_TEST_SUITE_P(
    Pages, VulkanAttentionTest,
    ::testing::Values(AttentionCase{Precision::F16, 0, Precision::F16, 8, 2, 64, 343, 2},
                      AttentionCase{Precision::F16, 0, Precision::Q8, 4, 2, 128, 200, 1},
                      AttentionCase{Precision::F16, 0, Precision::Q4, 3, 3, 64, 64 * 3, 2},
                      AttentionCase{Precision::F16, 0, Precision::Q2, 16, 2, 128, 301, 3},
                      AttentionCase{Precision::F16, 0, Precision::K8V4, 8, 1, 64, 150, 1},
                      AttentionCase{Precision::F16, 0, Precision::K16V2, 6, 2, 64, 77, 1},
                      AttentionCase{Precision::F16, 2, Precision::Q4, 8, 2, 64, 64 * 5 + 9, 2},
                      AttentionCase{Precision::F16, 0, Precision::Q2, 6, 1, 256, 130, 2},
                      AttentionCase{Precision::F16, 0, Precision::F16, 1, 1, 128, 65, 1},
                      AttentionCase{Precision::F16, 0, Precision::K4V8, 5, 1, 64, 64 * 4, 4}),
    [](const ::testing::TestParamInfo<AttentionCase>& info) {
      return std::string(kv::precision_name(info.param.precision)) + "_gqa" +
             std::to_string(info.param.n_heads / info.param.n_kv_heads) + "_hd" +
             std::to_string(info.param.head_dim) + (info.param.sink_pages ? "_f16sinks" : "");
    });

TEST_F(VulkanTest, DecodeAttentionRejectsWhatItDoesNotSupport) {
  kv::PageFormat f;
  std::string error;
  ASSERT_TRUE(kv::make_page_format(kv::Precision::Q3, kv::KeyMode::PerChannel, 64, 2, 64, 0, &f, &error));
  Buffer b = device_buffer(1 << 16);
  Result<CommandBatch> batch = context_->begin();
  ASSERT_TRUE(batch.ok());
  Status s = kernels_->decode_attention(*batch, f, b, b, 1, b, 4, 0.125f, b, b, 0, 1);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("3-bit"), std::string::npos) << s.message();
}

}  // namespace
}  // namespace kvtier::vulkan
