// The decode step's fused kernels against their CPU scalar references: matvec with RMSNorm on its input, SiLU on
// its output, a multiplier on its input and the residual add on its output (Kernels::matvec_fused), every weight
// format at odd row counts and two tokens; and RoPE fused with the f16 KV write (Kernels::rope_write_kv_f16)
// against kernels::rope_reference then kv::write_rows, both rotation modes and partial rotary.
#include <cmath>
#include <cstring>
#include <ostream>
#include <random>

#include "kernels/elementwise.h"
#include "kernels/kernel_test_util.h"
#include "kv/codec.h"
#include "kvtier/f16.h"
#include "vulkan_test_util.h"

namespace kvtier::vulkan {
namespace {

using kernels::testing::random_floats;
using testing::VulkanTest;

struct FusedCase {
  GgmlType type;
  int64_t rows;
  int64_t cols;
};
void PrintTo(const FusedCase& c, std::ostream* os) { *os << ggml_type_name(c.type) << " " << c.rows << " x " << c.cols; }

class VulkanFusedMatvecTest : public VulkanTest, public ::testing::WithParamInterface<FusedCase> {
 protected:
  // y = fused(W, x) on the device against the reference of `bits` (MatvecFusion), 2 tokens.
  void check(uint32_t bits, MatvecTuning tuning, uint32_t seed) {
    const FusedCase& c = GetParam();
    std::mt19937 rng(seed);
    const int64_t n_tokens = 2;
    const float eps = 1e-5f;
    const std::vector<uint8_t> w = kernels::testing::random_weights(rng, c.type, c.rows, c.cols);
    const std::vector<float> x = random_floats(rng, n_tokens * c.cols, 3.0f);
    const bool norm = (bits & MatvecFusion::kNorm) != 0, mul = (bits & MatvecFusion::kMul) != 0;
    const bool silu = (bits & MatvecFusion::kSilu) != 0, add = (bits & MatvecFusion::kAdd) != 0;
    // kNorm: the norm's weight [cols]; kMul: the multiplier [n_tokens][cols].
    const std::vector<float> aux = random_floats(rng, norm ? c.cols : n_tokens * c.cols, 2.0f);
    const std::vector<float> y0 = random_floats(rng, n_tokens * c.rows, 4.0f);  // kAdd's residual

    // The reference input of the product: rms_norm_reference, or the elementwise product, or x.
    std::vector<float> input = x;
    if (norm) kernels::rms_norm_reference(x.data(), aux.data(), n_tokens, c.cols, eps, input.data());
    if (mul) {
      for (size_t i = 0; i < input.size(); ++i) input[i] = x[i] * aux[i];
    }

    Buffer wb = upload(w), xb = upload(x), ab = upload(aux), yb = upload(y0);
    Result<CommandBatch> batch = context_->begin();
    ASSERT_TRUE(batch.ok()) << batch.error();
    if (!add) {
      batch->fill(yb, 0, yb.size(), 0x7FC00000u);  // every output must be written
      batch->barrier();
    }
    Status s = kernels_->matvec_fused(*batch, c.type, wb, xb, ab, yb, c.rows, c.cols, n_tokens,
                                      MatvecFusion{bits, eps}, tuning);
    ASSERT_TRUE(s.ok()) << s.message();
    s = context_->submit(*batch);
    ASSERT_TRUE(s.ok()) << s.message();
    const std::vector<float> y = download(yb, y0.size());

    const size_t row_bytes = ggml_row_bytes(c.type, c.cols);
    std::vector<float> row(static_cast<size_t>(c.cols));
    for (int64_t r = 0; r < c.rows; ++r) {
      kernels::dequantize_row_reference(c.type, w.data() + r * row_bytes, row.data(), c.cols);
      for (int64_t tok = 0; tok < n_tokens; ++tok) {
        double dot = 0, magnitude = 0;  // sum of |w x|: the scale of f32 rounding in the sum
        for (int64_t i = 0; i < c.cols; ++i) {
          const double p = static_cast<double>(row[i]) * input[tok * c.cols + i];
          dot += p;
          magnitude += std::fabs(p);
        }
        double want = silu ? dot / (1.0 + std::exp(-dot)) : dot;  // |silu'| < 1.1
        const size_t at = static_cast<size_t>(tok * c.rows + r);
        if (add) want += y0[at];
        const double tolerance = 1.1 * (2e-5 * magnitude + 1e-6) + (add ? 1e-6 * std::fabs(y0[at]) : 0.0);
        ASSERT_TRUE(std::isfinite(y[at])) << "row " << r << " token " << tok << " not written";
        EXPECT_NEAR(y[at], want, tolerance) << ggml_type_name(c.type) << " fusion " << bits << " row " << r
                                            << " token " << tok << " (workgroup " << tuning.workgroup << ", "
                                            << tuning.rows_per_group << " rows per group)";
      }
    }
  }
};

// The four the decode step records: Q/K/V and up (norm), gate (norm, SiLU), down (multiplier, residual), wo
// (residual); two with the default workgroup, two with 32 threads and 3 rows (a partial last group; 24 pipelines
// rather than 48 keep the suite to a few seconds on lavapipe).
TEST_P(VulkanFusedMatvecTest, NormOnTheInputMatchesRmsNormThenTheProduct) {
  check(MatvecFusion::kNorm, MatvecTuning{}, 11);
}

TEST_P(VulkanFusedMatvecTest, NormAndSiluMatchTheReferences) {
  check(MatvecFusion::kNorm | MatvecFusion::kSilu, MatvecTuning{32, 3}, 22);
}

TEST_P(VulkanFusedMatvecTest, MultiplierAndResidualAddMatchTheReferences) {
  check(MatvecFusion::kMul | MatvecFusion::kAdd, MatvecTuning{}, 31);
}

TEST_P(VulkanFusedMatvecTest, ResidualAddMatchesTheReference) { check(MatvecFusion::kAdd, MatvecTuning{32, 3}, 42); }

INSTANTIATE_TEST_SUITE_P(Formats, VulkanFusedMatvecTest,
                         ::testing::Values(FusedCase{GgmlType::F16, 37, 224}, FusedCase{GgmlType::Q8_0, 37, 224},
                                           FusedCase{GgmlType::Q4_0, 41, 288}, FusedCase{GgmlType::Q4_K, 37, 768},
                                           FusedCase{GgmlType::Q5_K, 19, 512}, FusedCase{GgmlType::Q6_K, 37, 768}),
                         [](const ::testing::TestParamInfo<FusedCase>& info) {
                           return std::string(ggml_type_name(info.param.type));
                         });

TEST_F(VulkanTest, FusedMatvecRejectsConflictingBitsAndShortOperands) {
  Buffer b = device_buffer(1 << 16), small = device_buffer(64);
  Result<CommandBatch> batch = context_->begin();
  ASSERT_TRUE(batch.ok());
  const uint32_t both = MatvecFusion::kNorm | MatvecFusion::kMul;
  EXPECT_FALSE(kernels_->matvec_fused(*batch, GgmlType::Q8_0, b, b, b, b, 4, 256, 1, MatvecFusion{both, 1e-5f}).ok());
  EXPECT_FALSE(kernels_->matvec_fused(*batch, GgmlType::Q8_0, b, b, b, b, 4, 256, 1, MatvecFusion{16, 0}).ok());
  // The norm's weight needs 256 floats, not 16.
  const MatvecFusion norm{MatvecFusion::kNorm, 1e-5f};
  EXPECT_FALSE(kernels_->matvec_fused(*batch, GgmlType::Q8_0, b, b, small, b, 4, 256, 1, norm).ok());
}

// Rows 0..4 of a page written one step at a time (each token at its own position), in both rotation modes and
// with partial rotary: the page equals kv::write_rows of the reference-rotated keys (halves within one unit in
// the last place), the queries equal rope_reference's, and the bytes around the page are untouched.
TEST_F(VulkanTest, RopeWithKvWriteMatchesRopeThenTheCpuWriter) {
  kv::PageFormat format;
  std::string error;
  // 3 KV heads of 40 channels (not a power of two) under 6 query heads.
  ASSERT_TRUE(kv::make_page_format(kv::Precision::F16, kv::KeyMode::PerChannel, kv::kTokensPerPage, 3, 40, 40,
                                   &format, &error))
      << error;
  const int n_heads = 6, head_dim = format.head_dim, rows = 5;
  const int q_dim = n_heads * head_dim, kv_dim = format.n_kv_heads * head_dim;
  std::mt19937 rng(5);
  for (bool neox : {false, true}) {
    for (int rope_dims : {40, 24}) {
      const std::vector<float> q = random_floats(rng, rows * q_dim, 2.0f), k = random_floats(rng, rows * kv_dim, 2.0f),
                               v = random_floats(rng, rows * kv_dim, 2.0f);
      std::vector<float> table(static_cast<size_t>(rows) * rope_dims);
      kernels::rope_table_reference(rows, 1000, rope_dims, 10000.0f, 1.0f, nullptr, table.data());
      std::vector<float> q_ref = q, k_ref = k;
      kernels::rope_reference(table.data(), q_ref.data(), rows, n_heads, head_dim, rope_dims, neox);
      kernels::rope_reference(table.data(), k_ref.data(), rows, format.n_kv_heads, head_dim, rope_dims, neox);
      std::vector<uint8_t> ref(format.page_bytes, 0);
      kv::write_rows(format, ref.data(), 0, rows, k_ref.data(), v.data());

      // The page is the second of a two-page pool; the first must stay as it was.
      Buffer pool = device_buffer(2 * format.page_bytes);
      Buffer qb = upload(q), kb = upload(k), vb = upload(v), tb = upload(table);
      Result<CommandBatch> batch = context_->begin();
      ASSERT_TRUE(batch.ok());
      batch->fill(pool, 0, format.page_bytes, 0x7FC00000u);
      batch->fill(pool, format.page_bytes, format.page_bytes, 0);
      batch->barrier();
      auto range = [](const Buffer& b, int t, int floats) {
        return BufferRange(b, static_cast<size_t>(t) * floats * sizeof(float), floats * sizeof(float));
      };
      for (int t = 0; t < rows; ++t) {
        ASSERT_TRUE(kernels_
                        ->rope_write_kv_f16(*batch, format, pool, static_cast<uint32_t>(format.page_bytes), t,
                                            range(qb, t, q_dim), n_heads, range(kb, t, kv_dim), range(vb, t, kv_dim),
                                            range(tb, t, rope_dims), rope_dims, neox)
                        .ok());
        batch->barrier();  // rows t and t + 1 share key words
      }
      ASSERT_TRUE(context_->submit(*batch).ok());
      const std::string where = std::string(neox ? "neox" : "normal") + " rope_dims " + std::to_string(rope_dims);
      const std::vector<float> q_got = download(qb, q.size());
      for (size_t i = 0; i < q_got.size(); ++i) ASSERT_NEAR(q_got[i], q_ref[i], 1e-5f) << "q " << i << " " << where;
      EXPECT_EQ(download(kb, k.size()), k) << "the key buffer is left unrotated";
      std::vector<uint8_t> got(2 * format.page_bytes);
      ASSERT_TRUE(context_->download(pool, 0, got.data(), got.size()).ok());
      for (size_t i = 0; i < format.page_bytes; i += 4) {
        uint32_t word;
        std::memcpy(&word, got.data() + i, 4);
        ASSERT_EQ(word, 0x7FC00000u) << "the shader wrote outside its page, byte " << i;
      }
      for (size_t i = 0; i < format.page_bytes; i += 2) {
        uint16_t want, have;
        std::memcpy(&want, ref.data() + i, 2);
        std::memcpy(&have, got.data() + format.page_bytes + i, 2);
        ASSERT_LE(std::abs(static_cast<int>(want) - static_cast<int>(have)), 1)
            << "half " << i / 2 << " " << where << ": " << f16_to_f32(want) << " vs " << f16_to_f32(have);
      }
    }
  }
}

TEST_F(VulkanTest, RopeWithKvWriteRejectsQuantizedPagesAndBadRotary) {
  kv::PageFormat f16, q8;
  std::string error;
  ASSERT_TRUE(kv::make_page_format(kv::Precision::F16, kv::KeyMode::PerChannel, kv::kTokensPerPage, 1, 64, 64, &f16,
                                   &error));
  ASSERT_TRUE(kv::make_page_format(kv::Precision::Q8, kv::KeyMode::PerChannel, kv::kTokensPerPage, 1, 64, 64, &q8,
                                   &error));
  Buffer pool = device_buffer(f16.page_bytes), b = device_buffer(1024);
  Result<CommandBatch> batch = context_->begin();
  ASSERT_TRUE(batch.ok());
  EXPECT_FALSE(kernels_->rope_write_kv_f16(*batch, q8, pool, 0, 0, b, 2, b, b, b, 64, false).ok());
  EXPECT_FALSE(kernels_->rope_write_kv_f16(*batch, f16, pool, 0, kv::kTokensPerPage, b, 2, b, b, b, 64, false).ok());
  EXPECT_FALSE(kernels_->rope_write_kv_f16(*batch, f16, pool, 0, 0, b, 2, b, b, b, 66, false).ok());  // > head_dim
  EXPECT_FALSE(kernels_->rope_write_kv_f16(*batch, f16, pool, 0, 0, b, 2, b, b, b, 31, false).ok());  // odd
}

}  // namespace
}  // namespace kvtier::vulkan
