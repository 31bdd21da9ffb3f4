// Target-specific helpers shared by the K-quant dot kernels (kquant_dot.cpp, kquant_lowbit_dot.cpp).
// Included inside each file's per-target namespace (kvtier::kernels::kquant::HWY_NAMESPACE) after
// <hwy/highway.h>; no include guard: one copy per Highway target pass.

#if HWY_TARGET == HWY_AVX2 || HWY_TARGET == HWY_AVX3 || HWY_TARGET == HWY_AVX3_DL

HWY_INLINE float HorizontalSum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// pshufb controls, read from memory (a load folded into the shuffle beats
// rebuilding eight constants in registers each block). Row k broadcasts i16
// lane `lo` of each 128-bit half into the low half and lane `hi` into the high half.
struct ShuffleTable {
  alignas(32) uint8_t control[8][32];
};
constexpr ShuffleTable MakeBroadcastTable(bool pairs) {
  ShuffleTable t{};
  for (int k = 0; k < 8; ++k) {
    // One scale per 32 elements (Q4_K, Q5_K, IQ4_XS): lane k in both halves.
    // One scale per 16 elements (pairs, k < 4: Q2_K, Q3_K, Q6_K): lane 2k low, 2k+1 high.
    const int lo = pairs ? 2 * k : k, hi = pairs ? 2 * k + 1 : k;
    for (int b = 0; b < 32; ++b) {
      const int lane = b < 16 ? lo : hi;
      t.control[k][b] = static_cast<uint8_t>(2 * lane + (b & 1));
    }
  }
  return t;
}
constexpr ShuffleTable kBroadcastLane = MakeBroadcastTable(false);
constexpr ShuffleTable kBroadcastLanePair = MakeBroadcastTable(true);

HWY_INLINE __m256i ShuffleControl(const ShuffleTable& table, int k) {
  return _mm256_load_si256(reinterpret_cast<const __m256i*>(table.control[k]));
}

// f16 -> f32 with the F16C instruction (part of Highway's AVX2 target).
HWY_INLINE float HalfToFloat(uint16_t h) { return _cvtsh_ss(h); }

#endif  // x86 AVX2 and up

#if HWY_TARGET == HWY_NEON

// acc + products of a and b summed in groups of four (i8 x i8 -> i32 lanes).
HWY_INLINE int32x4_t DotI8x16(int32x4_t acc, int8x16_t a, int8x16_t b) {
#if defined(__ARM_FEATURE_DOTPROD)
  return vdotq_s32(acc, a, b);
#else
  // Each product fits in i16: weight quants are at most 127 in magnitude (the IQ4 grid), activations 128.
  acc = vpadalq_s16(acc, vmull_s8(vget_low_s8(a), vget_low_s8(b)));
  return vpadalq_s16(acc, vmull_high_s8(a, b));
#endif
}

HWY_INLINE float HalfToFloatNeon(uint16_t h) {
  return vgetq_lane_f32(vcvt_f32_f16(vreinterpret_f16_u16(vdup_n_u16(h))), 0);
}

#endif  // NEON
