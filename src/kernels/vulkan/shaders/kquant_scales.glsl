// Scale and min (6 bits each) of sub-block j (0..7) of a Q4_K / Q5_K super-block from its 12 packed scale
// bytes, given as three little-endian words s.x (bytes 0-3), s.y (4-7), s.z (8-11). Byte b of the 12:
//   b 0..3  : bits 0-5 = scale[b],   bits 6-7 = bits 4-5 of scale[b+4]
//   b 4..7  : bits 0-5 = min[b-4],   bits 6-7 = bits 4-5 of min[b]
//   b 8..11 : bits 0-3 = bits 0-3 of scale[b-4], bits 4-7 = bits 0-3 of min[b-4]
// Written with shifts of whole words (no indexing of a vector by a run-time value, which some compilers
// put in local memory).
void scale_min_of_sub_block(uvec3 s, uint j, out float scale, out float m) {
  const uint shift = 8 * (j % 4);
  const uint b0 = (s.x >> shift) & 255u, b4 = (s.y >> shift) & 255u, b8 = (s.z >> shift) & 255u;
  if (j < 4) {
    scale = float(b0 & 63u);
    m = float(b4 & 63u);
  } else {
    scale = float((b8 & 15u) | ((b0 >> 6) << 4));
    m = float((b8 >> 4) | ((b4 >> 6) << 4));
  }
}
