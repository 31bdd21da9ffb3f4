#version 450
// Y = X W^T for Q6_K weights (matmul_head.glsl). Super-block layout as in matvec_q6_k.comp: 105 16-bit words,
// | ql: 128 bytes | qh: 64 bytes | scales: 16 int8 | d: f16 |; element e = 128 half + 32 k + l has its low 4
// bits in ql[64 half + l + 32 (k & 1)] (low nibble for k < 2) and its high 2 bits at bit 2k of
// qh[32 half + l]; value = d * scales[e / 16] * (q - 32).
#include "matmul_head.glsl"

layout(binding = 0) readonly buffer WBuf { uint16_t w[]; };  // W: [rows][cols / 256 super-blocks][105 words]

uint word32(uint at) { return uint(w[at]) | (uint(w[at + 1]) << 16); }

vec4 decode4(uint row, uint col) {
  const uint base = row * pc.row_words + 105 * (col / 256), e = col % 256;
  const uint half_ = e / 128, k = (e % 128) / 32, l = e % 32;
  const uint low = word32(base + (64 * half_ + l + 32 * (k & 1u)) / 2) >> (k < 2 ? 0u : 4u);
  const uint high = word32(base + 64 + (32 * half_ + l) / 2) >> (2 * k);
  const uint q = (low & 0x0F0F0F0Fu) | ((high & 0x03030303u) << 4);
  const uint si = e / 16;
  const float scale = float(int(uint(w[base + 96 + si / 2]) << (24 - 8 * (si % 2))) >> 24);
  const float d = unpackHalf2x16(uint(w[base + 104])).x;
  return d * scale * (vec4(q & 255u, (q >> 8) & 255u, (q >> 16) & 255u, q >> 24) - 32.0);
}
