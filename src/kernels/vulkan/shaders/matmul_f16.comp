#version 450
// Y = X W^T for F16 weights (matmul_head.glsl): two halves per 32-bit word.
#include "matmul_head.glsl"

layout(binding = 0) readonly buffer WBuf { uint w[]; };  // W: [rows][cols / 2] pairs of halves

vec4 decode4(uint row, uint col) {
  const uint at = row * pc.row_words + col / 2;
  return vec4(unpackHalf2x16(w[at]), unpackHalf2x16(w[at + 1]));
}
