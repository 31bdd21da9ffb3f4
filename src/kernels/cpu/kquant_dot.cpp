// SIMD (Highway, runtime-dispatched) dot products of Q4_K / Q5_K / Q6_K weight
// rows with Q8_K activation rows: the decode hot loop of Q4_K_M models.
//
// Each target computes the same exact integer sums as the references in
// ref/kquant_reference.cpp (per sub-block quant x quant sums times the integer
// sub-block scale, mins / the Q6_K offset folded in through Q8_K's bsums);
// only the float accumulation across super-blocks differs in order.
//
// Highway 1.0.3 has no u8 x i8 dot product, so:
//  - x86 AVX2 / AVX3 targets use the AVX2 pair-multiply intrinsics directly
//    (maddubs: u8 x i8 -> i16 pairs, madd: i16 x i16 -> i32 pairs);
//  - every other target (SSE4, SSSE3, EMU128, NEON, SVE, ...) uses portable
//    Highway code that widens to i16 and uses ReorderWidenMulAccumulate.
#include <cassert>
#include <cstring>

#include "kernels/cpu/kquant_blocks.h"
#include "kernels/kquant_ops.h"
#include "kvtier/f16.h"

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/cpu/kquant_dot.cpp"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/highway.h>

HWY_BEFORE_NAMESPACE();
namespace kvtier::kernels::kquant::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

#include "kernels/cpu/kquant_simd-inl.h"

// ---------------------------------------------------------------------------
// Portable Highway version (all targets).

// At most 16 i16 lanes, so a lane count always divides the 16/32-element sub-blocks.
using D16 = hn::CappedTag<int16_t, 16>;

// sum_{l < len} weight_q[l] * act[l] where weight_q are bytes transformed by
// `decode` (a lambda on a vector of i16 holding one byte each) - exact in i32.
template <class Decode>
HWY_INLINE int32_t DotBytesI8(const uint8_t* weight_bytes, const int8_t* act, size_t len, const Decode& decode) {
  const D16 d16;
  const hn::Repartition<int32_t, D16> d32;
  const hn::Rebind<uint8_t, D16> du8;
  const hn::Rebind<int8_t, D16> di8;
  auto sum0 = hn::Zero(d32), sum1 = hn::Zero(d32);
  for (size_t o = 0; o < len; o += hn::Lanes(d16)) {
    const auto w = decode(hn::PromoteTo(d16, hn::LoadU(du8, weight_bytes + o)), o);
    const auto x = hn::PromoteTo(d16, hn::LoadU(di8, act + o));
    sum0 = hn::ReorderWidenMulAccumulate(d32, w, x, sum0, sum1);
  }
  return hn::GetLane(hn::SumOfLanes(d32, hn::Add(sum0, sum1)));
}

// Q4_K and Q5_K share everything but the fifth bit (kHasHighBit: Q5_K's qh).
template <class Block, bool kHasHighBit>
HWY_INLINE float DotQ45KPortable(int64_t n, const void* w, const void* a) {
  const D16 d16;
  const hn::Rebind<uint8_t, D16> du8;
  const auto* wb = static_cast<const Block*>(w);     // [n / 256]
  const auto* ab = static_cast<const BlockQ8K*>(a);  // [n / 256]
  float sum = 0;
  for (int64_t i = 0; i < n / kSuperBlock; ++i) {
    const ScalesMins sm = unpack_scales_mins(wb[i].scales);
    int32_t scaled = 0, mins = 0;
    for (int j = 0; j < 8; ++j) {
      const int shift = 4 * (j % 2);  // sub-block 2c: low nibbles of chunk c, 2c+1: high nibbles
      const auto decode = [&](auto bytes, size_t o) {
        auto q = hn::And(hn::ShiftRightSame(bytes, shift), hn::Set(d16, 0x0F));
        if constexpr (kHasHighBit) {
          const auto hbits = hn::PromoteTo(d16, hn::LoadU(du8, wb[i].qh + o));
          q = hn::Or(q, hn::ShiftLeft<4>(hn::And(hn::ShiftRightSame(hbits, j), hn::Set(d16, 1))));
        }
        return q;
      };
      scaled += sm.scale[j] * DotBytesI8(wb[i].qs + 32 * (j / 2), ab[i].qs + 32 * j, 32, decode);
      mins += sm.min[j] * (ab[i].bsums[2 * j] + ab[i].bsums[2 * j + 1]);
    }
    const float d = f16_to_f32(wb[i].d) * ab[i].d, dmin = f16_to_f32(wb[i].dmin) * ab[i].d;
    sum += d * static_cast<float>(scaled) - dmin * static_cast<float>(mins);
  }
  return sum;
}

float DotQ4KPortable(int64_t n, const void* w, const void* a) { return DotQ45KPortable<BlockQ4K, false>(n, w, a); }
float DotQ5KPortable(int64_t n, const void* w, const void* a) { return DotQ45KPortable<BlockQ5K, true>(n, w, a); }

