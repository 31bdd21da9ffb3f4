// Batch invariance of matmul: the value of one output y[token][row] must be
// bit-identical whatever else shares the call (1 token in decode, 512 in
// prefill, 3 in a speculative step; all rows or a slice; 1 or 2 threads),
// because the server batches requests and must answer each as if alone.
#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "kernel_test_util.h"
#include "kvtier/kernels.h"

namespace kvtier::kernels {
namespace {

using testing::random_floats;
using testing::random_weights;
using testing::TargetGuard;

constexpr int64_t kRows = 37;    // 18 row pairs and one row
constexpr int64_t kTokens = 75;  // 9 groups of 8 tokens (4 pairs and one) and 3 more

// Two K-quant super-blocks, or 19 blocks of 32 (not a whole number of QuantTile's accumulator sets).
int64_t columns(GgmlType type) { return ggml_type_info(type).block_elems == 256 ? 512 : 608; }

// y of `tokens` rows of x against rows [row0, row0 + rows) of w: [tokens][rows].
std::vector<float> run(const WeightMatrix& w, int64_t row0, int64_t rows, const float* x, int64_t tokens,
                       ThreadPool& pool) {
  const WeightMatrix slice{w.type, static_cast<const uint8_t*>(w.data) + row0 * w.row_bytes, rows, w.cols,
                           w.row_bytes};
  std::vector<float> y(static_cast<size_t>(rows * tokens), NAN);
  matmul(slice, x, tokens, y.data(), pool);
  return y;
}

// The first output whose bits differ between the whole-batch call and the other ways of computing it,
// or an empty string when there is none.
std::string first_batch_dependence(GgmlType type, std::mt19937& rng) {
  const int64_t kCols = columns(type);
  const std::vector<uint8_t> bytes = random_weights(rng, type, kRows, kCols);
  const WeightMatrix w{type, bytes.data(), kRows, kCols, ggml_row_bytes(type, kCols)};
  const std::vector<float> x = random_floats(rng, kTokens * kCols);
  ThreadPool one(1), two(2);
  const std::vector<float> whole = run(w, 0, kRows, x.data(), kTokens, two);
  auto same = [&](float got, int64_t t, int64_t r, const char* how) -> std::string {
    const float want = whole[t * kRows + r];
    if (std::memcmp(&got, &want, sizeof(float)) == 0) return {};
    return std::string(how) + " t=" + std::to_string(t) + " r=" + std::to_string(r) + ": " + std::to_string(got) +
           " vs " + std::to_string(want) + " in one call of all tokens";
  };
  for (int64_t t = 0; t < kTokens; ++t) {  // decode: one token at a time
    const std::vector<float> y = run(w, 0, kRows, x.data() + t * kCols, 1, one);
    for (int64_t r = 0; r < kRows; ++r) {
      if (std::string d = same(y[r], t, r, "1 token"); !d.empty()) return d;
    }
  }
  for (const int64_t per_call : {2, 3, 5}) {  // a few tokens per call (a server's batch of decode steps)
    const std::string how = std::to_string(per_call) + " tokens";
    for (int64_t t0 = 0; t0 < kTokens; t0 += per_call) {
      const int64_t n = std::min<int64_t>(per_call, kTokens - t0);
      const std::vector<float> y = run(w, 0, kRows, x.data() + t0 * kCols, n, one);
      for (int64_t t = 0; t < n; ++t) {
        for (int64_t r = 0; r < kRows; ++r) {
          if (std::string d = same(y[t * kRows + r], t0 + t, r, how.c_str()); !d.empty()) return d;
        }
      }
    }
  }
  const int64_t row0 = 5, rows = 13;  // a slice of rows that starts off the tile grid, 17 tokens
  const std::vector<float> y = run(w, row0, rows, x.data() + 40 * kCols, 17, one);
  for (int64_t t = 0; t < 17; ++t) {
    for (int64_t r = 0; r < rows; ++r) {
      if (std::string d = same(y[t * rows + r], 40 + t, row0 + r, "13 rows x 17 tokens"); !d.empty()) return d;
    }
  }
  return {};
}

TEST(BatchInvariance, OutputsDoNotDependOnTheBatch) {
  const GgmlType types[] = {GgmlType::F32,  GgmlType::F16,  GgmlType::BF16, GgmlType::Q4_0,   GgmlType::Q4_1,
                            GgmlType::Q5_0, GgmlType::Q5_1, GgmlType::Q8_0, GgmlType::IQ4_NL, GgmlType::Q4_K,
                            GgmlType::Q5_K, GgmlType::Q6_K, GgmlType::Q2_K, GgmlType::Q3_K,   GgmlType::IQ4_XS};
  for (int64_t target : simd::compiled_targets()) {
    TargetGuard guard(target);
    std::mt19937 rng(17);
    for (GgmlType type : types) {
      EXPECT_EQ(first_batch_dependence(type, rng), "") << ggml_type_name(type) << " " << hwy::TargetName(target);
    }
  }
}

}  // namespace
}  // namespace kvtier::kernels
