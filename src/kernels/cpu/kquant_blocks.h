// Private: the K-quant block structs, bit-exact with GGML's ggml-common.h, and
// the small decoding helpers shared by the scalar references (ref/) and the
// SIMD kernels (cpu/). All multi-byte fields are little-endian on disk; kvtier
// only runs on little-endian hosts (x86-64, aarch64), checked below.
#pragma once

#include <bit>
#include <cstdint>
#include <cstring>

#include "kernels/kquant_ops.h"
#include "kernels/weight_blocks.h"

namespace kvtier::kernels::kquant {

static_assert(std::endian::native == std::endian::little, "K-quant blocks are read in place: little-endian only");

constexpr int kSubBlocksQ4K = 8;  // 8 sub-blocks of 32, each with a 6-bit scale and a 6-bit min
constexpr int kPackedScaleBytes = 12;

// Q4_K: 4.5 bits per weight. y = d * scale[j] * q - dmin * min[j], q in [0, 15].
struct BlockQ4K {
  uint16_t d;                          // f16 super-block scale for the 6-bit scales
  uint16_t dmin;                       // f16 super-block scale for the 6-bit mins
  uint8_t scales[kPackedScaleBytes];   // 8 scales + 8 mins, 6 bits each, packed (see unpack_scales_mins)
  uint8_t qs[kSuperBlock / 2];         // [4 chunks of 64][32 bytes]: low nibble = element l, high = l + 32
};
static_assert(sizeof(BlockQ4K) == 144, "block_q4_K is 2*2 + 12 + 128 bytes");

// Q5_K: 5.5 bits per weight. Q4_K plus one high bit per weight (q in [0, 31]).
struct BlockQ5K {
  uint16_t d;
  uint16_t dmin;
  uint8_t scales[kPackedScaleBytes];
  uint8_t qh[kSuperBlock / 8];  // [32]: bit j of qh[l] is bit 4 of element 32*j + l
  uint8_t qs[kSuperBlock / 2];  // low 4 bits, laid out as in Q4_K
};
static_assert(sizeof(BlockQ5K) == 176, "block_q5_K is 2*2 + 12 + 32 + 128 bytes");

// Q6_K: 6.5625 bits per weight. y = d * scales[j] * (q - 32), q in [0, 63], 16 sub-blocks of 16.
struct BlockQ6K {
  uint8_t ql[kSuperBlock / 2];      // low 4 bits (layout in dequantize_q6_K_reference)
  uint8_t qh[kSuperBlock / 4];      // high 2 bits, four elements per byte
  int8_t scales[kSuperBlock / 16];  // signed 8-bit sub-block scales
  uint16_t d;                       // f16 super-block scale
};
static_assert(sizeof(BlockQ6K) == 210, "block_q6_K is 128 + 64 + 16 + 2 bytes");

// Q2_K: 2.625 bits per weight. 16 sub-blocks of 16: y = d * scale[j] * q - dmin * min[j], q in [0, 3],
// scale and min 4 bits each.
struct BlockQ2K {
  uint8_t scales[kSuperBlock / 16];  // sub-block j: low nibble = scale[j], high nibble = min[j]
  uint8_t qs[kSuperBlock / 4];       // [2 halves][32]: bits 2k..2k+1 of qs[32h + l] = element 128h + 32k + l
  uint16_t d;                        // f16 super-block scale for the scales
  uint16_t dmin;                     // f16 super-block scale for the mins
};
static_assert(sizeof(BlockQ2K) == 84, "block_q2_K is 16 + 64 + 2*2 bytes");

// Q3_K: 3.4375 bits per weight. 16 sub-blocks of 16: y = d * (scale[j] - 32) * (q - 4), q in [0, 7],
// scale 6 bits. The low 2 bits of q are laid out as Q2_K's quants; bit 2 comes from hmask.
struct BlockQ3K {
  uint8_t hmask[kSuperBlock / 8];     // [32]: bit k of hmask[l] = bit 2 of element 32k + l
  uint8_t qs[kSuperBlock / 4];        // low 2 bits, as BlockQ2K::qs
  uint8_t scales[kPackedScaleBytes];  // 16 scales of 6 bits, packed (see unpack_q3_K_scale_words)
  uint16_t d;                         // f16 super-block scale
};
static_assert(sizeof(BlockQ3K) == 110, "block_q3_K is 32 + 64 + 12 + 2 bytes");

// IQ4_XS: 4.25 bits per weight. 8 sub-blocks of 32: y = d * (scale[j] - 32) * kIQ4Values[code], scale 6 bits.
struct BlockIQ4XS {
  uint16_t d;                        // f16 super-block scale
  uint16_t scales_h;                 // bits 2j..2j+1 = bits 4-5 of scale[j]
  uint8_t scales_l[kSuperBlock / 64];  // nibble j % 2 (low first) of byte j / 2 = bits 0-3 of scale[j]
  uint8_t qs[kSuperBlock / 2];       // [8 sub-blocks][16]: low nibble = element l, high nibble = element l + 16
};
static_assert(sizeof(BlockIQ4XS) == 136, "block_iq4_xs is 2 + 2 + 4 + 128 bytes");

// Q8_K: the activation format K-quants are dotted with. x = d * qs.
struct BlockQ8K {
  float d;                          // f32 scale (1 / iscale)
  int8_t qs[kSuperBlock];           // quants in [-127, 127]
  int16_t bsums[kSuperBlock / 16];  // sum of qs over each group of 16 (lets dots fold mins/offsets)
};
static_assert(sizeof(BlockQ8K) == 292, "block_q8_K is 4 + 256 + 16*2 bytes");

// The 12 packed scale bytes of Q4_K/Q5_K as 8 scales and 8 mins (all 6-bit).
// Bit layout (byte b of `packed`, sub-block j):
//   b 0..3  : bits 0-5 = scale[j=b],   bits 6-7 = bits 4-5 of scale[b+4]
//   b 4..7  : bits 0-5 = min[j=b-4],   bits 6-7 = bits 4-5 of min[b]
//   b 8..11 : bits 0-3 = bits 0-3 of scale[b-4], bits 4-7 = bits 0-3 of min[b-4]
// Decoded on three little-endian 32-bit words, four sub-blocks at a time; the
// result stays in four words (byte k of a word = sub-block k of its group) so
// SIMD code can move it into a vector register without a trip through memory.
struct ScaleMinWords {
  uint32_t scale_lo;  // scales of sub-blocks 0..3, one per byte
  uint32_t scale_hi;  // scales of sub-blocks 4..7
  uint32_t min_lo;    // mins of sub-blocks 0..3
  uint32_t min_hi;    // mins of sub-blocks 4..7
};
inline ScaleMinWords unpack_scale_min_words(const uint8_t* packed) {
  uint32_t w0, w1, w2;  // three scalars (not an array) so they stay in registers
  std::memcpy(&w0, packed, 4);
  std::memcpy(&w1, packed + 4, 4);
  std::memcpy(&w2, packed + 8, 4);
  constexpr uint32_t kLow6 = 0x3F3F3F3Fu, kLow4 = 0x0F0F0F0Fu, kLow2 = 0x03030303u;
  return ScaleMinWords{
      .scale_lo = w0 & kLow6,
      .scale_hi = (w2 & kLow4) | (((w0 >> 6) & kLow2) << 4),
      .min_lo = w1 & kLow6,
      .min_hi = ((w2 >> 4) & kLow4) | (((w1 >> 6) & kLow2) << 4),
  };
}

struct ScalesMins {
  uint8_t scale[kSubBlocksQ4K];
  uint8_t min[kSubBlocksQ4K];
};
inline ScalesMins unpack_scales_mins(const uint8_t* packed) {
  const ScaleMinWords words = unpack_scale_min_words(packed);
  ScalesMins out;
  std::memcpy(out.scale, &words.scale_lo, 4);
  std::memcpy(out.scale + 4, &words.scale_hi, 4);
  std::memcpy(out.min, &words.min_lo, 4);
  std::memcpy(out.min + 4, &words.min_hi, 4);
  return out;
}

// The 12 packed scale bytes of Q3_K as 16 scales of 6 bits (0..63, before the -32 offset), four per
// little-endian word, byte k of word g = scale 4g + k. Bit layout (byte b of `packed`, scale j):
//   b 0..7  : bits 0-3 = bits 0-3 of scale[b],   bits 4-7 = bits 0-3 of scale[b + 8]
//   b 8..11 : bits 2i..2i+1 = bits 4-5 of scale[(b - 8) + 4i], i = 0..3
inline void unpack_q3_K_scale_words(const uint8_t* packed, uint32_t words[4]) {
  uint32_t w0, w1, w2;
  std::memcpy(&w0, packed, 4);
  std::memcpy(&w1, packed + 4, 4);
  std::memcpy(&w2, packed + 8, 4);
  constexpr uint32_t kLow4 = 0x0F0F0F0Fu, kLow2 = 0x03030303u;
  words[0] = (w0 & kLow4) | ((w2 & kLow2) << 4);
  words[1] = (w1 & kLow4) | (((w2 >> 2) & kLow2) << 4);
  words[2] = ((w0 >> 4) & kLow4) | (((w2 >> 4) & kLow2) << 4);
  words[3] = ((w1 >> 4) & kLow4) | (((w2 >> 6) & kLow2) << 4);
}

// The 8 IQ4_XS sub-block scales with the -32 offset applied (-32..31).
inline void unpack_iq4_xs_scales(const BlockIQ4XS& b, int8_t out[8]) {
  for (int j = 0; j < 8; ++j) {
    const int low = (b.scales_l[j / 2] >> (4 * (j % 2))) & 0x0F;
    const int high = (b.scales_h >> (2 * j)) & 3;
    out[j] = static_cast<int8_t>((low | (high << 4)) - 32);
  }
}

// A super-block decoded for the portable kernels: every element's quant as the signed integer its
// sub-block scale multiplies (Q3_K: q - 4; IQ4_XS: the grid value) and one integer scale (and Q2_K
// min) per 16 elements. Written from the layouts above, loop by loop as the SIMD kernels walk them.
struct DecodedSuperBlock {
  int8_t code[kSuperBlock];
  int16_t scale[kSuperBlock / 16];
  int16_t min[kSuperBlock / 16];  // Q2_K only (zero otherwise)
};

inline void decode_super_block(const BlockQ2K& b, DecodedSuperBlock* out) {
  for (int h = 0; h < 2; ++h) {
    for (int k = 0; k < 4; ++k) {
      for (int l = 0; l < 32; ++l) out->code[128 * h + 32 * k + l] = static_cast<int8_t>((b.qs[32 * h + l] >> (2 * k)) & 3);
    }
  }
  for (int j = 0; j < 16; ++j) {
    out->scale[j] = static_cast<int16_t>(b.scales[j] & 0x0F);
    out->min[j] = static_cast<int16_t>(b.scales[j] >> 4);
  }
}

inline void decode_super_block(const BlockQ3K& b, DecodedSuperBlock* out) {
  for (int h = 0; h < 2; ++h) {
    for (int k = 0; k < 4; ++k) {
      const int bit = 4 * h + k;  // which hmask bit holds bit 2 of this 32-element run
      for (int l = 0; l < 32; ++l) {
        const int low = (b.qs[32 * h + l] >> (2 * k)) & 3;
        const int high = (b.hmask[l] >> bit) & 1;
        out->code[128 * h + 32 * k + l] = static_cast<int8_t>((low | (high << 2)) - 4);
      }
    }
  }
  uint32_t words[4];
  unpack_q3_K_scale_words(b.scales, words);
  uint8_t scales[16];
  std::memcpy(scales, words, 16);
  for (int j = 0; j < 16; ++j) {
    out->scale[j] = static_cast<int16_t>(scales[j] - 32);
    out->min[j] = 0;
  }
}

inline void decode_super_block(const BlockIQ4XS& b, DecodedSuperBlock* out) {
  int8_t scales[8];
  unpack_iq4_xs_scales(b, scales);
  for (int j = 0; j < 8; ++j) {
    for (int l = 0; l < 16; ++l) {
      out->code[32 * j + l] = kIQ4Values[b.qs[16 * j + l] & 0x0F];
      out->code[32 * j + 16 + l] = kIQ4Values[b.qs[16 * j + l] >> 4];
    }
    out->scale[2 * j] = out->scale[2 * j + 1] = scales[j];
    out->min[2 * j] = out->min[2 * j + 1] = 0;
  }
}

}  // namespace kvtier::kernels::kquant
