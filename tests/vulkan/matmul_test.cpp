// The prefill's shaders against the CPU references: the matrix-matrix products (every weight format, odd row
// and token counts that leave partial tiles, several column steps) against the format's reference decoder
// dotted in double, and the K/V rows of a chunk written into f16 pages against kv::write_rows.
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

// 70 rows (a full tile of 64 and a partial one) by 37 tokens (32 and 5), the output poisoned with NaN first.
TEST_P(VulkanMatmulTest, MatchesTheScalarReference) {
  const MatmulCase& c = GetParam();
  std::mt19937 rng(77);
  const int64_t n_tokens = 37;
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
  batch->fill(pool, 0, pool.size(), 0);
  batch->fill(pool, format.page_bytes, format.page_bytes, 0x7FC00000u);
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

}  // namespace
}  // namespace kvtier::vulkan
