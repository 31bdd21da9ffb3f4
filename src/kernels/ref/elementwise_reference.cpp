#include <algorithm>
#include <cmath>
#include <cstddef>

#include "kernels/elementwise.h"

namespace kvtier::kernels {

void rms_norm_reference(const float* x, const float* weight, int n_rows, int d, float eps, float* out) {
  for (int t = 0; t < n_rows; ++t) {
    const float* row = x + static_cast<size_t>(t) * d;
    float* dst = out + static_cast<size_t>(t) * d;
    double sum = 0;
    for (int i = 0; i < d; ++i) sum += static_cast<double>(row[i] * row[i]);
    const float scale = 1.0f / std::sqrt(static_cast<float>(sum / d) + eps);
    for (int i = 0; i < d; ++i) dst[i] = row[i] * scale * weight[i];
  }
}

void rope_table_reference(int n, int pos, int rope_dims, float freq_base, float freq_scale, const float* freq_factors,
                          float* cos_sin) {
  const float theta_scale = std::pow(freq_base, -2.0f / static_cast<float>(rope_dims));
  for (int t = 0; t < n; ++t) {
    float theta = static_cast<float>(pos + t);
    float* row = cos_sin + static_cast<size_t>(t) * rope_dims;
    for (int i = 0; i < rope_dims; i += 2) {
      const float factor = freq_factors ? freq_factors[i / 2] : 1.0f;
      const float angle = freq_scale * (theta / factor);
      row[i] = std::cos(angle);
      row[i + 1] = std::sin(angle);
      theta *= theta_scale;
    }
  }
}

void rope_reference(const float* cos_sin, float* rows, int n_tokens, int n_heads, int head_dim, int rope_dims,
                    bool neox) {
  for (int t = 0; t < n_tokens; ++t) {
    const float* cs = cos_sin + static_cast<size_t>(t) * rope_dims;
    for (int h = 0; h < n_heads; ++h) {
      float* v = rows + (static_cast<size_t>(t) * n_heads + h) * head_dim;
      for (int i = 0; i < rope_dims; i += 2) {
        const int a = neox ? i / 2 : i;
        const int b = neox ? i / 2 + rope_dims / 2 : i + 1;
        const float x0 = v[a], x1 = v[b];
        v[a] = x0 * cs[i] - x1 * cs[i + 1];
        v[b] = x0 * cs[i + 1] + x1 * cs[i];
      }
    }
  }
}

void silu_mul_reference(const float* gate, const float* up, float* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = gate[i] / (1.0f + std::exp(-gate[i])) * up[i];
}

void softmax_reference(const float* x, int n, float scale, float* out) {
  double m = -INFINITY;
  for (int i = 0; i < n; ++i) m = std::max(m, static_cast<double>(scale) * x[i]);
  double sum = 0;
  for (int i = 0; i < n; ++i) sum += std::exp(static_cast<double>(scale) * x[i] - m);
  for (int i = 0; i < n; ++i) out[i] = static_cast<float>(std::exp(static_cast<double>(scale) * x[i] - m) / sum);
}

}  // namespace kvtier::kernels
