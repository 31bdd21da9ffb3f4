// SIMD (Highway, runtime-dispatched) K-quant conversions: dequantize Q4_K /
// Q5_K / Q6_K rows to f32 and quantize f32 activations to Q8_K. Portable
// Highway code for every target; the references in ref/kquant_reference.cpp
// define the formats (the bit layouts are drawn in kquant_blocks.h and there).
//
// quantize_q8_K is bit-exact with the reference (same float products, same
// round-half-to-even); the dequantizers equal it up to fused multiply-add.
#include <cassert>
#include <cmath>
#include <cstring>

#include "kernels/cpu/kquant_blocks.h"
#include "kernels/kquant_ops.h"
#include "kvtier/f16.h"

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/cpu/kquant_convert.cpp"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/highway.h>

HWY_BEFORE_NAMESPACE();
namespace kvtier::kernels::kquant::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// At most 16 float lanes, so a lane count always divides the 16- and
// 32-element sub-blocks (also on scalable SVE/RVV vectors).
using DF = hn::CappedTag<float, 16>;

// dst[0..32) = sub_d * q - sub_m for the 4-bit quants of one Q4_K/Q5_K
// sub-block: the low (high_nibble=false) or high nibbles of qs[0..32), plus
// bit `high_bit` of qh[0..32) as bit 4 when qh is given (Q5_K).
HWY_INLINE void DecodeSubBlock45(const uint8_t* qs, bool high_nibble, const uint8_t* qh, int high_bit,
                                 float sub_d, float sub_m, float* dst) {
  const DF df;
  const hn::RebindToSigned<DF> di;
  const hn::RebindToUnsigned<DF> du;
  const hn::Rebind<uint8_t, DF> du8;
  const size_t lanes = hn::Lanes(df);
  const auto scale = hn::Set(df, sub_d);
  const auto neg_min = hn::Set(df, -sub_m);
  const auto low4 = hn::Set(du, 0x0Fu);
  for (size_t o = 0; o < 32; o += lanes) {
    auto bytes = hn::PromoteTo(du, hn::LoadU(du8, qs + o));
    auto q = high_nibble ? hn::ShiftRight<4>(bytes) : hn::And(bytes, low4);
    if (qh != nullptr) {
      const auto hbits = hn::PromoteTo(du, hn::LoadU(du8, qh + o));
      q = hn::Or(q, hn::ShiftLeft<4>(hn::And(hn::ShiftRightSame(hbits, high_bit), hn::Set(du, 1u))));
    }
    const auto qf = hn::ConvertTo(df, hn::BitCast(di, q));
    hn::StoreU(hn::MulAdd(scale, qf, neg_min), df, dst + o);
  }
}

void DequantizeQ4K(const void* src, float* dst, int64_t n) {
  const auto* blocks = static_cast<const BlockQ4K*>(src);  // [n / 256]
  for (int64_t i = 0; i < n / kSuperBlock; ++i) {
    const BlockQ4K& b = blocks[i];
    const float d = f16_to_f32(b.d), dmin = f16_to_f32(b.dmin);
    const ScalesMins sm = unpack_scales_mins(b.scales);
    float* out = dst + i * kSuperBlock;  // [256]
    for (int j = 0; j < 8; ++j) {
      DecodeSubBlock45(b.qs + 32 * (j / 2), j % 2 == 1, nullptr, 0, d * static_cast<float>(sm.scale[j]),
                       dmin * static_cast<float>(sm.min[j]), out + 32 * j);
    }
  }
}

void DequantizeQ5K(const void* src, float* dst, int64_t n) {
  const auto* blocks = static_cast<const BlockQ5K*>(src);  // [n / 256]
  for (int64_t i = 0; i < n / kSuperBlock; ++i) {
    const BlockQ5K& b = blocks[i];
    const float d = f16_to_f32(b.d), dmin = f16_to_f32(b.dmin);
    const ScalesMins sm = unpack_scales_mins(b.scales);
    float* out = dst + i * kSuperBlock;  // [256]
    for (int j = 0; j < 8; ++j) {
      DecodeSubBlock45(b.qs + 32 * (j / 2), j % 2 == 1, b.qh, j, d * static_cast<float>(sm.scale[j]),
                       dmin * static_cast<float>(sm.min[j]), out + 32 * j);
    }
  }
}

