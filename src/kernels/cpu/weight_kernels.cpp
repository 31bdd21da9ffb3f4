// SIMD weight kernels (Highway, runtime dispatch): dequantization, activation
// quantization and matrix micro-tiles for F32, F16, BF16, Q4_0, Q4_1, Q5_0,
// Q5_1, Q8_0 and IQ4_NL.
//
// A micro-tile computes RM weight rows x RN tokens in one pass over the shared
// dimension, so each weight block is decoded once per RN tokens and each
// activation block loaded once per RM rows (the idea of llamafile's tinyBLAS).
// Decode (one token) uses the same tiles with RN = 1. Q4_0 on x86 has its own
// tiles over the same GGUF layout (token lanes for prefill, block lanes for
// decode, below), and every Q4_0 kernel computes the same exact per-block
// chain, so Q4_0 outputs are batch invariant (see QuantTile).
//
// Highway 1.0.3 has no int8 dot product, so the int8 block dot uses target
// intrinsics where they exist (x86 AVX2/AVX-512: maddubs + madd; Arm NEON:
// vmull_s8 + vpadalq_s16, or vdotq_s32 when compiled with dotprod) and portable
// Highway code elsewhere.
#include <cassert>
#include <cmath>
#include <cstring>
#include <type_traits>
#include <vector>

#include "kernels/weight_blocks.h"
#include "kvtier/f16.h"

// SVE targets are left out: the micro-tiles keep arrays of vectors, which
// sizeless SVE types cannot form, and the Arm targets kvtier checks (Apple-like
// cores, cortex-a76 under qemu) are NEON-only.
#ifndef HWY_DISABLED_TARGETS
#define HWY_DISABLED_TARGETS (HWY_SVE | HWY_SVE2 | HWY_SVE_256 | HWY_SVE2_128)
#endif

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/cpu/weight_kernels.cpp"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/highway.h>

HWY_BEFORE_NAMESPACE();
namespace kvtier::kernels::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

#undef KVTIER_INT8_X86
#undef KVTIER_INT8_VNNI
#undef KVTIER_INT8_NEON
#if HWY_TARGET == HWY_AVX2 || HWY_TARGET == HWY_AVX3 || HWY_TARGET == HWY_AVX3_DL
#define KVTIER_INT8_X86 1
#if HWY_TARGET == HWY_AVX3_DL
// Highway's AVX3_DL target requires AVX512-VNNI at runtime but does not name it
// in its compiler target string (1.0.3), so this target's code adds it.
#define KVTIER_INT8_VNNI 1
#pragma GCC push_options
#pragma GCC target("avx512vnni")
#endif
#elif HWY_TARGET == HWY_NEON
#define KVTIER_INT8_NEON 1
#endif

// ---------------------------------------------------------------------------
// Half-precision scalars (block scales): hardware conversion where it exists.
HWY_INLINE float HalfToFloat(uint16_t h) {
#if defined(KVTIER_INT8_X86)
  return _cvtsh_ss(h);
#elif defined(KVTIER_INT8_NEON)
  return vgetq_lane_f32(vcvt_f32_f16(vreinterpret_f16_u16(vdup_n_u16(h))), 0);
#else
  return f16_to_f32(h);
#endif
}

// ---------------------------------------------------------------------------
// Int8 block primitives. An Int8Block holds the 32 codes of one block, element
// i in byte i. FVec is a float vector: a block dot product leaves its partial
// sums spread over its lanes, and accumulators stay in that form until the end.
#if defined(KVTIER_INT8_X86)

struct Int8Block {
  __m256i v;
};
using FVec = __m256;

HWY_INLINE FVec Zero() { return _mm256_setzero_ps(); }
HWY_INLINE FVec Broadcast(float f) { return _mm256_set1_ps(f); }
HWY_INLINE FVec Mul(FVec a, FVec b) { return _mm256_mul_ps(a, b); }
HWY_INLINE FVec Add(FVec a, FVec b) { return _mm256_add_ps(a, b); }
HWY_INLINE FVec MulAdd(FVec a, FVec b, FVec c) { return _mm256_fmadd_ps(a, b, c); }
HWY_INLINE float Sum(FVec v) {
  const __m128 sum4 = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 sum2 = _mm_add_ps(sum4, _mm_movehl_ps(sum4, sum4));
  return _mm_cvtss_f32(_mm_add_ss(sum2, _mm_movehdup_ps(sum2)));
}
HWY_INLINE Int8Block LoadInt8(const int8_t* p) {
  return {_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))};
}
HWY_INLINE void StoreInt8(Int8Block b, int8_t* out) { _mm256_storeu_si256(reinterpret_cast<__m256i*>(out), b.v); }
// Low nibbles -> bytes 0..15, high nibbles -> bytes 16..31 (values 0..15).
HWY_INLINE Int8Block DecodeNibbles(const uint8_t* qs) {
  const __m128i packed = _mm_loadu_si128(reinterpret_cast<const __m128i*>(qs));
  const __m256i both = _mm256_set_m128i(_mm_srli_epi16(packed, 4), packed);
  return {_mm256_and_si256(both, _mm256_set1_epi8(0x0F))};
}
// ORs 0x10 into byte i where bit i of the little-endian u32 qh is set.
HWY_INLINE Int8Block AddHighBits(Int8Block b, const uint8_t* qh) {
  uint32_t bits;
  std::memcpy(&bits, qh, 4);
  // Byte i of `spread` is byte i/8 of qh; then test bit i%8 of it.
  const __m256i spread = _mm256_shuffle_epi8(
      _mm256_set1_epi32(static_cast<int>(bits)),
      _mm256_set_epi64x(0x0303030303030303LL, 0x0202020202020202LL, 0x0101010101010101LL, 0));
  const __m256i bit_of_byte = _mm256_set1_epi64x(static_cast<long long>(0x8040201008040201ULL));
  const __m256i is_set = _mm256_cmpeq_epi8(_mm256_and_si256(spread, bit_of_byte), bit_of_byte);
  return {_mm256_or_si256(b.v, _mm256_and_si256(is_set, _mm256_set1_epi8(0x10)))};
}
// Codes through a 16-entry table: byte i = table[nibble i of DecodeNibbles] (IQ4_NL's grid).
HWY_INLINE Int8Block DecodeNibblesThrough(const uint8_t* qs, const int8_t* table16) {
  const __m256i table = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(table16)));
  return {_mm256_shuffle_epi8(table, DecodeNibbles(qs).v)};
}
HWY_INLINE Int8Block SubConst(Int8Block b, int8_t c) { return {_mm256_sub_epi8(b.v, _mm256_set1_epi8(c))}; }
// int8 q -> uint8 q + 128.
HWY_INLINE Int8Block FlipSign(Int8Block b) { return {_mm256_xor_si256(b.v, _mm256_set1_epi8(-128))}; }

#elif defined(KVTIER_INT8_NEON)

struct Int8Block {
  int8x16_t lo, hi;  // elements 0..15, 16..31
};
using FVec = float32x4_t;

