// The ladder's prefill attention (attention_prefill_pages.comp: one dispatch per page format, merged by
// attention_merge over the chunk's rows x heads) against the CPU scalar reference (kernels/paged_attention.h) on
// pages built by the real page encoder (kv/codec.h): an f16 sink page of 4 rows, two pages of the quantized format
// (the second holding the chunk's first rows, so the causal mask runs inside a quantized page), then a partial
// tail page, f16 or of the quantized format; every width the device ladder runs, GQA 1..8, head_dim 64 and 128,
// a chunk of odd length at an odd position.
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

struct PrefillPagesCase {
  kv::Precision precision;  // of the older pages
  bool quantized_tail;      // the partial tail page in that precision too (else f16)
  int n_heads, n_kv_heads, head_dim;
};

class VulkanPrefillPagesTest : public VulkanTest, public ::testing::WithParamInterface<PrefillPagesCase> {};

TEST_P(VulkanPrefillPagesTest, MatchesTheScalarReference) {
  const PrefillPagesCase& c = GetParam();
  constexpr int kSinks = 4, P = kv::kTokensPerPage;
  const int pos = 101, n = 45, total = pos + n;  // positions [0, 146): sinks, pages [4, 68), [68, 132), [132, 146)
  kv::PageFormat f16, quantized;
  std::string error;
  ASSERT_TRUE(kv::make_page_format(kv::Precision::F16, kv::KeyMode::PerChannel, P, c.n_kv_heads, c.head_dim, 0, &f16,
                                   &error)) << error;
  ASSERT_TRUE(kv::make_page_format(c.precision, kv::KeyMode::PerChannel, P, c.n_kv_heads, c.head_dim, 0, &quantized,
                                   &error)) << error;
  const int kv_dim = c.n_kv_heads * c.head_dim;
  const std::vector<float> k = normal_rows(static_cast<size_t>(total) * kv_dim, 31);
  const std::vector<float> v = normal_rows(static_cast<size_t>(total) * kv_dim, 32);

  // Pages (first position, rows, format), laid into the pool in reverse order; each format's list in position order.
  struct Page {
    int first, rows;
    const kv::PageFormat* format;
  };
  std::vector<Page> pages = {{0, kSinks, &f16}};
  for (int first = kSinks; first < total; first += P) {
    const bool tail = first + P >= total;
    pages.push_back({first, std::min(P, total - first), tail && !c.quantized_tail ? &f16 : &quantized});
  }
  std::vector<size_t> offsets(pages.size());
  std::vector<uint8_t> pool;
  for (size_t i = pages.size(); i-- > 0;) {
    offsets[i] = pool.size();
    pool.resize(pool.size() + pages[i].format->page_bytes);
    kv::encode_page(*pages[i].format, k.data() + static_cast<size_t>(pages[i].first) * kv_dim,
                    v.data() + static_cast<size_t>(pages[i].first) * kv_dim, pages[i].rows, pool.data() + offsets[i]);
  }
  std::vector<uint32_t> f16_list, quantized_list;  // [pages] (byte offset, valid rows, first position, 0)
  std::vector<kv::PageRef> refs;
  for (size_t i = 0; i < pages.size(); ++i) {
    std::vector<uint32_t>& list = pages[i].format == &f16 ? f16_list : quantized_list;
    list.insert(list.end(), {static_cast<uint32_t>(offsets[i]), static_cast<uint32_t>(pages[i].rows),
                             static_cast<uint32_t>(pages[i].first), 0u});
    refs.push_back(kv::PageRef{pool.data() + offsets[i], pages[i].format, pages[i].first, pages[i].rows});
  }

  const std::vector<float> q = normal_rows(static_cast<size_t>(n) * c.n_heads * c.head_dim, 33);
  const float scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
  kernels::PagedKv view{refs, c.n_kv_heads, c.head_dim, false, false};
  std::vector<float> expected(q.size());
  kernels::paged_attention_reference(view, pos, n, c.n_heads, q.data(), scale, expected.data());

  const uint32_t splits = 2;
  Buffer pool_b = upload(pool), q_b = upload(q), f16_b = upload(f16_list), quantized_b = upload(quantized_list);
  Buffer part_o = device_buffer(splits * q.size() * 4);
  Buffer part_ml = device_buffer(static_cast<size_t>(splits) * n * c.n_heads * 8);
  Buffer out = device_buffer(q.size() * 4), lse = device_buffer(static_cast<size_t>(n) * c.n_heads * 4);
  Result<CommandBatch> batch = context_->begin();
  ASSERT_TRUE(batch.ok()) << batch.error();
  poison(*batch, part_o);
  poison(*batch, out);
  Status s = kernels_->prefill_attention_pages(*batch, f16, pool_b, f16_b, f16_list.size() / 4, pos, n, q_b,
                                               c.n_heads, scale, part_o, part_ml, 0);
  ASSERT_TRUE(s.ok()) << s.message();
  s = kernels_->prefill_attention_pages(*batch, quantized, pool_b, quantized_b, quantized_list.size() / 4, pos, n, q_b,
                                        c.n_heads, scale, part_o, part_ml, 1);
  ASSERT_TRUE(s.ok()) << s.message();
  batch->barrier();
  s = kernels_->merge_attention(*batch, part_o, part_ml, splits, n * c.n_heads, c.head_dim, out, lse);
  ASSERT_TRUE(s.ok()) << s.message();
  ASSERT_TRUE(context_->submit(*batch).ok());
  const std::vector<float> got = download(out, q.size());
  for (size_t i = 0; i < got.size(); ++i) {
    const size_t row = i / (static_cast<size_t>(c.n_heads) * c.head_dim);
    ASSERT_NEAR(got[i], expected[i], 1e-4f) << quantized.describe() << " row " << row << " (position " << pos + row
                                            << ") head " << i / c.head_dim % c.n_heads << " dim " << i % c.head_dim;
  }
}

