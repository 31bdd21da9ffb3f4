// Scalar references for the K-quant formats (and IQ4_XS): the definition of each format,
// written for clarity. SIMD kernels (cpu/kquant_*.cpp) are tested against these.
//
// The dot products compute what GGML's vec_dot_*_q8_K compute: exact integer
// sums of weight quant x activation quant per sub-block, times the integer
// sub-block scale, then one float multiply by d_weight * d_activation per
// super-block (and the min / offset correction folded in through bsums).
#include <cassert>
#include <cmath>
#include <cstring>

#include "kernels/cpu/kquant_blocks.h"
#include "kernels/kquant_ops.h"
#include "kvtier/f16.h"

namespace kvtier::kernels::kquant {
namespace {

// Scale and min of sub-block j (0..7) from the 12 packed bytes, read one field
// at a time (the layout is drawn above unpack_scales_mins in kquant_blocks.h).
void scale_min_of_sub_block(int j, const uint8_t* packed, int* scale, int* min) {
  if (j < 4) {
    *scale = packed[j] & 0x3F;
    *min = packed[j + 4] & 0x3F;
  } else {
    *scale = (packed[j + 4] & 0x0F) | ((packed[j - 4] >> 6) << 4);
    *min = (packed[j + 4] >> 4) | ((packed[j] >> 6) << 4);
  }
}

// 4-bit quant of element e (0..255) of a Q4_K / Q5_K block: chunk c = e / 64
// holds bytes qs[32c .. 32c+31]; element 64c + l is the low nibble of byte l,
// element 64c + 32 + l the high nibble.
int low4_of_element(const uint8_t* qs, int e) {
  const int chunk = e / 64, within = e % 64;
  const uint8_t byte = qs[32 * chunk + within % 32];
  return within < 32 ? (byte & 0x0F) : (byte >> 4);
}

// Bit 4 of a Q5_K quant: element e = 32 j + l is bit j of qh[l].
int high_bit_of_element(const uint8_t* qh, int e) { return (qh[e % 32] >> (e / 32)) & 1; }

// 6-bit quant (0..63, before the -32 offset) of element e of a Q6_K block.
// Half h = e / 128 uses ql[64h .. 64h+63] and qh[32h .. 32h+31]; within it,
// quarter k = (e % 128) / 32 and l = e % 32:
//   k=0: low nibble of ql[l],      qh bits 0-1     k=1: low nibble of ql[l+32],  qh bits 2-3
//   k=2: high nibble of ql[l],     qh bits 4-5     k=3: high nibble of ql[l+32], qh bits 6-7
int q6_of_element(const BlockQ6K& b, int e) {
  const int half = e / 128, quarter = (e % 128) / 32, l = e % 32;
  const uint8_t* ql = b.ql + 64 * half;
  const uint8_t* qh = b.qh + 32 * half;
  const uint8_t low_byte = ql[l + (quarter & 1) * 32];
  const int low = quarter < 2 ? (low_byte & 0x0F) : (low_byte >> 4);
  const int high = (qh[l] >> (2 * quarter)) & 3;
  return low | (high << 4);
}

// 2-bit quant of element e of a Q2_K block (also the low 2 bits of a Q3_K quant): half h = e / 128
// uses qs[32h .. 32h+31]; within it, run k = (e % 128) / 32 sits in bits 2k..2k+1 of qs[32h + e % 32].
int low2_of_element(const uint8_t* qs, int e) {
  const int half = e / 128, run = (e % 128) / 32;
  return (qs[32 * half + e % 32] >> (2 * run)) & 3;
}

// Bit 2 of a Q3_K quant: element e = 32k + l is bit k of hmask[l].
int q3_high_bit_of_element(const uint8_t* hmask, int e) { return (hmask[e % 32] >> (e / 32)) & 1; }

// 6-bit scale j (0..15) of a Q3_K block, 0..63 before the -32 offset (layout above
// unpack_q3_K_scale_words in kquant_blocks.h), read one field at a time.
int q3_scale_of_sub_block(int j, const uint8_t* packed) {
  const int low = j < 8 ? (packed[j] & 0x0F) : (packed[j - 8] >> 4);
  const int high = (packed[8 + j % 4] >> (2 * (j / 4))) & 3;
  return low | (high << 4);
}

// 6-bit scale j (0..7) of an IQ4_XS block, 0..63 before the -32 offset.
int iq4_xs_scale_of_sub_block(int j, const BlockIQ4XS& b) {
  const int low = (b.scales_l[j / 2] >> (4 * (j % 2))) & 0x0F;
  const int high = (b.scales_h >> (2 * j)) & 3;
  return low | (high << 4);
}

// Grid value of element e of an IQ4_XS block: sub-block j = e / 32 holds qs[16j .. 16j+15]; its
// element l < 16 is the low nibble of byte l, element 16 + l the high nibble.
int iq4_xs_value_of_element(const BlockIQ4XS& b, int e) {
  const int j = e / 32, within = e % 32;
  const uint8_t byte = b.qs[16 * j + within % 16];
  return kIQ4Values[within < 16 ? (byte & 0x0F) : (byte >> 4)];
}

}  // namespace

void dequantize_q4_K_reference(const void* src, float* dst, int64_t n) {
  assert(n % kSuperBlock == 0);
  const auto* blocks = static_cast<const BlockQ4K*>(src);  // [n / 256]
  for (int64_t i = 0; i < n / kSuperBlock; ++i) {
    const BlockQ4K& b = blocks[i];
    const float d = f16_to_f32(b.d), dmin = f16_to_f32(b.dmin);
    for (int j = 0; j < 8; ++j) {
      int scale, min;
      scale_min_of_sub_block(j, b.scales, &scale, &min);
      const float sub_d = d * static_cast<float>(scale), sub_m = dmin * static_cast<float>(min);
      for (int l = 0; l < 32; ++l) {
        const int e = 32 * j + l;
        dst[i * kSuperBlock + e] = sub_d * static_cast<float>(low4_of_element(b.qs, e)) - sub_m;
      }
    }
  }
}

void dequantize_q5_K_reference(const void* src, float* dst, int64_t n) {
  assert(n % kSuperBlock == 0);
  const auto* blocks = static_cast<const BlockQ5K*>(src);  // [n / 256]
  for (int64_t i = 0; i < n / kSuperBlock; ++i) {
    const BlockQ5K& b = blocks[i];
    const float d = f16_to_f32(b.d), dmin = f16_to_f32(b.dmin);
    for (int j = 0; j < 8; ++j) {
      int scale, min;
      scale_min_of_sub_block(j, b.scales, &scale, &min);
      const float sub_d = d * static_cast<float>(scale), sub_m = dmin * static_cast<float>(min);
      for (int l = 0; l < 32; ++l) {
        const int e = 32 * j + l;
        const int q = low4_of_element(b.qs, e) | (high_bit_of_element(b.qh, e) << 4);
        dst[i * kSuperBlock + e] = sub_d * static_cast<float>(q) - sub_m;
      }
    }
  }
}

void dequantize_q6_K_reference(const void* src, float* dst, int64_t n) {
  assert(n % kSuperBlock == 0);
  const auto* blocks = static_cast<const BlockQ6K*>(src);  // [n / 256]
  for (int64_t i = 0; i < n / kSuperBlock; ++i) {
    const BlockQ6K& b = blocks[i];
    const float d = f16_to_f32(b.d);
    for (int e = 0; e < kSuperBlock; ++e) {
      const float sub_d = d * static_cast<float>(b.scales[e / 16]);
      dst[i * kSuperBlock + e] = sub_d * static_cast<float>(q6_of_element(b, e) - 32);
    }
  }
}

// Q2_K, 84 bytes: | scales[16]: scale j in bits 0-3, min j in bits 4-7 | qs[64] | d: f16 | dmin: f16 |
// element e (sub-block j = e / 16): d * scale_j * low2(e) - dmin * min_j   (low2_of_element above)
void dequantize_q2_K_reference(const void* src, float* dst, int64_t n) {
  assert(n % kSuperBlock == 0);
  const auto* blocks = static_cast<const BlockQ2K*>(src);  // [n / 256]
  for (int64_t i = 0; i < n / kSuperBlock; ++i) {
    const BlockQ2K& b = blocks[i];
    const float d = f16_to_f32(b.d), dmin = f16_to_f32(b.dmin);
    for (int e = 0; e < kSuperBlock; ++e) {
      const int j = e / 16;
      const float sub_d = d * static_cast<float>(b.scales[j] & 0x0F);
      const float sub_m = dmin * static_cast<float>(b.scales[j] >> 4);
      dst[i * kSuperBlock + e] = sub_d * static_cast<float>(low2_of_element(b.qs, e)) - sub_m;
    }
  }
}

// Q3_K, 110 bytes: | hmask[32] | qs[64] as Q2_K | scales[12]: 16 x 6 bits | d: f16 |
// element e (sub-block j = e / 16): d * (scale_j - 32) * (low2(e) + 4 * hmask_bit(e) - 4)
void dequantize_q3_K_reference(const void* src, float* dst, int64_t n) {
  assert(n % kSuperBlock == 0);
  const auto* blocks = static_cast<const BlockQ3K*>(src);  // [n / 256]
  for (int64_t i = 0; i < n / kSuperBlock; ++i) {
    const BlockQ3K& b = blocks[i];
    const float d = f16_to_f32(b.d);
    for (int e = 0; e < kSuperBlock; ++e) {
      const float sub_d = d * static_cast<float>(q3_scale_of_sub_block(e / 16, b.scales) - 32);
      const int q = low2_of_element(b.qs, e) + 4 * q3_high_bit_of_element(b.hmask, e) - 4;
      dst[i * kSuperBlock + e] = sub_d * static_cast<float>(q);
    }
  }
}

// IQ4_XS, 136 bytes: | d: f16 | scales_h: u16 | scales_l[4] | qs[128] |
// element e (sub-block j = e / 32): d * (scale_j - 32) * kIQ4Values[code(e)]
void dequantize_iq4_xs_reference(const void* src, float* dst, int64_t n) {
  assert(n % kSuperBlock == 0);
  const auto* blocks = static_cast<const BlockIQ4XS*>(src);  // [n / 256]
  for (int64_t i = 0; i < n / kSuperBlock; ++i) {
    const BlockIQ4XS& b = blocks[i];
    const float d = f16_to_f32(b.d);
    for (int e = 0; e < kSuperBlock; ++e) {
      const float sub_d = d * static_cast<float>(iq4_xs_scale_of_sub_block(e / 32, b) - 32);
      dst[i * kSuperBlock + e] = sub_d * static_cast<float>(iq4_xs_value_of_element(b, e));
    }
  }
}

void quantize_q8_K_reference(const float* x, void* dst, int64_t n) {
  assert(n % kSuperBlock == 0);
  auto* blocks = static_cast<BlockQ8K*>(dst);  // [n / 256]
  for (int64_t i = 0; i < n / kSuperBlock; ++i) {
    const float* xb = x + i * kSuperBlock;  // [256]
    BlockQ8K& b = blocks[i];
    // The element of largest magnitude, with its sign (the first one on ties):
    // it maps to exactly -127, so the scale is negative when it is positive.
    float max_abs = 0, max_signed = 0;
    for (int j = 0; j < kSuperBlock; ++j) {
      if (std::fabs(xb[j]) > max_abs) {
        max_abs = std::fabs(xb[j]);
        max_signed = xb[j];
      }
    }
    if (max_abs == 0) {
      b.d = 0;
      std::memset(b.qs, 0, sizeof(b.qs));
      std::memset(b.bsums, 0, sizeof(b.bsums));
      continue;
    }
    const float iscale = -127.0f / max_signed;
    for (int j = 0; j < kSuperBlock; ++j) {
      // Round half to even, as GGML's nearest_int does.
      // A NaN product (a NaN element, or an Inf one scaled by the 0 of an infinite maximum) counts as 0:
      // converting it is undefined.
      const float scaled = iscale * xb[j];
      const int q = std::isnan(scaled) ? 0 : static_cast<int>(std::nearbyint(scaled));
      b.qs[j] = static_cast<int8_t>(q < 127 ? q : 127);
    }
    for (int g = 0; g < kSuperBlock / 16; ++g) {
      int sum = 0;
      for (int l = 0; l < 16; ++l) sum += b.qs[16 * g + l];
      b.bsums[g] = static_cast<int16_t>(sum);
    }
    b.d = 1.0f / iscale;
  }
}

float vec_dot_q4_K_q8_K_reference(int64_t n, const void* w, const void* a) {
  assert(n % kSuperBlock == 0);
  const auto* wb = static_cast<const BlockQ4K*>(w);  // [n / 256]
  const auto* ab = static_cast<const BlockQ8K*>(a);  // [n / 256]
  float sum = 0;
  for (int64_t i = 0; i < n / kSuperBlock; ++i) {
    int32_t scaled = 0;  // sum_j scale_j * sum_{l in j} q * a
    int32_t mins = 0;    // sum_j min_j * sum_{l in j} a
    for (int j = 0; j < 8; ++j) {
      int scale, min;
      scale_min_of_sub_block(j, wb[i].scales, &scale, &min);
      int32_t dot = 0;
      for (int l = 0; l < 32; ++l) dot += low4_of_element(wb[i].qs, 32 * j + l) * ab[i].qs[32 * j + l];
      scaled += scale * dot;
      mins += min * (ab[i].bsums[2 * j] + ab[i].bsums[2 * j + 1]);
    }
    const float d = f16_to_f32(wb[i].d) * ab[i].d;
    const float dmin = f16_to_f32(wb[i].dmin) * ab[i].d;
    sum += d * static_cast<float>(scaled) - dmin * static_cast<float>(mins);
  }
  return sum;
}

float vec_dot_q5_K_q8_K_reference(int64_t n, const void* w, const void* a) {
  assert(n % kSuperBlock == 0);
  const auto* wb = static_cast<const BlockQ5K*>(w);  // [n / 256]
  const auto* ab = static_cast<const BlockQ8K*>(a);  // [n / 256]
  float sum = 0;
  for (int64_t i = 0; i < n / kSuperBlock; ++i) {
    int32_t scaled = 0, mins = 0;
    for (int j = 0; j < 8; ++j) {
      int scale, min;
      scale_min_of_sub_block(j, wb[i].scales, &scale, &min);
      int32_t dot = 0;
      for (int l = 0; l < 32; ++l) {
        const int e = 32 * j + l;
        const int q = low4_of_element(wb[i].qs, e) | (high_bit_of_element(wb[i].qh, e) << 4);
        dot += q * ab[i].qs[e];
      }
      scaled += scale * dot;
      mins += min * (ab[i].bsums[2 * j] + ab[i].bsums[2 * j + 1]);
    }
    const float d = f16_to_f32(wb[i].d) * ab[i].d;
    const float dmin = f16_to_f32(wb[i].dmin) * ab[i].d;
    sum += d * static_cast<float>(scaled) - dmin * static_cast<float>(mins);
  }
  return sum;
}

float vec_dot_q6_K_q8_K_reference(int64_t n, const void* w, const void* a) {
  assert(n % kSuperBlock == 0);
  const auto* wb = static_cast<const BlockQ6K*>(w);  // [n / 256]
  const auto* ab = static_cast<const BlockQ8K*>(a);  // [n / 256]
  float sum = 0;
  for (int64_t i = 0; i < n / kSuperBlock; ++i) {
    int32_t scaled = 0;  // sum_j scale_j * sum_{l in j} (q - 32) * a
    for (int j = 0; j < 16; ++j) {
      int32_t dot = 0;
      for (int l = 0; l < 16; ++l) dot += (q6_of_element(wb[i], 16 * j + l) - 32) * ab[i].qs[16 * j + l];
      scaled += wb[i].scales[j] * dot;
    }
    sum += f16_to_f32(wb[i].d) * ab[i].d * static_cast<float>(scaled);
  }
  return sum;
}

// As GGML's vec_dot_q2_K_q8_K: sum_j scale_j * <q, a>_j times d * d_a, minus sum_j min_j * bsum_j times dmin * d_a.
float vec_dot_q2_K_q8_K_reference(int64_t n, const void* w, const void* a) {
  assert(n % kSuperBlock == 0);
  const auto* wb = static_cast<const BlockQ2K*>(w);  // [n / 256]
  const auto* ab = static_cast<const BlockQ8K*>(a);  // [n / 256]
  float sum = 0;
  for (int64_t i = 0; i < n / kSuperBlock; ++i) {
    int32_t scaled = 0, mins = 0;
    for (int j = 0; j < 16; ++j) {
      int32_t dot = 0;
      for (int l = 0; l < 16; ++l) dot += low2_of_element(wb[i].qs, 16 * j + l) * ab[i].qs[16 * j + l];
      scaled += (wb[i].scales[j] & 0x0F) * dot;
      mins += (wb[i].scales[j] >> 4) * ab[i].bsums[j];
    }
    const float d = f16_to_f32(wb[i].d) * ab[i].d;
    const float dmin = f16_to_f32(wb[i].dmin) * ab[i].d;
    sum += d * static_cast<float>(scaled) - dmin * static_cast<float>(mins);
  }
  return sum;
}

float vec_dot_q3_K_q8_K_reference(int64_t n, const void* w, const void* a) {
  assert(n % kSuperBlock == 0);
  const auto* wb = static_cast<const BlockQ3K*>(w);  // [n / 256]
  const auto* ab = static_cast<const BlockQ8K*>(a);  // [n / 256]
  float sum = 0;
  for (int64_t i = 0; i < n / kSuperBlock; ++i) {
    int32_t scaled = 0;  // sum_j (scale_j - 32) * sum_{l in j} (q - 4) * a
    for (int j = 0; j < 16; ++j) {
      int32_t dot = 0;
      for (int l = 0; l < 16; ++l) {
        const int e = 16 * j + l;
        const int q = low2_of_element(wb[i].qs, e) + 4 * q3_high_bit_of_element(wb[i].hmask, e) - 4;
        dot += q * ab[i].qs[e];
      }
      scaled += (q3_scale_of_sub_block(j, wb[i].scales) - 32) * dot;
    }
    sum += f16_to_f32(wb[i].d) * ab[i].d * static_cast<float>(scaled);
  }
  return sum;
}

float vec_dot_iq4_xs_q8_K_reference(int64_t n, const void* w, const void* a) {
  assert(n % kSuperBlock == 0);
  const auto* wb = static_cast<const BlockIQ4XS*>(w);  // [n / 256]
  const auto* ab = static_cast<const BlockQ8K*>(a);    // [n / 256]
  float sum = 0;
  for (int64_t i = 0; i < n / kSuperBlock; ++i) {
    int32_t scaled = 0;  // sum_j (scale_j - 32) * sum_{l in j} value * a
    for (int j = 0; j < 8; ++j) {
      int32_t dot = 0;
      for (int l = 0; l < 32; ++l) dot += iq4_xs_value_of_element(wb[i], 32 * j + l) * ab[i].qs[32 * j + l];
      scaled += (iq4_xs_scale_of_sub_block(j, wb[i]) - 32) * dot;
    }
    sum += f16_to_f32(wb[i].d) * ab[i].d * static_cast<float>(scaled);
  }
  return sum;
}

}  // namespace kvtier::kernels::kquant
