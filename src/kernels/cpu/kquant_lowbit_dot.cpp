// SIMD (Highway, runtime-dispatched) dot products of Q2_K, Q3_K and IQ4_XS weight
// rows with Q8_K activation rows, and their prefill tiles: the weights of the
// Q2_K and Q3_K_S/M/L mixes and of IQ4_XS files.
//
// The scheme of kquant_dot.cpp: exact integer sums per sub-block (16 elements
// for Q2_K / Q3_K, 32 for IQ4_XS) times the integer sub-block scale, one float
// step per super-block; Q2_K's mins and Q3_K's -4 offset are folded in through
// Q8_K's bsums. The integer sums equal the references' (ref/kquant_reference.cpp);
// only the float accumulation across super-blocks differs in order.
//  - x86 AVX2 (also in the AVX-512 targets): maddubs (u8 x i8 -> i16 pairs) +
//    madd. Q2_K quants (0..3) and Q3_K quants as q + 4 (0..7) go in unsigned;
//    IQ4_XS grid values (|v| <= 127) as |v| with their sign moved onto the activation.
//  - NEON: the signed quants in i8 x i8 dot products (SDOT where compiled with dotprod).
//  - every other target: portable Highway code over DecodedSuperBlock.
#include <cassert>
#include <cstring>
#include <type_traits>

#include "kernels/cpu/kquant_blocks.h"
#include "kernels/kquant_ops.h"
#include "kvtier/f16.h"

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/cpu/kquant_lowbit_dot.cpp"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/highway.h>

HWY_BEFORE_NAMESPACE();
namespace kvtier::kernels::kquant::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

#include "kernels/cpu/kquant_simd-inl.h"

// One super-block's float contribution from its exact integer sums:
// scaled = sum_j scale_j * <quants, activations>_j, mins = sum_j min_j * bsum_j (Q2_K only).
template <class Block>
HWY_INLINE float SuperBlockSum(float d, float dmin, float act_d, int32_t scaled, int32_t mins) {
  if constexpr (std::is_same_v<Block, BlockQ2K>) {
    return d * act_d * static_cast<float>(scaled) - dmin * act_d * static_cast<float>(mins);
  } else {
    (void)dmin;
    (void)mins;
    return d * act_d * static_cast<float>(scaled);
  }
}

template <class Block>
HWY_INLINE float BlockMinScale(const Block& b) {
  if constexpr (std::is_same_v<Block, BlockQ2K>) {
    return f16_to_f32(b.dmin);
  } else {
    return 0.0f;
  }
}

// ---------------------------------------------------------------------------
// Portable Highway version (all targets).

using D16 = hn::CappedTag<int16_t, 16>;  // at most 16 lanes: a lane count divides the 16-element sub-blocks

// sum_{l < 16} code[l] * act[l], exact in i32.
HWY_INLINE int32_t Dot16(const int8_t* code, const int8_t* act) {
  const D16 d16;
  const hn::Repartition<int32_t, D16> d32;
  const hn::Rebind<int8_t, D16> di8;
  auto sum0 = hn::Zero(d32), sum1 = hn::Zero(d32);
  for (size_t o = 0; o < 16; o += hn::Lanes(d16)) {
    const auto w = hn::PromoteTo(d16, hn::LoadU(di8, code + o));
    const auto x = hn::PromoteTo(d16, hn::LoadU(di8, act + o));
    sum0 = hn::ReorderWidenMulAccumulate(d32, w, x, sum0, sum1);
  }
  return hn::GetLane(hn::SumOfLanes(d32, hn::Add(sum0, sum1)));
}

template <class Block>
float DotPortable(int64_t n, const void* w, const void* a) {
  const auto* wb = static_cast<const Block*>(w);     // [n / 256]
  const auto* ab = static_cast<const BlockQ8K*>(a);  // [n / 256]
  DecodedSuperBlock decoded;
  float sum = 0;
  for (int64_t i = 0; i < n / kSuperBlock; ++i) {
    decode_super_block(wb[i], &decoded);
    int32_t scaled = 0, mins = 0;
    for (int j = 0; j < 16; ++j) {
      scaled += decoded.scale[j] * Dot16(decoded.code + 16 * j, ab[i].qs + 16 * j);
      mins += decoded.min[j] * ab[i].bsums[j];
    }
    sum += SuperBlockSum<Block>(f16_to_f32(wb[i].d), BlockMinScale(wb[i]), ab[i].d, scaled, mins);
  }
  return sum;
}