HWY_INLINE FVec Zero() { return vdupq_n_f32(0.0f); }
HWY_INLINE FVec Broadcast(float f) { return vdupq_n_f32(f); }
HWY_INLINE FVec Mul(FVec a, FVec b) { return vmulq_f32(a, b); }
HWY_INLINE FVec Add(FVec a, FVec b) { return vaddq_f32(a, b); }
HWY_INLINE FVec MulAdd(FVec a, FVec b, FVec c) { return vfmaq_f32(c, a, b); }
HWY_INLINE float Sum(FVec v) { return vaddvq_f32(v); }
HWY_INLINE Int8Block LoadInt8(const int8_t* p) { return {vld1q_s8(p), vld1q_s8(p + 16)}; }
HWY_INLINE void StoreInt8(Int8Block b, int8_t* out) {
  vst1q_s8(out, b.lo);
  vst1q_s8(out + 16, b.hi);
}
HWY_INLINE Int8Block DecodeNibbles(const uint8_t* qs) {
  const uint8x16_t packed = vld1q_u8(qs);
  return {vreinterpretq_s8_u8(vandq_u8(packed, vdupq_n_u8(0x0F))), vreinterpretq_s8_u8(vshrq_n_u8(packed, 4))};
}
HWY_INLINE Int8Block AddHighBits(Int8Block b, const uint8_t* qh) {
  static const uint8_t kBitOfByte[16] = {1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128};
  const uint8x16_t bit_of_byte = vld1q_u8(kBitOfByte);
  const uint8x16_t spread_lo = vcombine_u8(vdup_n_u8(qh[0]), vdup_n_u8(qh[1]));
  const uint8x16_t spread_hi = vcombine_u8(vdup_n_u8(qh[2]), vdup_n_u8(qh[3]));
  const uint8x16_t high = vdupq_n_u8(0x10);
  const uint8x16_t lo = vandq_u8(vtstq_u8(spread_lo, bit_of_byte), high);
  const uint8x16_t hi = vandq_u8(vtstq_u8(spread_hi, bit_of_byte), high);
  return {vorrq_s8(b.lo, vreinterpretq_s8_u8(lo)), vorrq_s8(b.hi, vreinterpretq_s8_u8(hi))};
}
HWY_INLINE Int8Block DecodeNibblesThrough(const uint8_t* qs, const int8_t* table16) {
  const int8x16_t table = vld1q_s8(table16);
  const Int8Block nibbles = DecodeNibbles(qs);
  return {vqtbl1q_s8(table, vreinterpretq_u8_s8(nibbles.lo)), vqtbl1q_s8(table, vreinterpretq_u8_s8(nibbles.hi))};
}
HWY_INLINE Int8Block SubConst(Int8Block b, int8_t c) {
  return {vsubq_s8(b.lo, vdupq_n_s8(c)), vsubq_s8(b.hi, vdupq_n_s8(c))};
}
HWY_INLINE Int8Block FlipSign(Int8Block b) {
  return {veorq_s8(b.lo, vdupq_n_s8(-128)), veorq_s8(b.hi, vdupq_n_s8(-128))};
}

#else  // portable Highway

struct Int8Block {
  int8_t v[32];
};
using FTag = hn::CappedTag<float, 8>;
using FVec = hn::Vec<FTag>;

HWY_INLINE FVec Zero() { return hn::Zero(FTag()); }
HWY_INLINE FVec Broadcast(float f) { return hn::Set(FTag(), f); }
HWY_INLINE FVec Mul(FVec a, FVec b) { return hn::Mul(a, b); }
HWY_INLINE FVec Add(FVec a, FVec b) { return hn::Add(a, b); }
HWY_INLINE FVec MulAdd(FVec a, FVec b, FVec c) { return hn::MulAdd(a, b, c); }
HWY_INLINE float Sum(FVec v) { return hn::GetLane(hn::SumOfLanes(FTag(), v)); }
HWY_INLINE Int8Block LoadInt8(const int8_t* p) {
  Int8Block b;
  std::memcpy(b.v, p, 32);
  return b;
}
HWY_INLINE void StoreInt8(const Int8Block& b, int8_t* out) { std::memcpy(out, b.v, 32); }
HWY_INLINE Int8Block DecodeNibbles(const uint8_t* qs) {
  Int8Block b;
  for (int i = 0; i < 16; ++i) {
    b.v[i] = static_cast<int8_t>(qs[i] & 0x0F);
    b.v[i + 16] = static_cast<int8_t>(qs[i] >> 4);
  }
  return b;
}
HWY_INLINE Int8Block AddHighBits(Int8Block b, const uint8_t* qh) {
  uint32_t bits;
  std::memcpy(&bits, qh, 4);
  for (int i = 0; i < 32; ++i) b.v[i] = static_cast<int8_t>(b.v[i] | (((bits >> i) & 1u) << 4));
  return b;
}
HWY_INLINE Int8Block DecodeNibblesThrough(const uint8_t* qs, const int8_t* table16) {
  Int8Block b = DecodeNibbles(qs);
  for (int i = 0; i < 32; ++i) b.v[i] = table16[b.v[i]];
  return b;
}
HWY_INLINE Int8Block SubConst(Int8Block b, int8_t c) {
  for (int i = 0; i < 32; ++i) b.v[i] = static_cast<int8_t>(b.v[i] - c);
  return b;
}
HWY_INLINE Int8Block FlipSign(Int8Block b) {
  for (int i = 0; i < 32; ++i) b.v[i] = static_cast<int8_t>(b.v[i] ^ 0x80);
  return b;
}

#endif

// ---------------------------------------------------------------------------
// Formats. SignedCodes() is the integer multiplying d (offset included for
// Q4_0/Q5_0); UnsignedCodes() is SignedCodes() + kOffset in 0..255 (uint8),
// the operand unsigned x signed int8 instructions want.
struct FormatQ4_0 {
  using Block = BlockQ4_0;
  using ActBlock = BlockQ8_0;
  static constexpr int kOffset = 8;
  // Each output is sum over blocks k, in order, of fma(idot_k, d_w * d_a): see QuantTile.
  static constexpr bool kExactBlocks = true;
  static HWY_INLINE Int8Block UnsignedCodes(const Block& b) { return DecodeNibbles(b.qs); }
  static HWY_INLINE Int8Block SignedCodes(const Block& b) { return SubConst(DecodeNibbles(b.qs), 8); }
};
struct FormatQ4_1 {
  using Block = BlockQ4_1;
  using ActBlock = BlockQ8_1;
  static constexpr int kOffset = 0;
  static HWY_INLINE Int8Block UnsignedCodes(const Block& b) { return DecodeNibbles(b.qs); }
  static HWY_INLINE Int8Block SignedCodes(const Block& b) { return DecodeNibbles(b.qs); }
};
struct FormatQ5_0 {
  using Block = BlockQ5_0;
  using ActBlock = BlockQ8_0;
  static constexpr int kOffset = 16;
  static HWY_INLINE Int8Block UnsignedCodes(const Block& b) { return AddHighBits(DecodeNibbles(b.qs), b.qh); }
  static HWY_INLINE Int8Block SignedCodes(const Block& b) { return SubConst(UnsignedCodes(b), 16); }
};
struct FormatQ5_1 {
  using Block = BlockQ5_1;
  using ActBlock = BlockQ8_1;
  static constexpr int kOffset = 0;
  static HWY_INLINE Int8Block UnsignedCodes(const Block& b) { return AddHighBits(DecodeNibbles(b.qs), b.qh); }
  static HWY_INLINE Int8Block SignedCodes(const Block& b) { return UnsignedCodes(b); }
};
struct FormatQ8_0 {
  using Block = BlockQ8_0;
  using ActBlock = BlockQ8_0;
  static constexpr int kOffset = 128;
  static HWY_INLINE Int8Block UnsignedCodes(const Block& b) { return FlipSign(LoadInt8(b.qs)); }
  static HWY_INLINE Int8Block SignedCodes(const Block& b) { return LoadInt8(b.qs); }
};

