// Integer fused decode for Arm NEON with the dot-product extension (FEAT_DotProd: every Apple M-series core,
// Cortex-A55/A76 and later). Included by kernels/cpu/paged_attention.cpp inside its per-target namespace for
// HWY_TARGET == HWY_NEON on aarch64, after CodeRows, RowCoefficients and FusedScratch; no include guard (one
// copy per target pass). Requires #pragma GCC target("arch=armv8.2-a+dotprod") around the include; the caller
// runs it only where the CPU reports dotprod (HasDotProd).
//
// The same arithmetic as the AVX-512 VNNI kernel (fused_decode_vnni-inl.h): coefficients rounded to int8 per
// head, page and group (4-bit rows add a residual byte at 1/254 of the scale), codes multiplied by them four
// rows at a time. `sdot` (vdotq_laneq_s32) multiplies the 4 bytes of each 32-bit lane of the codes by the 4
// bytes of one 32-bit lane of the coefficients (one head's word for the 4 rows) and adds the sum to the lane:
// 16 multiply-adds per instruction, against 4 for an f32 FMA on unpacked codes. Transposing 4 packed rows
// (kv::unpack_code_row: byte b of a w-bit plane of s bytes holds elements b + j*s, j < 8/w), 16 bytes each:
//   zip8(r0, r1), zip8(r2, r3), then zip16 of those:  vector i, lane m = bytes (r0, b+4i+m) .. (r3, b+4i+m)
//   codes_j = (vector >> j*w) & (2^w - 1) per byte:    element b + 4i + m + j*s of rows r..r+3

// Coefficients of one call as int8 words, laid out as in the VNNI kernel:
//   words[(g * quads + k) * heads + h]: rows 4k..4k+3 of head h, group g (heads: the call's, rounded up to 4);
//   scale[h * n_groups + g]; residual words (4-bit rows) alike, weighing scale / 254.
struct SdotCoefficients {
  const int8_t* words;     // 4 bytes per word
  const int8_t* residual;  // nullptr: none
  const float* scale;
  int heads, quads, n_groups;
};

// Quantizes x[0, n) (n <= quads * 4; rows past n are 0) of one head and group to int8 words at
// words + k * word_stride (4 bytes each, k < quads), with the residual words where asked; returns the scale.
float QuantizeCoefficientsSdot(const float* x, int n, int quads, int8_t* words, int8_t* residual, size_t word_stride) {
  float max_abs = 0;
  for (int i = 0; i < n; ++i) max_abs = std::max(max_abs, std::fabs(x[i]));
  const float inverse = max_abs > 0 ? 127.0f / max_abs : 0.0f;
  for (int k = 0; k < quads; ++k) {
    float quad[4] = {0, 0, 0, 0};
    for (int r = 0; r < 4 && 4 * k + r < n; ++r) quad[r] = x[4 * k + r];
    const float32x4_t scaled = vmulq_n_f32(vld1q_f32(quad), inverse);
    const int32x4_t q = vcvtnq_s32_f32(scaled);  // round to nearest, ties to even
    const int8x8_t q8 = vqmovn_s16(vcombine_s16(vqmovn_s32(q), vdup_n_s16(0)));
    vst1_lane_s32(reinterpret_cast<int32_t*>(words + 4 * k * word_stride), vreinterpret_s32_s8(q8), 0);
    if (residual != nullptr) {
      const float32x4_t error = vmulq_n_f32(vsubq_f32(scaled, vcvtq_f32_s32(q)), 254.0f);
      const int8x8_t r8 = vqmovn_s16(vcombine_s16(vqmovn_s32(vcvtnq_s32_f32(error)), vdup_n_s16(0)));
      vst1_lane_s32(reinterpret_cast<int32_t*>(residual + 4 * k * word_stride), vreinterpret_s32_s8(r8), 0);
    }
  }
  return max_abs / 127.0f;
}