// ---------------------------------------------------------------------------
// x86 AVX2 version (also used by the AVX-512 targets, whose attributes include AVX2).
// The row kernels take one weight row and kTokens activation rows (at a + t * a_stride
// bytes; results to y[t * y_stride]): each weight block is decoded once for all of them,
// and the row dot is kTokens = 1, so tiles equal row dots bit for bit.
#if HWY_TARGET == HWY_AVX2 || HWY_TARGET == HWY_AVX3 || HWY_TARGET == HWY_AVX3_DL
#define KVTIER_LOWBIT_HAVE_AVX2 1

HWY_INLINE const BlockQ8K& ActBlock(const uint8_t* a, size_t a_stride, int t, int64_t i) {
  return reinterpret_cast<const BlockQ8K*>(a + t * a_stride)[i];
}

// sum[t] += scale-weighted pair sums of 32 unsigned quants u (<= 7) with activations [offset, offset + 32)
// of token t; s holds the i16 scale of each pair's 16-element half.
template <int kTokens>
HWY_INLINE void AccumulateUnsigned(__m256i u, __m256i s, const uint8_t* a, size_t a_stride, int64_t i, int offset,
                                   __m256i* sum) {
#pragma GCC unroll 8
  for (int t = 0; t < kTokens; ++t) {
    const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ActBlock(a, a_stride, t, i).qs + offset));
    sum[t] = _mm256_add_epi32(sum[t], _mm256_madd_epi16(_mm256_maddubs_epi16(u, x), s));
  }
}

// Lanes 8h..8h+7 of 16 i16 scales in both 128-bit halves (pshufb picks within a half).
HWY_INLINE void SplitScaleHalves(__m256i scales16, __m256i halves[2]) {
  halves[0] = _mm256_permute2x128_si256(scales16, scales16, 0x00);
  halves[1] = _mm256_permute2x128_si256(scales16, scales16, 0x11);
}

// Q2_K (kHighBit = false) and Q3_K (kHighBit = true): both walk 2 halves x 4 runs of 32 elements, run k
// of half h in bits 2k..2k+1 of qs[32h ..]; Q3_K adds bit 4h + k of hmask as bit 2 of the quant.
template <class Block, int kTokens>
HWY_INLINE void DotQ23KAvx2(int64_t n, const Block* wb, const uint8_t* a, size_t a_stride, float* y,
                            size_t y_stride) {
  constexpr bool kHighBit = std::is_same_v<Block, BlockQ3K>;
  const __m256i low2 = _mm256_set1_epi8(3);
  const __m256i one = _mm256_set1_epi8(1);
  __m256 acc[kTokens];
#pragma GCC unroll 8
  for (int t = 0; t < kTokens; ++t) acc[t] = _mm256_setzero_ps();
  for (int64_t i = 0; i < n / kSuperBlock; ++i) {
    __m256i scales16, mins16 = _mm256_setzero_si256();  // 16 x i16, one per sub-block of 16
    __m256i hmask = _mm256_setzero_si256();
    if constexpr (kHighBit) {
      uint32_t words[4];
      unpack_q3_K_scale_words(wb[i].scales, words);
      const __m128i scales8 = _mm_sub_epi8(_mm_loadu_si128(reinterpret_cast<const __m128i*>(words)),
                                           _mm_set1_epi8(32));  // -32..31
      scales16 = _mm256_cvtepi8_epi16(scales8);
      hmask = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wb[i].hmask));
    } else {
      const __m128i packed = _mm_loadu_si128(reinterpret_cast<const __m128i*>(wb[i].scales));
      const __m128i low4 = _mm_set1_epi8(0x0F);
      scales16 = _mm256_cvtepu8_epi16(_mm_and_si128(packed, low4));
      mins16 = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(packed, 4), low4));
    }
    __m256i scale_halves[2];
    SplitScaleHalves(scales16, scale_halves);
    __m256i sum[kTokens];  // per token: 8 x i32 partial sums of scale_j * q * a (Q3_K: q + 4)
