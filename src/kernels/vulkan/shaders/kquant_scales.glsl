// Scale and min (6 bits each) of sub-block j (0..7) of a Q4_K / Q5_K super-block from its 12 packed scale
// bytes, given as three little-endian words s[0..2]. Byte b of the 12:
//   b 0..3  : bits 0-5 = scale[b],   bits 6-7 = bits 4-5 of scale[b+4]
//   b 4..7  : bits 0-5 = min[b-4],   bits 6-7 = bits 4-5 of min[b]
//   b 8..11 : bits 0-3 = bits 0-3 of scale[b-4], bits 4-7 = bits 0-3 of min[b-4]
uint scale_byte(uvec3 s, uint b) { return (s[b / 4] >> (8 * (b % 4))) & 255u; }

void scale_min_of_sub_block(uvec3 s, uint j, out float scale, out float m) {
  if (j < 4) {
    scale = float(scale_byte(s, j) & 63u);
    m = float(scale_byte(s, j + 4) & 63u);
  } else {
    scale = float((scale_byte(s, j + 4) & 15u) | ((scale_byte(s, j - 4) >> 6) << 4));
    m = float((scale_byte(s, j + 4) >> 4) | ((scale_byte(s, j) >> 6) << 4));
  }
}
