#version 450
// Y = X W^T for Q4_K weights (matmul_head.glsl). Super-block layout as in matvec_q4_k.comp: 36 words,
// | d, dmin: f16 | scales: 12 bytes | qs: 128 bytes |; element e = 64 c + 32 h + l (h < 2, l < 32) is nibble h
// of qs byte 32 c + l, in sub-block e / 32: value = d * scale * q - dmin * min.
#include "matmul_head.glsl"
#include "kquant_scales.glsl"

layout(binding = 0) readonly buffer WBuf { uint w[]; };  // W: [rows][cols / 256 super-blocks][36 words]

vec4 decode4(uint row, uint col) {
  const uint base = row * pc.row_words + 36 * (col / 256), e = col % 256;
  const uint c = e / 64, h = (e / 32) % 2, l = e % 32;
  const vec2 dm = unpackHalf2x16(w[base]);
  float sc, m;
  scale_min_of_sub_block(uvec3(w[base + 1], w[base + 2], w[base + 3]), e / 32, sc, m);
  const uint q = w[base + 4 + (32 * c + l) / 4] >> (4 * h);
  return dm.x * sc * vec4(q & 15u, (q >> 8) & 15u, (q >> 16) & 15u, (q >> 24) & 15u) - dm.y * m;
}
