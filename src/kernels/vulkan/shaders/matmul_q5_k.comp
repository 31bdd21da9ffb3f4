#version 450
// Y = X W^T for Q5_K weights (matmul_head.glsl). Super-block layout as in matvec_q5_k.comp: 44 words,
// | d, dmin: f16 | scales: 12 bytes | qh: 32 bytes | qs: 128 bytes as Q4_K |; the 5th bit of element 32 j + l
// is bit j of qh[l].
#include "matmul_head.glsl"
#include "kquant_scales.glsl"

layout(binding = 0) readonly buffer WBuf { uint w[]; };  // W: [rows][cols / 256 super-blocks][44 words]

vec4 decode4(uint row, uint col) {
  const uint base = row * pc.row_words + 44 * (col / 256), e = col % 256;
  const uint c = e / 64, h = (e / 32) % 2, l = e % 32, j = e / 32;
  const vec2 dm = unpackHalf2x16(w[base]);
  float sc, m;
  scale_min_of_sub_block(uvec3(w[base + 1], w[base + 2], w[base + 3]), j, sc, m);
  const uint high = ((w[base + 4 + l / 4] >> j) & 0x01010101u) << 4;
  const uint q = ((w[base + 12 + (32 * c + l) / 4] >> (4 * h)) & 0x0F0F0F0Fu) | high;
  return dm.x * sc * vec4(q & 255u, (q >> 8) & 255u, (q >> 16) & 255u, q >> 24) - dm.y * m;
}