// IQ4_NL: Q4_0's nibbles name values of a 16-entry grid (-127..113). Shifted by 128 they are valid
// uint8 (1..241) for vpdpbusd; the sign trick of the AVX2 path takes |value| <= 127.
struct FormatIQ4_NL {
  using Block = BlockIQ4_NL;
  using ActBlock = BlockQ8_0;
  static constexpr int kOffset = 128;
  static HWY_INLINE Int8Block SignedCodes(const Block& b) { return DecodeNibblesThrough(b.qs, kIQ4Values); }
  static HWY_INLINE Int8Block UnsignedCodes(const Block& b) { return FlipSign(SignedCodes(b)); }
};

template <class F>
constexpr bool kHasMin = std::is_same_v<typename F::ActBlock, BlockQ8_1>;

// Formats whose outputs are batch invariant by construction (see QuantTile).
template <class F>
constexpr bool kExactBlocks = requires { F::kExactBlocks; };

template <class Block>
HWY_INLINE float BlockMin(const Block& b) {
  if constexpr (requires { b.m; }) {
    return HalfToFloat(b.m);
  } else {
    return 0.0f;
  }
}

// ---------------------------------------------------------------------------
// Block dot engines: what is prepared once per weight block (WeightPrep) and
// once per activation block (ActPrep), and the product of one pair, returned
// as float lanes that sum to the exact integer dot product.
//
// AVX-512 VNNI (AVX3_DL): vpdpbusd multiplies uint8 x int8 and adds 4 products
// into int32 lanes. Weights go in as UnsignedCodes = codes + offset; the
// accumulator starts at -offset * (partial sums of the activations), prepared
// once per activation block, so the result is exactly sum(codes * a).
// AVX2 / AVX-512 without VNNI: maddubs (uint8 x int8 -> int16 pairs) + madd.
// Signed codes move their sign onto the activation (|w| * sign(w) a), which
// cannot overflow int16 (|w| <= 128, |a| <= 127); unsigned codes (<= 31) go in
// directly.
// NEON and portable: widening int8 multiplies of signed codes.
// What each activation block contributes besides its codes, computed once per
// (block, token) for a whole tile job rather than once per weight row.
struct ActSide {
#if defined(KVTIER_INT8_VNNI)
  int32_t bias[8];  // -offset * partial sums of q, the start of vpdpbusd (plain ints: no alignment needs)
#endif
  float scale;  // d
  float sum;    // s of a Q8_1 block: d * sum(q)
};

template <class F>
HWY_INLINE ActSide PrepareActSide(const typename F::ActBlock& ab) {
  ActSide side;
  side.scale = HalfToFloat(ab.d);
  if constexpr (kHasMin<F>) {
    side.sum = HalfToFloat(ab.s);
  } else {
    side.sum = 0.0f;
  }
#if defined(KVTIER_INT8_VNNI)
  if constexpr (F::kOffset != 0) {
    const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ab.qs));
    const __m256i offset_sums =
        _mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_set1_epi8(static_cast<char>(F::kOffset)), q);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(side.bias), _mm256_sub_epi32(_mm256_setzero_si256(), offset_sums));
  } else {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(side.bias), _mm256_setzero_si256());
  }
#endif
  return side;
}

struct ActPrep {
  Int8Block q;
  FVec scale;
  float sum;
#if defined(KVTIER_INT8_VNNI)
  __m256i bias;
#endif
};

template <class F>
HWY_INLINE ActPrep PrepareAct(const typename F::ActBlock& ab, const ActSide& side) {
  ActPrep p;
  p.q = LoadInt8(ab.qs);
  p.scale = Broadcast(side.scale);
  p.sum = side.sum;
#if defined(KVTIER_INT8_VNNI)
  p.bias = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(side.bias));
#endif
  return p;
}

struct WeightPrep {
  Int8Block codes;  // VNNI: unsigned codes; x86: signed (or unsigned when offset 0); else signed
#if defined(KVTIER_INT8_X86) && !defined(KVTIER_INT8_VNNI)
  __m256i magnitude;  // |signed codes| for the sign trick
#endif
  FVec scale;
  float min;
};

template <class F>
HWY_INLINE WeightPrep PrepareWeight(const typename F::Block& wb) {
  WeightPrep p;
#if defined(KVTIER_INT8_VNNI)
  p.codes = F::UnsignedCodes(wb);
#elif defined(KVTIER_INT8_X86)
  if constexpr (F::kOffset == 0) {
    p.codes = F::UnsignedCodes(wb);
  } else {
    p.codes = F::SignedCodes(wb);
    p.magnitude = _mm256_sign_epi8(p.codes.v, p.codes.v);
  }
#else
  p.codes = F::SignedCodes(wb);
#endif
  p.scale = Broadcast(HalfToFloat(wb.d));
  p.min = BlockMin(wb);
  return p;
}

template <class F>
HWY_INLINE FVec BlockDot(const WeightPrep& w, const ActPrep& a) {
#if defined(KVTIER_INT8_VNNI)
  return _mm256_cvtepi32_ps(_mm256_dpbusd_epi32(a.bias, w.codes.v, a.q.v));
#elif defined(KVTIER_INT8_X86)
  __m256i pairs;
  if constexpr (F::kOffset == 0) {
    pairs = _mm256_maddubs_epi16(w.codes.v, a.q.v);
  } else {
    pairs = _mm256_maddubs_epi16(w.magnitude, _mm256_sign_epi8(a.q.v, w.codes.v));
  }
  return _mm256_cvtepi32_ps(_mm256_madd_epi16(pairs, _mm256_set1_epi16(1)));
#elif defined(KVTIER_INT8_NEON)
#if defined(__ARM_FEATURE_DOTPROD)
  int32x4_t sum = vdotq_s32(vdupq_n_s32(0), w.codes.lo, a.q.lo);
  sum = vdotq_s32(sum, w.codes.hi, a.q.hi);
#else
  int32x4_t sum = vpaddlq_s16(vmull_s8(vget_low_s8(w.codes.lo), vget_low_s8(a.q.lo)));
  sum = vpadalq_s16(sum, vmull_s8(vget_high_s8(w.codes.lo), vget_high_s8(a.q.lo)));
  sum = vpadalq_s16(sum, vmull_s8(vget_low_s8(w.codes.hi), vget_low_s8(a.q.hi)));
  sum = vpadalq_s16(sum, vmull_s8(vget_high_s8(w.codes.hi), vget_high_s8(a.q.hi)));
#endif
  return vcvtq_f32_s32(sum);
#else
  const hn::RebindToSigned<FTag> di;
  const hn::Rebind<int8_t, FTag> d8;
  auto sum = hn::Zero(di);
  for (size_t i = 0; i < 32; i += hn::Lanes(di)) {
    sum = hn::Add(sum, hn::Mul(hn::PromoteTo(di, hn::LoadU(d8, w.codes.v + i)), hn::PromoteTo(di, hn::LoadU(d8, a.q.v + i))));
  }
  return hn::ConvertTo(FTag(), sum);
#endif
}

// Micro-tile shape: AVX-512 has 32 vector registers, the others 16.
#ifndef KVTIER_TILE_TOKENS
#if HWY_TARGET == HWY_AVX3 || HWY_TARGET == HWY_AVX3_DL
#define KVTIER_TILE_TOKENS 4
#else
#define KVTIER_TILE_TOKENS 3
#endif
#endif
#ifndef KVTIER_TILE_ROWS
#define KVTIER_TILE_ROWS 4
#endif
constexpr int kTileTokens = KVTIER_TILE_TOKENS;
constexpr int kTileRows = KVTIER_TILE_ROWS;

