#version 450
// Rotary position embedding in place, with the (cos, sin) table computed on the host (as the CPU forward
// pass does, so both round the angles alike): one thread per rotated pair p < rope_dims / 2 of one head.
// Normal mode rotates elements (2p, 2p + 1); NeoX mode rotates (p, p + rope_dims / 2).
layout(local_size_x_id = 0) in;
layout(constant_id = 0) const uint WG = 256;

layout(push_constant) uniform Push {
  uint n_tokens;
  uint n_heads;
  uint head_dim;
  uint rope_dims;  // rotated dims of each head (even, <= head_dim)
  uint neox;       // 0: normal, 1: NeoX
} pc;

layout(binding = 0) buffer RowsBuf { float rows[]; };           // [n_tokens][n_heads][head_dim]
layout(binding = 1) readonly buffer CosSinBuf { vec2 cos_sin[]; };  // [n_tokens][rope_dims / 2] (cos, sin)

void main() {
  const uint pairs = pc.rope_dims / 2;
  const uint i = gl_GlobalInvocationID.x;
  if (i >= pc.n_tokens * pc.n_heads * pairs) return;
  const uint p = i % pairs, head_row = i / pairs, token = head_row / pc.n_heads;
  const uint base = head_row * pc.head_dim;
  const uint a = base + (pc.neox != 0 ? p : 2 * p);
  const uint b = base + (pc.neox != 0 ? p + pairs : 2 * p + 1);
  const vec2 cs = cos_sin[token * pairs + p];
  const float x0 = rows[a], x1 = rows[b];
  rows[a] = x0 * cs.x - x1 * cs.y;
  rows[b] = x0 * cs.y + x1 * cs.x;
}
