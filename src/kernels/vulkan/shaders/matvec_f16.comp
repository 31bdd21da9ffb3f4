#version 450
// y = W x for F16 weights. Unit: 8 elements (one 16-byte load of 8 halves).
#include "matvec_head.glsl"

layout(binding = 0) readonly buffer WBuf { uvec4 w[]; };  // W: [rows][cols / 8] groups of 8 halves

void unit_dots(uint first_row, uint x_base, uint u, inout float acc[ROWS]) {
  const vec4 xa = load_x(x_base + 2 * u), xb = load_x(x_base + 2 * u + 1);
  for (uint r = 0; r < ROWS; ++r) {
    const uvec4 q = w[row_of(first_row, r) * pc.row_words + u];
    acc[r] += dot(vec4(unpackHalf2x16(q.x), unpackHalf2x16(q.y)), xa) +
              dot(vec4(unpackHalf2x16(q.z), unpackHalf2x16(q.w)), xb);
  }
}