#pragma GCC unroll 8
    for (int t = 0; t < kTokens; ++t) sum[t] = _mm256_setzero_si256();
    for (int h = 0; h < 2; ++h) {
      // Shifted right by 2 (qs) and 1 (hmask) per run: the 16-bit shifts move bits across bytes only
      // into bits that the masks drop.
      __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wb[i].qs + 32 * h));
      for (int k = 0; k < 4; ++k) {
        __m256i u = _mm256_and_si256(q, low2);
        q = _mm256_srli_epi16(q, 2);
        if constexpr (kHighBit) {
          u = _mm256_or_si256(u, _mm256_slli_epi16(_mm256_and_si256(hmask, one), 2));
          hmask = _mm256_srli_epi16(hmask, 1);
        }
        const __m256i s = _mm256_shuffle_epi8(scale_halves[h], ShuffleControl(kBroadcastLanePair, k));
        AccumulateUnsigned<kTokens>(u, s, a, a_stride, i, 128 * h + 32 * k, sum);
      }
    }
    const float d = HalfToFloat(wb[i].d);
#pragma GCC unroll 8
    for (int t = 0; t < kTokens; ++t) {
      const BlockQ8K& act = ActBlock(a, a_stride, t, i);
      const __m256i bsums = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(act.bsums));
      if constexpr (kHighBit) {
        // The -4 offset: 4 * sum_j scale_j * bsum_j.
        const __m256i total = _mm256_sub_epi32(sum[t], _mm256_slli_epi32(_mm256_madd_epi16(scales16, bsums), 2));
        acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(d * act.d), _mm256_cvtepi32_ps(total), acc[t]);
      } else {
        const float dmin = HalfToFloat(wb[i].dmin);
        acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(d * act.d), _mm256_cvtepi32_ps(sum[t]), acc[t]);
        acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(-dmin * act.d),
                                 _mm256_cvtepi32_ps(_mm256_madd_epi16(bsums, mins16)), acc[t]);
      }
    }
  }
#pragma GCC unroll 8
  for (int t = 0; t < kTokens; ++t) y[t * y_stride] = HorizontalSum(acc[t]);
}

template <int kTokens>
HWY_INLINE void DotIQ4XSAvx2(int64_t n, const BlockIQ4XS* wb, const uint8_t* a, size_t a_stride, float* y,
                             size_t y_stride) {
  const __m256i low4 = _mm256_set1_epi8(0x0F);
  const __m256i grid = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(kIQ4Values)));
  __m256 acc[kTokens];
#pragma GCC unroll 8
  for (int t = 0; t < kTokens; ++t) acc[t] = _mm256_setzero_ps();
  for (int64_t i = 0; i < n / kSuperBlock; ++i) {
    int8_t scales[8];  // -32..31
    unpack_iq4_xs_scales(wb[i], scales);
    int64_t scale_bits;
    std::memcpy(&scale_bits, scales, 8);
    const __m256i scales16 = _mm256_broadcastsi128_si256(_mm_cvtepi8_epi16(_mm_cvtsi64_si128(scale_bits)));
    __m256i sum[kTokens];
#pragma GCC unroll 8
    for (int t = 0; t < kTokens; ++t) sum[t] = _mm256_setzero_si256();
    for (int j = 0; j < 8; ++j) {  // sub-block j: low nibbles are elements 0..15, high nibbles 16..31
      const __m128i packed = _mm_loadu_si128(reinterpret_cast<const __m128i*>(wb[i].qs + 16 * j));
      const __m256i codes = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(packed, 4), packed), low4);
      const __m256i values = _mm256_shuffle_epi8(grid, codes);
      const __m256i magnitude = _mm256_sign_epi8(values, values);  // no grid value is 0
      const __m256i s = _mm256_shuffle_epi8(scales16, ShuffleControl(kBroadcastLane, j));
#pragma GCC unroll 8
      for (int t = 0; t < kTokens; ++t) {
        const __m256i x =
            _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ActBlock(a, a_stride, t, i).qs + 32 * j));
        // |v| * (sign(v) x): pairs <= 2 * 127 * 127, inside i16 (Q8_K quants are never -128).
        const __m256i pairs = _mm256_maddubs_epi16(magnitude, _mm256_sign_epi8(x, values));
        sum[t] = _mm256_add_epi32(sum[t], _mm256_madd_epi16(pairs, s));
      }
    }
    const float d = HalfToFloat(wb[i].d);
#pragma GCC unroll 8
    for (int t = 0; t < kTokens; ++t) {
      acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(d * ActBlock(a, a_stride, t, i).d), _mm256_cvtepi32_ps(sum[t]), acc[t]);
    }
  }
#pragma GCC unroll 8
  for (int t = 0; t < kTokens; ++t) y[t * y_stride] = HorizontalSum(acc[t]);
}

