// Weight-format kernels: known answers for the scalar references, and every
// dispatched SIMD kernel against the reference on every compiled target.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "kernel_test_util.h"
#include "kernels/weight_blocks.h"
#include "kvtier/f16.h"
#include "kvtier/kernels.h"

namespace kvtier::kernels {
namespace {

using testing::random_floats;
using testing::random_weights;
using testing::TargetGuard;

constexpr GgmlType kOwnTypes[] = {GgmlType::F32,  GgmlType::F16,  GgmlType::BF16, GgmlType::Q4_0,  GgmlType::Q4_1,
                                  GgmlType::Q5_0, GgmlType::Q5_1, GgmlType::Q8_0, GgmlType::IQ4_NL};
constexpr int64_t kCols[] = {32, 96, 288, 1408};

std::vector<float> dequantize_ref(GgmlType t, const void* src, int64_t n) {
  std::vector<float> out(static_cast<size_t>(n));
  dequantize_row_reference(t, src, out.data(), n);
  return out;
}

// ---------------------------------------------------------------------------
// Known answers: hand-built blocks, hand-computed values.

TEST(WeightReference, Q4_0KnownAnswer) {
  BlockQ4_0 b{};
  b.d = 0x3800;  // 0.5
  for (int j = 0; j < 16; ++j) b.qs[j] = static_cast<uint8_t>(j | ((15 - j) << 4));
  const std::vector<float> y = dequantize_ref(GgmlType::Q4_0, &b, 32);
  EXPECT_EQ(y[0], -4.0f);   // (0 - 8) * 0.5
  EXPECT_EQ(y[8], 0.0f);    // (8 - 8) * 0.5
  EXPECT_EQ(y[15], 3.5f);   // (15 - 8) * 0.5
  EXPECT_EQ(y[16], 3.5f);   // high nibble of qs[0] = 15
  EXPECT_EQ(y[31], -4.0f);  // high nibble of qs[15] = 0
}

TEST(WeightReference, Q4_1KnownAnswer) {
  BlockQ4_1 b{};
  b.d = 0x3400;  // 0.25
  b.m = 0xBC00;  // -1
  for (int j = 0; j < 16; ++j) b.qs[j] = static_cast<uint8_t>(j | ((15 - j) << 4));
  const std::vector<float> y = dequantize_ref(GgmlType::Q4_1, &b, 32);
  EXPECT_EQ(y[0], -1.0f);    // 0 * 0.25 - 1
  EXPECT_EQ(y[4], 0.0f);     // 4 * 0.25 - 1
  EXPECT_EQ(y[15], 2.75f);   // 15 * 0.25 - 1
  EXPECT_EQ(y[16], 2.75f);
  EXPECT_EQ(y[31], -1.0f);
}

TEST(WeightReference, Q5_0KnownAnswer) {
  BlockQ5_0 b{};
  b.d = 0x3C00;  // 1
  const uint32_t qh = 0x80020003u;  // 5th bit set for elements 0, 1, 17, 31
  std::memcpy(b.qh, &qh, 4);
  for (int j = 0; j < 16; ++j) b.qs[j] = static_cast<uint8_t>(j | (j << 4));
  const std::vector<float> y = dequantize_ref(GgmlType::Q5_0, &b, 32);
  EXPECT_EQ(y[0], 0.0f);    // (0 | 16) - 16
  EXPECT_EQ(y[1], 1.0f);    // (1 | 16) - 16
  EXPECT_EQ(y[2], -14.0f);  // 2 - 16
  EXPECT_EQ(y[16], -16.0f); // 0 - 16
  EXPECT_EQ(y[17], 1.0f);   // (1 | 16) - 16
  EXPECT_EQ(y[30], -2.0f);  // 14 - 16
  EXPECT_EQ(y[31], 15.0f);  // (15 | 16) - 16
}

TEST(WeightReference, Q5_1KnownAnswer) {
  BlockQ5_1 b{};
  b.d = 0x3800;  // 0.5
  b.m = 0x4000;  // 2
  const uint32_t qh = 0x00010004u;  // elements 2 and 16
  std::memcpy(b.qh, &qh, 4);
  for (int j = 0; j < 16; ++j) b.qs[j] = static_cast<uint8_t>(15 - j);  // high nibbles 0
  const std::vector<float> y = dequantize_ref(GgmlType::Q5_1, &b, 32);
  EXPECT_EQ(y[0], 9.5f);   // 15 * 0.5 + 2
  EXPECT_EQ(y[2], 16.5f);  // (13 | 16) * 0.5 + 2
  EXPECT_EQ(y[15], 2.0f);  // 0 * 0.5 + 2
  EXPECT_EQ(y[16], 10.0f); // (0 | 16) * 0.5 + 2
  EXPECT_EQ(y[17], 2.0f);
}

TEST(WeightReference, Q8_0KnownAnswer) {
  BlockQ8_0 b{};
  b.d = 0x3000;  // 0.125
  b.qs[0] = -128;
  b.qs[1] = -1;
  b.qs[2] = 1;
  b.qs[31] = 127;
  const std::vector<float> y = dequantize_ref(GgmlType::Q8_0, &b, 32);
  EXPECT_EQ(y[0], -16.0f);
  EXPECT_EQ(y[1], -0.125f);
  EXPECT_EQ(y[2], 0.125f);
  EXPECT_EQ(y[3], 0.0f);
  EXPECT_EQ(y[31], 15.875f);
}

TEST(WeightReference, IQ4_NLKnownAnswer) {
  // GGML's kvalues_iq4nl, written out here rather than taken from the code under test.
  const int grid[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};
  BlockIQ4_NL b{};
  b.d = 0x3800;  // 0.5
  for (int j = 0; j < 16; ++j) b.qs[j] = static_cast<uint8_t>(j | ((15 - j) << 4));
  const std::vector<float> y = dequantize_ref(GgmlType::IQ4_NL, &b, 32);
  EXPECT_EQ(y[0], -63.5f);  // code 0: -127 * 0.5
  EXPECT_EQ(y[8], 0.5f);    // code 8: 1 * 0.5
  EXPECT_EQ(y[15], 56.5f);  // code 15: 113 * 0.5
  EXPECT_EQ(y[16], 56.5f);  // high nibble of qs[0] = 15
  EXPECT_EQ(y[31], -63.5f); // high nibble of qs[15] = 0
  for (int i = 0; i < 32; ++i) EXPECT_EQ(y[i], 0.5f * grid[i < 16 ? i : 31 - i]) << i;
  // Against Q8_0 activations: codes j and 15 - j meet a = 1 and a = 2; d_w * d_a = 0.5 * 2.
  BlockQ8_0 a{};
  a.d = 0x4000;  // 2
  for (int j = 0; j < 32; ++j) a.qs[j] = static_cast<int8_t>(j < 16 ? 1 : 2);
  int expected = 0;
  for (int j = 0; j < 16; ++j) expected += grid[j] * 1 + grid[15 - j] * 2;  // = 3 * sum(grid) = 3 * -94
  EXPECT_EQ(expected, -282);
  EXPECT_EQ(vec_dot_reference(GgmlType::IQ4_NL, 32, &b, &a), static_cast<float>(expected) * 0.5f * 2.0f);
  EXPECT_EQ(activation_type(GgmlType::IQ4_NL), GgmlType::Q8_0);
}

TEST(WeightReference, FloatFormatsKnownAnswer) {
  const uint16_t halves[] = {0x3C00, 0xC000, 0x7BFF, 0x0001};
  const std::vector<float> h = dequantize_ref(GgmlType::F16, halves, 4);
  EXPECT_EQ(h[0], 1.0f);
  EXPECT_EQ(h[1], -2.0f);
  EXPECT_EQ(h[2], 65504.0f);
  EXPECT_EQ(h[3], std::ldexp(1.0f, -24));
  const uint16_t brains[] = {0x3F80, 0xC040};
  const std::vector<float> b = dequantize_ref(GgmlType::BF16, brains, 2);
  EXPECT_EQ(b[0], 1.0f);
  EXPECT_EQ(b[1], -3.0f);
}

TEST(WeightReference, Q8ActivationRoundsLikeGgml) {
  // amax = 127 gives d = 1, so q = roundf(x): ties go away from zero.
  std::vector<float> x(32, 0.0f);
  x[0] = 2.5f;
  x[1] = -2.5f;
  x[2] = 127.0f;
  x[3] = 0.49999997f;
  x[4] = -0.5f;
  BlockQ8_1 q{};
  quantize_activation_reference(GgmlType::Q4_1, x.data(), &q, 32);  // Q4_1 meets Q8_1
  EXPECT_EQ(q.d, 0x3C00);
  EXPECT_EQ(q.qs[0], 3);
  EXPECT_EQ(q.qs[1], -3);
  EXPECT_EQ(q.qs[2], 127);
  EXPECT_EQ(q.qs[3], 0);
  EXPECT_EQ(q.qs[4], -1);
  EXPECT_EQ(f16_to_f32(q.s), 126.0f);  // d * (3 - 3 + 127 + 0 - 1)
  EXPECT_EQ(activation_type(GgmlType::Q4_0), GgmlType::Q8_0);
  EXPECT_EQ(activation_type(GgmlType::Q5_1), GgmlType::Q8_1);
  EXPECT_EQ(activation_type(GgmlType::Q4_K), GgmlType::Q8_K);
  EXPECT_EQ(activation_type(GgmlType::F16), GgmlType::F16);
}

TEST(WeightReference, Q4_0DotKnownAnswer) {
  BlockQ4_0 w{};
  w.d = 0x3800;  // 0.5
  for (int j = 0; j < 16; ++j) w.qs[j] = static_cast<uint8_t>(j | ((15 - j) << 4));
  BlockQ8_0 a{};
  a.d = 0x4000;  // 2
  for (int j = 0; j < 32; ++j) a.qs[j] = 1;
  // codes sum: (-8..7) + (7..-8) = -16; times 0.5 * 2.
  EXPECT_EQ(vec_dot_reference(GgmlType::Q4_0, 32, &w, &a), -16.0f);
  a.qs[15] = 0;  // drops code 7
  EXPECT_EQ(vec_dot_reference(GgmlType::Q4_0, 32, &w, &a), -23.0f);
}

TEST(WeightReference, Q5_1DotKnownAnswer) {
  BlockQ5_1 w{};
  w.d = 0x3C00;  // 1
  w.m = 0xBC00;  // -1
  const uint32_t qh = 0xFFFFFFFFu;  // every code 16 + nibble
  std::memcpy(w.qh, &qh, 4);
  BlockQ8_1 a{};
  a.d = 0x3C00;
  a.qs[0] = 2;
  a.qs[16] = -1;
  a.s = 0x3C00;  // d * (2 - 1) = 1
  // 16 * 2 + 16 * -1 = 16 (codes of element 0 and 16 are 16); min term -1 * 1.
  EXPECT_EQ(vec_dot_reference(GgmlType::Q5_1, 32, &w, &a), 15.0f);
}

// ---------------------------------------------------------------------------
// SIMD against reference, on every target compiled into the kernel library.

class EveryTarget : public ::testing::Test {
 protected:
  void SetUp() override {
    targets_ = simd::compiled_targets();
    ASSERT_FALSE(targets_.empty());
  }
  std::vector<int64_t> targets_;
};

// Equal up to one rounding of a product/sum (the reference may be contracted
// into an FMA by the compiler on some targets).
void expect_close_ulp(float expected, float actual, const std::string& what) {
  const float tol = 2e-7f * std::max(std::fabs(expected), std::fabs(actual));
  EXPECT_LE(std::fabs(expected - actual), tol) << what << ": expected " << expected << " got " << actual;
}

TEST_F(EveryTarget, DequantizeMatchesReference) {
  std::mt19937 rng(1234);
  for (GgmlType type : kOwnTypes) {
    std::vector<int64_t> sizes(std::begin(kCols), std::end(kCols));
    if (ggml_type_info(type).block_elems == 1) sizes.insert(sizes.end(), {1, 3, 7, 33, 17});
    for (int64_t n : sizes) {
      const std::vector<uint8_t> w = random_weights(rng, type, 1, n);
      const std::vector<float> expected = dequantize_ref(type, w.data(), n);
      for (int64_t target : targets_) {
        TargetGuard guard(target);
        std::vector<float> got(static_cast<size_t>(n), -1.0f);
        dequantize_row(type, w.data(), got.data(), n);
        for (int64_t i = 0; i < n; ++i) {
          expect_close_ulp(expected[i], got[i],
                           std::string(ggml_type_name(type)) + " " + hwy::TargetName(target) + " n=" +
                               std::to_string(n) + " i=" + std::to_string(i));
        }
      }
    }
  }
}

TEST_F(EveryTarget, ActivationQuantizationIsBitExact) {
  std::mt19937 rng(99);
  for (GgmlType type : kOwnTypes) {
    for (int64_t n : kCols) {
      std::vector<float> x = random_floats(rng, n, 3.0f);
      // Edge cases: an all-zero block, and exact ties after scaling (amax 127 -> d 1).
      if (n >= 96) {
        std::fill(x.begin() + 32, x.begin() + 64, 0.0f);
        for (int i = 64; i < 96; ++i) x[i] = static_cast<float>(i - 80) + 0.5f;
        x[64] = 127.0f;
      }
      const size_t bytes = ggml_row_bytes(activation_type(type), n);
      std::vector<uint8_t> expected(bytes), got(bytes);
      quantize_activation_reference(type, x.data(), expected.data(), n);
      for (int64_t target : targets_) {
        TargetGuard guard(target);
        std::fill(got.begin(), got.end(), 0xAB);
        quantize_activation(type, x.data(), got.data(), n);
        EXPECT_EQ(expected, got) << ggml_type_name(type) << " " << hwy::TargetName(target) << " n=" << n;
      }
    }
  }
}

// |w| . |x| over the row, the scale of the float rounding a dot product can make.
double dot_magnitude(GgmlType type, const uint8_t* w, const std::vector<float>& x) {
  const int64_t n = static_cast<int64_t>(x.size());
  const std::vector<float> wf = dequantize_ref(type, w, n);
  double mag = 0;
  for (int64_t i = 0; i < n; ++i) mag += std::fabs(static_cast<double>(wf[i]) * x[i]);
  if (type == GgmlType::Q4_1 || type == GgmlType::Q5_1) {  // the min term is summed apart
    const size_t block_bytes = static_cast<size_t>(ggml_type_info(type).block_bytes);
    for (int64_t b = 0; b < n / 32; ++b) {
      uint16_t m;
      std::memcpy(&m, w + b * block_bytes + 2, 2);
      double sum_x = 0;
      for (int i = 0; i < 32; ++i) sum_x += std::fabs(x[b * 32 + i]);
      mag += 2 * std::fabs(f16_to_f32(m)) * sum_x;
    }
  }
  return mag;
}

TEST_F(EveryTarget, VecDotMatchesReference) {
  std::mt19937 rng(7);
  for (GgmlType type : kOwnTypes) {
    for (int64_t n : kCols) {
      for (int rep = 0; rep < 3; ++rep) {
        const std::vector<uint8_t> w = random_weights(rng, type, 1, n);
        const std::vector<float> x = random_floats(rng, n);
        std::vector<uint8_t> act(ggml_row_bytes(activation_type(type), n));
        quantize_activation_reference(type, x.data(), act.data(), n);
        const float expected = vec_dot_reference(type, n, w.data(), act.data());
        const double tol = 1e-5 * dot_magnitude(type, w.data(), x) + 1e-6;
        for (int64_t target : targets_) {
          TargetGuard guard(target);
          const float got = vec_dot(type, n, w.data(), act.data());
          EXPECT_NEAR(expected, got, tol) << ggml_type_name(type) << " " << hwy::TargetName(target) << " n=" << n;
        }
      }
    }
  }
}

// The matmul tiles (every rows x tokens remainder) against per-element
// reference dot products of the same quantized activations.
TEST_F(EveryTarget, MatmulTilesMatchReferenceDots) {
  std::mt19937 rng(2024);
  ThreadPool pool(1);
  const int64_t row_counts[] = {1, 3, 7, 33};
  const int64_t token_counts[] = {1, 2, 5, 17, 27, 64};  // 27: an odd number of 8-token lane groups
  for (GgmlType type : kOwnTypes) {
    for (int64_t cols : {int64_t{32}, int64_t{288}}) {
      for (int64_t rows : row_counts) {
        const std::vector<uint8_t> wbytes = random_weights(rng, type, rows, cols);
        const WeightMatrix w{type, wbytes.data(), rows, cols, ggml_row_bytes(type, cols)};
        for (int64_t tokens : token_counts) {
          const std::vector<float> x = random_floats(rng, tokens * cols);
          const size_t act_row = ggml_row_bytes(activation_type(type), cols);
          std::vector<uint8_t> act(act_row * tokens);
          for (int64_t t = 0; t < tokens; ++t) {
            quantize_activation_reference(type, x.data() + t * cols, act.data() + t * act_row, cols);
          }
          for (int64_t target : targets_) {
            TargetGuard guard(target);
            std::vector<float> y(static_cast<size_t>(rows * tokens), NAN);
            matmul(w, x.data(), tokens, y.data(), pool);
            for (int64_t t = 0; t < tokens; ++t) {
              const std::vector<float> xt(x.begin() + t * cols, x.begin() + (t + 1) * cols);
              for (int64_t r = 0; r < rows; ++r) {
                const uint8_t* wr = wbytes.data() + r * w.row_bytes;
                const float expected = vec_dot_reference(type, cols, wr, act.data() + t * act_row);
                const double tol = 1e-5 * dot_magnitude(type, wr, xt) + 1e-6;
                ASSERT_NEAR(expected, y[t * rows + r], tol)
                    << ggml_type_name(type) << " " << hwy::TargetName(target) << " rows=" << rows
                    << " tokens=" << tokens << " r=" << r << " t=" << t;
              }
            }
          }
        }
      }
    }
  }
}

TEST(SimdDispatch, BestTargetIsNamed) {
  const simd::TargetKernels& k = simd::best_kernels();
  ASSERT_NE(k.target_name, nullptr);
  EXPECT_GT(k.tile_rows, 0);
  EXPECT_GT(k.tile_tokens, 0);
  // The table of the best target is the one the first compiled target gives.
  const std::vector<int64_t> targets = simd::compiled_targets();
  ASSERT_FALSE(targets.empty());
  EXPECT_STREQ(k.target_name, hwy::TargetName(targets.front()));
  std::printf("kernels use Highway target %s\n", k.target_name);
}

}  // namespace
}  // namespace kvtier::kernels
