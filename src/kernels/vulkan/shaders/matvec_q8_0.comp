#version 450
// y = W x for Q8_0 weights: 34-byte blocks of 32 elements, read as 17 16-bit words:
// | d: f16 | qs[32]: int8, element i in byte i |   value_i = qs_i * d
// Unit: a quarter block (8 elements, 8 code bytes = 4 words at words 1 + 4q of the block), so the threads of
// a subgroup read neighbouring bytes (a block per 4 threads) rather than blocks 34 bytes apart.
#include "matvec_head.glsl"

layout(binding = 0) readonly buffer WBuf { uint16_t w[]; };  // W: [rows][cols / 32 blocks][17 words]

// The four int8 codes of bytes 0..3 of `word` as floats.
vec4 int8x4(uint word) {
  return vec4(int(word << 24) >> 24, int(word << 16) >> 24, int(word << 8) >> 24, int(word) >> 24);
}

void unit_dots(uint first_row, uint x_base, uint u, inout float acc[ROWS]) {
  const uint block = u / 4, q = u % 4;
  const vec4 xa = load_x(x_base + 2 * u), xb = load_x(x_base + 2 * u + 1);
  for (uint r = 0; r < ROWS; ++r) {
    const uint base = row_of(first_row, r) * pc.row_words + 17 * block;
    const float d = unpackHalf2x16(uint(w[base])).x;
    const uint at = base + 1 + 4 * q;
    const uint lo = uint(w[at]) | (uint(w[at + 1]) << 16), hi = uint(w[at + 2]) | (uint(w[at + 3]) << 16);
    acc[r] += d * (dot(int8x4(lo), xa) + dot(int8x4(hi), xb));
  }
}