// Every output of every tile shape sums its blocks in one fixed order, so that a token's result does not depend
// on how many other tokens share the matmul (batch invariance, docs/server.md): kQuantSets partial sums, set u
// taking blocks u, u + kQuantSets, ... of the whole groups and set 0 also the blocks after them, added
// ((set 0 + set 1) + set 2) + set 3 before the lanes are summed; Q4_1/Q5_1's min terms in block order.
// Four sets hide the FMA latency of a decode tile (one output, one chain per set).
constexpr int kQuantSets = 4;
// Tiles with this many outputs or fewer keep all sets in registers, interleaved block by block; larger ones
// (prefill) have independent chains enough in their outputs and run the sets one after another, keeping only
// the running total of the sets done in memory. Both give the same sums.
constexpr int kInterleavedOutputs = 2;

// RM weight rows x RN tokens over n_blocks blocks of 32.
//   w: RM rows, w_stride bytes apart;  a: RN activation rows, a_stride bytes apart
//   y: y[t * y_stride + r]
//   sides: [RN][n_blocks] PrepareActSide of the same activation blocks
template <class F, int RM, int RN>
HWY_NOINLINE void QuantTile(int64_t n_blocks, const uint8_t* HWY_RESTRICT w, size_t w_stride,
                            const uint8_t* HWY_RESTRICT a, size_t a_stride, const ActSide* HWY_RESTRICT sides,
                            float* HWY_RESTRICT y, size_t y_stride) {
  using Block = typename F::Block;
  using ActBlock = typename F::ActBlock;
  if constexpr (kExactBlocks<F>) {
    // Batch invariant: y = sum over blocks k in order of fma(idot_k, d_w[k] * d_a[k], y), one scalar
    // chain per output, where idot_k is the exact integer dot of the block (its float lanes are
    // integers below 2^24, so any order sums them exactly). Every kernel of the format (the
    // token-lane tiles of Q4_0LanesTile included) computes this same sequence of roundings, so an
    // output does not depend on the tile shape, the number of tokens or rows in the call, or the target's
    // tile choice. Decode (1 x 1 tiles) pays a horizontal sum per block; it stays memory-bound.
    float exact[RM][RN] = {};
    for (int64_t k = 0; k < n_blocks; ++k) {
      ActPrep act[RN];
      float act_scale[RN];
      for (int t = 0; t < RN; ++t) {
        act[t] = PrepareAct<F>(reinterpret_cast<const ActBlock*>(a + t * a_stride)[k], sides[t * n_blocks + k]);
        act_scale[t] = sides[t * n_blocks + k].scale;
      }
      for (int r = 0; r < RM; ++r) {
        const Block& block = reinterpret_cast<const Block*>(w + r * w_stride)[k];
        const WeightPrep wp = PrepareWeight<F>(block);
        const float weight_scale = HalfToFloat(block.d);
        for (int t = 0; t < RN; ++t) {
          exact[r][t] = std::fma(Sum(BlockDot<F>(wp, act[t])), weight_scale * act_scale[t], exact[r][t]);
        }
      }
    }
    for (int r = 0; r < RM; ++r) {
      for (int t = 0; t < RN; ++t) y[t * y_stride + r] = exact[r][t];
    }
    return;
  }
  // sums[r][t] += the scaled integer dot of block k (no min terms).
  auto step = [&](int64_t k, FVec(&sums)[RM][RN]) HWY_ATTR {
    ActPrep act[RN];
    for (int t = 0; t < RN; ++t) {
      act[t] = PrepareAct<F>(reinterpret_cast<const ActBlock*>(a + t * a_stride)[k], sides[t * n_blocks + k]);
    }
    for (int r = 0; r < RM; ++r) {
      const WeightPrep wp = PrepareWeight<F>(reinterpret_cast<const Block*>(w + r * w_stride)[k]);
      for (int t = 0; t < RN; ++t) sums[r][t] = MulAdd(wp.scale, Mul(BlockDot<F>(wp, act[t]), act[t].scale), sums[r][t]);
    }
  };
  const int64_t whole = n_blocks / kQuantSets * kQuantSets;  // blocks in whole groups of kQuantSets
  FVec total[RM][RN];
  if constexpr (RM * RN <= kInterleavedOutputs) {
    FVec acc[kQuantSets][RM][RN];
    for (int u = 0; u < kQuantSets; ++u) {
      for (int r = 0; r < RM; ++r) {
        for (int t = 0; t < RN; ++t) acc[u][r][t] = Zero();
      }
    }
    for (int64_t k = 0; k < whole; k += kQuantSets) {
      for (int u = 0; u < kQuantSets; ++u) step(k + u, acc[u]);
    }
    for (int64_t k = whole; k < n_blocks; ++k) step(k, acc[0]);
    for (int r = 0; r < RM; ++r) {
      for (int t = 0; t < RN; ++t) {
        total[r][t] = acc[0][r][t];
        for (int u = 1; u < kQuantSets; ++u) total[r][t] = Add(total[r][t], acc[u][r][t]);
      }
    }
  } else {
    for (int u = 0; u < kQuantSets; ++u) {
      FVec acc[RM][RN];
      for (int r = 0; r < RM; ++r) {
        for (int t = 0; t < RN; ++t) acc[r][t] = Zero();
      }
      for (int64_t k = u; k < whole; k += kQuantSets) step(k, acc);
      if (u == 0) {
        for (int64_t k = whole; k < n_blocks; ++k) step(k, acc);
      }
      for (int r = 0; r < RM; ++r) {
        for (int t = 0; t < RN; ++t) total[r][t] = u == 0 ? acc[r][t] : Add(total[r][t], acc[r][t]);
      }
    }
  }
  float min_terms[RM][RN] = {};
  if constexpr (kHasMin<F>) {
    for (int64_t k = 0; k < n_blocks; ++k) {
      for (int r = 0; r < RM; ++r) {
        const float min = BlockMin(reinterpret_cast<const Block*>(w + r * w_stride)[k]);
        for (int t = 0; t < RN; ++t) min_terms[r][t] += min * sides[t * n_blocks + k].sum;
      }
    }
  }
  for (int r = 0; r < RM; ++r) {
    for (int t = 0; t < RN; ++t) y[t * y_stride + r] = Sum(total[r][t]) + min_terms[r][t];
  }
}

// Float formats: weights and activations both in WeightT (float, f16, bf16).
struct KindF32 {};
struct KindF16 {};
struct KindBF16 {};

template <class Kind, class DF>
HWY_INLINE hn::Vec<DF> LoadAsFloat(DF df, const uint8_t* row, int64_t i) {
  if constexpr (std::is_same_v<Kind, KindF32>) {
    return hn::LoadU(df, reinterpret_cast<const float*>(row) + i);
  } else if constexpr (std::is_same_v<Kind, KindF16>) {
    const hn::Rebind<hwy::float16_t, DF> dh;
    return hn::PromoteTo(df, hn::LoadU(dh, reinterpret_cast<const hwy::float16_t*>(row) + i));
  } else {
    const hn::RebindToUnsigned<DF> du32;
    const hn::Rebind<uint16_t, DF> du16;
    const auto bits = hn::PromoteTo(du32, hn::LoadU(du16, reinterpret_cast<const uint16_t*>(row) + i));
    return hn::BitCast(df, hn::ShiftLeft<16>(bits));
  }
}
template <class Kind>
HWY_INLINE float ScalarAsFloat(const uint8_t* row, int64_t i) {
  if constexpr (std::is_same_v<Kind, KindF32>) {
    return reinterpret_cast<const float*>(row)[i];
  } else if constexpr (std::is_same_v<Kind, KindF16>) {
    return f16_to_f32(reinterpret_cast<const uint16_t*>(row)[i]);
  } else {
    return bf16_to_f32(reinterpret_cast<const uint16_t*>(row)[i]);
  }
}

