// Scalar references for the K-quant formats: the definition of each format,
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
      const int q = static_cast<int>(std::nearbyint(iscale * xb[j]));
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

}  // namespace kvtier::kernels::kquant
