#version 450
// Combines the splits of attention_decode exactly: with M = max_s m_s and L = sum_s l_s e^(m_s - M),
// out = sum_s o_s e^(m_s - M) / L and lse = M + log L (the log of the softmax denominator, which lets the
// result be merged again with attention over other pages, as kernels::merge_attention does on the CPU).
// A split that saw no position has m = -inf and contributes nothing. One workgroup per query head.
layout(local_size_x = 64) in;

layout(push_constant) uniform Push {
  uint n_splits;
  uint n_heads;
  uint head_dim;
} pc;

layout(binding = 0) readonly buffer PartialOBuf { float part_o[]; };   // [n_splits][n_heads][head_dim]
layout(binding = 1) readonly buffer PartialMlBuf { vec2 part_ml[]; };  // [n_splits][n_heads] (m, l)
layout(binding = 2) writeonly buffer OutBuf { float out_[]; };        // [n_heads][head_dim]
layout(binding = 3) writeonly buffer LseBuf { float lse[]; };         // [n_heads]

void main() {
  const uint head = gl_WorkGroupID.x;
  float big_m = -1.0 / 0.0;
  for (uint s = 0; s < pc.n_splits; ++s) big_m = max(big_m, part_ml[s * pc.n_heads + head].x);
  float big_l = 0.0;
  for (uint s = 0; s < pc.n_splits; ++s) {
    const vec2 ml = part_ml[s * pc.n_heads + head];
    if (ml.x > -1.0 / 0.0) big_l += ml.y * exp(ml.x - big_m);
  }
  const float inv = big_l > 0.0 ? 1.0 / big_l : 0.0;
  for (uint d = gl_LocalInvocationID.x; d < pc.head_dim; d += 64) {
    float acc = 0.0;
    for (uint s = 0; s < pc.n_splits; ++s) {
      const vec2 ml = part_ml[s * pc.n_heads + head];
      if (ml.x > -1.0 / 0.0) acc += part_o[(s * pc.n_heads + head) * pc.head_dim + d] * exp(ml.x - big_m);
    }
    out_[head * pc.head_dim + d] = acc * inv;
  }
  if (gl_LocalInvocationID.x == 0) lse[head] = big_l > 0.0 ? big_m + log(big_l) : -1.0 / 0.0;
}
