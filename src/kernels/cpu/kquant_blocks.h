// Private: the K-quant block structs, bit-exact with GGML's ggml-common.h, and
// the small decoding helpers shared by the scalar references (ref/) and the
// SIMD kernels (cpu/). All multi-byte fields are little-endian on disk; kvtier
// only runs on little-endian hosts (x86-64, aarch64), checked below.
#pragma once

#include <bit>
#include <cstdint>
#include <cstring>

#include "kernels/kquant_ops.h"

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

}  // namespace kvtier::kernels::kquant