template <class Kind, int RM, int RN>
HWY_NOINLINE void FloatTile(int64_t n, const uint8_t* HWY_RESTRICT w, size_t w_stride, const uint8_t* HWY_RESTRICT a,
                            size_t a_stride, float* HWY_RESTRICT y, size_t y_stride) {
  const hn::ScalableTag<float> df;
  using V = hn::Vec<decltype(df)>;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(df));
  V acc[RM][RN];
  for (int r = 0; r < RM; ++r) {
    for (int t = 0; t < RN; ++t) acc[r][t] = hn::Zero(df);
  }
  int64_t i = 0;
  for (; i + lanes <= n; i += lanes) {
    V act[RN];
    for (int t = 0; t < RN; ++t) act[t] = LoadAsFloat<Kind>(df, a + t * a_stride, i);
    for (int r = 0; r < RM; ++r) {
      const V wv = LoadAsFloat<Kind>(df, w + r * w_stride, i);
      for (int t = 0; t < RN; ++t) acc[r][t] = hn::MulAdd(wv, act[t], acc[r][t]);
    }
  }
  for (int r = 0; r < RM; ++r) {
    for (int t = 0; t < RN; ++t) {
      float sum = hn::GetLane(hn::SumOfLanes(df, acc[r][t]));
      for (int64_t j = i; j < n; ++j) {
        sum += ScalarAsFloat<Kind>(w + r * w_stride, j) * ScalarAsFloat<Kind>(a + t * a_stride, j);
      }
      y[t * y_stride + r] = sum;
    }
  }
}

// Op::Tile computes an RM x RN tile; Op::Prepare runs once per tile job.
template <class F>
struct QuantOp {
  // Per-job scratch: ActSide of every (token, block) of the job, [tokens][n_blocks].
  using Scratch = std::vector<ActSide>;
  static void Prepare(int64_t n, const uint8_t* a, size_t as, int64_t tokens, Scratch& sides) {
    const int64_t n_blocks = n / 32;
    sides.resize(static_cast<size_t>(tokens * n_blocks));
    for (int64_t t = 0; t < tokens; ++t) {
      const auto* blocks = reinterpret_cast<const typename F::ActBlock*>(a + t * as);
      for (int64_t k = 0; k < n_blocks; ++k) sides[t * n_blocks + k] = PrepareActSide<F>(blocks[k]);
    }
  }
  template <int RM, int RN>
  static HWY_INLINE void Tile(int64_t n, const uint8_t* w, size_t ws, const uint8_t* a, size_t as, int64_t t0,
                              const Scratch& sides, float* y, size_t ys) {
    const int64_t n_blocks = n / 32;
    QuantTile<F, RM, RN>(n_blocks, w, ws, a, as, sides.data() + t0 * n_blocks, y, ys);
  }
};
template <class Kind>
struct FloatOp {
  struct Scratch {};
  static void Prepare(int64_t, const uint8_t*, size_t, int64_t, Scratch&) {}
  template <int RM, int RN>
  static HWY_INLINE void Tile(int64_t n, const uint8_t* w, size_t ws, const uint8_t* a, size_t as, int64_t,
                              const Scratch&, float* y, size_t ys) {
    FloatTile<Kind, RM, RN>(n, w, ws, a, as, y, ys);
  }
};

// The last tokens < kTileTokens of a row group: one tile of exactly `left` tokens.
template <class Op, int RM, int RN>
HWY_INLINE void TokensLeft(int64_t n, const uint8_t* w, size_t ws, const uint8_t* a, size_t as, int64_t t0,
                           int64_t left, const typename Op::Scratch& scratch, float* y, size_t ys) {
  if constexpr (RN > 0) {
    if (left == RN) {
      Op::template Tile<RM, RN>(n, w, ws, a, as, t0, scratch, y, ys);
    } else {
      TokensLeft<Op, RM, RN - 1>(n, w, ws, a, as, t0, left, scratch, y, ys);
    }
  }
}

// RM rows against all tokens, kTileTokens at a time.
//   a: [tokens][as bytes], y: y[t * ys + r]
template <class Op, int RM>
HWY_INLINE void RowGroup(int64_t n, const uint8_t* w, size_t ws, const uint8_t* a, size_t as, int64_t tokens,
                         const typename Op::Scratch& scratch, float* y, size_t ys) {
  int64_t t = 0;
  for (; t + kTileTokens <= tokens; t += kTileTokens) {
    Op::template Tile<RM, kTileTokens>(n, w, ws, a + t * as, as, t, scratch, y + t * ys, ys);
  }
  TokensLeft<Op, RM, kTileTokens - 1>(n, w, ws, a + t * as, as, t, tokens - t, scratch, y + t * ys, ys);
}

template <class Op, int RM>
HWY_INLINE void RowsLeft(int64_t n, const uint8_t* w, size_t ws, int64_t left, const uint8_t* a, size_t as,
                         int64_t tokens, const typename Op::Scratch& scratch, float* y, size_t ys) {
  if constexpr (RM > 0) {
    if (left == RM) {
      RowGroup<Op, RM>(n, w, ws, a, as, tokens, scratch, y, ys);
    } else {
      RowsLeft<Op, RM - 1>(n, w, ws, left, a, as, tokens, scratch, y, ys);
    }
  }
}

template <class Op>
void TileAll(int64_t n, const uint8_t* w, size_t ws, int64_t rows, const uint8_t* a, size_t as, int64_t tokens,
             float* y, size_t ys) {
  thread_local typename Op::Scratch scratch;
  Op::Prepare(n, a, as, tokens, scratch);
  int64_t r = 0;
  if (tokens < kTileTokens) {
    // Decode: one row at a time. Weights stream from memory once either way,
    // and a single sequential stream measured ~3x faster than four
    // interleaved rows once the matrix no longer fits in cache.
    for (; r < rows; ++r) RowGroup<Op, 1>(n, w + r * ws, ws, a, as, tokens, scratch, y + r, ys);
    return;
  }
  for (; r + kTileRows <= rows; r += kTileRows) {
    RowGroup<Op, kTileRows>(n, w + r * ws, ws, a, as, tokens, scratch, y + r, ys);
  }
  RowsLeft<Op, kTileRows - 1>(n, w + r * ws, ws, rows - r, a, as, tokens, scratch, y + r, ys);
}

#if defined(KVTIER_INT8_X86)
// ---------------------------------------------------------------------------
// Q4_0 prefill on x86: token lanes. Eight tokens' activations are interleaved
// per matmul tile job (weights stay as GGUF stores them, memory-mapped), so
// that int32 lane j of every product is token j: a weight block is decoded
// once into broadcast nibbles and meets 8 (or 16) tokens with one maddubs per
// 4 codes, the 8 maddubs of a block sum in int16, and its scale is applied
// once per 8 outputs instead of once per output. Its outputs are bit-identical
// to QuantTile's exact path (same integer dot, same fma chain per output).
//
// Packed activations of one block for 8 tokens (320 bytes):
//   q[g][4 * j + i] = code 4g + i of token j (g = 0..7: codes 4g..4g+3)
//   scale[j] = d of token j;  offset_sum[j] = 8 * sum of token j's 32 codes
// Q4_0 byte i of a block holds code i (low nibble) and code i + 16 (high), so
// the 4 bytes 4g..4g+3 broadcast to every lane give code groups g and g + 4.
// Int16 bound: each maddubs lane is <= 2 * 15 * 128, and 8 of them (one block)
// sum to <= 30720 < 32767, so the unsigned-nibble products never saturate;
// the offset 8 comes back exactly as idot = sum(nibble * q) - 8 * sum(q).
struct PackedQ8Block8 {
  int8_t q[8][32];
  float scale[8];
  int32_t offset_sum[8];
};
static_assert(sizeof(PackedQ8Block8) == 320, "8 tokens x 32 codes, 8 scales, 8 offset sums");
constexpr int kLaneTokens = 8;

