// Scalar reference for contiguous attention: the definition the SIMD path is tested against.
#include <algorithm>
#include <cmath>

#include "kernels/attention.h"
#include "kvtier/f16.h"

namespace kvtier::kernels {

namespace {
float load_element(const void* base, bool f16, size_t index) {
  return f16 ? f16_to_f32(static_cast<const uint16_t*>(base)[index]) : static_cast<const float*>(base)[index];
}
}  // namespace

void attend_one_head_reference(const float* q, const ContiguousKv& kv, int kv_head, int n_pos, float scale,
                               float* scores, float* out, float softcap) {
  const size_t row = static_cast<size_t>(kv.n_kv_heads) * kv.head_dim;
  const size_t head_offset = static_cast<size_t>(kv_head) * kv.head_dim;
  float max_score = -INFINITY;
  for (int j = 0; j < n_pos; ++j) {
    double dot = 0;
    for (int d = 0; d < kv.head_dim; ++d) dot += static_cast<double>(q[d]) * load_element(kv.k, kv.f16, j * row + head_offset + d);
    scores[j] = static_cast<float>(dot) * scale;
    if (softcap > 0) scores[j] = softcap * std::tanh(scores[j] / softcap);
    max_score = std::max(max_score, scores[j]);
  }
  double sum = 0;
  for (int j = 0; j < n_pos; ++j) {
    scores[j] = std::exp(scores[j] - max_score);
    sum += scores[j];
  }
  for (int d = 0; d < kv.head_dim; ++d) {
    double acc = 0;
    for (int j = 0; j < n_pos; ++j) acc += static_cast<double>(scores[j]) * load_element(kv.v, kv.f16, j * row + head_offset + d);
    out[d] = static_cast<float>(acc / sum);
  }
}

}  // namespace kvtier::kernels
