#version 450
// y = W x for Q8_0 weights. Unit: one 34-byte block (32 elements), read as 17 16-bit words:
// | d: f16 | qs[32]: int8, element i in byte i |   value_i = qs_i * d
#include "matvec_head.glsl"

layout(binding = 0) readonly buffer WBuf { uint16_t w[]; };  // W: [rows][cols / 32 blocks][17 words]

// The four int8 codes of bytes 0..3 of `word` as floats.
vec4 int8x4(uint word) {
  return vec4(int(word << 24) >> 24, int(word << 16) >> 24, int(word << 8) >> 24, int(word) >> 24);
}

void unit_dots(uint first_row, uint x_base, uint u, inout float acc[ROWS]) {
  vec4 xv[8];
  for (uint k = 0; k < 8; ++k) xv[k] = x4[x_base + 8 * u + k];
  for (uint r = 0; r < ROWS; ++r) {
    const uint base = row_of(first_row, r) * pc.row_words + 17 * u;
    const float d = unpackHalf2x16(uint(w[base])).x;
    float s = 0.0;
    for (uint k = 0; k < 8; ++k) {
      const uint q = uint(w[base + 1 + 2 * k]) | (uint(w[base + 2 + 2 * k]) << 16);  // bytes 4k .. 4k+3
      s += dot(int8x4(q), xv[k]);
    }
    acc[r] += d * s;
  }
}
