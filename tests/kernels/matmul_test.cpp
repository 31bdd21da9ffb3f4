// matmul() against a double-precision reference for 1..3 threads, and on
// real tensors from the test models.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "common/shared_data.h"
#include "kernel_test_util.h"
#include "kvtier/gguf.h"
#include "kvtier/kernels.h"

namespace kvtier::kernels {
namespace {

using testing::matmul_double;
using testing::random_floats;
using testing::random_weights;
using testing::TargetGuard;

// What the activation conversion loses: x minus x after quantize + dequantize.
std::vector<float> activation_roundtrip(GgmlType weight_type, const std::vector<float>& x, int64_t cols) {
  const GgmlType at = activation_type(weight_type);
  const size_t row_bytes = ggml_row_bytes(at, cols);
  std::vector<uint8_t> q(row_bytes);
  std::vector<float> out(x.size());
  for (size_t t = 0; t < x.size() / cols; ++t) {
    quantize_activation_reference(weight_type, x.data() + t * cols, q.data(), cols);
    float* o = out.data() + t * cols;
    if (at == GgmlType::Q8_0 || at == GgmlType::Q8_1) {
      const size_t block_bytes = at == GgmlType::Q8_0 ? 34 : 36;
      const size_t qs_offset = at == GgmlType::Q8_0 ? 2 : 4;
      for (int64_t b = 0; b < cols / 32; ++b) {
        uint16_t d;
        std::memcpy(&d, q.data() + b * block_bytes, 2);
        const auto* qs = reinterpret_cast<const int8_t*>(q.data() + b * block_bytes + qs_offset);
        for (int i = 0; i < 32; ++i) o[b * 32 + i] = qs[i] * f16_to_f32(d);
      }
    } else if (at == GgmlType::Q8_K) {
      // block_q8_K: float d | int8 qs[256] | int16 bsums[16]  (292 bytes)
      for (int64_t b = 0; b < cols / 256; ++b) {
        float d;
        std::memcpy(&d, q.data() + b * 292, 4);
        const auto* qs = reinterpret_cast<const int8_t*>(q.data() + b * 292 + 4);
        for (int i = 0; i < 256; ++i) o[b * 256 + i] = qs[i] * d;
      }
    } else {
      dequantize_row_reference(at, q.data(), o, cols);
    }
  }
  return out;
}

// |y - y_exact| <= sum_i |w_i| |x_i - x~_i| (activation rounding) + float summation error.
void expect_matmul_close(const WeightMatrix& w, const std::vector<float>& x, int64_t tokens,
                         const std::vector<float>& y, const std::string& what) {
  const std::vector<double> exact = matmul_double(w, x, tokens);
  const std::vector<float> x_used = activation_roundtrip(w.type, x, w.cols);
  std::vector<float> row(static_cast<size_t>(w.cols));
  for (int64_t r = 0; r < w.rows; ++r) {
    dequantize_row_reference(w.type, static_cast<const uint8_t*>(w.data) + r * w.row_bytes, row.data(), w.cols);
    for (int64_t t = 0; t < tokens; ++t) {
      double rounding = 0, magnitude = 0;
      for (int64_t i = 0; i < w.cols; ++i) {
        rounding += std::fabs(static_cast<double>(row[i])) * std::fabs(x[t * w.cols + i] - x_used[t * w.cols + i]);
        magnitude += std::fabs(static_cast<double>(row[i]) * x[t * w.cols + i]);
      }
      const double tol = 1.01 * rounding + 2e-5 * magnitude + 1e-5;
      ASSERT_NEAR(exact[t * w.rows + r], y[t * w.rows + r], tol) << what << " r=" << r << " t=" << t;
    }
  }
}

TEST(Matmul, MatchesDoublePrecisionForOneToThreeThreads) {
  std::mt19937 rng(5);
  const GgmlType types[] = {GgmlType::F32,  GgmlType::F16,  GgmlType::BF16, GgmlType::Q4_0,
                            GgmlType::Q4_1, GgmlType::Q5_0, GgmlType::Q5_1, GgmlType::Q8_0};
  for (GgmlType type : types) {
    for (auto [rows, cols] : {std::pair<int64_t, int64_t>{33, 288}, {70, 96}}) {
      const std::vector<uint8_t> wbytes = random_weights(rng, type, rows, cols);
      const WeightMatrix w{type, wbytes.data(), rows, cols, ggml_row_bytes(type, cols)};
      for (int64_t tokens : {1, 2, 5, 17, 70}) {
        const std::vector<float> x = random_floats(rng, tokens * cols);
        std::vector<float> first;
        for (int threads = 1; threads <= 3; ++threads) {
          ThreadPool pool(threads);
          std::vector<float> y(static_cast<size_t>(rows * tokens), NAN);
          matmul(w, x.data(), tokens, y.data(), pool);
          const std::string what = std::string(ggml_type_name(type)) + " rows=" + std::to_string(rows) +
                                   " tokens=" + std::to_string(tokens) + " threads=" + std::to_string(threads);
          expect_matmul_close(w, x, tokens, y, what);
          // Work splitting must not change a single bit of the result.
          if (threads == 1) {
            first = y;
          } else {
            EXPECT_EQ(first, y) << what;
          }
        }
      }
    }
  }
}

// K-quants go through the same entry point (routed to kernels/kquant_ops.h).
TEST(Matmul, RoutesKQuantsForOneToThreeThreads) {
  std::mt19937 rng(6);
  for (GgmlType type : {GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K, GgmlType::Q2_K, GgmlType::Q3_K,
                        GgmlType::IQ4_XS, GgmlType::IQ4_NL}) {
    const int64_t rows = 37, cols = 512;
    const std::vector<uint8_t> wbytes = random_weights(rng, type, rows, cols);
    const WeightMatrix w{type, wbytes.data(), rows, cols, ggml_row_bytes(type, cols)};
    for (int64_t tokens : {1, 3, 17}) {
      const std::vector<float> x = random_floats(rng, tokens * cols);
      for (int threads = 1; threads <= 3; ++threads) {
        ThreadPool pool(threads);
        std::vector<float> y(static_cast<size_t>(rows * tokens), NAN);
        matmul(w, x.data(), tokens, y.data(), pool);
        expect_matmul_close(w, x, tokens, y,
                            std::string(ggml_type_name(type)) + " tokens=" + std::to_string(tokens) +
                                " threads=" + std::to_string(threads));
      }
    }
  }
}

// Several matrices over one input in one pool job (a layer's q/k/v, gate/up) give exactly what separate
// matmul() calls give: the same tiles on the same quantized activations, whatever the mix of weight types
// (Q8_0 meets Q8_0 activations, the K-quants Q8_K: two activation buffers here), row counts that are not a
// multiple of the row chunk, decode and prefill token counts, and 1-3 threads.
TEST(Matmul, SharedInputMatchesSeparateCallsExactly) {
  std::mt19937 rng(8);
  const int64_t cols = 512;
  const struct {
    GgmlType type;
    int64_t rows;
  } mats[] = {{GgmlType::Q4_K, 300}, {GgmlType::Q8_0, 37}, {GgmlType::Q6_K, 128}, {GgmlType::IQ4_NL, 45}};
  std::vector<std::vector<uint8_t>> bytes;
  std::vector<WeightMatrix> ws;
  for (const auto& m : mats) bytes.push_back(random_weights(rng, m.type, m.rows, cols));
  for (size_t i = 0; i < bytes.size(); ++i) {
    ws.push_back({mats[i].type, bytes[i].data(), mats[i].rows, cols, ggml_row_bytes(mats[i].type, cols)});
  }
  for (int64_t tokens : {1, 5, 70}) {
    const std::vector<float> x = random_floats(rng, tokens * cols);
    for (int threads = 1; threads <= 3; ++threads) {
      ThreadPool pool(threads);
      std::vector<std::vector<float>> shared(ws.size()), separate(ws.size());
      std::vector<MatmulOutput> outputs;
      for (size_t i = 0; i < ws.size(); ++i) {
        shared[i].assign(static_cast<size_t>(ws[i].rows * tokens), NAN);
        separate[i].assign(shared[i].size(), NAN);
        outputs.push_back({&ws[i], shared[i].data()});
        matmul(ws[i], x.data(), tokens, separate[i].data(), pool);
      }
      matmul_shared(outputs, x.data(), tokens, pool);
      for (size_t i = 0; i < ws.size(); ++i) {
        EXPECT_EQ(0, std::memcmp(shared[i].data(), separate[i].data(), shared[i].size() * sizeof(float)))
            << ggml_type_name(ws[i].type) << " tokens=" << tokens << " threads=" << threads;
      }
    }
  }
}

TEST(Matmul, GetRowDequantizesOneRow) {
  std::mt19937 rng(8);
  const std::vector<uint8_t> wbytes = random_weights(rng, GgmlType::Q5_0, 5, 64);
  const WeightMatrix w{GgmlType::Q5_0, wbytes.data(), 5, 64, ggml_row_bytes(GgmlType::Q5_0, 64)};
  std::vector<float> got(64), expected(64);
  get_row(w, 3, got.data());
  dequantize_row_reference(GgmlType::Q5_0, wbytes.data() + 3 * w.row_bytes, expected.data(), 64);
  EXPECT_EQ(expected, got);
}

// Real weights: every 2D tensor type of kvtier's own formats found in the test
// models, dequantized and multiplied on every target, against the reference.
TEST(MatmulRealData, ModelTensorsOnEveryTarget) {
  const char* files[] = {"models/tiny-llama-31m.Q4_0.gguf", "models/tiny-llama-31m.Q8_0.gguf",
                         "models/tiny-llama-31m.f16.gguf", "models/tiny-llama-31m.Q4_K_M.gguf"};
  KVTIER_REQUIRE_SHARED(files[0]);
  std::mt19937 rng(11);
  ThreadPool pool(2);
  int tensors_checked = 0;
  for (const char* rel : files) {
    if (!std::filesystem::exists(kvtier::testing::shared_path(rel))) continue;
    auto file = gguf::File::open(kvtier::testing::shared_path(rel).string());
    ASSERT_TRUE(file.ok()) << file.status().message();
    std::vector<GgmlType> seen;
    for (const gguf::TensorInfo& t : (*file)->tensors()) {
      const bool own = t.type == GgmlType::F32 || t.type == GgmlType::F16 || t.type == GgmlType::BF16 ||
                       t.type == GgmlType::Q4_0 || t.type == GgmlType::Q4_1 || t.type == GgmlType::Q5_0 ||
                       t.type == GgmlType::Q5_1 || t.type == GgmlType::Q8_0;
      if (!own || t.n_dims != 2 || std::find(seen.begin(), seen.end(), t.type) != seen.end()) continue;
      seen.push_back(t.type);
      const int64_t rows = std::min<int64_t>(t.ne[1], 37);
      const WeightMatrix w{t.type, t.data, rows, t.ne[0], ggml_row_bytes(t.type, t.ne[0])};
      std::vector<float> expected(static_cast<size_t>(w.cols)), got(static_cast<size_t>(w.cols));
      const int64_t tokens = 5;
      const std::vector<float> x = random_floats(rng, tokens * w.cols);
      for (int64_t target : simd::compiled_targets()) {
        TargetGuard guard(target);
        const std::string what = std::string(rel) + " " + t.name + " " + hwy::TargetName(target);
        for (int64_t r = 0; r < rows; ++r) {
          get_row(w, r, got.data());
          dequantize_row_reference(w.type, t.data + r * w.row_bytes, expected.data(), w.cols);
          for (int64_t i = 0; i < w.cols; ++i) {
            ASSERT_NEAR(expected[i], got[i], 2e-7f * std::fabs(expected[i])) << what << " r=" << r << " i=" << i;
          }
        }
        std::vector<float> y(static_cast<size_t>(rows * tokens), NAN);
        matmul(w, x.data(), tokens, y.data(), pool);
        expect_matmul_close(w, x, tokens, y, what);
      }
      ++tensors_checked;
    }
  }
  EXPECT_GT(tensors_checked, 0);
}

}  // namespace
}  // namespace kvtier::kernels
