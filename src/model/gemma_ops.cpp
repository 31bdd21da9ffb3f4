// The element-wise steps Gemma adds to the llama-family forward pass (model/gemma.h).
#include <cmath>

#include "model/gemma.h"

namespace kvtier {

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
