// Scalar reference kernels for F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0,
// IQ4_NL and the Q8_0 / Q8_1 activation formats. These define the formats; the SIMD
// kernels are tested against them. Written for clarity, not speed.
#include <algorithm>
#include <cassert>
#include <cmath>
#include <cstring>

#include "kernels/weight_blocks.h"
#include "kvtier/f16.h"

namespace kvtier::kernels::ref {
namespace {

uint32_t load_qh(const uint8_t qh[4]) {
  uint32_t bits;
  std::memcpy(&bits, qh, 4);  // little-endian u32 as in GGML
  return bits;
}

// The 4-bit code of element i (0..31) of a block: low nibbles hold 0..15,
// high nibbles 16..31.
int nibble(const uint8_t qs[16], int i) { return i < 16 ? (qs[i] & 0x0F) : (qs[i - 16] >> 4); }

// Q4_0, 18 bytes: | d: f16 | qs[16]: element i in qs[i%16], low nibble i<16, high nibble i>=16 |
// value_i = (nibble_i - 8) * d
void dequantize_q4_0(const BlockQ4_0* b, float* y, int64_t n_blocks) {
  for (int64_t k = 0; k < n_blocks; ++k) {
    const float d = f16_to_f32(b[k].d);
    for (int i = 0; i < 32; ++i) y[k * 32 + i] = static_cast<float>(nibble(b[k].qs, i) - 8) * d;
  }
}

// Q4_1, 20 bytes: | d: f16 | m: f16 | qs[16] as Q4_0 |   value_i = nibble_i * d + m
void dequantize_q4_1(const BlockQ4_1* b, float* y, int64_t n_blocks) {
  for (int64_t k = 0; k < n_blocks; ++k) {
    const float d = f16_to_f32(b[k].d);
    const float m = f16_to_f32(b[k].m);
    for (int i = 0; i < 32; ++i) y[k * 32 + i] = static_cast<float>(nibble(b[k].qs, i)) * d + m;
  }
}

// Q5_0, 22 bytes: | d: f16 | qh: u32 LE, bit i = 5th bit of element i | qs[16] as Q4_0 |
// value_i = ((nibble_i | bit_i << 4) - 16) * d
void dequantize_q5_0(const BlockQ5_0* b, float* y, int64_t n_blocks) {
  for (int64_t k = 0; k < n_blocks; ++k) {
    const float d = f16_to_f32(b[k].d);
    const uint32_t qh = load_qh(b[k].qh);
    for (int i = 0; i < 32; ++i) {
      const int q = nibble(b[k].qs, i) | static_cast<int>(((qh >> i) & 1u) << 4);
      y[k * 32 + i] = static_cast<float>(q - 16) * d;
    }
  }
}

// Q5_1, 24 bytes: | d: f16 | m: f16 | qh: u32 LE as Q5_0 | qs[16] as Q4_0 |
// value_i = (nibble_i | bit_i << 4) * d + m
void dequantize_q5_1(const BlockQ5_1* b, float* y, int64_t n_blocks) {
  for (int64_t k = 0; k < n_blocks; ++k) {
    const float d = f16_to_f32(b[k].d);
    const float m = f16_to_f32(b[k].m);
    const uint32_t qh = load_qh(b[k].qh);
    for (int i = 0; i < 32; ++i) {
      const int q = nibble(b[k].qs, i) | static_cast<int>(((qh >> i) & 1u) << 4);
      y[k * 32 + i] = static_cast<float>(q) * d + m;
    }
  }
}

// Q8_0, 34 bytes: | d: f16 | qs[32]: int8, element i in qs[i] |   value_i = qs_i * d
void dequantize_q8_0(const BlockQ8_0* b, float* y, int64_t n_blocks) {
  for (int64_t k = 0; k < n_blocks; ++k) {
    const float d = f16_to_f32(b[k].d);
    for (int i = 0; i < 32; ++i) y[k * 32 + i] = static_cast<float>(b[k].qs[i]) * d;
  }
}

// IQ4_NL, 18 bytes: | d: f16 | qs[16]: codes laid out as Q4_0's nibbles |
// value_i = kIQ4Values[nibble_i] * d
void dequantize_iq4_nl(const BlockIQ4_NL* b, float* y, int64_t n_blocks) {
  for (int64_t k = 0; k < n_blocks; ++k) {
    const float d = f16_to_f32(b[k].d);
    for (int i = 0; i < 32; ++i) y[k * 32 + i] = static_cast<float>(kIQ4Values[nibble(b[k].qs, i)]) * d;
  }
}

// GGML's quantize_row_q8_0_ref: d = amax / 127, q = roundf(x / d) (ties away from zero).
// roundf of a scaled activation; NaN (non-finite activations) as 0, as the SIMD kernels do: converting it is
// undefined.
int8_t round_to_q8(float scaled) { return std::isnan(scaled) ? 0 : static_cast<int8_t>(std::roundf(scaled)); }

void quantize_q8_0(const float* x, BlockQ8_0* b, int64_t n_blocks) {
  for (int64_t k = 0; k < n_blocks; ++k) {
    float amax = 0.0f;
    for (int i = 0; i < 32; ++i) amax = std::max(amax, std::fabs(x[k * 32 + i]));
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    b[k].d = f32_to_f16(d);
    for (int i = 0; i < 32; ++i) b[k].qs[i] = round_to_q8(x[k * 32 + i] * id);
  }
}

// GGML's quantize_row_q8_1_ref: as Q8_0, plus s = f16(d * sum(q)).
void quantize_q8_1(const float* x, BlockQ8_1* b, int64_t n_blocks) {
  for (int64_t k = 0; k < n_blocks; ++k) {
    float amax = 0.0f;
    for (int i = 0; i < 32; ++i) amax = std::max(amax, std::fabs(x[k * 32 + i]));
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    b[k].d = f32_to_f16(d);
    int sum = 0;
    for (int i = 0; i < 32; ++i) {
      b[k].qs[i] = round_to_q8(x[k * 32 + i] * id);
      sum += b[k].qs[i];
    }
    b[k].s = f32_to_f16(static_cast<float>(sum) * d);
  }
}

// Integer dot product of 32 weight codes (already offset) with a Q8 block.
int32_t dot32(const int w[32], const int8_t a[32]) {
  int32_t sum = 0;
  for (int i = 0; i < 32; ++i) sum += w[i] * a[i];
  return sum;
}

// Weight codes of element i for each 32-block format, as the integer that
// multiplies d (Q4_0/Q5_0 include their offset; Q4_1/Q5_1 leave m separate).
template <class Block>
void block_codes(const Block& b, int codes[32]);
template <>
void block_codes(const BlockQ4_0& b, int codes[32]) {
  for (int i = 0; i < 32; ++i) codes[i] = nibble(b.qs, i) - 8;
}
template <>
void block_codes(const BlockQ4_1& b, int codes[32]) {
  for (int i = 0; i < 32; ++i) codes[i] = nibble(b.qs, i);
}
template <>
void block_codes(const BlockQ5_0& b, int codes[32]) {
  const uint32_t qh = load_qh(b.qh);
  for (int i = 0; i < 32; ++i) codes[i] = (nibble(b.qs, i) | static_cast<int>(((qh >> i) & 1u) << 4)) - 16;
}
template <>
void block_codes(const BlockQ5_1& b, int codes[32]) {
  const uint32_t qh = load_qh(b.qh);
  for (int i = 0; i < 32; ++i) codes[i] = nibble(b.qs, i) | static_cast<int>(((qh >> i) & 1u) << 4);
}
template <>
void block_codes(const BlockIQ4_NL& b, int codes[32]) {
  for (int i = 0; i < 32; ++i) codes[i] = kIQ4Values[nibble(b.qs, i)];
}
template <>
void block_codes(const BlockQ8_0& b, int codes[32]) {
  for (int i = 0; i < 32; ++i) codes[i] = b.qs[i];
}

// Symmetric formats against Q8_0: sum_k d_w * d_a * <codes, q>   (ggml_vec_dot_q4_0_q8_0 etc.)
template <class Block>
float vec_dot_symmetric(int64_t n_blocks, const Block* w, const BlockQ8_0* a) {
  float sum = 0.0f;
  int codes[32];
  for (int64_t k = 0; k < n_blocks; ++k) {
    block_codes(w[k], codes);
    sum += static_cast<float>(dot32(codes, a[k].qs)) * (f16_to_f32(w[k].d) * f16_to_f32(a[k].d));
  }
  return sum;
}

// Formats with a minimum against Q8_1: sum_k d_w * d_a * <codes, q> + m_w * s_a
// (ggml_vec_dot_q4_1_q8_1 / q5_1_q8_1).
template <class Block>
float vec_dot_with_min(int64_t n_blocks, const Block* w, const BlockQ8_1* a) {
  float sum = 0.0f;
  int codes[32];
  for (int64_t k = 0; k < n_blocks; ++k) {
    block_codes(w[k], codes);
    sum += static_cast<float>(dot32(codes, a[k].qs)) * (f16_to_f32(w[k].d) * f16_to_f32(a[k].d)) +
           f16_to_f32(w[k].m) * f16_to_f32(a[k].s);
  }
  return sum;
}

}  // namespace

bool dequantize(GgmlType t, const void* src, float* dst, int64_t n) {
  const int64_t blocks = n / kBlock32;
  switch (t) {
    case GgmlType::F32:
      std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(float));
      return true;
    case GgmlType::F16:
      for (int64_t i = 0; i < n; ++i) dst[i] = f16_to_f32(static_cast<const uint16_t*>(src)[i]);
      return true;
    case GgmlType::BF16:
      for (int64_t i = 0; i < n; ++i) dst[i] = bf16_to_f32(static_cast<const uint16_t*>(src)[i]);
      return true;
    case GgmlType::Q4_0: dequantize_q4_0(static_cast<const BlockQ4_0*>(src), dst, blocks); return true;
    case GgmlType::Q4_1: dequantize_q4_1(static_cast<const BlockQ4_1*>(src), dst, blocks); return true;
    case GgmlType::Q5_0: dequantize_q5_0(static_cast<const BlockQ5_0*>(src), dst, blocks); return true;
    case GgmlType::Q5_1: dequantize_q5_1(static_cast<const BlockQ5_1*>(src), dst, blocks); return true;
    case GgmlType::Q8_0: dequantize_q8_0(static_cast<const BlockQ8_0*>(src), dst, blocks); return true;
    case GgmlType::IQ4_NL: dequantize_iq4_nl(static_cast<const BlockIQ4_NL*>(src), dst, blocks); return true;
    default: return false;
  }
}