float DotQ6KPortable(int64_t n, const void* w, const void* a) {
  const D16 d16;
  const hn::Rebind<uint8_t, D16> du8;
  const auto* wb = static_cast<const BlockQ6K*>(w);  // [n / 256]
  const auto* ab = static_cast<const BlockQ8K*>(a);  // [n / 256]
  float sum = 0;
  for (int64_t i = 0; i < n / kSuperBlock; ++i) {
    int32_t scaled = 0;  // sum_j scale_j * sum_l q * a   (q in 0..63, before the -32 offset)
    int32_t offset = 0;  // sum_j scale_j * sum_l a       (times 32 below)
    for (int j = 0; j < 16; ++j) {
      const int half = j / 8, quarter = (j % 8) / 2, sixteenth = j % 2;
      const uint8_t* low_src = wb[i].ql + 64 * half + 32 * (quarter & 1) + 16 * sixteenth;
      const uint8_t* qh = wb[i].qh + 32 * half + 16 * sixteenth;
      const int low_shift = quarter < 2 ? 0 : 4;
      const auto decode = [&](auto bytes, size_t o) {
        const auto low = hn::And(hn::ShiftRightSame(bytes, low_shift), hn::Set(d16, 0x0F));
        const auto hbits = hn::PromoteTo(d16, hn::LoadU(du8, qh + o));
        return hn::Or(low, hn::ShiftLeft<4>(hn::And(hn::ShiftRightSame(hbits, 2 * quarter), hn::Set(d16, 3))));
      };
      scaled += wb[i].scales[j] * DotBytesI8(low_src, ab[i].qs + 16 * j, 16, decode);
      offset += wb[i].scales[j] * ab[i].bsums[j];
    }
    sum += f16_to_f32(wb[i].d) * ab[i].d * static_cast<float>(scaled - 32 * offset);
  }
  return sum;
}

// ---------------------------------------------------------------------------
// x86 AVX2 version (also used by the AVX-512 targets, whose attributes include AVX2).
#if HWY_TARGET == HWY_AVX2 || HWY_TARGET == HWY_AVX3 || HWY_TARGET == HWY_AVX3_DL
#define KVTIER_KQUANT_HAVE_AVX2 1

// The AVX2 kernels take one weight row and kTokens activation rows: the
// weights of a block are decoded once and meet every token (prefill tiles);
// vec_dot is the kTokens = 1 case, so both give bit-identical results.
// Activation row t is at a + t * a_stride bytes, its result goes to y[t * y_stride].

// Q4_K and Q5_K (kHasHighBit: Q5_K's fifth bit from qh).
template <class Block, bool kHasHighBit, int kTokens>
HWY_INLINE void DotQ45KAvx2(int64_t n, const Block* wb, const uint8_t* a, size_t a_stride, float* y, size_t y_stride) {
  const __m256i low4 = _mm256_set1_epi8(0x0F);
  const __m256i one = _mm256_set1_epi8(1);
  __m256 acc[kTokens];
#pragma GCC unroll 8
  for (int t = 0; t < kTokens; ++t) acc[t] = _mm256_setzero_ps();
  for (int64_t i = 0; i < n / kSuperBlock; ++i) {
    const ScaleMinWords words = unpack_scale_min_words(wb[i].scales);
    // [m0 m0 m1 m1 ... m7 m7] as i16: each min covers two 16-element bsums.
    const __m128i mins8 = _mm_set_epi32(0, 0, static_cast<int>(words.min_hi), static_cast<int>(words.min_lo));
    const __m256i mins16 = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(mins8, mins8));
    // The 8 scales as i16, repeated in both 128-bit halves (pshufb works within halves).
    const __m128i scales8 = _mm_set_epi32(0, 0, static_cast<int>(words.scale_hi), static_cast<int>(words.scale_lo));
    const __m256i scales16 = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(scales8));
    // Bit j of qh[l] is bit 4 of element 32 j + l; shifted right by 2 per chunk.
    __m256i qh = _mm256_setzero_si256();
    if constexpr (kHasHighBit) qh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wb[i].qh));
    __m256i sum[kTokens];  // per token: 8 x i32 partial sums of scale_j * q * a
#pragma GCC unroll 8
    for (int t = 0; t < kTokens; ++t) sum[t] = _mm256_setzero_si256();
    for (int chunk = 0; chunk < 4; ++chunk) {  // 64 elements: sub-blocks 2*chunk (low nibbles), 2*chunk+1 (high)
      const __m256i q4 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wb[i].qs + 32 * chunk));
      __m256i lo = _mm256_and_si256(q4, low4);
      __m256i hi = _mm256_and_si256(_mm256_srli_epi16(q4, 4), low4);
      if constexpr (kHasHighBit) {
        lo = _mm256_or_si256(lo, _mm256_slli_epi16(_mm256_and_si256(qh, one), 4));
        hi = _mm256_or_si256(hi, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 1), one), 4));
        qh = _mm256_srli_epi16(qh, 2);
      }
      const __m256i s_lo = _mm256_shuffle_epi8(scales16, ShuffleControl(kBroadcastLane, 2 * chunk));
      const __m256i s_hi = _mm256_shuffle_epi8(scales16, ShuffleControl(kBroadcastLane, 2 * chunk + 1));
#pragma GCC unroll 8
      for (int t = 0; t < kTokens; ++t) {
        const auto* act = reinterpret_cast<const __m256i*>(
            reinterpret_cast<const BlockQ8K*>(a + t * a_stride)[i].qs + 64 * chunk);
        const __m256i p_lo = _mm256_maddubs_epi16(lo, _mm256_loadu_si256(act));  // 16 x i16 pair sums
        const __m256i p_hi = _mm256_maddubs_epi16(hi, _mm256_loadu_si256(act + 1));
        sum[t] = _mm256_add_epi32(sum[t],
                                  _mm256_add_epi32(_mm256_madd_epi16(p_lo, s_lo), _mm256_madd_epi16(p_hi, s_hi)));
      }
    }
    const float d = HalfToFloat(wb[i].d), dmin = HalfToFloat(wb[i].dmin);