// Tokens [0, groups * 8) of a: [tokens][a_stride bytes] of BlockQ8_0 -> packed: [groups][n_blocks].
// An 8 x 8 transpose of 4-byte code groups per block (8 tokens x groups g -> g x 8 tokens); this runs
// once per tile job, a few percent of the job's 64 rows of products.
HWY_INLINE void PackQ8Tokens(int64_t n_blocks, const uint8_t* a, size_t a_stride, int64_t groups,
                             PackedQ8Block8* packed) {
  const __m256i ones8 = _mm256_set1_epi8(1);
  const __m256i ones16 = _mm256_set1_epi16(1);
  for (int64_t group = 0; group < groups; ++group) {
    const uint8_t* tokens = a + group * kLaneTokens * a_stride;
    for (int64_t k = 0; k < n_blocks; ++k) {
      PackedQ8Block8& out = packed[group * n_blocks + k];
      __m256i row[kLaneTokens];  // token j: its 8 code groups as 8 dwords
      alignas(16) uint16_t scales[kLaneTokens];
      for (int j = 0; j < kLaneTokens; ++j) {
        const BlockQ8_0& block = reinterpret_cast<const BlockQ8_0*>(tokens + j * a_stride)[k];
        row[j] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(block.qs));
        scales[j] = block.d;
      }
      __m256i pairs[8], quads[8];
      for (int j = 0; j < kLaneTokens; j += 2) {
        pairs[j] = _mm256_unpacklo_epi32(row[j], row[j + 1]);      // tokens j, j+1: groups 0,1 | 4,5
        pairs[j + 1] = _mm256_unpackhi_epi32(row[j], row[j + 1]);  // groups 2,3 | 6,7
      }
      for (int half = 0; half < 2; ++half) {  // tokens 0..3, then 4..7
        const __m256i* p = pairs + 4 * half;
        quads[4 * half + 0] = _mm256_unpacklo_epi64(p[0], p[2]);  // 4 tokens: group 0 | 4
        quads[4 * half + 1] = _mm256_unpackhi_epi64(p[0], p[2]);  // group 1 | 5
        quads[4 * half + 2] = _mm256_unpacklo_epi64(p[1], p[3]);  // group 2 | 6
        quads[4 * half + 3] = _mm256_unpackhi_epi64(p[1], p[3]);  // group 3 | 7
      }
      __m256i code_sums = _mm256_setzero_si256();  // int16 pairs, <= 8 * 2 * 128
      for (int g = 0; g < 4; ++g) {
        const __m256i low = _mm256_permute2x128_si256(quads[g], quads[4 + g], 0x20);   // group g, tokens 0..7
        const __m256i high = _mm256_permute2x128_si256(quads[g], quads[4 + g], 0x31);  // group g + 4
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(out.q[g]), low);
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(out.q[g + 4]), high);
        code_sums = _mm256_add_epi16(code_sums, _mm256_maddubs_epi16(ones8, low));
        code_sums = _mm256_add_epi16(code_sums, _mm256_maddubs_epi16(ones8, high));
      }
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(out.offset_sum),
                          _mm256_slli_epi32(_mm256_madd_epi16(code_sums, ones16), 3));
      _mm256_storeu_ps(out.scale, _mm256_cvtph_ps(_mm_load_si128(reinterpret_cast<const __m128i*>(scales))));
    }
  }
}

// RM weight rows x NT groups of 8 tokens over n_blocks blocks.
//   w: RM rows of BlockQ4_0, w_stride bytes apart;  packed: NT groups, group_stride blocks apart
//   y: y[t * y_stride + r] for the NT * 8 tokens
template <int RM, int NT>
HWY_NOINLINE void Q4_0LanesTile(int64_t n_blocks, const uint8_t* HWY_RESTRICT w, size_t w_stride,
                                const PackedQ8Block8* HWY_RESTRICT packed, int64_t group_stride,
                                float* HWY_RESTRICT y, size_t y_stride) {
  const __m256i low_nibble = _mm256_set1_epi8(0x0F);
  const __m256i ones16 = _mm256_set1_epi16(1);
  __m256 acc[RM][NT];
  for (int r = 0; r < RM; ++r) {
    for (int t = 0; t < NT; ++t) acc[r][t] = _mm256_setzero_ps();
  }
  for (int64_t k = 0; k < n_blocks; ++k) {
    const PackedQ8Block8* act[NT];
    for (int t = 0; t < NT; ++t) act[t] = packed + t * group_stride + k;
    for (int r = 0; r < RM; ++r) {
      const BlockQ4_0& block = reinterpret_cast<const BlockQ4_0*>(w + r * w_stride)[k];
      const __m256 weight_scale = _mm256_set1_ps(HalfToFloat(block.d));
      __m256i sums16[NT];
      for (int t = 0; t < NT; ++t) sums16[t] = _mm256_setzero_si256();
      for (int g = 0; g < 4; ++g) {
        int32_t four_bytes;
        std::memcpy(&four_bytes, block.qs + 4 * g, 4);
        const __m256i both = _mm256_set1_epi32(four_bytes);
        const __m256i low = _mm256_and_si256(both, low_nibble);                          // codes 4g..4g+3
        const __m256i high = _mm256_and_si256(_mm256_srli_epi16(both, 4), low_nibble);  // codes 16+4g..
        for (int t = 0; t < NT; ++t) {
          const __m256i q_low = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(act[t]->q[g]));
          const __m256i q_high = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(act[t]->q[g + 4]));
          sums16[t] = _mm256_add_epi16(sums16[t], _mm256_maddubs_epi16(low, q_low));
          sums16[t] = _mm256_add_epi16(sums16[t], _mm256_maddubs_epi16(high, q_high));
        }
      }
      for (int t = 0; t < NT; ++t) {
        const __m256i offset_sum = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(act[t]->offset_sum));
        const __m256i idot = _mm256_sub_epi32(_mm256_madd_epi16(sums16[t], ones16), offset_sum);
        const __m256 scale = _mm256_mul_ps(weight_scale, _mm256_loadu_ps(act[t]->scale));
        acc[r][t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(idot), scale, acc[r][t]);
      }
    }
  }
  for (int r = 0; r < RM; ++r) {
    for (int t = 0; t < NT; ++t) {
      alignas(32) float lanes[kLaneTokens];
      _mm256_store_ps(lanes, acc[r][t]);
      for (int j = 0; j < kLaneTokens; ++j) y[(t * kLaneTokens + j) * y_stride + r] = lanes[j];
    }
  }
}

template <int RM>
HWY_INLINE void Q4_0LanesRows(int64_t n_blocks, const uint8_t* w, size_t ws, const PackedQ8Block8* packed,
                              int64_t groups, float* y, size_t ys) {
  int64_t group = 0;
  for (; group + 2 <= groups; group += 2) {
    Q4_0LanesTile<RM, 2>(n_blocks, w, ws, packed + group * n_blocks, n_blocks, y + group * kLaneTokens * ys, ys);
  }
  if (group < groups) {
    Q4_0LanesTile<RM, 1>(n_blocks, w, ws, packed + group * n_blocks, n_blocks, y + group * kLaneTokens * ys, ys);
  }
}