void DequantizeQ6K(const void* src, float* dst, int64_t n) {
  const DF df;
  const hn::RebindToSigned<DF> di;
  const hn::Rebind<uint8_t, DF> du8;
  const hn::RebindToUnsigned<DF> du;
  const size_t lanes = hn::Lanes(df);
  const auto low4 = hn::Set(du, 0x0Fu);
  const auto low2 = hn::Set(du, 3u);
  const auto offset = hn::Set(di, 32);
  const auto* blocks = static_cast<const BlockQ6K*>(src);  // [n / 256]
  for (int64_t i = 0; i < n / kSuperBlock; ++i) {
    const BlockQ6K& b = blocks[i];
    const float d = f16_to_f32(b.d);
    for (int half = 0; half < 2; ++half) {
      const uint8_t* ql = b.ql + 64 * half;  // [64]
      const uint8_t* qh = b.qh + 32 * half;  // [32]
      float* out = dst + i * kSuperBlock + 128 * half;  // [128]
      for (int quarter = 0; quarter < 4; ++quarter) {
        const uint8_t* low_src = ql + 32 * (quarter & 1);
        for (size_t o = 0; o < 32; o += lanes) {
          const auto bytes = hn::PromoteTo(du, hn::LoadU(du8, low_src + o));
          const auto low = quarter < 2 ? hn::And(bytes, low4) : hn::ShiftRight<4>(bytes);
          const auto high = hn::And(hn::ShiftRightSame(hn::PromoteTo(du, hn::LoadU(du8, qh + o)), 2 * quarter), low2);
          const auto q = hn::Sub(hn::BitCast(di, hn::Or(low, hn::ShiftLeft<4>(high))), offset);
          const int e = 32 * quarter + static_cast<int>(o);  // element within the half
          const float sub_d = d * static_cast<float>(b.scales[8 * half + e / 16]);
          // A vector of <= 16 lanes starting at a multiple of its width stays in one 16-element sub-block.
          hn::StoreU(hn::Mul(hn::Set(df, sub_d), hn::ConvertTo(df, q)), df, out + e);
        }
      }
    }
  }
}

// Q8_K: see quantize_q8_K_reference. Vectorised max search, scaling,
// rounding (NearestInt rounds half to even, like GGML's nearest_int) and
// group sums; bit-exact with the reference.
void QuantizeQ8K(const float* x, void* dst, int64_t n) {
  const DF df;
  const hn::RebindToSigned<DF> di;
  const hn::Rebind<int8_t, DF> di8;
  const size_t lanes = hn::Lanes(df);
  auto* blocks = static_cast<BlockQ8K*>(dst);  // [n / 256]
  for (int64_t i = 0; i < n / kSuperBlock; ++i) {
    const float* xb = x + i * kSuperBlock;  // [256]
    BlockQ8K& b = blocks[i];
    auto max_abs_v = hn::Zero(df);
    for (size_t j = 0; j < kSuperBlock; j += lanes) max_abs_v = hn::Max(max_abs_v, hn::Abs(hn::LoadU(df, xb + j)));
    const float max_abs = hn::GetLane(hn::MaxOfLanes(df, max_abs_v));
    // The first element of that magnitude carries the sign (ties: first wins).
    float max_signed = 0;
    bool found = false;
    for (size_t j = 0; j < kSuperBlock && !found; j += lanes) {
      const auto hit = hn::Eq(hn::Abs(hn::LoadU(df, xb + j)), hn::Set(df, max_abs));
      if (!hn::AllFalse(df, hit)) {
        max_signed = xb[j + static_cast<size_t>(hn::FindFirstTrue(df, hit))];
        found = true;
      }
    }
    if (!found || !(max_abs > 0)) {  // all zeros (or NaNs): the reference's rule, scalar
      quantize_q8_K_reference(xb, &b, kSuperBlock);
      continue;
    }
    const float iscale = -127.0f / max_signed;
    const auto vscale = hn::Set(df, iscale);
    const auto q_max = hn::Set(di, 127);
    for (size_t g = 0; g < kSuperBlock / 16; ++g) {
      auto group_sum = hn::Zero(di);
      for (size_t o = 0; o < 16; o += lanes) {
        const size_t j = 16 * g + o;
        // NaN elements (or Inf ones under an infinite maximum, scaled by 0) become 0, as in the reference.
        auto scaled = hn::Mul(hn::LoadU(df, xb + j), vscale);
        scaled = hn::IfThenElseZero(hn::Eq(scaled, scaled), scaled);
        const auto q = hn::Min(hn::NearestInt(scaled), q_max);
        group_sum = hn::Add(group_sum, q);
        hn::StoreU(hn::DemoteTo(di8, q), di8, b.qs + j);
      }
      b.bsums[g] = static_cast<int16_t>(hn::GetLane(hn::SumOfLanes(di, group_sum)));
    }
    b.d = 1.0f / iscale;
  }
}

}  // namespace kvtier::kernels::kquant::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace kvtier::kernels::kquant {
HWY_EXPORT(DequantizeQ4K);
HWY_EXPORT(DequantizeQ5K);
HWY_EXPORT(DequantizeQ6K);
HWY_EXPORT(QuantizeQ8K);

void dequantize_q4_K(const void* src, float* dst, int64_t n) {
  assert(n % kSuperBlock == 0);
  HWY_DYNAMIC_DISPATCH(DequantizeQ4K)(src, dst, n);
}
void dequantize_q5_K(const void* src, float* dst, int64_t n) {
  assert(n % kSuperBlock == 0);
  HWY_DYNAMIC_DISPATCH(DequantizeQ5K)(src, dst, n);
}
void dequantize_q6_K(const void* src, float* dst, int64_t n) {
  assert(n % kSuperBlock == 0);
  HWY_DYNAMIC_DISPATCH(DequantizeQ6K)(src, dst, n);
}
void quantize_q8_K(const float* x, void* dst, int64_t n) {
  assert(n % kSuperBlock == 0);
  HWY_DYNAMIC_DISPATCH(QuantizeQ8K)(x, dst, n);
}
}  // namespace kvtier::kernels::kquant
#endif