#pragma GCC unroll 8
    for (int t = 0; t < kTokens; ++t) {
      const BlockQ8K& act = reinterpret_cast<const BlockQ8K*>(a + t * a_stride)[i];
      const __m256i bsums = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(act.bsums));
      const __m256i min_products = _mm256_madd_epi16(bsums, mins16);  // 8 x i32
      acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(d * act.d), _mm256_cvtepi32_ps(sum[t]), acc[t]);
      acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(-dmin * act.d), _mm256_cvtepi32_ps(min_products), acc[t]);
    }
  }
#pragma GCC unroll 8
  for (int t = 0; t < kTokens; ++t) y[t * y_stride] = HorizontalSum(acc[t]);
}

template <int kTokens>
HWY_INLINE void DotQ6KAvx2(int64_t n, const BlockQ6K* wb, const uint8_t* a, size_t a_stride, float* y, size_t y_stride) {
  const __m256i low4 = _mm256_set1_epi8(0x0F);
  const __m256i bits45 = _mm256_set1_epi8(0x30);
  __m256 acc[kTokens];
#pragma GCC unroll 8
  for (int t = 0; t < kTokens; ++t) acc[t] = _mm256_setzero_ps();
  for (int64_t i = 0; i < n / kSuperBlock; ++i) {
    __m256i sum[kTokens];  // per token: 8 x i32 partial sums of scale_j * q * a (q before the -32 offset)
#pragma GCC unroll 8
    for (int t = 0; t < kTokens; ++t) sum[t] = _mm256_setzero_si256();
    for (int half = 0; half < 2; ++half) {
      const __m256i scales16 = _mm256_broadcastsi128_si256(
          _mm_cvtepi8_epi16(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(wb[i].scales + 8 * half))));
      const __m256i ql0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wb[i].ql + 64 * half));
      const __m256i ql1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wb[i].ql + 64 * half + 32));
      const __m256i qh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wb[i].qh + 32 * half));
      // Quarter k of the half: 32 elements, 6-bit quants (0..63) with qh bits 2k, 2k+1 as bits 4-5.
      const __m256i q[4] = {
          _mm256_or_si256(_mm256_and_si256(ql0, low4), _mm256_and_si256(_mm256_slli_epi16(qh, 4), bits45)),
          _mm256_or_si256(_mm256_and_si256(ql1, low4), _mm256_and_si256(_mm256_slli_epi16(qh, 2), bits45)),
          _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql0, 4), low4), _mm256_and_si256(qh, bits45)),
          _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql1, 4), low4),
                          _mm256_and_si256(_mm256_srli_epi16(qh, 2), bits45)),
      };
      for (int k = 0; k < 4; ++k) {
        // Low 128 bits are elements 0..15 of the quarter (scale 2k), high 128 bits 16..31 (scale 2k+1).
        const __m256i s = _mm256_shuffle_epi8(scales16, ShuffleControl(kBroadcastLanePair, k));
#pragma GCC unroll 8
        for (int t = 0; t < kTokens; ++t) {
          const auto* act = reinterpret_cast<const __m256i*>(
              reinterpret_cast<const BlockQ8K*>(a + t * a_stride)[i].qs + 128 * half + 32 * k);
          const __m256i p = _mm256_maddubs_epi16(q[k], _mm256_loadu_si256(act));  // 16 x i16
          sum[t] = _mm256_add_epi32(sum[t], _mm256_madd_epi16(p, s));
        }
      }
    }
    // The -32 offset: 32 * sum_j scale_j * bsum_j, from the 16 scales and 16 bsums at once.
    const __m256i all_scales = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(wb[i].scales)));
    const float d = HalfToFloat(wb[i].d);
#pragma GCC unroll 8
    for (int t = 0; t < kTokens; ++t) {
      const BlockQ8K& act = reinterpret_cast<const BlockQ8K*>(a + t * a_stride)[i];
      const __m256i offset =
          _mm256_madd_epi16(all_scales, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(act.bsums)));
      const __m256i total = _mm256_sub_epi32(sum[t], _mm256_slli_epi32(offset, 5));
      acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(d * act.d), _mm256_cvtepi32_ps(total), acc[t]);
    }
  }
#pragma GCC unroll 8
  for (int t = 0; t < kTokens; ++t) y[t * y_stride] = HorizontalSum(acc[t]);
}

#if (HWY_TARGET == HWY_AVX3 || HWY_TARGET == HWY_AVX3_DL) && !defined(KVTIER_KQUANT_NO_AVX512)
// AVX-512 (BW) versions of the row kernels: 64 elements per
// instruction. Each 512-bit integer sum is folded to the AVX2 lane layout
// before the float step, so the results equal the AVX2 kernels' bit for bit.
// Measured per core (vec_dot, same process as llama.cpp's kernels): +15-35% over
// the 256-bit kernels on AMD Zen 4; about -15% on an Intel Sapphire Rapids VM,
// where 512-bit integer work lowers the clock (whole-model speed there was the
// same within noise). -DKVTIER_KQUANT_NO_AVX512 builds the 256-bit kernels
// into the AVX3 targets instead, for such A/B measurements.
#define KVTIER_KQUANT_HAVE_AVX512 1

// pshufb controls for 512-bit vectors: 128-bit lane L broadcasts i16 lane lane_of(L).
struct ShuffleTable512 {
  alignas(64) uint8_t control[4][64];
};
constexpr ShuffleTable512 MakeBroadcastTable512(bool q6) {
  ShuffleTable512 t{};
  for (int k = 0; k < 4; ++k) {
    for (int b = 0; b < 64; ++b) {
      const int quarter = b / 16;
      // Q4_K chunk k: low 256 bits = sub-block 2k, high 256 bits = 2k+1.
      // Q6_K (k = 0: quarters 0,1 of a half; k = 1: quarters 2,3): one scale per 16 elements.
      const int lane = q6 ? 4 * k + quarter : 2 * k + quarter / 2;
      t.control[k][b] = static_cast<uint8_t>(2 * lane + (b & 1));
    }
  }
  return t;
}
constexpr ShuffleTable512 kBroadcastQ4K512 = MakeBroadcastTable512(false);
constexpr ShuffleTable512 kBroadcastQ6K512 = MakeBroadcastTable512(true);