// Q4_0 decode on x86: block lanes. One token against one row at a time (a
// single sequential weight stream: eight interleaved row streams measured ~20%
// slower decode here, even with software prefetch): the products of 8
// consecutive blocks reduce to one exact integer per block by a horizontal-add
// transpose, so lane j of one vector is block k + j, and the 8 scale products
// come from one multiply. The fma chain then runs in block order on scalars:
// the same integer dot, product d_w * d_a and fma per block as QuantTile's
// exact path, so the outputs are bit-identical.
//   w: one row of n_blocks BlockQ4_0;  a: one token's BlockQ8_0 row
//   offset_sums: [n_blocks] 8 * sum of each block's codes;  act_scales: [n_blocks] d
HWY_NOINLINE float Q4_0BlockLanesRow(int64_t n_blocks, const BlockQ4_0* HWY_RESTRICT w,
                                     const BlockQ8_0* HWY_RESTRICT a, const int32_t* HWY_RESTRICT offset_sums,
                                     const float* HWY_RESTRICT act_scales) {
  const __m256i ones16 = _mm256_set1_epi16(1);
  // 8 int32 partial sums of block k's nibbles x codes (offset not yet removed).
  auto block_dot = [&](int64_t k) HWY_ATTR {
    const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a[k].qs));
    return _mm256_madd_epi16(_mm256_maddubs_epi16(DecodeNibbles(w[k].qs).v, q), ones16);
  };
  float acc = 0.0f;
  int64_t k = 0;
  for (; k + 8 <= n_blocks; k += 8) {
    // hadd(hadd(B0, B1), hadd(B2, B3)): 128-bit half h holds blocks 0..3's sums of dwords 4h..4h+3.
    const __m256i blocks0to3 = _mm256_hadd_epi32(_mm256_hadd_epi32(block_dot(k), block_dot(k + 1)),
                                                 _mm256_hadd_epi32(block_dot(k + 2), block_dot(k + 3)));
    const __m256i blocks4to7 = _mm256_hadd_epi32(_mm256_hadd_epi32(block_dot(k + 4), block_dot(k + 5)),
                                                 _mm256_hadd_epi32(block_dot(k + 6), block_dot(k + 7)));
    const __m256i sums = _mm256_add_epi32(_mm256_permute2x128_si256(blocks0to3, blocks4to7, 0x20),
                                          _mm256_permute2x128_si256(blocks0to3, blocks4to7, 0x31));
    const __m256i idot =
        _mm256_sub_epi32(sums, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(offset_sums + k)));
    const __m128i halves = _mm_setr_epi16(
        static_cast<int16_t>(w[k].d), static_cast<int16_t>(w[k + 1].d), static_cast<int16_t>(w[k + 2].d),
        static_cast<int16_t>(w[k + 3].d), static_cast<int16_t>(w[k + 4].d), static_cast<int16_t>(w[k + 5].d),
        static_cast<int16_t>(w[k + 6].d), static_cast<int16_t>(w[k + 7].d));
    alignas(32) float dots[8];
    alignas(32) float scales[8];
    _mm256_store_ps(dots, _mm256_cvtepi32_ps(idot));
    _mm256_store_ps(scales, _mm256_mul_ps(_mm256_cvtph_ps(halves), _mm256_loadu_ps(act_scales + k)));
    for (int j = 0; j < 8; ++j) acc = std::fma(dots[j], scales[j], acc);
  }
  for (; k < n_blocks; ++k) {
    const __m256i partial = block_dot(k);
    const __m128i four = _mm_add_epi32(_mm256_castsi256_si128(partial), _mm256_extracti128_si256(partial, 1));
    const __m128i two = _mm_add_epi32(four, _mm_unpackhi_epi64(four, four));
    const int32_t idot = _mm_cvtsi128_si32(two) + _mm_extract_epi32(two, 1) - offset_sums[k];
    acc = std::fma(static_cast<float>(idot), HalfToFloat(w[k].d) * act_scales[k], acc);
  }
  return acc;
}

// Tokens one at a time, rows one at a time, by block lanes.
void Q4_0BlockLanes(int64_t n, const uint8_t* w, size_t ws, int64_t rows, const uint8_t* a, size_t as,
                    int64_t tokens, float* y, size_t ys) {
  const int64_t n_blocks = n / 32;
  thread_local std::vector<int32_t> offset_sums;  // [n_blocks]
  thread_local std::vector<float> act_scales;     // [n_blocks]
  offset_sums.resize(static_cast<size_t>(n_blocks));
  act_scales.resize(static_cast<size_t>(n_blocks));
  const __m256i ones8 = _mm256_set1_epi8(1);
  const __m256i ones16 = _mm256_set1_epi16(1);
  for (int64_t t = 0; t < tokens; ++t) {
    const auto* blocks = reinterpret_cast<const BlockQ8_0*>(a + t * as);
    for (int64_t k = 0; k < n_blocks; ++k) {
      const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blocks[k].qs));
      const __m256i sums = _mm256_madd_epi16(_mm256_maddubs_epi16(ones8, q), ones16);
      const __m128i four = _mm_add_epi32(_mm256_castsi256_si128(sums), _mm256_extracti128_si256(sums, 1));
      const __m128i two = _mm_add_epi32(four, _mm_unpackhi_epi64(four, four));
      offset_sums[k] = 8 * (_mm_cvtsi128_si32(two) + _mm_extract_epi32(two, 1));
      act_scales[k] = HalfToFloat(blocks[k].d);
    }
    for (int64_t r = 0; r < rows; ++r) {
      y[t * ys + r] = Q4_0BlockLanesRow(n_blocks, reinterpret_cast<const BlockQ4_0*>(w + r * ws), blocks,
                                        offset_sums.data(), act_scales.data());
    }
  }
}

// The Q4_0 tile entry on x86: whole groups of 8 tokens by token lanes, the
// rest (decode's single token, prefill's last tokens % 8) by block lanes.
void TileQ4_0(int64_t n, const uint8_t* w, size_t ws, int64_t rows, const uint8_t* a, size_t as, int64_t tokens,
              float* y, size_t ys) {
  const int64_t groups = tokens / kLaneTokens;
  const int64_t lane_tokens = groups * kLaneTokens;
  if (groups > 0) {
    const int64_t n_blocks = n / 32;
    thread_local std::vector<PackedQ8Block8> packed;  // [groups][n_blocks]
    packed.resize(static_cast<size_t>(groups * n_blocks));
    PackQ8Tokens(n_blocks, a, as, groups, packed.data());
    constexpr int kRows = 2;
    int64_t r = 0;
    for (; r + kRows <= rows; r += kRows) {
      Q4_0LanesRows<kRows>(n_blocks, w + r * ws, ws, packed.data(), groups, y + r, ys);
    }
    for (; r < rows; ++r) Q4_0LanesRows<1>(n_blocks, w + r * ws, ws, packed.data(), groups, y + r, ys);
  }
  if (tokens > lane_tokens) {
    Q4_0BlockLanes(n, w, ws, rows, a + lane_tokens * as, as, tokens - lane_tokens, y + lane_tokens * ys, ys);
  }
}
#endif  // KVTIER_INT8_X86

// ---------------------------------------------------------------------------
// Dequantization: codes -> f32, times d, plus m. Not on the matmul path (used
// for embeddings), so it keeps the block decode above and converts portably.
template <class F>
void DequantizeQuant(const void* src, float* dst, int64_t n) {
  const hn::CappedTag<float, 8> df;
  const hn::RebindToSigned<decltype(df)> di;
  const hn::Rebind<int8_t, decltype(df)> d8;
  const auto* blocks = static_cast<const typename F::Block*>(src);
  HWY_ALIGN int8_t codes[32];
  for (int64_t k = 0; k < n / 32; ++k) {
    StoreInt8(F::SignedCodes(blocks[k]), codes);
    const auto d = hn::Set(df, HalfToFloat(blocks[k].d));
    const auto m = hn::Set(df, BlockMin(blocks[k]));
    for (size_t i = 0; i < 32; i += hn::Lanes(df)) {
      const auto values = hn::ConvertTo(df, hn::PromoteTo(di, hn::LoadU(d8, codes + i)));
      // Mul then Add (not fused), to round exactly as the reference.
      hn::StoreU(hn::Add(hn::Mul(values, d), m), df, dst + k * 32 + i);
    }
  }
}

