// Matrix-vector shaders against the CPU scalar reference: weights dequantized by the format's reference
// decoder (kernels/ref/) dotted with x in double. Random blocks of every format (every code pattern, random
// scales), odd row counts, several blocks per row, two tokens, and the output poisoned with NaN first.
#include <cmath>
#include <random>

#include "kernels/kernel_test_util.h"
#include "vulkan_test_util.h"

namespace kvtier::vulkan {
namespace {

using testing::VulkanTest;

struct MatvecCase {
  GgmlType type;
  int64_t rows;
  int64_t cols;
};

class VulkanMatvecTest : public VulkanTest, public ::testing::WithParamInterface<MatvecCase> {};

void check_matvec(VulkanTest& t, Context& context, Kernels& kernels, const MatvecCase& c, MatvecTuning tuning,
                  uint32_t seed) {
  std::mt19937 rng(seed);
  const int64_t n_tokens = 2;
  const std::vector<uint8_t> w = kernels::testing::random_weights(rng, c.type, c.rows, c.cols);
  const std::vector<float> x = kernels::testing::random_floats(rng, n_tokens * c.cols);
  const size_t row_bytes = ggml_row_bytes(c.type, c.cols);

  Result<Buffer> wb = context.create_buffer(w.size(), MemoryKind::DeviceLocal);
  Result<Buffer> xb = context.create_buffer(x.size() * 4, MemoryKind::DeviceLocal);
  Result<Buffer> yb = context.create_buffer(static_cast<size_t>(n_tokens * c.rows) * 4, MemoryKind::DeviceLocal);
  ASSERT_TRUE(wb.ok() && xb.ok() && yb.ok());
  ASSERT_TRUE(context.upload(*wb, 0, w.data(), w.size()).ok());
  ASSERT_TRUE(context.upload(*xb, 0, x.data(), x.size() * 4).ok());
  Result<CommandBatch> batch = context.begin();
  ASSERT_TRUE(batch.ok()) << batch.error();
  batch->fill(*yb, 0, yb->size(), 0x7FC00000u);
  batch->barrier();
  Status s = kernels.matvec(*batch, c.type, *wb, *xb, *yb, c.rows, c.cols, n_tokens, tuning);
  ASSERT_TRUE(s.ok()) << s.message();
  s = context.submit(*batch);
  ASSERT_TRUE(s.ok()) << s.message();
  std::vector<float> y(static_cast<size_t>(n_tokens * c.rows));
  ASSERT_TRUE(context.download(*yb, 0, y.data(), y.size() * 4).ok());

  std::vector<float> row(static_cast<size_t>(c.cols));
  for (int64_t r = 0; r < c.rows; ++r) {
    kernels::dequantize_row_reference(c.type, w.data() + r * row_bytes, row.data(), c.cols);
    for (int64_t tok = 0; tok < n_tokens; ++tok) {
      double ref = 0, magnitude = 0;  // sum of |w x|: the scale of f32 rounding in the sum
      for (int64_t i = 0; i < c.cols; ++i) {
        const double p = static_cast<double>(row[i]) * x[tok * c.cols + i];
        ref += p;
        magnitude += std::fabs(p);
      }
      const float got = y[tok * c.rows + r];
      ASSERT_TRUE(std::isfinite(got)) << "row " << r << " token " << tok << " not written";
      EXPECT_NEAR(got, ref, 1e-5 * magnitude + 1e-6)
          << ggml_type_name(c.type) << " row " << r << " token " << tok << " (workgroup " << tuning.workgroup
          << ", " << tuning.rows_per_group << " rows per group)";
    }
  }
}

TEST_P(VulkanMatvecTest, MatchesTheScalarReference) {
  check_matvec(*this, *context_, *kernels_, GetParam(), MatvecTuning{}, 1234);
}

TEST_P(VulkanMatvecTest, MatchesWithOtherWorkgroupShapes) {
  // 3 rows per group leaves a partial last group for the odd row counts; 32 threads leave some idle when a
  // row has fewer units than threads.
  check_matvec(*this, *context_, *kernels_, GetParam(), MatvecTuning{32, 3}, 99);
}

INSTANTIATE_TEST_SUITE_P(Formats, VulkanMatvecTest,
                         ::testing::Values(MatvecCase{GgmlType::F16, 37, 224}, MatvecCase{GgmlType::Q8_0, 37, 224},
                                           MatvecCase{GgmlType::Q4_0, 41, 288}, MatvecCase{GgmlType::Q4_K, 37, 768},
                                           MatvecCase{GgmlType::Q5_K, 19, 512}, MatvecCase{GgmlType::Q6_K, 37, 768}),
                         [](const ::testing::TestParamInfo<MatvecCase>& info) {
                           return std::string(ggml_type_name(info.param.type));
                         });

TEST_F(VulkanTest, MatvecRejectsBadShapes) {
  Buffer b = device_buffer(1 << 16);
  Result<CommandBatch> batch = context_->begin();
  ASSERT_TRUE(batch.ok());
  EXPECT_FALSE(kernels_->matvec(*batch, GgmlType::Q4_K, b, b, b, 4, 100).ok());  // 100 % 256 != 0
  EXPECT_FALSE(kernels_->matvec(*batch, GgmlType::Q4_1, b, b, b, 4, 256).ok());  // no shader for Q4_1
  EXPECT_FALSE(kernels_->matvec(*batch, GgmlType::Q8_0, b, b, BufferRange(b, 0, 8), 4, 256).ok());  // y too small
}

}  // namespace
}  // namespace kvtier::vulkan
