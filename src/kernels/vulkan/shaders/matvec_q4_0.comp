#version 450
// y = W x for Q4_0 weights: 18-byte blocks of 32 elements, read as 9 16-bit words:
// | d: f16 | qs[16]: element i in qs[i % 16], low nibble for i < 16, high nibble for i >= 16 |
// value_i = (nibble_i - 8) * d
// Unit: half a block (qs bytes 8h .. 8h+7 = words 1 + 4h .. 4 + 4h: elements 8h + [0, 8) in the low
// nibbles, 16 + 8h + [0, 8) in the high ones), so neighbouring threads read neighbouring bytes.
#include "matvec_head.glsl"

layout(binding = 0) readonly buffer WBuf { uint16_t w[]; };  // W: [rows][cols / 32 blocks][9 words]

void unit_dots(uint first_row, uint x_base, uint u, inout float acc[ROWS]) {
  const uint block = u / 2, h = u % 2;
  const uint x0 = x_base + 8 * block + 2 * h;  // elements 32 block + 8h: vec4s x0, x0+1; high ones x0+4, x0+5
  const vec4 xl0 = load_x(x0), xl1 = load_x(x0 + 1), xh0 = load_x(x0 + 4), xh1 = load_x(x0 + 5);
  const float xsum = dot(xl0 + xl1 + xh0 + xh1, vec4(1.0));
  for (uint r = 0; r < ROWS; ++r) {
    const uint base = row_of(first_row, r) * pc.row_words + 9 * block;
    const float d = unpackHalf2x16(uint(w[base])).x;
    const uint at = base + 1 + 4 * h;
    const uint q0 = uint(w[at]) | (uint(w[at + 1]) << 16), q1 = uint(w[at + 2]) | (uint(w[at + 3]) << 16);
    const float s = dot(vec4(q0 & 15u, (q0 >> 8) & 15u, (q0 >> 16) & 15u, (q0 >> 24) & 15u), xl0) +
                    dot(vec4(q1 & 15u, (q1 >> 8) & 15u, (q1 >> 16) & 15u, (q1 >> 24) & 15u), xl1) +
                    dot(vec4((q0 >> 4) & 15u, (q0 >> 12) & 15u, (q0 >> 20) & 15u, q0 >> 28), xh0) +
                    dot(vec4((q1 >> 4) & 15u, (q1 >> 12) & 15u, (q1 >> 20) & 15u, q1 >> 28), xh1);
    acc[r] += d * (s - 8.0 * xsum);
  }
}