void quantize_activation(GgmlType activation, const float* x, void* dst, int64_t n) {
  switch (activation) {
    case GgmlType::F32: std::memcpy(dst, x, static_cast<size_t>(n) * sizeof(float)); break;
    case GgmlType::F16:
      for (int64_t i = 0; i < n; ++i) static_cast<uint16_t*>(dst)[i] = f32_to_f16(x[i]);
      break;
    case GgmlType::BF16:
      for (int64_t i = 0; i < n; ++i) static_cast<uint16_t*>(dst)[i] = f32_to_bf16(x[i]);
      break;
    case GgmlType::Q8_0: quantize_q8_0(x, static_cast<BlockQ8_0*>(dst), n / kBlock32); break;
    case GgmlType::Q8_1: quantize_q8_1(x, static_cast<BlockQ8_1*>(dst), n / kBlock32); break;
    default: assert(false && "not an activation type of the 32-block/float formats");
  }
}

bool vec_dot(GgmlType weight_type, int64_t n, const void* w, const void* a, float* result) {
  const int64_t blocks = n / kBlock32;
  switch (weight_type) {
    case GgmlType::F32:
    case GgmlType::F16:
    case GgmlType::BF16: {
      // Like GGML's generic ggml_vec_dot_f16: products in f32, summed in double.
      double sum = 0.0;
      for (int64_t i = 0; i < n; ++i) {
        float wi, ai;
        if (weight_type == GgmlType::F32) {
          wi = static_cast<const float*>(w)[i];
          ai = static_cast<const float*>(a)[i];
        } else if (weight_type == GgmlType::F16) {
          wi = f16_to_f32(static_cast<const uint16_t*>(w)[i]);
          ai = f16_to_f32(static_cast<const uint16_t*>(a)[i]);
        } else {
          wi = bf16_to_f32(static_cast<const uint16_t*>(w)[i]);
          ai = bf16_to_f32(static_cast<const uint16_t*>(a)[i]);
        }
        sum += static_cast<double>(wi * ai);
      }
      *result = static_cast<float>(sum);
      return true;
    }
    case GgmlType::Q4_0:
      *result = vec_dot_symmetric(blocks, static_cast<const BlockQ4_0*>(w), static_cast<const BlockQ8_0*>(a));
      return true;
    case GgmlType::Q5_0:
      *result = vec_dot_symmetric(blocks, static_cast<const BlockQ5_0*>(w), static_cast<const BlockQ8_0*>(a));
      return true;
    case GgmlType::Q8_0:
      *result = vec_dot_symmetric(blocks, static_cast<const BlockQ8_0*>(w), static_cast<const BlockQ8_0*>(a));
      return true;
    case GgmlType::IQ4_NL:  // ggml_vec_dot_iq4_nl_q8_0: grid values times Q8_0 quants
      *result = vec_dot_symmetric(blocks, static_cast<const BlockIQ4_NL*>(w), static_cast<const BlockQ8_0*>(a));
      return true;
    case GgmlType::Q4_1:
      *result = vec_dot_with_min(blocks, static_cast<const BlockQ4_1*>(w), static_cast<const BlockQ8_1*>(a));
      return true;
    case GgmlType::Q5_1:
      *result = vec_dot_with_min(blocks, static_cast<const BlockQ5_1*>(w), static_cast<const BlockQ8_1*>(a));
      return true;
    default: return false;
  }
}

}  // namespace kvtier::kernels::ref
