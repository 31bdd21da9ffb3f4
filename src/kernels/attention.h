// Attention of one query head over a contiguous run of cached positions.
// The contiguous KV cache (model/kv_contiguous.cpp) calls this per (token, head).
#pragma once

#include <cstddef>
#include <cstdint>

namespace kvtier::kernels {

// Keys and values of one layer, position-major.
//   k, v: [n_positions, n_kv_heads, head_dim], f16 (IEEE half bits) or f32.
struct ContiguousKv {
  const void* k = nullptr;
  const void* v = nullptr;
  bool f16 = true;
  int n_kv_heads = 0;
  int head_dim = 0;
};

// out[head_dim] = softmax(cap(scale * q.K[0..n_pos))) V[0..n_pos) for KV head kv_head, where cap(s) =
// softcap * tanh(s / softcap) when softcap > 0 (Gemma 2) and s otherwise.
// q: [head_dim] f32.  scores: scratch of n_pos floats.
void attend_one_head_reference(const float* q, const ContiguousKv& kv, int kv_head, int n_pos, float scale,
                               float* scores, float* out, float softcap = 0);
// SIMD (Highway, dispatched) version of the same.
void attend_one_head(const float* q, const ContiguousKv& kv, int kv_head, int n_pos, float scale, float* scores,
                     float* out, float softcap = 0);

}  // namespace kvtier::kernels