template <class Block, int kTokens>
HWY_INLINE void RowKernel(int64_t n, const Block* w, const uint8_t* a, size_t a_stride, float* y, size_t y_stride) {
  if constexpr (std::is_same_v<Block, BlockIQ4XS>) {
    DotIQ4XSAvx2<kTokens>(n, w, a, a_stride, y, y_stride);
  } else {
    DotQ23KAvx2<Block, kTokens>(n, w, a, a_stride, y, y_stride);
  }
}
constexpr int kTokenGroup = 4;
#endif  // AVX2

// ---------------------------------------------------------------------------
// Arm NEON version: signed quants, i8 x i8 dot products per 16 elements.
#if HWY_TARGET == HWY_NEON
#define KVTIER_LOWBIT_HAVE_NEON 1

HWY_INLINE const BlockQ8K& ActBlock(const uint8_t* a, size_t a_stride, int t, int64_t i) {
  return reinterpret_cast<const BlockQ8K*>(a + t * a_stride)[i];
}

// Q2_K (kHighBit = false) and Q3_K (true), walked as in the AVX2 kernel.
template <class Block, int kTokens>
HWY_INLINE void DotQ23KNeon(int64_t n, const Block* wb, const uint8_t* a, size_t a_stride, float* y,
                            size_t y_stride) {
  constexpr bool kHighBit = std::is_same_v<Block, BlockQ3K>;
  const uint8x16_t low2 = vdupq_n_u8(3);
  const uint8x16_t one = vdupq_n_u8(1);
  const int8x16_t offset = vdupq_n_s8(kHighBit ? 4 : 0);
  float sum[kTokens] = {};
  for (int64_t i = 0; i < n / kSuperBlock; ++i) {
    int32_t scales[16];  // one per 16 elements (Q3_K: -32..31)
    uint8x16_t hmask[2] = {vdupq_n_u8(0), vdupq_n_u8(0)};
    if constexpr (kHighBit) {
      uint32_t words[4];
      unpack_q3_K_scale_words(wb[i].scales, words);
      uint8_t bytes[16];
      std::memcpy(bytes, words, 16);
      for (int j = 0; j < 16; ++j) scales[j] = bytes[j] - 32;
      hmask[0] = vld1q_u8(wb[i].hmask);
      hmask[1] = vld1q_u8(wb[i].hmask + 16);
    } else {
      for (int j = 0; j < 16; ++j) scales[j] = wb[i].scales[j] & 0x0F;
    }
    int32x4_t scaled[kTokens];
    for (int t = 0; t < kTokens; ++t) scaled[t] = vdupq_n_s32(0);
    for (int h = 0; h < 2; ++h) {
      uint8x16_t q[2] = {vld1q_u8(wb[i].qs + 32 * h), vld1q_u8(wb[i].qs + 32 * h + 16)};
      for (int k = 0; k < 4; ++k) {
        for (int r = 0; r < 2; ++r) {  // elements 16r .. 16r+15 of the run: sub-block 8h + 2k + r
          uint8x16_t u = vandq_u8(q[r], low2);
          q[r] = vshrq_n_u8(q[r], 2);
          if constexpr (kHighBit) {
            u = vorrq_u8(u, vshlq_n_u8(vandq_u8(hmask[r], one), 2));
            hmask[r] = vshrq_n_u8(hmask[r], 1);
          }
          const int8x16_t quants = vsubq_s8(vreinterpretq_s8_u8(u), offset);
          const int sub_block = 8 * h + 2 * k + r;
          for (int t = 0; t < kTokens; ++t) {
            const int8x16_t x = vld1q_s8(ActBlock(a, a_stride, t, i).qs + 16 * sub_block);
            scaled[t] = vmlaq_n_s32(scaled[t], DotI8x16(vdupq_n_s32(0), quants, x), scales[sub_block]);
          }
        }
      }
    }
    const float d = HalfToFloatNeon(wb[i].d);
    float dmin = 0;
    int16x8_t mins[2] = {vdupq_n_s16(0), vdupq_n_s16(0)};
    if constexpr (!kHighBit) {
      dmin = HalfToFloatNeon(wb[i].dmin);
      const uint8x16_t min4 = vshrq_n_u8(vld1q_u8(wb[i].scales), 4);
      mins[0] = vreinterpretq_s16_u16(vmovl_u8(vget_low_u8(min4)));
      mins[1] = vreinterpretq_s16_u16(vmovl_high_u8(min4));
    }
    for (int t = 0; t < kTokens; ++t) {
      const BlockQ8K& act = ActBlock(a, a_stride, t, i);
      int32_t min_sum = 0;
      if constexpr (!kHighBit) {
        const int16x8_t b0 = vld1q_s16(act.bsums), b1 = vld1q_s16(act.bsums + 8);
        int32x4_t products = vmull_s16(vget_low_s16(b0), vget_low_s16(mins[0]));
        products = vmlal_high_s16(products, b0, mins[0]);
        products = vmlal_s16(products, vget_low_s16(b1), vget_low_s16(mins[1]));
        products = vmlal_high_s16(products, b1, mins[1]);
        min_sum = vaddvq_s32(products);
      }
      sum[t] += SuperBlockSum<Block>(d, dmin, act.d, vaddvq_s32(scaled[t]), min_sum);
    }
  }
  for (int t = 0; t < kTokens; ++t) y[t * y_stride] = sum[t];
}