HWY_INLINE __m512i ShuffleControl512(const ShuffleTable512& table, int k) {
  return _mm512_load_si512(table.control[k]);
}

HWY_INLINE __m512i Concat256(__m256i lo, __m256i hi) {
  return _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
}

HWY_INLINE __m256i FoldHalves(__m512i v) {
  return _mm256_add_epi32(_mm512_castsi512_si256(v), _mm512_extracti64x4_epi64(v, 1));
}

// Q4_K and Q5_K (kHasHighBit: Q5_K's fifth bit from qh).
template <class Block, bool kHasHighBit, int kTokens>
HWY_INLINE void DotQ45KAvx512(int64_t n, const Block* wb, const uint8_t* a, size_t a_stride, float* y,
                             size_t y_stride) {
  const __m512i low4 = _mm512_set1_epi8(0x0F);
  const __m512i one = _mm512_set1_epi8(1);
  __m256 acc[kTokens];
#pragma GCC unroll 8
  for (int t = 0; t < kTokens; ++t) acc[t] = _mm256_setzero_ps();
  for (int64_t i = 0; i < n / kSuperBlock; ++i) {
    const ScaleMinWords words = unpack_scale_min_words(wb[i].scales);
    const __m128i mins8 = _mm_set_epi32(0, 0, static_cast<int>(words.min_hi), static_cast<int>(words.min_lo));
    const __m256i mins16 = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(mins8, mins8));
    const __m128i scales8 = _mm_set_epi32(0, 0, static_cast<int>(words.scale_hi), static_cast<int>(words.scale_lo));
    const __m512i scales16 = _mm512_broadcast_i32x4(_mm_cvtepu8_epi16(scales8));
    // Bit j of qh[l] is bit 4 of element 32 j + l; shifted right by 2 per chunk.
    __m256i qh = _mm256_setzero_si256();
    if constexpr (kHasHighBit) qh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wb[i].qh));
    __m512i sum[kTokens];
#pragma GCC unroll 8
    for (int t = 0; t < kTokens; ++t) sum[t] = _mm512_setzero_si512();
    for (int chunk = 0; chunk < 4; ++chunk) {
      // [low nibbles (sub-block 2 chunk) | high nibbles (2 chunk + 1)]: the 64 activations in order.
      const __m256i q4 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wb[i].qs + 32 * chunk));
      __m512i q = _mm512_and_si512(Concat256(q4, _mm256_srli_epi16(q4, 4)), low4);
      if constexpr (kHasHighBit) {
        const __m512i bits = _mm512_and_si512(Concat256(qh, _mm256_srli_epi16(qh, 1)), one);
        q = _mm512_or_si512(q, _mm512_slli_epi16(bits, 4));
        qh = _mm256_srli_epi16(qh, 2);
      }
      const __m512i s = _mm512_shuffle_epi8(scales16, ShuffleControl512(kBroadcastQ4K512, chunk));
#pragma GCC unroll 8
      for (int t = 0; t < kTokens; ++t) {
        const int8_t* act = reinterpret_cast<const BlockQ8K*>(a + t * a_stride)[i].qs + 64 * chunk;
        const __m512i p = _mm512_maddubs_epi16(q, _mm512_loadu_si512(act));
        sum[t] = _mm512_add_epi32(sum[t], _mm512_madd_epi16(p, s));
      }
    }
    const float d = HalfToFloat(wb[i].d), dmin = HalfToFloat(wb[i].dmin);
#pragma GCC unroll 8
    for (int t = 0; t < kTokens; ++t) {
      const BlockQ8K& act = reinterpret_cast<const BlockQ8K*>(a + t * a_stride)[i];
      const __m256i bsums = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(act.bsums));
      const __m256i min_products = _mm256_madd_epi16(bsums, mins16);
      acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(d * act.d), _mm256_cvtepi32_ps(FoldHalves(sum[t])), acc[t]);
      acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(-dmin * act.d), _mm256_cvtepi32_ps(min_products), acc[t]);
    }
  }
#pragma GCC unroll 8
  for (int t = 0; t < kTokens; ++t) y[t * y_stride] = HorizontalSum(acc[t]);
}

template <int kTokens>
HWY_INLINE void DotQ6KAvx512(int64_t n, const BlockQ6K* wb, const uint8_t* a, size_t a_stride, float* y,
                             size_t y_stride) {
  const __m512i low4 = _mm512_set1_epi8(0x0F);
  const __m512i bits45 = _mm512_set1_epi8(0x30);
  __m256 acc[kTokens];
#pragma GCC unroll 8
  for (int t = 0; t < kTokens; ++t) acc[t] = _mm256_setzero_ps();
  for (int64_t i = 0; i < n / kSuperBlock; ++i) {
    __m512i sum[kTokens];
#pragma GCC unroll 8
    for (int t = 0; t < kTokens; ++t) sum[t] = _mm512_setzero_si512();
    for (int half = 0; half < 2; ++half) {
      const __m512i scales16 = _mm512_broadcast_i32x4(
          _mm_cvtepi8_epi16(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(wb[i].scales + 8 * half))));
      const __m512i ql = _mm512_loadu_si512(wb[i].ql + 64 * half);  // [ql0 | ql1]
      const __m256i qh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wb[i].qh + 32 * half));
      // Quarters 0,1 (elements 0..63 of the half) and 2,3 (64..127), as in the AVX2 kernel.
      const __m512i q01 = _mm512_or_si512(
          _mm512_and_si512(ql, low4),
          _mm512_and_si512(Concat256(_mm256_slli_epi16(qh, 4), _mm256_slli_epi16(qh, 2)), bits45));
      const __m512i q23 = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(ql, 4), low4),
                                          _mm512_and_si512(Concat256(qh, _mm256_srli_epi16(qh, 2)), bits45));
      const __m512i s01 = _mm512_shuffle_epi8(scales16, ShuffleControl512(kBroadcastQ6K512, 0));
      const __m512i s23 = _mm512_shuffle_epi8(scales16, ShuffleControl512(kBroadcastQ6K512, 1));
