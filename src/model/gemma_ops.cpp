// The element-wise steps Gemma adds to the llama-family forward pass (model/gemma.h).
#include <cmath>

#include "model/gemma.h"

namespace kvtier {

void rms_norm_heads(float* rows, const float* weight, int n, int n_heads, int head_dim, float eps) {
  for (int64_t r = 0; r < static_cast<int64_t>(n) * n_heads; ++r) {
    float* v = rows + r * head_dim;
    double sum = 0;  // in double, as model/forward.cpp's rms_norm (and GGML) sum squares
    for (int i = 0; i < head_dim; ++i) sum += static_cast<double>(v[i] * v[i]);
    const float scale = 1.0f / std::sqrt(static_cast<float>(sum / head_dim) + eps);
    for (int i = 0; i < head_dim; ++i) v[i] = v[i] * scale * weight[i];
  }
}

void scale_embeddings(float* x, int n, int d) {
  const float scale = std::sqrt(static_cast<float>(d));
  for (size_t i = 0; i < static_cast<size_t>(n) * d; ++i) x[i] *= scale;
}

void geglu(float* gate, const float* up, size_t n) {
  // GELU, tanh approximation: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))). llama.cpp's CPU path looks the
  // value up in an f16 table (input and output rounded to f16); this is the f32 formula it tabulates.
  constexpr float kSqrt2OverPi = 0.79788456080286535588f;
  for (size_t i = 0; i < n; ++i) {
    const float x = gate[i];
    gate[i] = 0.5f * x * (1.0f + std::tanh(kSqrt2OverPi * x * (1.0f + 0.044715f * x * x))) * up[i];
  }
}

void soft_cap(float* logits, size_t n, float cap) {
  for (size_t i = 0; i < n; ++i) logits[i] = cap * std::tanh(logits[i] / cap);
}

}  // namespace kvtier