using kv::Precision;
INSTANTIATE_TEST_SUITE_P(
    Formats, VulkanPrefillPagesTest,
    ::testing::Values(PrefillPagesCase{Precision::Q8, false, 4, 2, 64},
                      PrefillPagesCase{Precision::Q4, false, 8, 1, 64},
                      PrefillPagesCase{Precision::Q2, false, 6, 2, 128},
                      PrefillPagesCase{Precision::Q4, true, 3, 3, 64},
                      PrefillPagesCase{Precision::K8V4, false, 8, 2, 64},
                      PrefillPagesCase{Precision::K16V2, true, 2, 1, 64},
                      PrefillPagesCase{Precision::K4V8, false, 5, 1, 128}),
    [](const ::testing::TestParamInfo<PrefillPagesCase>& info) {
      return std::string(kv::precision_name(info.param.precision)) + "_gqa" +
             std::to_string(info.param.n_heads / info.param.n_kv_heads) + "_hd" +
             std::to_string(info.param.head_dim) + (info.param.quantized_tail ? "_quantized_tail" : "");
    });

// A ladder that starts quantized writes a chunk's rows into k16vY tail pages (kv_write_rows_tail.comp): two chunks,
// rows [0, 37) then [37, 101) (an odd boundary inside a key word, the second page from row 37 on), against
// kv::write_rows, as kv_write_row's test does row by row: ≥ 99.9% of bytes equal (the fit's f32 sums may round an
// ulp apart), keys equal, values' error no worse than the CPU writer's.
TEST_F(VulkanTest, KvWriteRowsTailFillsK16VyPagesAsTheCpuWriterDoes) {
  for (Precision p : {Precision::K16V8, Precision::K16V4, Precision::K16V2}) {
    SCOPED_TRACE(kv::precision_name(p));
    kv::PageFormat f;
    std::string error;
    ASSERT_TRUE(kv::make_page_format(p, kv::KeyMode::PerChannel, kv::kTokensPerPage, 3, 80, 16, &f, &error)) << error;
    const int rows = 101, split = 37, P = kv::kTokensPerPage, kv_dim = f.n_kv_heads * f.head_dim;
    const std::vector<float> k = normal_rows(static_cast<size_t>(rows) * kv_dim, 41);
    const std::vector<float> v = normal_rows(static_cast<size_t>(rows) * kv_dim, 42);
    std::vector<uint8_t> want(2 * f.page_bytes, 0);  // page 1 first in the pool, then page 0
    kv::write_rows(f, want.data() + f.page_bytes, 0, P, k.data(), v.data());
    kv::write_rows(f, want.data(), 0, rows - P, k.data() + static_cast<size_t>(P) * kv_dim,
                   v.data() + static_cast<size_t>(P) * kv_dim);
    const std::vector<uint32_t> list = {static_cast<uint32_t>(f.page_bytes), 0, 0, 0};  // [2] (offset, unused)
    Buffer pool = device_buffer(want.size()), list_b = upload(list);
    Buffer k0 = upload(std::vector<float>(k.begin(), k.begin() + split * kv_dim));
    Buffer v0 = upload(std::vector<float>(v.begin(), v.begin() + split * kv_dim));
    Buffer k1 = upload(std::vector<float>(k.begin() + split * kv_dim, k.end()));
    Buffer v1 = upload(std::vector<float>(v.begin() + split * kv_dim, v.end()));
    Result<CommandBatch> batch = context_->begin();
    ASSERT_TRUE(batch.ok());
    batch->fill(pool, 0, pool.size(), 0);
    batch->barrier();
    Status s = kernels_->write_kv_rows_tail(*batch, f, pool, list_b, 0, split, k0, v0);
    ASSERT_TRUE(s.ok()) << s.message();
    batch->barrier();
    s = kernels_->write_kv_rows_tail(*batch, f, pool, list_b, split, rows - split, k1, v1);
    ASSERT_TRUE(s.ok()) << s.message();
    ASSERT_TRUE(context_->submit(*batch).ok());
    std::vector<uint8_t> got(want.size());
    ASSERT_TRUE(context_->download(pool, 0, got.data(), got.size()).ok());
    size_t same = 0;
    for (size_t i = 0; i < got.size(); ++i) same += got[i] == want[i];
    EXPECT_GE(static_cast<double>(same) / got.size(), 0.999);
    for (int page = 0; page < 2; ++page) {
      const int n = page == 0 ? P : rows - P;
      const size_t at = page == 0 ? f.page_bytes : 0;
      std::vector<float> gk(static_cast<size_t>(n) * kv_dim), gv(gk.size()), wk(gk.size()), wv(gk.size());
      kv::decode_page(f, got.data() + at, n, gk.data(), gv.data());
      kv::decode_page(f, want.data() + at, n, wk.data(), wv.data());
      EXPECT_EQ(gk, wk) << "f16 keys of page " << page;
      double got_err = 0, want_err = 0;
      for (size_t i = 0; i < gv.size(); ++i) {
        const float x = v[static_cast<size_t>(page) * P * kv_dim + i];
        got_err += std::pow(static_cast<double>(gv[i]) - x, 2), want_err += std::pow(static_cast<double>(wv[i]) - x, 2);
      }
      EXPECT_LE(got_err, want_err * 1.001 + 1e-9) << "page " << page;
    }
  }
}

TEST_F(VulkanTest, PrefillAttentionPagesRejectsThreeBitPages) {
  kv::PageFormat f;
  std::string error;
  ASSERT_TRUE(kv::make_page_format(kv::Precision::Q3, kv::KeyMode::PerChannel, 64, 2, 64, 0, &f, &error));
  Buffer b = device_buffer(1 << 16);
  Result<CommandBatch> batch = context_->begin();
  ASSERT_TRUE(batch.ok());
  Status s = kernels_->prefill_attention_pages(*batch, f, b, b, 1, 0, 1, b, 4, 0.125f, b, b, 0);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("q3"), std::string::npos) << s.message();
}

}  // namespace
}  // namespace kvtier::vulkan