#pragma GCC unroll 8
      for (int t = 0; t < kTokens; ++t) {
        const int8_t* act = reinterpret_cast<const BlockQ8K*>(a + t * a_stride)[i].qs + 128 * half;
        const __m512i p01 = _mm512_maddubs_epi16(q01, _mm512_loadu_si512(act));
        const __m512i p23 = _mm512_maddubs_epi16(q23, _mm512_loadu_si512(act + 64));
        sum[t] = _mm512_add_epi32(sum[t], _mm512_add_epi32(_mm512_madd_epi16(p01, s01), _mm512_madd_epi16(p23, s23)));
      }
    }
    const __m256i all_scales = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(wb[i].scales)));
    const float d = HalfToFloat(wb[i].d);
#pragma GCC unroll 8
    for (int t = 0; t < kTokens; ++t) {
      const BlockQ8K& act = reinterpret_cast<const BlockQ8K*>(a + t * a_stride)[i];
      const __m256i offset =
          _mm256_madd_epi16(all_scales, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(act.bsums)));
      const __m256i total = _mm256_sub_epi32(FoldHalves(sum[t]), _mm256_slli_epi32(offset, 5));
      acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(d * act.d), _mm256_cvtepi32_ps(total), acc[t]);
    }
  }
#pragma GCC unroll 8
  for (int t = 0; t < kTokens; ++t) y[t * y_stride] = HorizontalSum(acc[t]);
}
#endif  // AVX3

// The row kernels of this target: y[t * y_stride] for kTokens activation rows.
template <int kTokens>
HWY_INLINE void RowQ4K(int64_t n, const BlockQ4K* w, const uint8_t* a, size_t a_stride, float* y, size_t y_stride) {
#ifdef KVTIER_KQUANT_HAVE_AVX512
  DotQ45KAvx512<BlockQ4K, false, kTokens>(n, w, a, a_stride, y, y_stride);
#else
  DotQ45KAvx2<BlockQ4K, false, kTokens>(n, w, a, a_stride, y, y_stride);
#endif
}
template <int kTokens>
HWY_INLINE void RowQ5K(int64_t n, const BlockQ5K* w, const uint8_t* a, size_t a_stride, float* y, size_t y_stride) {
#ifdef KVTIER_KQUANT_HAVE_AVX512
  DotQ45KAvx512<BlockQ5K, true, kTokens>(n, w, a, a_stride, y, y_stride);
#else
  DotQ45KAvx2<BlockQ5K, true, kTokens>(n, w, a, a_stride, y, y_stride);
#endif
}
template <int kTokens>
HWY_INLINE void RowQ6K(int64_t n, const BlockQ6K* w, const uint8_t* a, size_t a_stride, float* y, size_t y_stride) {
#ifdef KVTIER_KQUANT_HAVE_AVX512
  DotQ6KAvx512<kTokens>(n, w, a, a_stride, y, y_stride);
#else
  DotQ6KAvx2<kTokens>(n, w, a, a_stride, y, y_stride);
#endif
}

template <class Block, void (*Row1)(int64_t, const Block*, const uint8_t*, size_t, float*, size_t)>
float RowDotX86(int64_t n, const void* w, const void* a) {
  float y;
  Row1(n, static_cast<const Block*>(w), static_cast<const uint8_t*>(a), 0, &y, 0);
  return y;
}

// Tokens per group in a tile: AVX-512 has the registers for 8 (32 of them).
#ifdef KVTIER_KQUANT_HAVE_AVX512
constexpr int kTokenGroup = 8;
#else
constexpr int kTokenGroup = 4;
#endif

// Each weight row meets the tokens kGroup at a time, then one by one.
template <class Block, int kGroup, void (*RowGroup)(int64_t, const Block*, const uint8_t*, size_t, float*, size_t),
          void (*Row1)(int64_t, const Block*, const uint8_t*, size_t, float*, size_t)>
void TileX86(int64_t n, const uint8_t* w, size_t w_stride, int64_t rows, const uint8_t* a, size_t a_stride,
             int64_t tokens, float* y, size_t y_stride) {
  for (int64_t r = 0; r < rows; ++r) {
    const auto* row = reinterpret_cast<const Block*>(w + r * w_stride);
    int64_t t = 0;
    for (; t + kGroup <= tokens; t += kGroup) {
      RowGroup(n, row, a + t * a_stride, a_stride, y + t * y_stride + r, y_stride);
    }
    for (; t < tokens; ++t) Row1(n, row, a + t * a_stride, 0, y + t * y_stride + r, 0);
  }
}
#endif  // AVX2

// ---------------------------------------------------------------------------
// Arm NEON version: i8 x i8 dot products, with SDOT where the compiler targets it.
#if HWY_TARGET == HWY_NEON
#define KVTIER_KQUANT_HAVE_NEON 1

