// Helpers for the kernel tests: random blocks of each format, a guard that
// pins Highway to one target, and a double-precision matmul reference.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include <hwy/targets.h>

#include "kernels/weight_blocks.h"
#include "kvtier/f16.h"
#include "kvtier/ggml_types.h"
#include "kvtier/kernels.h"

namespace kvtier::kernels::testing {

// Runs the dispatched kernels on one Highway target while alive.
class TargetGuard {
 public:
  explicit TargetGuard(int64_t target) { hwy::SetSupportedTargetsForTest(target); }
  ~TargetGuard() { hwy::SetSupportedTargetsForTest(0); }
  TargetGuard(const TargetGuard&) = delete;
  TargetGuard& operator=(const TargetGuard&) = delete;
};

inline std::vector<float> random_floats(std::mt19937& rng, int64_t n, float scale = 1.0f) {
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& f : v) f = dist(rng);
  return v;
}

// Random bytes of `rows` rows of `cols` elements in type t. Every bit pattern
// of the codes occurs; scales are random finite halves of moderate size.
inline std::vector<uint8_t> random_weights(std::mt19937& rng, GgmlType t, int64_t rows, int64_t cols) {
  const size_t row_bytes = ggml_row_bytes(t, cols);
  std::vector<uint8_t> data(row_bytes * static_cast<size_t>(rows));
  std::uniform_int_distribution<int> byte(0, 255);
  for (uint8_t& b : data) b = static_cast<uint8_t>(byte(rng));
  std::uniform_real_distribution<float> scale(-0.05f, 0.05f);
  const int64_t n_values = rows * cols;
  auto put_half = [&](size_t offset, float value) {
    const uint16_t h = (t == GgmlType::BF16) ? f32_to_bf16(value) : f32_to_f16(value);
    std::memcpy(data.data() + offset, &h, 2);
  };
  switch (t) {
    case GgmlType::F32: {
      std::normal_distribution<float> dist(0.0f, 1.0f);
      for (int64_t i = 0; i < n_values; ++i) {
        const float f = dist(rng);
        std::memcpy(data.data() + i * 4, &f, 4);
      }
      break;
    }
    case GgmlType::F16:
    case GgmlType::BF16: {
      std::normal_distribution<float> dist(0.0f, 1.0f);
      for (int64_t i = 0; i < n_values; ++i) put_half(static_cast<size_t>(i) * 2, dist(rng));
      break;
    }
    default: {
      // Block formats: overwrite d (and m) of every block with finite halves.
      const GgmlTypeInfo& info = ggml_type_info(t);
      // K-quants: Q4_K/Q5_K start with d and dmin; Q6_K ends with d (offset 208), Q3_K too (108);
      // Q2_K ends with d and dmin (80, 82). IQ4_NL and IQ4_XS start with d.
      const bool has_min = t == GgmlType::Q4_1 || t == GgmlType::Q5_1 || t == GgmlType::Q4_K ||
                           t == GgmlType::Q5_K || t == GgmlType::Q2_K;
      size_t d_offset = 0;
      if (t == GgmlType::Q6_K) d_offset = 208;
      if (t == GgmlType::Q3_K) d_offset = 108;
      if (t == GgmlType::Q2_K) d_offset = 80;
      for (size_t off = 0; off < data.size(); off += static_cast<size_t>(info.block_bytes)) {
        put_half(off + d_offset, scale(rng));
        if (has_min) put_half(off + d_offset + 2, scale(rng));
      }
    }
  }
  return data;
}

// y[t][r] = sum_i W[r][i] * x[t][i] in double, with W dequantized by the
// reference and x taken exactly (no activation quantization).
inline std::vector<double> matmul_double(const WeightMatrix& w, const std::vector<float>& x, int64_t n_tokens) {
  std::vector<float> row(static_cast<size_t>(w.cols));
  std::vector<double> y(static_cast<size_t>(n_tokens * w.rows));
  for (int64_t r = 0; r < w.rows; ++r) {
    dequantize_row_reference(w.type, static_cast<const uint8_t*>(w.data) + r * w.row_bytes, row.data(), w.cols);
    for (int64_t t = 0; t < n_tokens; ++t) {
      double sum = 0;
      for (int64_t i = 0; i < w.cols; ++i) sum += static_cast<double>(row[i]) * x[t * w.cols + i];
      y[t * w.rows + r] = sum;
    }
  }
  return y;
}

}  // namespace kvtier::kernels::testing
