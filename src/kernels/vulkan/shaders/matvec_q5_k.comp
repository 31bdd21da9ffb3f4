#version 450
// y = W x for Q5_K weights. A 176-byte super-block of 256 elements, read as 44 words:
// | d: f16, dmin: f16 | scales: 12 bytes | qh: 32 bytes | qs: 128 bytes as Q4_K |
// The 5th bit of element 32j + l is bit j of qh[l]. Units as in matvec_q4_k.comp: unit 2c + h covers
// l = 16h + [0, 16) of sub-blocks 2c (qh bit 2c) and 2c + 1 (qh bit 2c + 1).
#include "matvec_head.glsl"
#include "kquant_scales.glsl"

layout(binding = 0) readonly buffer WBuf { uint w[]; };
// The same weights as 16-byte words: the 16 qs bytes of a unit are one aligned load (block and qs offsets
// are multiples of 16 bytes), so a subgroup's loads cover neighbouring bytes.
layout(binding = 0) readonly buffer WBuf4 { uvec4 w4[]; };  // W: [rows][cols / 256 super-blocks][44 words]

void unit_dots(uint first_row, uint x_base, uint u, inout float acc[ROWS]) {
  const uint block = u / 8, sub = u % 8, c = sub / 2, h = sub % 2;
  const uint x0 = x_base + block * 64 + 16 * c + 4 * h;
  vec4 xlo[4], xhi[4];
  for (uint k = 0; k < 4; ++k) {
    xlo[k] = load_x(x0 + k);
    xhi[k] = load_x(x0 + 8 + k);
  }
  const float xsum_lo = dot(xlo[0] + xlo[1] + xlo[2] + xlo[3], vec4(1.0));
  const float xsum_hi = dot(xhi[0] + xhi[1] + xhi[2] + xhi[3], vec4(1.0));
  for (uint r = 0; r < ROWS; ++r) {
    const uint base = row_of(first_row, r) * pc.row_words + 44 * block;
    const vec2 dm = unpackHalf2x16(w[base]);
    float sc_lo, m_lo, sc_hi, m_hi;
    const uvec3 s = uvec3(w[base + 1], w[base + 2], w[base + 3]);
    scale_min_of_sub_block(s, 2 * c, sc_lo, m_lo);
    scale_min_of_sub_block(s, 2 * c + 1, sc_hi, m_hi);
    const uvec4 qs = w4[(base + 12 + 8 * c + 4 * h) / 4];
    float dot_lo = 0.0, dot_hi = 0.0;
    for (uint k = 0; k < 4; ++k) {
      const uint q = qs[k];
      const uint qh = w[base + 4 + 4 * h + k];  // qh bytes 16h + 4k .. 16h + 4k + 3
      const uint hb_lo = ((qh >> (2 * c)) & 0x01010101u) << 4;      // bit 4 of the four low-nibble codes
      const uint hb_hi = ((qh >> (2 * c + 1)) & 0x01010101u) << 4;  // of the four high-nibble codes
      const uint lo = (q & 0x0F0F0F0Fu) | hb_lo, hi = ((q >> 4) & 0x0F0F0F0Fu) | hb_hi;
      dot_lo += dot(vec4(lo & 255u, (lo >> 8) & 255u, (lo >> 16) & 255u, lo >> 24), xlo[k]);
      dot_hi += dot(vec4(hi & 255u, (hi >> 8) & 255u, (hi >> 16) & 255u, hi >> 24), xhi[k]);
    }
    acc[r] += dm.x * (sc_lo * dot_lo + sc_hi * dot_hi) - dm.y * (m_lo * xsum_lo + m_hi * xsum_hi);
  }
}