// Q4_K / Q5_K: sum_j min_j * (bsums[2j] + bsums[2j+1]).
HWY_INLINE int32_t MinsTimesSumsNeon(const ScaleMinWords& words, const int16_t* bsums) {
  const int16x8_t sub_block_sums = vpaddq_s16(vld1q_s16(bsums), vld1q_s16(bsums + 8));  // [8]
  const uint8x8_t mins8 = vcreate_u8(static_cast<uint64_t>(words.min_lo) | (static_cast<uint64_t>(words.min_hi) << 32));
  const int16x8_t mins = vreinterpretq_s16_u16(vmovl_u8(mins8));
  const int32x4_t products = vmlal_high_s16(vmull_s16(vget_low_s16(sub_block_sums), vget_low_s16(mins)),
                                            sub_block_sums, mins);
  return vaddvq_s32(products);
}

// The NEON row kernels take one weight row and kTokens activation rows (at
// a + t * a_stride bytes; results to y[t * y_stride]), decoding each weight
// block once; the row dot is kTokens = 1, so tiles equal row dots bit for bit.

// Q4_K and Q5_K (kHasHighBit: Q5_K's fifth bit from qh).
template <class Block, bool kHasHighBit, int kTokens>
HWY_INLINE void DotQ45KNeon(int64_t n, const Block* wb, const uint8_t* a, size_t a_stride, float* y,
                            size_t y_stride) {
  const uint8x16_t low4 = vdupq_n_u8(0x0F);
  const uint8x16_t bit4 = vdupq_n_u8(0x10);
  float sum[kTokens] = {};
  for (int64_t i = 0; i < n / kSuperBlock; ++i) {
    const BlockQ8K* act[kTokens];
    for (int t = 0; t < kTokens; ++t) act[t] = reinterpret_cast<const BlockQ8K*>(a + t * a_stride) + i;
    const ScaleMinWords words = unpack_scale_min_words(wb[i].scales);
    uint8_t scale[8];
    std::memcpy(scale, &words.scale_lo, 4);
    std::memcpy(scale + 4, &words.scale_hi, 4);
    uint8x16_t qh[2] = {vdupq_n_u8(0), vdupq_n_u8(0)};  // bit 2c / 2c+1: fifth bit of chunk c low / high
    if constexpr (kHasHighBit) {
      qh[0] = vld1q_u8(wb[i].qh);
      qh[1] = vld1q_u8(wb[i].qh + 16);
    }
    int32x4_t scaled[kTokens];
    for (int t = 0; t < kTokens; ++t) scaled[t] = vdupq_n_s32(0);
    for (int chunk = 0; chunk < 4; ++chunk) {
      const uint8_t* qs = wb[i].qs + 32 * chunk;  // [32]: 64 elements
      int32x4_t lo[kTokens], hi[kTokens];
      for (int t = 0; t < kTokens; ++t) lo[t] = hi[t] = vdupq_n_s32(0);
      for (int r = 0; r < 2; ++r) {
        const uint8x16_t bytes = vld1q_u8(qs + 16 * r);
        uint8x16_t q_lo = vandq_u8(bytes, low4), q_hi = vshrq_n_u8(bytes, 4);
        if constexpr (kHasHighBit) {
          q_lo = vorrq_u8(q_lo, vandq_u8(vshlq_n_u8(qh[r], 4), bit4));  // bit 0 -> bit 4
          q_hi = vorrq_u8(q_hi, vandq_u8(vshlq_n_u8(qh[r], 3), bit4));  // bit 1 -> bit 4
          qh[r] = vshrq_n_u8(qh[r], 2);
        }
        for (int t = 0; t < kTokens; ++t) {
          const int8_t* x = act[t]->qs + 64 * chunk;  // [64]
          lo[t] = DotI8x16(lo[t], vreinterpretq_s8_u8(q_lo), vld1q_s8(x + 16 * r));
          hi[t] = DotI8x16(hi[t], vreinterpretq_s8_u8(q_hi), vld1q_s8(x + 32 + 16 * r));
        }
      }
      for (int t = 0; t < kTokens; ++t) {
        scaled[t] = vmlaq_n_s32(scaled[t], lo[t], scale[2 * chunk]);
        scaled[t] = vmlaq_n_s32(scaled[t], hi[t], scale[2 * chunk + 1]);
      }
    }
    const float d = HalfToFloatNeon(wb[i].d), dmin = HalfToFloatNeon(wb[i].dmin);
    for (int t = 0; t < kTokens; ++t) {
      const int32_t mins = MinsTimesSumsNeon(words, act[t]->bsums);
      sum[t] += d * act[t]->d * static_cast<float>(vaddvq_s32(scaled[t])) -
                dmin * act[t]->d * static_cast<float>(mins);
    }
  }
  for (int t = 0; t < kTokens; ++t) y[t * y_stride] = sum[t];
}