// acc[i][h] += the 4 codes of each lane of codes[i] times head h's coefficient word (lane h of `coefs`).
template <int H, int kFirst, int kCount, size_t... kHeads>
HWY_INLINE void DotHeads(int32x4_t (&acc)[4][4], const uint8x16_t (&codes)[4], int8x16_t coefs,
                         std::index_sequence<kHeads...>) {
  for (int i = kFirst; i < kFirst + kCount; ++i) {
    const int8x16_t c = vreinterpretq_s8_u8(codes[i]);
    ((acc[i][kHeads] = vdotq_laneq_s32(acc[i][kHeads], c, coefs, static_cast<int>(kHeads))), ...);
  }
}

// out[h][e] (+)= scale[h][g(e)] * sum_{r < n_rows} coef[h][g(e)][r] * code(row r, element e) for the H heads
// first_head.. (a multiple of 4), elements e of one code plane (kPlane) in 16-byte chunks, lane vectors
// [kFirst, kFirst + kCount) of each chunk (16 accumulators at most: all 4 without residual, 2 with). Reads whole
// groups of 4 rows (their rows past n_rows must be readable; their coefficients are 0).
template <int H, int kBits, int kPlane, int kFirst, int kCount, bool kResidual>
HWY_NOINLINE void AccumulatePlaneSdot(const CodeRows& rows, const SdotCoefficients& c, int first_head, float* out,
                                      size_t out_stride) {
  const int plane_bytes = rows.row_len * kBits / 8;
  const size_t stride = rows.row_bytes;
  const int quads = (rows.n_rows + 3) / 4;
  const uint8x16_t mask = vdupq_n_u8(static_cast<uint8_t>((1 << kBits) - 1));
  for (int b = 0; b < plane_bytes; b += 16) {
    const int g = (b + kPlane * plane_bytes) / rows.group;
    const int8_t* words = c.words + (static_cast<size_t>(g) * c.quads * c.heads + first_head) * 4;
    const int8_t* residual = kResidual ? c.residual + (static_cast<size_t>(g) * c.quads * c.heads + first_head) * 4 : nullptr;
    int32x4_t acc[4][4], acc_residual[4][4];
    for (int i = 0; i < 4; ++i) {
      for (int h = 0; h < 4; ++h) acc[i][h] = acc_residual[i][h] = vdupq_n_s32(0);
    }
    const uint8_t* row = rows.data + b;
    for (int quad = 0; quad < quads; ++quad, row += 4 * stride) {
      const uint8x16x2_t pairs01 = vzipq_u8(vld1q_u8(row), vld1q_u8(row + stride));
      const uint8x16x2_t pairs23 = vzipq_u8(vld1q_u8(row + 2 * stride), vld1q_u8(row + 3 * stride));
      const uint16x8x2_t low = vzipq_u16(vreinterpretq_u16_u8(pairs01.val[0]), vreinterpretq_u16_u8(pairs23.val[0]));
      const uint16x8x2_t high = vzipq_u16(vreinterpretq_u16_u8(pairs01.val[1]), vreinterpretq_u16_u8(pairs23.val[1]));
      const uint8x16_t lanes[4] = {vreinterpretq_u8_u16(low.val[0]), vreinterpretq_u8_u16(low.val[1]),
                                   vreinterpretq_u8_u16(high.val[0]), vreinterpretq_u8_u16(high.val[1])};
      uint8x16_t codes[4];
      for (int i = kFirst; i < kFirst + kCount; ++i) {
        if constexpr (kPlane == 0) {
          codes[i] = vandq_u8(lanes[i], mask);
        } else {
          codes[i] = vandq_u8(vshrq_n_u8(lanes[i], kPlane * kBits), mask);
        }
      }
      const size_t at = static_cast<size_t>(quad) * c.heads * 4;
      DotHeads<H, kFirst, kCount>(acc, codes, vld1q_s8(words + at), std::make_index_sequence<H>());
      if constexpr (kResidual) DotHeads<H, kFirst, kCount>(acc_residual, codes, vld1q_s8(residual + at), std::make_index_sequence<H>());
    }
    for (int h = 0; h < H; ++h) {
      const int head = first_head + h;
      const float sc = c.scale[head * c.n_groups + g];
      for (int i = kFirst; i < kFirst + kCount; ++i) {
        float* o = out + h * out_stride + b + 4 * i + kPlane * plane_bytes;
        float32x4_t sum = vfmaq_n_f32(vld1q_f32(o), vcvtq_f32_s32(acc[i][h]), sc);
        if constexpr (kResidual) sum = vfmaq_n_f32(sum, vcvtq_f32_s32(acc_residual[i][h]), sc / 254.0f);
        vst1q_f32(o, sum);
      }
    }
  }
}

