#version 450
// y = W x for Q6_K weights. A 210-byte super-block of 256 elements, read as 105 16-bit words:
// | ql: 128 bytes | qh: 64 bytes | scales: 16 int8 | d: f16 |   value = d * scales[e / 16] * (q - 32)
// Element e = 128 half + 32 k + l (k < 4, l < 32) has the low 4 bits in ql[64 half + l + 32 (k & 1)]
// (low nibble for k < 2, high for k >= 2) and the high 2 bits at bits 2k, 2k+1 of qh[32 half + l].
// Unit: 32 elements, l = l0 + [0, 8) of all four k of one half (unit sub = 4 half + l0 / 8).
#include "matvec_head.glsl"

layout(binding = 0) readonly buffer WBuf { uint16_t w[]; };  // W: [rows][cols / 256 super-blocks][105 words]

uint word32(uint at) { return uint(w[at]) | (uint(w[at + 1]) << 16); }

// Codes (q - 32) of 4 elements: 4-bit parts at bit `nib` of each byte of `low`, 2-bit parts at bit `hs`
// of each byte of `high`.
vec4 q6x4(uint low, uint nib, uint high, uint hs) {
  const uint q = ((low >> nib) & 0x0F0F0F0Fu) | (((high >> hs) & 0x03030303u) << 4);
  return vec4(q & 255u, (q >> 8) & 255u, (q >> 16) & 255u, q >> 24) - 32.0;
}

void unit_dots(uint first_row, uint x_base, uint u, inout float acc[ROWS]) {
  const uint block = u / 8, sub = u % 8, half_ = sub / 4, l0 = 8 * (sub % 4);
  vec4 xv[4][2];  // [k][two vec4s]: elements 128 half + 32 k + l0 + [0, 8)
  for (uint k = 0; k < 4; ++k) {
    const uint at = x_base + block * 64 + 32 * half_ + 8 * k + l0 / 4;
    xv[k][0] = load_x(at);
    xv[k][1] = load_x(at + 1);
  }
  for (uint r = 0; r < ROWS; ++r) {
    const uint base = row_of(first_row, r) * pc.row_words + 105 * block;
    const uint a = base + (64 * half_ + l0) / 2;        // ql bytes 64 half + l0 .. + 7  (k = 0, 2)
    const uint b = a + 16;                               // ql bytes + 32                 (k = 1, 3)
    const uint hq = base + 64 + (32 * half_ + l0) / 2;  // qh bytes 32 half + l0 .. + 7
    const uint a0 = word32(a), a1 = word32(a + 2), b0 = word32(b), b1 = word32(b + 2);
    const uint h0 = word32(hq), h1 = word32(hq + 2);
    const float d = unpackHalf2x16(uint(w[base + 104])).x;
    float s = 0.0;
    for (uint k = 0; k < 4; ++k) {
      const uint lo0 = (k & 1u) == 0 ? a0 : b0, lo1 = (k & 1u) == 0 ? a1 : b1;
      const uint nib = k < 2 ? 0 : 4;
      const uint si = 8 * half_ + 2 * k + l0 / 16;  // scale index e / 16
      const float scale = float(int(uint(w[base + 96 + si / 2]) << (24 - 8 * (si % 2))) >> 24);
      s += scale * (dot(q6x4(lo0, nib, h0, 2 * k), xv[k][0]) + dot(q6x4(lo1, nib, h1, 2 * k), xv[k][1]));
    }
    acc[r] += d * s;
  }
}