template <int kTokens>
HWY_INLINE void DotQ6KNeon(int64_t n, const BlockQ6K* wb, const uint8_t* a, size_t a_stride, float* y,
                           size_t y_stride) {
  const uint8x16_t low4 = vdupq_n_u8(0x0F);
  const uint8x16_t bits45 = vdupq_n_u8(0x30);
  const int8x16_t offset = vdupq_n_s8(32);
  float sum[kTokens] = {};
  for (int64_t i = 0; i < n / kSuperBlock; ++i) {
    const BlockQ8K* act[kTokens];
    for (int t = 0; t < kTokens; ++t) act[t] = reinterpret_cast<const BlockQ8K*>(a + t * a_stride) + i;
    int32x4_t scaled[kTokens];
    for (int t = 0; t < kTokens; ++t) scaled[t] = vdupq_n_s32(0);
    for (int half = 0; half < 2; ++half) {
      const uint8_t* ql = wb[i].ql + 64 * half;        // [64]
      const uint8_t* qh_src = wb[i].qh + 32 * half;    // [32]
      const int8_t* scales = wb[i].scales + 8 * half;  // [8]: one per 16 elements
      for (int r = 0; r < 2; ++r) {  // elements 16r .. 16r+15 of each 32-element quarter
        const uint8x16_t ql_a = vld1q_u8(ql + 16 * r), ql_b = vld1q_u8(ql + 32 + 16 * r);
        const uint8x16_t qh = vld1q_u8(qh_src + 16 * r);
        // Quarter k: bits 2k, 2k+1 of qh become bits 4-5 of the quant; then the -32 offset.
        const int8x16_t q[4] = {
            vsubq_s8(vreinterpretq_s8_u8(vorrq_u8(vandq_u8(ql_a, low4), vandq_u8(vshlq_n_u8(qh, 4), bits45))),
                     offset),
            vsubq_s8(vreinterpretq_s8_u8(vorrq_u8(vandq_u8(ql_b, low4), vandq_u8(vshlq_n_u8(qh, 2), bits45))),
                     offset),
            vsubq_s8(vreinterpretq_s8_u8(vorrq_u8(vshrq_n_u8(ql_a, 4), vandq_u8(qh, bits45))), offset),
            vsubq_s8(vreinterpretq_s8_u8(vorrq_u8(vshrq_n_u8(ql_b, 4), vandq_u8(vshrq_n_u8(qh, 2), bits45))),
                     offset),
        };
        for (int k = 0; k < 4; ++k) {
          for (int t = 0; t < kTokens; ++t) {
            const int8_t* x = act[t]->qs + 128 * half + 32 * k + 16 * r;  // [16]
            scaled[t] = vmlaq_n_s32(scaled[t], DotI8x16(vdupq_n_s32(0), q[k], vld1q_s8(x)), scales[2 * k + r]);
          }
        }
      }
    }
    const float d = HalfToFloatNeon(wb[i].d);
    for (int t = 0; t < kTokens; ++t) sum[t] += d * act[t]->d * static_cast<float>(vaddvq_s32(scaled[t]));
  }
  for (int t = 0; t < kTokens; ++t) y[t * y_stride] = sum[t];
}

template <class Block, void (*Row1)(int64_t, const Block*, const uint8_t*, size_t, float*, size_t)>
float RowDotNeon(int64_t n, const void* w, const void* a) {
  float y;
  Row1(n, static_cast<const Block*>(w), static_cast<const uint8_t*>(a), 0, &y, 0);
  return y;
}

// Each weight row meets the tokens four at a time, then one by one.
template <class Block, void (*Row4)(int64_t, const Block*, const uint8_t*, size_t, float*, size_t),
          void (*Row1)(int64_t, const Block*, const uint8_t*, size_t, float*, size_t)>
void TileNeon(int64_t n, const uint8_t* w, size_t w_stride, int64_t rows, const uint8_t* a, size_t a_stride,
              int64_t tokens, float* y, size_t y_stride) {
  for (int64_t r = 0; r < rows; ++r) {
    const auto* row = reinterpret_cast<const Block*>(w + r * w_stride);
    int64_t t = 0;
    for (; t + 4 <= tokens; t += 4) Row4(n, row, a + t * a_stride, a_stride, y + t * y_stride + r, y_stride);
    for (; t < tokens; ++t) Row1(n, row, a + t * a_stride, 0, y + t * y_stride + r, 0);
  }
}

float DotQ4KNeon(int64_t n, const void* w, const void* a) {
  return RowDotNeon<BlockQ4K, DotQ45KNeon<BlockQ4K, false, 1>>(n, w, a);
}
float DotQ5KNeon(int64_t n, const void* w, const void* a) {
  return RowDotNeon<BlockQ5K, DotQ45KNeon<BlockQ5K, true, 1>>(n, w, a);
}
float DotQ6KNeon(int64_t n, const void* w, const void* a) { return RowDotNeon<BlockQ6K, DotQ6KNeon<1>>(n, w, a); }
#endif  // NEON

// ---------------------------------------------------------------------------
// Entry points of this target.

float VecDotQ4K(int64_t n, const void* w, const void* a) {
#if defined(KVTIER_KQUANT_HAVE_AVX2)
  return RowDotX86<BlockQ4K, RowQ4K<1>>(n, w, a);
#elif defined(KVTIER_KQUANT_HAVE_NEON)
  return DotQ4KNeon(n, w, a);
#else
  return DotQ4KPortable(n, w, a);
#endif
}

float VecDotQ5K(int64_t n, const void* w, const void* a) {
#if defined(KVTIER_KQUANT_HAVE_AVX2)
  return RowDotX86<BlockQ5K, RowQ5K<1>>(n, w, a);
#elif defined(KVTIER_KQUANT_HAVE_NEON)
  return DotQ5KNeon(n, w, a);
#else
  return DotQ5KPortable(n, w, a);
#endif
}

float VecDotQ6K(int64_t n, const void* w, const void* a) {
#if defined(KVTIER_KQUANT_HAVE_AVX2)
  return RowDotX86<BlockQ6K, RowQ6K<1>>(n, w, a);
#elif defined(KVTIER_KQUANT_HAVE_NEON)
  return DotQ6KNeon(n, w, a);
#else
  return DotQ6KPortable(n, w, a);
#endif
}

