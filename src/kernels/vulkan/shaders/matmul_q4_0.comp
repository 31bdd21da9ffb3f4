#version 450
// Y = X W^T for Q4_0 weights (matmul_head.glsl). Block layout as in matvec_q4_0.comp: 9 16-bit words,
// | d: f16 | qs[16] |: element i is the low nibble of qs[i] for i < 16, the high nibble of qs[i - 16] after;
// value = (nibble - 8) * d.
#include "matmul_head.glsl"

layout(binding = 0) readonly buffer WBuf { uint16_t w[]; };  // W: [rows][cols / 32 blocks][9 words]

vec4 decode4(uint row, uint col) {
  const uint base = row * pc.row_words + 9 * (col / 32), i = col % 32;
  const float d = unpackHalf2x16(uint(w[base])).x;
  const uint at = base + 1 + (i % 16) / 2, shift = i < 16 ? 0u : 4u;
  const uint q = (uint(w[at]) | (uint(w[at + 1]) << 16)) >> shift;
  return d * (vec4(q & 15u, (q >> 8) & 15u, (q >> 16) & 15u, (q >> 24) & 15u) - 8.0);
}