// Every plane and lane-vector range of one head block (H heads), each plane a pass over the rows.
template <int H, int kBits, size_t... kPlanes>
void AccumulateBlockSdot(const CodeRows& rows, const SdotCoefficients& c, int first_head, float* out, size_t out_stride,
                         std::index_sequence<kPlanes...>) {
  constexpr bool kResidual = kBits == 4;
  if constexpr (kResidual) {
    ((AccumulatePlaneSdot<H, kBits, static_cast<int>(kPlanes), 0, 2, true>(rows, c, first_head, out, out_stride),
      AccumulatePlaneSdot<H, kBits, static_cast<int>(kPlanes), 2, 2, true>(rows, c, first_head, out, out_stride)),
     ...);
  } else {
    (AccumulatePlaneSdot<H, kBits, static_cast<int>(kPlanes), 0, 4, false>(rows, c, first_head, out, out_stride),
     ...);
  }
}

// Quantizes the f32 coefficients of `heads` heads and accumulates their code rows, in blocks of 4 heads
// (the general fused decode's integer step on NEON + dotprod; 4-bit rows with residual terms).
template <int kBits>
void AccumulateSdot(int heads, const CodeRows& rows, const RowCoefficients& coefs, float* out, size_t out_stride,
                    FusedScratch& s) {
  const int n_groups = rows.row_len / rows.group;
  const int quads = (rows.n_rows + 3) / 4;
  const int padded_heads = (heads + 3) / 4 * 4;
  const size_t n_words = static_cast<size_t>(n_groups) * quads * padded_heads;
  s.coef_words.assign(2 * n_words, 0);  // [2: codes, residual][n_groups][quads][padded_heads] words
  s.coef_scale.assign(static_cast<size_t>(padded_heads) * n_groups, 0.0f);
  auto* words = reinterpret_cast<int8_t*>(s.coef_words.data());
  for (int h = 0; h < heads; ++h) {
    for (int g = 0; g < n_groups; ++g) {
      const size_t at = (static_cast<size_t>(g) * quads * padded_heads + h) * 4;
      s.coef_scale[h * n_groups + g] = QuantizeCoefficientsSdot(
          coefs.coef + h * coefs.head_stride + g * coefs.group_stride, rows.n_rows, quads, words + at,
          kBits == 4 ? words + 4 * n_words + at : nullptr, padded_heads);
    }
  }
  const SdotCoefficients c{words, words + 4 * n_words, s.coef_scale.data(), padded_heads, quads, n_groups};
  constexpr auto kPlanes = std::make_index_sequence<8 / kBits>();
  for (int h = 0; h < heads; h += 4, out += 4 * out_stride) {
    switch (std::min(4, heads - h)) {
      case 4: AccumulateBlockSdot<4, kBits>(rows, c, h, out, out_stride, kPlanes); break;
      case 3: AccumulateBlockSdot<3, kBits>(rows, c, h, out, out_stride, kPlanes); break;
      case 2: AccumulateBlockSdot<2, kBits>(rows, c, h, out, out_stride, kPlanes); break;
      default: AccumulateBlockSdot<1, kBits>(rows, c, h, out, out_stride, kPlanes); break;
    }
  }
}
