#version 450
// y = W x for Q4_0 weights. Unit: one 18-byte block (32 elements), read as 9 16-bit words:
// | d: f16 | qs[16]: element i in qs[i % 16], low nibble for i < 16, high nibble for i >= 16 |
// value_i = (nibble_i - 8) * d
#include "matvec_head.glsl"

layout(binding = 0) readonly buffer WBuf { uint16_t w[]; };  // W: [rows][cols / 32 blocks][9 words]

void unit_dots(uint first_row, uint x_base, uint u, inout float acc[ROWS]) {
  vec4 xv[8];  // elements 4k .. 4k+3 in xv[k]
  for (uint k = 0; k < 8; ++k) xv[k] = x4[x_base + 8 * u + k];
  for (uint r = 0; r < ROWS; ++r) {
    const uint base = row_of(first_row, r) * pc.row_words + 9 * u;
    const float d = unpackHalf2x16(uint(w[base])).x;
    float s = 0.0;
    for (uint k = 0; k < 4; ++k) {
      const uint q = uint(w[base + 1 + 2 * k]) | (uint(w[base + 2 + 2 * k]) << 16);  // qs bytes 4k .. 4k+3
      const vec4 lo = vec4(q & 15u, (q >> 8) & 15u, (q >> 16) & 15u, (q >> 24) & 15u) - 8.0;
      const vec4 hi = vec4((q >> 4) & 15u, (q >> 12) & 15u, (q >> 20) & 15u, q >> 28) - 8.0;
      s += dot(lo, xv[k]) + dot(hi, xv[4 + k]);
    }
    acc[r] += d * s;
  }
}
