#version 450
// y = W x for Q4_K weights. A 144-byte super-block of 256 elements, read as 36 words:
// | d: f16, dmin: f16 | scales: 12 bytes (kquant_scales.glsl) | qs: 128 bytes, 4 chunks of 32 |
// chunk c holds elements 64c + l (low nibble of byte l) and 64c + 32 + l (high nibble), l < 32, and
// value = d * scale[j] * q - dmin * min[j] for sub-block j = element / 32.
// Unit: half a chunk (16 qs bytes): elements 64c + 16h + [0, 16) (sub-block 2c) and 64c + 32 + 16h + [0, 16)
// (sub-block 2c + 1), for unit sub = 2c + h of its super-block.
#include "matvec_head.glsl"
#include "kquant_scales.glsl"

layout(binding = 0) readonly buffer WBuf { uint w[]; };
// The same weights as 16-byte words: the 16 qs bytes of a unit are one aligned load (block and qs offsets
// are multiples of 16 bytes), so a subgroup's loads cover neighbouring bytes.
layout(binding = 0) readonly buffer WBuf4 { uvec4 w4[]; };  // W: [rows][cols / 256 super-blocks][36 words]

void unit_dots(uint first_row, uint x_base, uint u, inout float acc[ROWS]) {
  const uint block = u / 8, sub = u % 8, c = sub / 2, h = sub % 2;
  const uint x0 = x_base + block * 64 + 16 * c + 4 * h;  // first vec4 of the low-nibble elements
  vec4 xlo[4], xhi[4];
  for (uint k = 0; k < 4; ++k) {
    xlo[k] = load_x(x0 + k);
    xhi[k] = load_x(x0 + 8 + k);
  }
  const float xsum_lo = dot(xlo[0] + xlo[1] + xlo[2] + xlo[3], vec4(1.0));
  const float xsum_hi = dot(xhi[0] + xhi[1] + xhi[2] + xhi[3], vec4(1.0));
  for (uint r = 0; r < ROWS; ++r) {
    const uint base = row_of(first_row, r) * pc.row_words + 36 * block;
    const vec2 dm = unpackHalf2x16(w[base]);
    float sc_lo, m_lo, sc_hi, m_hi;
    const uvec3 s = uvec3(w[base + 1], w[base + 2], w[base + 3]);
    scale_min_of_sub_block(s, 2 * c, sc_lo, m_lo);
    scale_min_of_sub_block(s, 2 * c + 1, sc_hi, m_hi);
    const uvec4 qs = w4[(base + 4 + 8 * c + 4 * h) / 4];
    float dot_lo = 0.0, dot_hi = 0.0;
    for (uint k = 0; k < 4; ++k) {
      const uint q = qs[k];
      dot_lo += dot(vec4(q & 15u, (q >> 8) & 15u, (q >> 16) & 15u, (q >> 24) & 15u), xlo[k]);
      dot_hi += dot(vec4((q >> 4) & 15u, (q >> 12) & 15u, (q >> 20) & 15u, q >> 28), xhi[k]);
    }
    acc[r] += dm.x * (sc_lo * dot_lo + sc_hi * dot_hi) - dm.y * (m_lo * xsum_lo + m_hi * xsum_hi);
  }
}