template <class Kind>
void DequantizeFloat(const void* src, float* dst, int64_t n) {
  const hn::ScalableTag<float> df;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(df));
  const auto* bytes = static_cast<const uint8_t*>(src);
  int64_t i = 0;
  for (; i + lanes <= n; i += lanes) hn::StoreU(LoadAsFloat<Kind>(df, bytes, i), df, dst + i);
  for (; i < n; ++i) dst[i] = ScalarAsFloat<Kind>(bytes, i);
}

// ---------------------------------------------------------------------------
// Activation quantization (GGML's quantize_row_q8_0_ref / q8_1_ref rounding:
// d = amax / 127, q = roundf(x * (1 / d)), ties away from zero).
template <class DF>
HWY_INLINE hn::Vec<DF> RoundHalfAwayFromZero(DF df, hn::Vec<DF> v) {
  const auto truncated = hn::Trunc(v);
  const auto fraction = hn::Sub(v, truncated);  // exact
  const auto step = hn::CopySign(hn::Set(df, 1.0f), v);
  return hn::IfThenElse(hn::Ge(hn::Abs(fraction), hn::Set(df, 0.5f)), hn::Add(truncated, step), truncated);
}

template <class ActBlock>
void QuantizeQ8(const float* x, void* dst, int64_t n) {
  const hn::CappedTag<float, 8> df;
  const hn::RebindToSigned<decltype(df)> di;
  const hn::Rebind<int8_t, decltype(df)> d8;
  const size_t lanes = hn::Lanes(df);
  auto* blocks = static_cast<ActBlock*>(dst);
  for (int64_t k = 0; k < n / 32; ++k) {
    const float* xb = x + k * 32;
    auto amax_v = hn::Zero(df);
    for (size_t i = 0; i < 32; i += lanes) amax_v = hn::Max(amax_v, hn::Abs(hn::LoadU(df, xb + i)));
    const float amax = hn::GetLane(hn::MaxOfLanes(df, amax_v));
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    blocks[k].d = f32_to_f16(d);
    auto sum = hn::Zero(di);
    for (size_t i = 0; i < 32; i += lanes) {
      // NaN (non-finite activations, e.g. from a file's NaN weights) becomes 0: converting it is undefined.
      auto scaled = hn::Mul(hn::LoadU(df, xb + i), hn::Set(df, id));
      scaled = hn::IfThenElseZero(hn::Eq(scaled, scaled), scaled);
      const auto q = hn::ConvertTo(di, RoundHalfAwayFromZero(df, scaled));
      sum = hn::Add(sum, q);
      hn::StoreU(hn::DemoteTo(d8, q), d8, blocks[k].qs + i);
    }
    if constexpr (std::is_same_v<ActBlock, BlockQ8_1>) {
      blocks[k].s = f32_to_f16(static_cast<float>(hn::GetLane(hn::SumOfLanes(di, sum))) * d);
    }
  }
}

// F16/BF16 activations: the scalar conversions are exact (RNE, subnormals,
// NaN) on every target and cost O(cols) per token, nothing next to the matmul.
void QuantizeF16(const float* x, void* dst, int64_t n) {
  auto* out = static_cast<uint16_t*>(dst);
  for (int64_t i = 0; i < n; ++i) out[i] = f32_to_f16(x[i]);
}
void QuantizeBF16(const float* x, void* dst, int64_t n) {
  auto* out = static_cast<uint16_t*>(dst);
  for (int64_t i = 0; i < n; ++i) out[i] = f32_to_bf16(x[i]);
}
void QuantizeF32(const float* x, void* dst, int64_t n) { std::memcpy(dst, x, static_cast<size_t>(n) * sizeof(float)); }

// ---------------------------------------------------------------------------
const simd::TargetKernels* GetTargetKernels() {
  static const simd::TargetKernels table = [] {
    simd::TargetKernels t{};
    t.target_name = hwy::TargetName(HWY_TARGET);
    auto at = [](GgmlType type) { return static_cast<uint32_t>(type); };
    t.tile[at(GgmlType::F32)] = &TileAll<FloatOp<KindF32>>;
    t.tile[at(GgmlType::F16)] = &TileAll<FloatOp<KindF16>>;
    t.tile[at(GgmlType::BF16)] = &TileAll<FloatOp<KindBF16>>;
#if defined(KVTIER_INT8_X86)
    t.tile[at(GgmlType::Q4_0)] = &TileQ4_0;
#else
    t.tile[at(GgmlType::Q4_0)] = &TileAll<QuantOp<FormatQ4_0>>;
#endif
    t.tile[at(GgmlType::Q4_1)] = &TileAll<QuantOp<FormatQ4_1>>;
    t.tile[at(GgmlType::Q5_0)] = &TileAll<QuantOp<FormatQ5_0>>;
    t.tile[at(GgmlType::Q5_1)] = &TileAll<QuantOp<FormatQ5_1>>;
    t.tile[at(GgmlType::Q8_0)] = &TileAll<QuantOp<FormatQ8_0>>;
    t.tile[at(GgmlType::IQ4_NL)] = &TileAll<QuantOp<FormatIQ4_NL>>;
    t.dequantize[at(GgmlType::F32)] = &DequantizeFloat<KindF32>;
    t.dequantize[at(GgmlType::F16)] = &DequantizeFloat<KindF16>;
    t.dequantize[at(GgmlType::BF16)] = &DequantizeFloat<KindBF16>;
    t.dequantize[at(GgmlType::Q4_0)] = &DequantizeQuant<FormatQ4_0>;
    t.dequantize[at(GgmlType::Q4_1)] = &DequantizeQuant<FormatQ4_1>;
    t.dequantize[at(GgmlType::Q5_0)] = &DequantizeQuant<FormatQ5_0>;
    t.dequantize[at(GgmlType::Q5_1)] = &DequantizeQuant<FormatQ5_1>;
    t.dequantize[at(GgmlType::Q8_0)] = &DequantizeQuant<FormatQ8_0>;
    t.dequantize[at(GgmlType::IQ4_NL)] = &DequantizeQuant<FormatIQ4_NL>;
    t.quantize[at(GgmlType::F32)] = &QuantizeF32;
    t.quantize[at(GgmlType::F16)] = &QuantizeF16;
    t.quantize[at(GgmlType::BF16)] = &QuantizeBF16;
    t.quantize[at(GgmlType::Q8_0)] = &QuantizeQ8<BlockQ8_0>;
    t.quantize[at(GgmlType::Q8_1)] = &QuantizeQ8<BlockQ8_1>;
    t.tile_rows = kTileRows;
    t.tile_tokens = kTileTokens;
    return t;
  }();
  return &table;
}

#if defined(KVTIER_INT8_VNNI)
#pragma GCC pop_options
#endif
}  // namespace kvtier::kernels::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace kvtier::kernels::simd {

HWY_EXPORT(GetTargetKernels);

const TargetKernels& best_kernels() { return *HWY_DYNAMIC_DISPATCH(GetTargetKernels)(); }

std::vector<int64_t> compiled_targets() { return hwy::SupportedAndGeneratedTargets(); }

}  // namespace kvtier::kernels::simd
#endif  // HWY_ONCE
