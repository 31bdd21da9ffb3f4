#version 450
// Y = X W^T for Q8_0 weights (matmul_head.glsl). Block layout as in matvec_q8_0.comp: 17 16-bit words,
// | d: f16 | qs[32]: int8 |, value_i = qs_i * d.
#include "matmul_head.glsl"

layout(binding = 0) readonly buffer WBuf { uint16_t w[]; };  // W: [rows][cols / 32 blocks][17 words]

vec4 decode4(uint row, uint col) {
  const uint base = row * pc.row_words + 17 * (col / 32), i = col % 32;
  const float d = unpackHalf2x16(uint(w[base])).x;
  const uint at = base + 1 + i / 2;
  const uint q = uint(w[at]) | (uint(w[at + 1]) << 16);
  return d * vec4(int(q << 24) >> 24, int(q << 16) >> 24, int(q << 8) >> 24, int(q) >> 24);
}