// Tiles: y[t * y_stride + r] = dot(weight row r, activation row t). AVX2 decodes
// (and NEON) decode each weight block once per group of 4 (AVX-512: 8) tokens; elsewhere a loop over the row dot.
template <float (*RowDot)(int64_t, const void*, const void*)>
void TileFromRowDot(int64_t n, const uint8_t* w, size_t w_stride, int64_t rows, const uint8_t* a, size_t a_stride,
                    int64_t tokens, float* y, size_t y_stride) {
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t t = 0; t < tokens; ++t) y[t * y_stride + r] = RowDot(n, w + r * w_stride, a + t * a_stride);
  }
}

void TileQ4K(int64_t n, const uint8_t* w, size_t w_stride, int64_t rows, const uint8_t* a, size_t a_stride,
             int64_t tokens, float* y, size_t y_stride) {
#if defined(KVTIER_KQUANT_HAVE_AVX2)
  TileX86<BlockQ4K, kTokenGroup, RowQ4K<kTokenGroup>, RowQ4K<1>>(n, w, w_stride, rows, a, a_stride, tokens, y, y_stride);
#elif defined(KVTIER_KQUANT_HAVE_NEON)
  TileNeon<BlockQ4K, DotQ45KNeon<BlockQ4K, false, 4>, DotQ45KNeon<BlockQ4K, false, 1>>(n, w, w_stride, rows, a, a_stride, tokens, y, y_stride);
#else
  TileFromRowDot<VecDotQ4K>(n, w, w_stride, rows, a, a_stride, tokens, y, y_stride);
#endif
}

void TileQ5K(int64_t n, const uint8_t* w, size_t w_stride, int64_t rows, const uint8_t* a, size_t a_stride,
             int64_t tokens, float* y, size_t y_stride) {
#if defined(KVTIER_KQUANT_HAVE_AVX2)
  TileX86<BlockQ5K, kTokenGroup, RowQ5K<kTokenGroup>, RowQ5K<1>>(n, w, w_stride, rows, a, a_stride, tokens, y, y_stride);
#elif defined(KVTIER_KQUANT_HAVE_NEON)
  TileNeon<BlockQ5K, DotQ45KNeon<BlockQ5K, true, 4>, DotQ45KNeon<BlockQ5K, true, 1>>(n, w, w_stride, rows, a, a_stride, tokens, y, y_stride);
#else
  TileFromRowDot<VecDotQ5K>(n, w, w_stride, rows, a, a_stride, tokens, y, y_stride);
#endif
}

void TileQ6K(int64_t n, const uint8_t* w, size_t w_stride, int64_t rows, const uint8_t* a, size_t a_stride,
             int64_t tokens, float* y, size_t y_stride) {
#if defined(KVTIER_KQUANT_HAVE_AVX2)
  TileX86<BlockQ6K, kTokenGroup, RowQ6K<kTokenGroup>, RowQ6K<1>>(n, w, w_stride, rows, a, a_stride, tokens, y, y_stride);
#elif defined(KVTIER_KQUANT_HAVE_NEON)
  TileNeon<BlockQ6K, DotQ6KNeon<4>, DotQ6KNeon<1>>(n, w, w_stride, rows, a, a_stride, tokens, y, y_stride);
#else
  TileFromRowDot<VecDotQ6K>(n, w, w_stride, rows, a, a_stride, tokens, y, y_stride);
#endif
}

#undef KVTIER_KQUANT_HAVE_AVX2
#undef KVTIER_KQUANT_HAVE_AVX512
#undef KVTIER_KQUANT_HAVE_NEON

}  // namespace kvtier::kernels::kquant::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace kvtier::kernels::kquant {
HWY_EXPORT(VecDotQ4K);
HWY_EXPORT(VecDotQ5K);
HWY_EXPORT(VecDotQ6K);

float vec_dot_q4_K_q8_K(int64_t n, const void* w, const void* a) {
  assert(n % kSuperBlock == 0);
  return HWY_DYNAMIC_DISPATCH(VecDotQ4K)(n, w, a);
}
float vec_dot_q5_K_q8_K(int64_t n, const void* w, const void* a) {
  assert(n % kSuperBlock == 0);
  return HWY_DYNAMIC_DISPATCH(VecDotQ5K)(n, w, a);
}
float vec_dot_q6_K_q8_K(int64_t n, const void* w, const void* a) {
  assert(n % kSuperBlock == 0);
  return HWY_DYNAMIC_DISPATCH(VecDotQ6K)(n, w, a);
}

HWY_EXPORT(TileQ4K);
HWY_EXPORT(TileQ5K);
HWY_EXPORT(TileQ6K);

void tile_q4_K_q8_K(int64_t n, const uint8_t* w, size_t w_stride, int64_t rows, const uint8_t* a, size_t a_stride,
                    int64_t tokens, float* y, size_t y_stride) {
  assert(n % kSuperBlock == 0);
  HWY_DYNAMIC_DISPATCH(TileQ4K)(n, w, w_stride, rows, a, a_stride, tokens, y, y_stride);
}
void tile_q5_K_q8_K(int64_t n, const uint8_t* w, size_t w_stride, int64_t rows, const uint8_t* a, size_t a_stride,
                    int64_t tokens, float* y, size_t y_stride) {
  assert(n % kSuperBlock == 0);
  HWY_DYNAMIC_DISPATCH(TileQ5K)(n, w, w_stride, rows, a, a_stride, tokens, y, y_stride);
}
void tile_q6_K_q8_K(int64_t n, const uint8_t* w, size_t w_stride, int64_t rows, const uint8_t* a, size_t a_stride,
                    int64_t tokens, float* y, size_t y_stride) {
  assert(n % kSuperBlock == 0);
  HWY_DYNAMIC_DISPATCH(TileQ6K)(n, w, w_stride, rows, a, a_stride, tokens, y, y_stride);
}
}  // namespace kvtier::kernels::kquant
#endif