template <int kTokens>
HWY_INLINE void DotIQ4XSNeon(int64_t n, const BlockIQ4XS* wb, const uint8_t* a, size_t a_stride, float* y,
                             size_t y_stride) {
  const int8x16_t grid = vld1q_s8(kIQ4Values);
  const uint8x16_t low4 = vdupq_n_u8(0x0F);
  float sum[kTokens] = {};
  for (int64_t i = 0; i < n / kSuperBlock; ++i) {
    int8_t scales[8];  // -32..31
    unpack_iq4_xs_scales(wb[i], scales);
    int32x4_t scaled[kTokens];
    for (int t = 0; t < kTokens; ++t) scaled[t] = vdupq_n_s32(0);
    for (int j = 0; j < 8; ++j) {
      const uint8x16_t packed = vld1q_u8(wb[i].qs + 16 * j);
      const int8x16_t lo = vqtbl1q_s8(grid, vandq_u8(packed, low4));  // elements 0..15 of sub-block j
      const int8x16_t hi = vqtbl1q_s8(grid, vshrq_n_u8(packed, 4));   // elements 16..31
      for (int t = 0; t < kTokens; ++t) {
        const int8_t* x = ActBlock(a, a_stride, t, i).qs + 32 * j;  // [32]
        const int32x4_t dot = DotI8x16(DotI8x16(vdupq_n_s32(0), lo, vld1q_s8(x)), hi, vld1q_s8(x + 16));
        scaled[t] = vmlaq_n_s32(scaled[t], dot, scales[j]);
      }
    }
    const float d = HalfToFloatNeon(wb[i].d);
    for (int t = 0; t < kTokens; ++t) {
      sum[t] += SuperBlockSum<BlockIQ4XS>(d, 0, ActBlock(a, a_stride, t, i).d, vaddvq_s32(scaled[t]), 0);
    }
  }
  for (int t = 0; t < kTokens; ++t) y[t * y_stride] = sum[t];
}

template <class Block, int kTokens>
HWY_INLINE void RowKernel(int64_t n, const Block* w, const uint8_t* a, size_t a_stride, float* y, size_t y_stride) {
  if constexpr (std::is_same_v<Block, BlockIQ4XS>) {
    DotIQ4XSNeon<kTokens>(n, w, a, a_stride, y, y_stride);
  } else {
    DotQ23KNeon<Block, kTokens>(n, w, a, a_stride, y, y_stride);
  }
}
constexpr int kTokenGroup = 4;
#endif  // NEON

// ---------------------------------------------------------------------------
// Entry points of this target.

template <class Block>
float VecDot(int64_t n, const void* w, const void* a) {
#if defined(KVTIER_LOWBIT_HAVE_AVX2) || defined(KVTIER_LOWBIT_HAVE_NEON)
  float y;
  RowKernel<Block, 1>(n, static_cast<const Block*>(w), static_cast<const uint8_t*>(a), 0, &y, 0);
  return y;
#else
  return DotPortable<Block>(n, w, a);
#endif
}

