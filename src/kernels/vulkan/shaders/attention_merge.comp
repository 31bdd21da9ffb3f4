#version 450
// Combines the splits of attention_decode exactly: with M = max_s m_s and L = sum_s l_s e^(m_s - M),
// out = sum_s o_s e^(m_s - M) / L and lse = M + log L (the log of the softmax denominator, which lets the
// result be merged again with attention over other pages, as kernels::merge_attention does on the CPU).
// A split that saw no position has m = -inf and contributes nothing. One workgroup per query head; its 256
// threads share the splits: M and L by strided loops and a shared-memory reduction, then the outputs in tiles
// of 256 splits (weights e^(m_s - M) in shared memory; thread (d, part) sums splits part, part + T / head_dim
// ... of channel d, so a tile's rows are read by consecutive threads), the parts summed at the end.
layout(local_size_x = 256) in;
const uint T = 256;

layout(push_constant) uniform Push {
  uint n_splits;
  uint n_heads;
  uint head_dim;  // at most T
} pc;

layout(binding = 0) readonly buffer PartialOBuf { float part_o[]; };   // [n_splits][n_heads][head_dim]
layout(binding = 1) readonly buffer PartialMlBuf { vec2 part_ml[]; };  // [n_splits][n_heads] (m, l)
layout(binding = 2) writeonly buffer OutBuf { float out_[]; };        // [n_heads][head_dim]
layout(binding = 3) writeonly buffer LseBuf { float lse[]; };         // [n_heads]

shared float reduce_s[T];
shared float weight_s[T];  // e^(m_s - M) of the current tile's splits (0 for empty splits)

// The workgroup's reduction of one value per thread: max (is_max) or sum.
float workgroup_reduce(float x, bool is_max) {
  const uint tid = gl_LocalInvocationID.x;
  reduce_s[tid] = x;
  barrier();
  for (uint half_n = T / 2; half_n > 0; half_n /= 2) {
    if (tid < half_n) {
      reduce_s[tid] = is_max ? max(reduce_s[tid], reduce_s[tid + half_n]) : reduce_s[tid] + reduce_s[tid + half_n];
    }
    barrier();
  }
  const float result = reduce_s[0];
  barrier();  // reduce_s is reused
  return result;
}

void main() {
  const uint head = gl_WorkGroupID.x, tid = gl_LocalInvocationID.x;
  float local_m = -1.0 / 0.0;
  for (uint s = tid; s < pc.n_splits; s += T) local_m = max(local_m, part_ml[s * pc.n_heads + head].x);
  const float big_m = workgroup_reduce(local_m, true);
  float local_l = 0.0;
  for (uint s = tid; s < pc.n_splits; s += T) {
    const vec2 ml = part_ml[s * pc.n_heads + head];
    if (ml.x > -1.0 / 0.0) local_l += ml.y * exp(ml.x - big_m);
  }
  const float big_l = workgroup_reduce(local_l, false);

  const uint parts = T / pc.head_dim;  // threads per channel
  const uint d = tid % pc.head_dim, part = tid / pc.head_dim;
  float acc = 0.0;
  for (uint tile = 0; tile < pc.n_splits; tile += T) {
    const uint s = tile + tid;
    float w = 0.0;
    if (s < pc.n_splits) {
      const float m = part_ml[s * pc.n_heads + head].x;
      if (m > -1.0 / 0.0) w = exp(m - big_m);
    }
    weight_s[tid] = w;
    barrier();
    if (part < parts) {
      const uint tile_end = min(T, pc.n_splits - tile);
      for (uint i = part; i < tile_end; i += parts) {
        if (weight_s[i] != 0.0) acc += part_o[((tile + i) * pc.n_heads + head) * pc.head_dim + d] * weight_s[i];
      }
    }
    barrier();
  }
  // Sum the parts of each channel: thread (d, part) writes reduce_s[part * head_dim + d].
  reduce_s[tid] = part < parts ? acc : 0.0;
  barrier();
  if (tid < pc.head_dim) {
    float total = 0.0;
    for (uint p = 0; p < parts; ++p) total += reduce_s[p * pc.head_dim + tid];
    out_[head * pc.head_dim + tid] = big_l > 0.0 ? total / big_l : 0.0;
  }
  if (tid == 0) lse[head] = big_l > 0.0 ? big_m + log(big_l) : -1.0 / 0.0;
}
