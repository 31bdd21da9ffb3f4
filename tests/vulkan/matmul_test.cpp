// The prefill's shaders against the CPU references: the matrix-matrix products (every weight format, odd row
// and token counts that leave partial tiles, several column steps) against the format's reference decoder
// dotted in double, the K/V rows of a chunk written into f16 pages against kv::write_rows, and the chunk's causal
// attention against softmax in double over the page decoder's keys and values.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>

#include "kernels/kernel_test_util.h"
#include "kv/codec.h"
#include "kvtier/f16.h"
#include "vulkan_test_util.h"

namespace kvtier::vulkan {
namespace {

using kernels::testing::random_floats;
using testing::VulkanTest;

struct MatmulCase {
  GgmlType type;
  int64_t rows;
  int64_t cols;
};

class VulkanMatmulTest : public VulkanTest, public ::testing::WithParamInterface<MatmulCase> {};

// 70 rows (a full tile of 64 and a partial one) by 67 tokens (64 and 3), the output poisoned with NaN first.
TEST_P(VulkanMatmulTest, MatchesTheScalarReference) {
  const MatmulCase& c = GetParam();
  std::mt19937 rng(77);
  const int64_t n_tokens = 67;
  const std::vector<uint8_t> w = kernels::testing::random_weights(rng, c.type, c.rows, c.cols);
  const std::vector<float> x = random_floats(rng, n_tokens * c.cols);
  const size_t row_bytes = ggml_row_bytes(c.type, c.cols);
  Buffer wb = upload(w), xb = upload(x), yb = device_buffer(static_cast<size_t>(n_tokens * c.rows) * 4);
  Result<CommandBatch> batch = context_->begin();
  ASSERT_TRUE(batch.ok()) << batch.error();
  poison(*batch, yb);
  Status s = kernels_->matmul(*batch, c.type, wb, xb, yb, c.rows, c.cols, n_tokens);
  ASSERT_TRUE(s.ok()) << s.message();
  s = context_->submit(*batch);
  ASSERT_TRUE(s.ok()) << s.message();
  const std::vector<float> y = download(yb, static_cast<size_t>(n_tokens * c.rows));

  std::vector<float> row(static_cast<size_t>(c.cols));
  for (int64_t r = 0; r < c.rows; ++r) {
    kernels::dequantize_row_reference(c.type, w.data() + r * row_bytes, row.data(), c.cols);
    for (int64_t t = 0; t < n_tokens; ++t) {
      double ref = 0, magnitude = 0;  // sum of |w x|: the scale of f32 rounding in the sum
      for (int64_t i = 0; i < c.cols; ++i) {
        const double p = static_cast<double>(row[i]) * x[t * c.cols + i];
        ref += p;
        magnitude += std::fabs(p);
      }
      const float got = y[t * c.rows + r];
      ASSERT_TRUE(std::isfinite(got)) << "row " << r << " token " << t << " not written";
      ASSERT_NEAR(got, ref, 1e-5 * magnitude + 1e-6) << ggml_type_name(c.type) << " row " << r << " token " << t;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Formats, VulkanMatmulTest,
                         ::testing::Values(MatmulCase{GgmlType::F16, 70, 224}, MatmulCase{GgmlType::Q8_0, 70, 224},
                                           MatmulCase{GgmlType::Q4_0, 70, 288}, MatmulCase{GgmlType::Q4_K, 70, 512},
                                           MatmulCase{GgmlType::Q5_K, 70, 512}, MatmulCase{GgmlType::Q6_K, 70, 512}),
                         [](const ::testing::TestParamInfo<MatmulCase>& info) {
                           return std::string(ggml_type_name(info.param.type));
                         });

TEST_F(VulkanTest, MatmulRejectsBadShapes) {
  Buffer b = device_buffer(1 << 16);
  Result<CommandBatch> batch = context_->begin();
  ASSERT_TRUE(batch.ok());
  EXPECT_FALSE(kernels_->matmul(*batch, GgmlType::Q4_K, b, b, b, 4, 100, 2).ok());  // 100 % 256 != 0
  EXPECT_FALSE(kernels_->matmul(*batch, GgmlType::F16, b, b, b, 4, 48, 2).ok());    // 48 % 32 != 0
  EXPECT_FALSE(kernels_->matmul(*batch, GgmlType::Q4_1, b, b, b, 4, 256, 2).ok());  // no shader for Q4_1
  EXPECT_FALSE(kernels_->matmul(*batch, GgmlType::Q8_0, b, b, BufferRange(b, 0, 8), 4, 256, 2).ok());  // y too small
}

// Two chunks of a prompt, positions [0, 37) then [37, 107) (an odd start: position 37 shares its key words with
// 36, written by the first chunk), over pages that the page list places out of order in the pool.
TEST_F(VulkanTest, KvWriteRowsFillsPagesChunkByChunkAsTheCpuWriterDoes) {
  std::mt19937 rng(5);
  kv::PageFormat format;
  std::string error;
  ASSERT_TRUE(kv::make_page_format(kv::Precision::F16, kv::KeyMode::PerChannel, kv::kTokensPerPage, 3, 40, 40,
                                   &format, &error))
      << error;
  const int n = 107, kv_dim = format.n_kv_heads * format.head_dim, P = kv::kTokensPerPage;
  const std::vector<float> k = random_floats(rng, n * kv_dim, 2.0f), v = random_floats(rng, n * kv_dim, 2.0f);
  std::vector<uint8_t> ref(2 * format.page_bytes, 0);
  kv::write_rows(format, ref.data(), 0, P, k.data(), v.data());
  kv::write_rows(format, ref.data() + format.page_bytes, 0, n - P, k.data() + P * kv_dim, v.data() + P * kv_dim);

  // Pool of 3 pages: page 0 of the sequence at pool page 2, page 1 at pool page 0; pool page 1 stays untouched.
  const uint32_t page_bytes = static_cast<uint32_t>(format.page_bytes);
  const std::vector<uint32_t> list = {2 * page_bytes, static_cast<uint32_t>(P), 0, static_cast<uint32_t>(n - P)};
  Buffer pool = device_buffer(3 * format.page_bytes), list_b = upload(list), kb = upload(k), vb = upload(v);
  Result<CommandBatch> batch = context_->begin();
  ASSERT_TRUE(batch.ok());
  batch->fill(pool, 0, format.page_bytes, 0);
  batch->fill(pool, format.page_bytes, format.page_bytes, 0x7FC00000u);
  batch->fill(pool, 2 * format.page_bytes, format.page_bytes, 0);
  batch->barrier();
  const int split = 37;
  const size_t split_bytes = static_cast<size_t>(split) * kv_dim * sizeof(float);
  ASSERT_TRUE(kernels_->write_kv_rows_f16(*batch, format, pool, list_b, 0, split, BufferRange(kb, 0, split_bytes),
                                          BufferRange(vb, 0, split_bytes))
                  .ok());
  batch->barrier();
  ASSERT_TRUE(kernels_->write_kv_rows_f16(*batch, format, pool, list_b, split, n - split, BufferRange(kb, split_bytes),
                                          BufferRange(vb, split_bytes))
                  .ok());
  ASSERT_TRUE(context_->submit(*batch).ok());
  std::vector<uint8_t> got(pool.size());
  ASSERT_TRUE(context_->download(pool, 0, got.data(), got.size()).ok());

  for (size_t i = 0; i < format.page_bytes; i += 4) {
    uint32_t word;
    std::memcpy(&word, got.data() + format.page_bytes + i, 4);
    ASSERT_EQ(word, 0x7FC00000u) << "the shader wrote outside its pages, byte " << i;
  }
  // Halves equal, or one unit in the last place apart where the GPU's f32 -> f16 rounding differs.
  int differing = 0;
  for (int page = 0; page < 2; ++page) {
    const uint8_t* have_page = got.data() + (page == 0 ? 2 : 0) * format.page_bytes;
    for (size_t i = 0; i < format.page_bytes; i += 2) {
      uint16_t want, have;
      std::memcpy(&want, ref.data() + page * format.page_bytes + i, 2);
      std::memcpy(&have, have_page + i, 2);
      if (want == have) continue;
      ++differing;
      ASSERT_LE(std::abs(static_cast<int>(want) - static_cast<int>(have)), 1)
          << "page " << page << " half " << i / 2 << ": " << f16_to_f32(want) << " vs " << f16_to_f32(have);
    }
  }
  EXPECT_LT(differing, static_cast<int>(format.page_bytes / 100));  // rounding ties are rare
}

struct PrefillAttentionCase {
  int n_heads, n_kv_heads, head_dim;
};

class VulkanPrefillAttentionTest : public VulkanTest, public ::testing::WithParamInterface<PrefillAttentionCase> {};

// A chunk of 83 query rows at positions [50, 133) (pages 0..2, the last partial) over pages the page list places
// in reverse order in the pool: every row against softmax over positions [0, its own] in double.
TEST_P(VulkanPrefillAttentionTest, MatchesCausalSoftmaxInDouble) {
  const PrefillAttentionCase& c = GetParam();
  kv::PageFormat format;
  std::string error;
  ASSERT_TRUE(kv::make_page_format(kv::Precision::F16, kv::KeyMode::PerChannel, kv::kTokensPerPage, c.n_kv_heads,
                                   c.head_dim, c.head_dim, &format, &error))
      << error;
  const int pos = 50, n = 83, total = pos + n, P = kv::kTokensPerPage, n_pages = (total + P - 1) / P;
  const int kv_dim = c.n_kv_heads * c.head_dim, q_dim = c.n_heads * c.head_dim, group = c.n_heads / c.n_kv_heads;
  std::mt19937 rng(8);
  const std::vector<float> k = random_floats(rng, total * kv_dim, 2.0f), v = random_floats(rng, total * kv_dim);
  const std::vector<float> q = random_floats(rng, n * q_dim, 2.0f);
  std::vector<uint8_t> pool(static_cast<size_t>(n_pages) * format.page_bytes, 0);
  std::vector<uint32_t> list;  // [n_pages] (byte offset, valid rows)
  for (int page = 0; page < n_pages; ++page) {
    const size_t at = static_cast<size_t>(n_pages - 1 - page) * format.page_bytes;
    const int rows = std::min(P, total - page * P);
    kv::write_rows(format, pool.data() + at, 0, rows, k.data() + page * P * kv_dim, v.data() + page * P * kv_dim);
    list.push_back(static_cast<uint32_t>(at));
    list.push_back(static_cast<uint32_t>(rows));
  }
  // Keys and values as the pages hold them (f16): [total][kv_dim].
  std::vector<float> kd(static_cast<size_t>(total) * kv_dim), vd(kd.size());
  for (int page = 0; page < n_pages; ++page) {
    const int rows = std::min(P, total - page * P);
    std::vector<float> kh(static_cast<size_t>(rows) * c.head_dim), vh(kh.size());
    for (int h = 0; h < c.n_kv_heads; ++h) {
      kv::decode_page_head(format, pool.data() + list[2 * page], h, rows, kh.data(), vh.data());
      for (int t = 0; t < rows; ++t) {
        std::copy_n(kh.data() + t * c.head_dim, c.head_dim, kd.data() + (page * P + t) * kv_dim + h * c.head_dim);
        std::copy_n(vh.data() + t * c.head_dim, c.head_dim, vd.data() + (page * P + t) * kv_dim + h * c.head_dim);
      }
    }
  }
  const float scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
  Buffer pool_b = upload(pool), list_b = upload(list), q_b = upload(q), out_b = device_buffer(q.size() * 4);
  Result<CommandBatch> batch = context_->begin();
  ASSERT_TRUE(batch.ok());
  poison(*batch, out_b);
  Status s = kernels_->prefill_attention(*batch, format, pool_b, list_b, pos, n, q_b, c.n_heads, scale, out_b);
  ASSERT_TRUE(s.ok()) << s.message();
  ASSERT_TRUE(context_->submit(*batch).ok());
  const std::vector<float> got = download(out_b, q.size());

  for (int i = 0; i < n; ++i) {
    for (int h = 0; h < c.n_heads; ++h) {
      const int kvh = h / group, visible = pos + i + 1;
      std::vector<double> p(visible);
      double mx = -INFINITY;
      for (int t = 0; t < visible; ++t) {
        double dot = 0;
        for (int d = 0; d < c.head_dim; ++d) {
          dot += static_cast<double>(q[(i * c.n_heads + h) * c.head_dim + d]) * kd[t * kv_dim + kvh * c.head_dim + d];
        }
        p[t] = dot * scale;
        mx = std::max(mx, p[t]);
      }
      double sum = 0;
      for (double& x : p) sum += x = std::exp(x - mx);
      for (int d = 0; d < c.head_dim; ++d) {
        double want = 0;
        for (int t = 0; t < visible; ++t) want += p[t] * vd[t * kv_dim + kvh * c.head_dim + d];
        want /= sum;
        const float have = got[(i * c.n_heads + h) * c.head_dim + d];
        ASSERT_TRUE(std::isfinite(have)) << "row " << i << " head " << h << " channel " << d << " not written";
        ASSERT_NEAR(have, want, 2e-5) << "row " << i << " head " << h << " channel " << d;
      }
    }
  }
}

// GQA 1, 3 (a block of 10 rows: 30 vectors), 4 and 8 (head_dim 256: 16 vectors, blocks of 2 rows).
INSTANTIATE_TEST_SUITE_P(Shapes, VulkanPrefillAttentionTest,
                         ::testing::Values(PrefillAttentionCase{4, 4, 64}, PrefillAttentionCase{6, 2, 40},
                                           PrefillAttentionCase{8, 2, 128}, PrefillAttentionCase{8, 1, 256}),
                         [](const ::testing::TestParamInfo<PrefillAttentionCase>& info) {
                           return "gqa" + std::to_string(info.param.n_heads / info.param.n_kv_heads) + "_d" +
                                  std::to_string(info.param.head_dim);
                         });

}  // namespace
}  // namespace kvtier::vulkan