// y[t * y_stride + r] = dot(weight row r, activation row t). Where there are row kernels, each weight
// row meets the tokens kTokenGroup at a time (its blocks decoded once per group), then one by one.
template <class Block>
void Tile(int64_t n, const uint8_t* w, size_t w_stride, int64_t rows, const uint8_t* a, size_t a_stride,
          int64_t tokens, float* y, size_t y_stride) {
  for (int64_t r = 0; r < rows; ++r) {
    const auto* row = reinterpret_cast<const Block*>(w + r * w_stride);
    int64_t t = 0;
#if defined(KVTIER_LOWBIT_HAVE_AVX2) || defined(KVTIER_LOWBIT_HAVE_NEON)
    for (; t + kTokenGroup <= tokens; t += kTokenGroup) {
      RowKernel<Block, kTokenGroup>(n, row, a + t * a_stride, a_stride, y + t * y_stride + r, y_stride);
    }
#endif
    for (; t < tokens; ++t) y[t * y_stride + r] = VecDot<Block>(n, row, a + t * a_stride);
  }
}

float VecDotQ2K(int64_t n, const void* w, const void* a) { return VecDot<BlockQ2K>(n, w, a); }
float VecDotQ3K(int64_t n, const void* w, const void* a) { return VecDot<BlockQ3K>(n, w, a); }
float VecDotIQ4XS(int64_t n, const void* w, const void* a) { return VecDot<BlockIQ4XS>(n, w, a); }

void TileQ2K(int64_t n, const uint8_t* w, size_t w_stride, int64_t rows, const uint8_t* a, size_t a_stride,
             int64_t tokens, float* y, size_t y_stride) {
  Tile<BlockQ2K>(n, w, w_stride, rows, a, a_stride, tokens, y, y_stride);
}
void TileQ3K(int64_t n, const uint8_t* w, size_t w_stride, int64_t rows, const uint8_t* a, size_t a_stride,
             int64_t tokens, float* y, size_t y_stride) {
  Tile<BlockQ3K>(n, w, w_stride, rows, a, a_stride, tokens, y, y_stride);
}
void TileIQ4XS(int64_t n, const uint8_t* w, size_t w_stride, int64_t rows, const uint8_t* a, size_t a_stride,
               int64_t tokens, float* y, size_t y_stride) {
  Tile<BlockIQ4XS>(n, w, w_stride, rows, a, a_stride, tokens, y, y_stride);
}

#undef KVTIER_LOWBIT_HAVE_AVX2
#undef KVTIER_LOWBIT_HAVE_NEON

}  // namespace kvtier::kernels::kquant::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace kvtier::kernels::kquant {
HWY_EXPORT(VecDotQ2K);
HWY_EXPORT(VecDotQ3K);
HWY_EXPORT(VecDotIQ4XS);
HWY_EXPORT(TileQ2K);
HWY_EXPORT(TileQ3K);
HWY_EXPORT(TileIQ4XS);

float vec_dot_q2_K_q8_K(int64_t n, const void* w, const void* a) {
  assert(n % kSuperBlock == 0);
  return HWY_DYNAMIC_DISPATCH(VecDotQ2K)(n, w, a);
}
float vec_dot_q3_K_q8_K(int64_t n, const void* w, const void* a) {
  assert(n % kSuperBlock == 0);
  return HWY_DYNAMIC_DISPATCH(VecDotQ3K)(n, w, a);
}
float vec_dot_iq4_xs_q8_K(int64_t n, const void* w, const void* a) {
  assert(n % kSuperBlock == 0);
  return HWY_DYNAMIC_DISPATCH(VecDotIQ4XS)(n, w, a);
}
void tile_q2_K_q8_K(int64_t n, const uint8_t* w, size_t w_stride, int64_t rows, const uint8_t* a, size_t a_stride,
                    int64_t tokens, float* y, size_t y_stride) {
  assert(n % kSuperBlock == 0);
  HWY_DYNAMIC_DISPATCH(TileQ2K)(n, w, w_stride, rows, a, a_stride, tokens, y, y_stride);
}
void tile_q3_K_q8_K(int64_t n, const uint8_t* w, size_t w_stride, int64_t rows, const uint8_t* a, size_t a_stride,
                    int64_t tokens, float* y, size_t y_stride) {
  assert(n % kSuperBlock == 0);
  HWY_DYNAMIC_DISPATCH(TileQ3K)(n, w, w_stride, rows, a, a_stride, tokens, y, y_stride);
}
void tile_iq4_xs_q8_K(int64_t n, const uint8_t* w, size_t w_stride, int64_t rows, const uint8_t* a,
                      size_t a_stride, int64_t tokens, float* y, size_t y_stride) {
  assert(n % kSuperBlock == 0);
  HWY_DYNAMIC_DISPATCH(TileIQ4XS)(n, w, w_stride, rows, a, a_stride, tokens, y, y_stride);
}
}  // namespace kvtier::kernels::kquant
#endif
