// Highway SIMD attention over a contiguous f16/f32 KV run (one query head).
// Two passes: scores with a running max, then exp and a V accumulation.
#include <cmath>

#include "kernels/attention.h"
#include "kvtier/f16.h"

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/cpu/attention_contiguous.cpp"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/highway.h>
#include <hwy/contrib/math/math-inl.h>

HWY_BEFORE_NAMESPACE();
namespace kvtier::kernels::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// Loads Lanes(df) elements of a f16 or f32 row as f32.
template <class DF>
HWY_INLINE hn::Vec<DF> LoadRow(DF df, const void* base, bool f16, size_t index) {
  if (f16) {
    const hn::Rebind<hwy::float16_t, DF> dh;
    return hn::PromoteTo(df, hn::LoadU(dh, static_cast<const hwy::float16_t*>(base) + index));
  }
  return hn::LoadU(df, static_cast<const float*>(base) + index);
}

inline float ScalarAt(const void* base, bool f16, size_t index) {
  return f16 ? f16_to_f32(static_cast<const uint16_t*>(base)[index]) : static_cast<const float*>(base)[index];
}

void AttendOneHead(const float* q, const ContiguousKv& kv, int kv_head, int n_pos, float scale, float* scores,
                   float* out, float softcap) {
  const hn::ScalableTag<float> df;
  const size_t lanes = hn::Lanes(df);
  const size_t head_dim = static_cast<size_t>(kv.head_dim);
  const size_t row = static_cast<size_t>(kv.n_kv_heads) * head_dim;
  const size_t head_offset = static_cast<size_t>(kv_head) * head_dim;
  const size_t vec_end = head_dim - head_dim % lanes;

  float max_score = -INFINITY;
  for (int j = 0; j < n_pos; ++j) {
    const size_t base = j * row + head_offset;
    auto acc = hn::Zero(df);
    size_t d = 0;
    for (; d < vec_end; d += lanes) acc = hn::MulAdd(hn::LoadU(df, q + d), LoadRow(df, kv.k, kv.f16, base + d), acc);
    float dot = hn::GetLane(hn::SumOfLanes(df, acc));
    for (; d < head_dim; ++d) {
      dot += q[d] * ScalarAt(kv.k, kv.f16, base + d);
    }
    scores[j] = dot * scale;
    if (softcap > 0) scores[j] = softcap * std::tanh(scores[j] / softcap);
    max_score = scores[j] > max_score ? scores[j] : max_score;
  }
  float sum = 0;
  for (int j = 0; j < n_pos; ++j) {
    scores[j] = std::exp(scores[j] - max_score);
    sum += scores[j];
  }
  for (size_t d = 0; d < head_dim; ++d) out[d] = 0;
  for (int j = 0; j < n_pos; ++j) {
    const size_t base = j * row + head_offset;
    const auto weight = hn::Set(df, scores[j]);
    size_t d = 0;
    for (; d < vec_end; d += lanes) {
      hn::StoreU(hn::MulAdd(weight, LoadRow(df, kv.v, kv.f16, base + d), hn::LoadU(df, out + d)), df, out + d);
    }
    for (; d < head_dim; ++d) {
      out[d] += scores[j] * ScalarAt(kv.v, kv.f16, base + d);
    }
  }
  const float inv = 1.0f / sum;
  for (size_t d = 0; d < head_dim; ++d) out[d] *= inv;
}

}  // namespace kvtier::kernels::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace kvtier::kernels {
HWY_EXPORT(AttendOneHead);

void attend_one_head(const float* q, const ContiguousKv& kv, int kv_head, int n_pos, float scale, float* scores,
                     float* out, float softcap) {
  HWY_DYNAMIC_DISPATCH(AttendOneHead)(q, kv, kv_head, n_pos, scale, scores, out, softcap);
}
}  // namespace kvtier::kernels
#endif
