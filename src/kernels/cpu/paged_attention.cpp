// Highway SIMD attention over paged, mixed-precision KV pages (see kernels/paged_attention.h).
//
// Per work item (KV head h, query block, page range): for each page, decode head h's keys and values into
// f32 tiles [rows, head_dim] (SIMD unpack of the strided bit planes, then code * scale + min), then for
// every query token of the block and every query head of h's GQA group fold the tile into an online
// softmax state {acc[head_dim], running max m, running sum l}. States of the page ranges of one
// (head, block) are merged at the end: M = max m_c, out = sum acc_c e^(m_c - M) / sum l_c e^(m_c - M).
#include <algorithm>
#include <atomic>
#include <cassert>
#include <cmath>
#include <cstring>
#include <functional>
#include <utility>
#include <vector>

#include "kernels/paged_attention.h"
#include "kv/codec.h"
#include "kvtier/f16.h"

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/cpu/paged_attention.cpp"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/highway.h>
#include <hwy/contrib/math/math-inl.h>
#include <hwy/cache_control.h>
#if defined(__aarch64__) && defined(__linux__)
#include <asm/hwcap.h>
#include <sys/auxv.h>
#endif

#ifndef KVTIER_PAGED_ATTENTION_SHARED
#define KVTIER_PAGED_ATTENTION_SHARED
namespace kvtier::kernels::paged_detail {

// Decode splits each KV head's pages into chunks so that every thread gets this many items.
constexpr int kItemsPerThread = 4;

// One call's work: items are (page chunk, kv head, query block), handed out in that (chunk-major) order, so
// the threads read the same pages' head sections at about the same time and end on the last chunk together
// (16K model decode, 7 alternating pairs against the head-major order: medians 594 vs 585 tok/s, within this
// host's noise; smaller chunks of falling size cut the pool waits but were slower: 5 of 5 pairs). States are
// stored (kv head, query block, chunk)-major, each (head, block)'s chunks together for the merge.
struct Work {
  const kv::PageRef* pages = nullptr;
  int n_pages = 0;
  int n_kv_heads = 0, head_dim = 0, n_heads = 0, group = 0;
  int pos = 0, n_q = 0;
  const float* q = nullptr;  // [n_q, n_heads, head_dim], already rotated if the keys are
  float scale = 1;
  int window = 0;      // > 0: query at p sees positions (p - window, p] (PagedKv::window)
  float softcap = 0;   // > 0: scores are soft-capped (PagedKv::softcap)
  int q_block = 1, n_qblocks = 1;
  // Page chunks of all segments in order: chunk c is pages [chunk_pages[c], chunk_pages[c + 1]); segment s
  // owns chunks [segment_chunks[s], segment_chunks[s + 1]).
  int n_chunks = 1, n_segments = 1;
  const int* chunk_pages = nullptr;     // [n_chunks + 1]
  const int* segment_chunks = nullptr;  // [n_segments + 1]
  int max_page_tokens = 0;
  size_t state_floats = 0;  // head_dim + 2: acc, m, l
  float* states = nullptr;  // [items][q_block][group][state_floats]
  int items() const { return n_kv_heads * n_qblocks * n_chunks; }
  size_t item_floats() const { return static_cast<size_t>(q_block) * group * state_floats; }
  // First page of chunk c (c = n_chunks: n_pages); a segment's chunks are equal.
  int chunk_begin(int c) const { return chunk_pages[c]; }
};

}  // namespace kvtier::kernels::paged_detail
#endif

HWY_BEFORE_NAMESPACE();
namespace kvtier::kernels::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;
using paged_detail::Work;
using DF = hn::ScalableTag<float>;

// Unpacks one bit plane of width w of an n-code row (layout: kv::unpack_code_row) into f32:
// out[i + j*s] = code, or out[i + j*s] += code * weight when accumulating (the high plane of 3-bit codes).
// d: the f32 descriptor whose lane count divides the plane's byte count s (or the scalar tail does it all).
template <class D>
HWY_INLINE void UnpackPlaneWith(D df, const uint8_t* bytes, int n, int w, float weight, bool accumulate, float* out) {
  const hn::RebindToSigned<D> di;
  const hn::RebindToUnsigned<D> du;
  const hn::Rebind<uint8_t, D> d8;
  const int per_byte = 8 / w;
  const int s = n / per_byte;
  const int lanes = static_cast<int>(hn::Lanes(df));
  const unsigned mask = (1u << w) - 1;
  const auto vmask = hn::Set(du, mask);
  const auto vweight = hn::Set(df, weight);
  int i = 0;
  for (; i + lanes <= s; i += lanes) {
    const auto b = hn::PromoteTo(du, hn::LoadU(d8, bytes + i));
    for (int j = 0; j < per_byte; ++j) {
      const auto code = hn::ConvertTo(df, hn::BitCast(di, hn::And(hn::ShiftRightSame(b, j * w), vmask)));
      float* o = out + i + j * s;
      if (accumulate) {
        hn::StoreU(hn::MulAdd(code, vweight, hn::LoadU(df, o)), df, o);
      } else {
        hn::StoreU(code, df, o);
      }
    }
  }
  for (; i < s; ++i) {
    for (int j = 0; j < per_byte; ++j) {
      const float code = static_cast<float>((bytes[i] >> (j * w)) & mask);
      float* o = out + i + j * s;
      *o = accumulate ? *o + code * weight : code;
    }
  }
}

// Picks the widest vector that tiles the plane: a 64-code 1-bit plane is 8 bytes, less than one AVX-512
// vector of u32 lanes, so it runs on 8-lane (or 4-lane) vectors instead of the scalar tail.
HWY_INLINE void UnpackPlane(const uint8_t* bytes, int n, int w, float weight, bool accumulate, float* out) {
  const int s = n * w / 8;
  const DF df;
  if (s % static_cast<int>(hn::Lanes(df)) == 0) return UnpackPlaneWith(df, bytes, n, w, weight, accumulate, out);
  const hn::CappedTag<float, 8> d8;
  if (s % static_cast<int>(hn::Lanes(d8)) == 0) return UnpackPlaneWith(d8, bytes, n, w, weight, accumulate, out);
  const hn::CappedTag<float, 4> d4;
  UnpackPlaneWith(d4, bytes, n, w, weight, accumulate, out);
}

// x[0..n) = x * scale + min, with scale/min broadcast (per-token group) ...
HWY_INLINE void ScaleRun(float* x, int n, float scale, float min) {
  const DF df;
  const int lanes = static_cast<int>(hn::Lanes(df));
  const auto vs = hn::Set(df, scale), vm = hn::Set(df, min);
  int d = 0;
  for (; d + lanes <= n; d += lanes) hn::StoreU(hn::MulAdd(hn::LoadU(df, x + d), vs, vm), df, x + d);
  for (; d < n; ++d) x[d] = x[d] * scale + min;
}
// ... or per element (per-channel keys).
HWY_INLINE void ScaleRunPerChannel(float* x, int n, const float* scale, const float* min) {
  const DF df;
  const int lanes = static_cast<int>(hn::Lanes(df));
  int d = 0;
  for (; d + lanes <= n; d += lanes) {
    hn::StoreU(hn::MulAdd(hn::LoadU(df, x + d), hn::LoadU(df, scale + d), hn::LoadU(df, min + d)), df, x + d);
  }
  for (; d < n; ++d) x[d] = x[d] * scale[d] + min[d];
}

HWY_INLINE void UnpackRow(const uint8_t* codes, int n, int bits, float* out) {
  if (bits == 3) {
    UnpackPlane(codes, n, 2, 1.0f, false, out);
    UnpackPlane(codes + n / 4, n, 1, 4.0f, true, out);
  } else {
    UnpackPlane(codes, n, bits, 1.0f, false, out);
  }
}

// The next page's KV-head section, which a page step prefetches while it works: pages sit in separate slab slots,
// so the hardware prefetchers cannot guess the next one, and its first loads would otherwise wait on memory.
struct NextPageHead {
  const uint8_t* begin = nullptr;
  size_t bytes = 0;
};

// Prefetches part `part` of `parts` of `next`'s cache lines. The page steps spread the next page over their
// stages (the fused steps: a quarter at the start of each of their 4; the f32 tile path: a share per key row
// decoded) instead of asking for all 40 (2-bit) to 256 (f16) lines at once: a burst that large fills the core's
// miss buffers, and the step's own first loads then queue behind it (perf put 76% of the caller's own samples on
// the burst's loop). Spread out, the integer step at 64K tokens, 2 threads, ran q4 5.2 -> 3.3 ms and q2 2.75 ->
// 2.1 ms per step (docs/benchmarks.md, "The page step's prefetch and coefficient words").
HWY_INLINE void PrefetchPart(const NextPageHead& next, int part, int parts) {
  if (next.begin == nullptr) return;
  const size_t lines = (next.bytes + 63) / 64;
  const size_t end = lines * static_cast<size_t>(part + 1) / static_cast<size_t>(parts);
  for (size_t l = lines * static_cast<size_t>(part) / static_cast<size_t>(parts); l < end; ++l) {
    hwy::Prefetch(next.begin + 64 * l);
  }
}

void DecodeF16(const uint8_t* section, size_t n, float* out) {
  const DF df;
  const hn::Rebind<hwy::float16_t, DF> dh;
  const size_t lanes = hn::Lanes(df);
  const auto* h = reinterpret_cast<const hwy::float16_t*>(section);
  size_t i = 0;
  for (; i + lanes <= n; i += lanes) hn::StoreU(hn::PromoteTo(df, hn::LoadU(dh, h + i)), df, out + i);
  const auto* bits = reinterpret_cast<const uint16_t*>(section);
  for (; i < n; ++i) out[i] = f16_to_f32(bits[i]);
}

// Fused unpack + dequantize of one packed row of n codes (layout: kv::unpack_code_row). A vector of
// codes [e, e + lanes) of a plane with s bytes and width w is bits [j*w, j*w + w) of bytes [e % s, ...)
// with j = e / s; both are tracked incrementally (no division) as e grows. 3-bit rows combine the 2-bit
// and the 1-bit plane in the integer domain. It needs lanes | s for every plane of the row (and lanes |
// group for per-group parameters); FusedLanes picks the widest vector that does, 0 if none.
int FusedLanes(int n, int bits, int group) {
  const int full = static_cast<int>(hn::Lanes(DF()));
  const int low_plane = bits == 3 ? n / 4 : n * bits / 8;
  const int high_plane = bits == 3 ? n / 8 : low_plane;
  for (int lanes : {full, 8, 4}) {
    if (lanes > full) continue;
    if (low_plane % lanes == 0 && high_plane % lanes == 0 && group % lanes == 0) return lanes;
  }
  return 0;
}

// Calls store(e, codes as f32) for each vector of codes of a row, in element order.
template <class D, class Store>
HWY_INLINE void ForEachCodeVector(D df, const uint8_t* bytes, int n, int bits, const Store& store) {
  const hn::RebindToSigned<D> di;
  const hn::RebindToUnsigned<D> du;
  const hn::Rebind<uint8_t, D> d8;
  const int lanes = static_cast<int>(hn::Lanes(df));
  const int low_width = bits == 3 ? 2 : bits;
  const int low_bytes = n * low_width / 8;
  const auto low_mask = hn::Set(du, (1u << low_width) - 1);
  const auto one = hn::Set(du, 1u);
  int low_offset = 0, low_shift = 0, high_offset = 0, high_shift = 0;
  const uint8_t* high = bytes + low_bytes;  // 1-bit plane of 3-bit rows
  const int high_bytes = n / 8;
  for (int e = 0; e < n; e += lanes) {
    auto code = hn::And(hn::ShiftRightSame(hn::PromoteTo(du, hn::LoadU(d8, bytes + low_offset)), low_shift), low_mask);
    if ((low_offset += lanes) == low_bytes) low_offset = 0, low_shift += low_width;
    if (bits == 3) {
      const auto hi = hn::And(hn::ShiftRightSame(hn::PromoteTo(du, hn::LoadU(d8, high + high_offset)), high_shift), one);
      code = hn::Or(code, hn::ShiftLeft<2>(hi));
      if ((high_offset += lanes) == high_bytes) high_offset = 0, ++high_shift;
    }
    store(e, hn::ConvertTo(df, hn::BitCast(di, code)));
  }
}

// Scale and min constant over runs of `group` elements: pairs = [n / group][scale, min].
template <class D>
HWY_NOINLINE void DecodeRowGroups(D df, const uint8_t* bytes, int n, int bits, const float* pairs, int group, float* out) {
  int group_end = group;
  auto scale = hn::Set(df, pairs[0]);
  auto min = hn::Set(df, pairs[1]);
  ForEachCodeVector(df, bytes, n, bits, [&](int e, auto code) {
    if (e == group_end) {
      pairs += 2;
      group_end += group;
      scale = hn::Set(df, pairs[0]);
      min = hn::Set(df, pairs[1]);
    }
    hn::StoreU(hn::MulAdd(code, scale, min), df, out + e);
  });
}

// Scale and min per element: scale, min: [n].
template <class D>
HWY_NOINLINE void DecodeRowPerElement(D df, const uint8_t* bytes, int n, int bits, const float* scale, const float* min,
                                      float* out) {
  ForEachCodeVector(df, bytes, n, bits, [&](int e, auto code) {
    hn::StoreU(hn::MulAdd(code, hn::LoadU(df, scale + e), hn::LoadU(df, min + e)), df, out + e);
  });
}

// Dispatches on the vector width FusedLanes chose (lanes > 0).
void DecodeRowGroupsAt(int lanes, const uint8_t* bytes, int n, int bits, const float* pairs, int group, float* out) {
  if (lanes == static_cast<int>(hn::Lanes(DF()))) return DecodeRowGroups(DF(), bytes, n, bits, pairs, group, out);
  if (lanes == 8) return DecodeRowGroups(hn::CappedTag<float, 8>(), bytes, n, bits, pairs, group, out);
  DecodeRowGroups(hn::CappedTag<float, 4>(), bytes, n, bits, pairs, group, out);
}
void DecodeRowPerElementAt(int lanes, const uint8_t* bytes, int n, int bits, const float* scale, const float* min,
                           float* out) {
  if (lanes == static_cast<int>(hn::Lanes(DF()))) return DecodeRowPerElement(DF(), bytes, n, bits, scale, min, out);
  if (lanes == 8) return DecodeRowPerElement(hn::CappedTag<float, 8>(), bytes, n, bits, scale, min, out);
  DecodeRowPerElement(hn::CappedTag<float, 4>(), bytes, n, bits, scale, min, out);
}

// Per-thread scratch for rotated keys: scale and min gathered as [n_groups][tokens] f32.
struct DecodeScratch {
  std::vector<float> scale, min;   // key parameters as f32
  std::vector<float> value_params;  // [rows][n_groups][scale, min]
};

// Keys of one head, transposed: kt[d * kstride + t] for d < head_dim, t < rows (kstride >= format.tokens).
// next: prefetched a share per key row (or none).
void DecodeKeysTransposed(const kv::PageFormat& f, const uint8_t* page, int head, int rows, float* kt, size_t kstride,
                          DecodeScratch& scratch, const NextPageHead& next) {
  const uint8_t* section = page + f.key_section(head);
  const int hd = f.head_dim;
  if (f.key_bits == 16) {
    for (int d = 0; d < hd; ++d) {
      PrefetchPart(next, d, hd);
      DecodeF16(section + static_cast<size_t>(d) * f.tokens * 2, rows, kt + d * kstride);
    }
    return;
  }
  const int bits = f.key_bits;
  const uint8_t* codes = section + f.key_codes_offset;
  const int fused = FusedLanes(f.tokens, bits, f.tokens);
  if (f.key_mode == kv::KeyMode::PerChannel) {
    // params: [head_dim] (scale, min) halves -> f32 pairs in one vector pass.
    if (scratch.scale.size() < 2 * static_cast<size_t>(hd)) scratch.scale.resize(2 * static_cast<size_t>(hd));
    DecodeF16(section, 2 * static_cast<size_t>(hd), scratch.scale.data());
    for (int d = 0; d < hd; ++d) {
      PrefetchPart(next, d, hd);
      float* row = kt + d * kstride;
      const float scale = scratch.scale[2 * d], min = scratch.scale[2 * d + 1];
      const uint8_t* packed = codes + d * f.key_row_code_bytes;
      if (fused) {
        DecodeRowGroupsAt(fused, packed, f.tokens, bits, scratch.scale.data() + 2 * d, f.tokens, row);
      } else {
        UnpackRow(packed, f.tokens, bits, row);
        ScaleRun(row, rows, scale, min);
      }
    }
    return;
  }
  // Rotated per-token groups: scale and min vary along the row; gather them as [n_groups][tokens].
  const size_t pairs = static_cast<size_t>(f.n_groups) * f.tokens;
  if (scratch.scale.size() < 2 * pairs) scratch.scale.resize(2 * pairs);
  if (scratch.min.size() < 2 * pairs) scratch.min.resize(2 * pairs);
  float* raw = scratch.scale.data() + pairs * 0;  // [tokens][n_groups][2] as decoded
  float* by_group = scratch.min.data();           // scale [n_groups][tokens], then min [n_groups][tokens]
  DecodeF16(section, 2 * static_cast<size_t>(rows) * f.n_groups, raw);
  for (int t = 0; t < rows; ++t) {
    for (int g = 0; g < f.n_groups; ++g) {
      by_group[static_cast<size_t>(g) * f.tokens + t] = raw[(static_cast<size_t>(t) * f.n_groups + g) * 2];
      by_group[pairs + static_cast<size_t>(g) * f.tokens + t] = raw[(static_cast<size_t>(t) * f.n_groups + g) * 2 + 1];
    }
  }
  for (int t = rows; t < f.tokens; ++t) {  // rows past the tail: finite values, never read as scores
    for (int g = 0; g < f.n_groups; ++g) {
      by_group[static_cast<size_t>(g) * f.tokens + t] = 0.0f;
      by_group[pairs + static_cast<size_t>(g) * f.tokens + t] = 0.0f;
    }
  }
  for (int d = 0; d < hd; ++d) {
    PrefetchPart(next, d, hd);
    float* row = kt + d * kstride;
    const float* scale = by_group + static_cast<size_t>(d / f.group) * f.tokens;
    const float* min = scale + pairs;
    const uint8_t* packed = codes + d * f.key_row_code_bytes;
    if (fused) {
      DecodeRowPerElementAt(fused, packed, f.tokens, bits, scale, min, row);
    } else {
      UnpackRow(packed, f.tokens, bits, row);
      ScaleRunPerChannel(row, rows, scale, min);
    }
  }
}

// Values of one head, token-major: v[t * head_dim + d] for t < rows.
void DecodeValues(const kv::PageFormat& f, const uint8_t* page, int head, int rows, float* v, DecodeScratch& scratch) {
  const uint8_t* section = page + f.value_section(head);
  const int hd = f.head_dim;
  if (f.value_bits == 16) {
    DecodeF16(section, static_cast<size_t>(rows) * hd, v);
    return;
  }
  const int bits = f.value_bits;
  const size_t n_params = 2 * static_cast<size_t>(rows) * f.n_groups;
  if (scratch.value_params.size() < n_params) scratch.value_params.resize(n_params);
  float* params = scratch.value_params.data();  // [rows][n_groups][scale, min]
  DecodeF16(section, n_params, params);
  const int fused = FusedLanes(hd, bits, f.group);
  for (int t = 0; t < rows; ++t) {
    float* o = v + static_cast<size_t>(t) * hd;
    const float* p = params + static_cast<size_t>(t) * f.n_groups * 2;
    const uint8_t* packed = section + f.value_codes_offset + t * f.row_code_bytes;
    if (fused) {
      DecodeRowGroupsAt(fused, packed, hd, bits, p, f.group, o);
      continue;
    }
    UnpackRow(packed, hd, bits, o);
    for (int g = 0; g < f.n_groups; ++g) ScaleRun(o + g * f.group, f.group, p[2 * g], p[2 * g + 1]);
  }
}

// Row stride of a transposed key tile: whole vectors, so that Scores never reads past a row.
size_t KeyStride(int max_tokens) {
  const size_t lanes = hn::Lanes(DF());
  return (static_cast<size_t>(max_tokens) + lanes - 1) / lanes * lanes;
}

// The test entry: k, v token-major [n_tokens, head_dim].
void DecodePageHeadSimd(const kv::PageFormat& f, const uint8_t* page, int head, int n_tokens, float* k, float* v) {
  const size_t kstride = KeyStride(f.tokens);
  std::vector<float> kt(kstride * f.head_dim);  // [head_dim][kstride]
  DecodeScratch scratch;
  DecodeKeysTransposed(f, page, head, n_tokens, kt.data(), kstride, scratch, NextPageHead{});
  for (int t = 0; t < n_tokens; ++t)
    for (int d = 0; d < f.head_dim; ++d) k[t * f.head_dim + d] = kt[d * kstride + t];
  DecodeValues(f, page, head, n_tokens, v, scratch);
}

// scores[t] = scale * q . k[t] for a vector of tokens at a time (no horizontal sums): kt is transposed.
// Four (or two) token vectors per pass give independent FMA chains. Writes whole vectors up to
// KeyStride(rows); entries past rows are meaningless.
void Scores(const float* q, const float* kt, size_t kstride, int hd, int rows, float scale, float* scores) {
  const DF df;
  const size_t lanes = hn::Lanes(df);
  const auto vscale = hn::Set(df, scale);
  size_t t = 0;
  for (; t + 3 * lanes < static_cast<size_t>(rows); t += 4 * lanes) {
    auto acc0 = hn::Zero(df), acc1 = hn::Zero(df), acc2 = hn::Zero(df), acc3 = hn::Zero(df);
    const float* k = kt + t;
    for (int d = 0; d < hd; ++d, k += kstride) {
      const auto qd = hn::Set(df, q[d]);
      acc0 = hn::MulAdd(qd, hn::LoadU(df, k), acc0);
      acc1 = hn::MulAdd(qd, hn::LoadU(df, k + lanes), acc1);
      acc2 = hn::MulAdd(qd, hn::LoadU(df, k + 2 * lanes), acc2);
      acc3 = hn::MulAdd(qd, hn::LoadU(df, k + 3 * lanes), acc3);
    }
    hn::StoreU(hn::Mul(acc0, vscale), df, scores + t);
    hn::StoreU(hn::Mul(acc1, vscale), df, scores + t + lanes);
    hn::StoreU(hn::Mul(acc2, vscale), df, scores + t + 2 * lanes);
    hn::StoreU(hn::Mul(acc3, vscale), df, scores + t + 3 * lanes);
  }
  for (; t + lanes < static_cast<size_t>(rows); t += 2 * lanes) {
    auto acc0 = hn::Zero(df), acc1 = hn::Zero(df);
    const float* k = kt + t;
    for (int d = 0; d < hd; ++d, k += kstride) {
      const auto qd = hn::Set(df, q[d]);
      acc0 = hn::MulAdd(qd, hn::LoadU(df, k), acc0);
      acc1 = hn::MulAdd(qd, hn::LoadU(df, k + lanes), acc1);
    }
    hn::StoreU(hn::Mul(acc0, vscale), df, scores + t);
    hn::StoreU(hn::Mul(acc1, vscale), df, scores + t + lanes);
  }
  if (t < static_cast<size_t>(rows)) {
    auto acc = hn::Zero(df);
    for (int d = 0; d < hd; ++d) acc = hn::MulAdd(hn::Set(df, q[d]), hn::LoadU(df, kt + d * kstride + t), acc);
    hn::StoreU(hn::Mul(acc, vscale), df, scores + t);
  }
}

// Scores of two query heads of a GQA group at once: each key vector loaded feeds both heads (half the loads
// of two Scores calls). Per head the arithmetic is Scores' exactly (same FMAs in the same order), so the
// results are bit-identical to it.   qa, qb: [hd];  sa, sb: [rows] out.
void ScoresPair(const float* qa, const float* qb, const float* kt, size_t kstride, int hd, int rows, float scale,
                float* sa, float* sb) {
  const DF df;
  const size_t lanes = hn::Lanes(df);
  const auto vscale = hn::Set(df, scale);
  size_t t = 0;
  for (; t + 3 * lanes < static_cast<size_t>(rows); t += 4 * lanes) {
    auto a0 = hn::Zero(df), a1 = hn::Zero(df), a2 = hn::Zero(df), a3 = hn::Zero(df);
    auto b0 = hn::Zero(df), b1 = hn::Zero(df), b2 = hn::Zero(df), b3 = hn::Zero(df);
    const float* k = kt + t;
    for (int d = 0; d < hd; ++d, k += kstride) {
      const auto qad = hn::Set(df, qa[d]), qbd = hn::Set(df, qb[d]);
      const auto k0 = hn::LoadU(df, k), k1 = hn::LoadU(df, k + lanes);
      const auto k2 = hn::LoadU(df, k + 2 * lanes), k3 = hn::LoadU(df, k + 3 * lanes);
      a0 = hn::MulAdd(qad, k0, a0);
      a1 = hn::MulAdd(qad, k1, a1);
      a2 = hn::MulAdd(qad, k2, a2);
      a3 = hn::MulAdd(qad, k3, a3);
      b0 = hn::MulAdd(qbd, k0, b0);
      b1 = hn::MulAdd(qbd, k1, b1);
      b2 = hn::MulAdd(qbd, k2, b2);
      b3 = hn::MulAdd(qbd, k3, b3);
    }
    hn::StoreU(hn::Mul(a0, vscale), df, sa + t);
    hn::StoreU(hn::Mul(a1, vscale), df, sa + t + lanes);
    hn::StoreU(hn::Mul(a2, vscale), df, sa + t + 2 * lanes);
    hn::StoreU(hn::Mul(a3, vscale), df, sa + t + 3 * lanes);
    hn::StoreU(hn::Mul(b0, vscale), df, sb + t);
    hn::StoreU(hn::Mul(b1, vscale), df, sb + t + lanes);
    hn::StoreU(hn::Mul(b2, vscale), df, sb + t + 2 * lanes);
    hn::StoreU(hn::Mul(b3, vscale), df, sb + t + 3 * lanes);
  }
  if (t < static_cast<size_t>(rows)) {  // the short tail: one head at a time, as Scores does it
    const int done = static_cast<int>(t);
    Scores(qa, kt + t, kstride, hd, rows - done, scale, sa + t);
    Scores(qb, kt + t, kstride, hd, rows - done, scale, sb + t);
  }
}

// e^x for x <= 0 (softmax weights: a score minus the running maximum), with fewer instructions than hn::Exp
// (which also serves positive and extreme inputs). e^x = 2^n e^r with n = round(x / ln 2) and r = x - n ln 2 in
// [-ln2/2, ln2/2] (ln 2 in two parts, so r is exact to f32 rounding); e^r by its degree-6 Taylor polynomial
// (relative error < 2.3e-7 over [-87, 0]). Below e^-87 (2^-126, the smallest normal f32) the result stays 2^-126.
template <class D, class V>
HWY_INLINE V ExpNonPositive(D d, V x) {
  const hn::RebindToSigned<D> di;
  x = hn::Max(hn::Set(d, -87.33654475f), x);  // -126 ln 2; also maps -inf (masked scores) to a weight ~0
  const auto n = hn::Round(hn::Mul(x, hn::Set(d, 1.44269504088896341f)));
  auto r = hn::MulAdd(n, hn::Set(d, -0.693145751953125f), x);  // ln 2 = 0.693145751953125 + 1.4286068e-6
  r = hn::MulAdd(n, hn::Set(d, -1.428606765330187045e-6f), r);
  auto poly = hn::Set(d, 1.0f / 720);
  poly = hn::MulAdd(poly, r, hn::Set(d, 1.0f / 120));
  poly = hn::MulAdd(poly, r, hn::Set(d, 1.0f / 24));
  poly = hn::MulAdd(poly, r, hn::Set(d, 1.0f / 6));
  poly = hn::MulAdd(poly, r, hn::Set(d, 0.5f));
  poly = hn::MulAdd(poly, r, hn::Set(d, 1.0f));
  poly = hn::MulAdd(poly, r, hn::Set(d, 1.0f));
  // A NaN score (from NaN keys or queries) keeps n = 0 (poly is NaN, so is the result): converting NaN is undefined.
  const auto n_defined = hn::IfThenElseZero(hn::Eq(n, n), n);
  return hn::BitCast(d, hn::Add(hn::BitCast(di, poly), hn::ShiftLeft<23>(hn::ConvertTo(di, n_defined))));
}

// Online-softmax step of one query head over scores[0, rows): updates m and l of the state (acc [hd], m, l),
// overwrites the scores with the weights e^(s - m_new) and returns the factor the old acc must be scaled by.
float SoftmaxUpdate(int rows, int hd, float* scores, float* state) {
  const DF df;
  const int lanes = static_cast<int>(hn::Lanes(df));
  int t = 0;
  auto vpage_max = hn::Set(df, -INFINITY);
  for (; t + lanes <= rows; t += lanes) vpage_max = hn::Max(vpage_max, hn::LoadU(df, scores + t));
  float page_max = hn::GetLane(hn::MaxOfLanes(df, vpage_max));
  for (; t < rows; ++t) page_max = std::max(page_max, scores[t]);
  float& m = state[hd];
  float& l = state[hd + 1];
  const float m_new = std::max(m, page_max);
  const float correction = m == m_new ? 1.0f : m == -INFINITY ? 0.0f : std::exp(m - m_new);  // max unchanged: most pages
  const auto vmax = hn::Set(df, m_new);
  auto vsum = hn::Zero(df);
  t = 0;
  for (; t + lanes <= rows; t += lanes) {
    const auto p = ExpNonPositive(df, hn::Sub(hn::LoadU(df, scores + t), vmax));
    vsum = hn::Add(vsum, p);
    hn::StoreU(p, df, scores + t);
  }
  float sum = hn::GetLane(hn::SumOfLanes(df, vsum));
  for (; t < rows; ++t) sum += scores[t] = std::exp(scores[t] - m_new);
  m = m_new;
  l = l * correction + sum;
  return correction;
}

// Folds scores[0, rows) and value rows [0, rows) into one query head's online-softmax state.
//   v: [rows, hd]; scores: overwritten with the softmax weights; state: acc [hd], m, l.
void FoldTile(const float* v, int rows, int hd, float* scores, float* state) {
  const DF df;
  const int lanes = static_cast<int>(hn::Lanes(df));
  const float correction = SoftmaxUpdate(rows, hd, scores, state);
  float* acc = state;
  if (correction != 1.0f) {
    const auto vc = hn::Set(df, correction);
    int d = 0;
    for (; d + lanes <= hd; d += lanes) hn::StoreU(hn::Mul(hn::LoadU(df, acc + d), vc), df, acc + d);
    for (; d < hd; ++d) acc[d] *= correction;
  }
  // acc += sum_t p[t] * v[t]: one slice of head_dim at a time, held in four registers (tokens mod 4)
  // across all rows, instead of a load-add-store of acc per token.
  int d = 0;
  for (; d + lanes <= hd; d += lanes) {
    auto a0 = hn::LoadU(df, acc + d), a1 = hn::Zero(df), a2 = hn::Zero(df), a3 = hn::Zero(df);
    const float* row = v + d;
    int r = 0;
    for (; r + 3 < rows; r += 4, row += 4 * hd) {
      a0 = hn::MulAdd(hn::Set(df, scores[r]), hn::LoadU(df, row), a0);
      a1 = hn::MulAdd(hn::Set(df, scores[r + 1]), hn::LoadU(df, row + hd), a1);
      a2 = hn::MulAdd(hn::Set(df, scores[r + 2]), hn::LoadU(df, row + 2 * hd), a2);
      a3 = hn::MulAdd(hn::Set(df, scores[r + 3]), hn::LoadU(df, row + 3 * hd), a3);
    }
    for (; r < rows; ++r, row += hd) a0 = hn::MulAdd(hn::Set(df, scores[r]), hn::LoadU(df, row), a0);
    const auto even = hn::Add(a0, a2), odd = hn::Add(a1, a3);
    hn::StoreU(hn::Add(even, odd), df, acc + d);
  }
  for (; d < hd; ++d) {
    for (int r = 0; r < rows; ++r) acc[d] += scores[r] * v[static_cast<size_t>(r) * hd + d];
  }
}

// ---- Fused decode: attention straight from the codes (one query token, per-channel keys) ----
//
// With KIVI keys k[t][d] = c[d][t] * s[d] + m[d] and per-token value groups v[t][d] = c[t][d] * s[t][g] + m[t][g]:
//   q . k[t]        = sum_d (q[d] s[d]) c[d][t]  +  sum_d q[d] m[d]
//   sum_t p[t] v[t] = sum_t (p[t] s[t][g]) c[t]  +  sum_t p[t] m[t][g]      (g: the group of the element)
// so the scales fold into one coefficient per code row and the kernel multiplies codes (converted to f32) by
// coefficients: no dequantized tile is written and read back, and every unpacked code vector feeds all query
// heads of the GQA group (up to four at once). Decode only: prefill's 32-query blocks amortise the tile.

// Rows of packed codes (layout: kv::unpack_code_row): row r at data + r * row_bytes, row_len codes each.
struct CodeRows {
  const uint8_t* data;
  size_t row_bytes;
  int n_rows, row_len, bits;
  int group;  // elements sharing one coefficient per row (row_len for keys: a channel's scale covers the row)
};
// Coefficients of head h, group g: coef + h * head_stride + g * group_stride, one float per row.
struct RowCoefficients {
  const float* coef;
  size_t head_stride, group_stride;
};

// out[h][e] += sum_{r < n_rows} coef[h][e / group][r] * code(row r, element e), for the H heads of a block and
// every element e < row_len. out: head h at out + h * out_stride, [row_len] floats. Needs lanes | each plane's
// byte count and lanes | group (FusedLanes). Two accumulator sets per head (even and odd rows) keep 2H
// independent FMA chains in flight.
template <int H, bool kThreeBit, class D>
HWY_NOINLINE void AccumulateCodeRows(D df, const CodeRows& rows, const RowCoefficients& coefs, float* out,
                                     size_t out_stride) {
  static_assert(H >= 1 && H <= 4, "a block is one to four heads");
  const hn::RebindToSigned<D> di;
  const hn::RebindToUnsigned<D> du;
  const hn::Rebind<uint8_t, D> d8;
  const int lanes = static_cast<int>(hn::Lanes(df));
  const int low_width = kThreeBit ? 2 : rows.bits;
  const int low_bytes = rows.row_len * low_width / 8;
  const int high_bytes = rows.row_len / 8;  // the 1-bit plane of 3-bit rows
  const auto low_mask = hn::Set(du, (1u << low_width) - 1);
  const auto one = hn::Set(du, 1u);
  // 16-lane vectors over 3-bit rows of 64 codes: the 1-bit plane is only 8 bytes, so a vector's lanes i and
  // i + 8 read the same byte at consecutive bits (FusedDecodeLanes allows this case on 16-lane targets only).
  const bool twice_high_plane = kThreeBit && lanes == 2 * high_bytes;
  for (int e = 0; e < rows.row_len; e += lanes) {
    // Where element e's codes sit: byte e % plane_bytes, bit (e / plane_bytes) * width of each plane.
    const int low_offset = e % low_bytes, low_shift = e / low_bytes * low_width;
    const int high_offset = kThreeBit ? low_bytes + e % high_bytes : 0, high_shift = kThreeBit ? e / high_bytes : 0;
    const auto codes_of = [&](const uint8_t* row) {
      auto code = hn::And(hn::ShiftRightSame(hn::PromoteTo(du, hn::LoadU(d8, row + low_offset)), low_shift), low_mask);
      if constexpr (kThreeBit) {
        auto hi = hn::Zero(du);
        if constexpr (hn::MaxLanes(D()) == 16) {
          if (twice_high_plane) {
            const hn::Repartition<uint64_t, decltype(d8)> d64;  // the 8 plane bytes in both halves
            uint64_t plane;
            std::memcpy(&plane, row + low_bytes, sizeof(plane));
            const auto shifts = hn::Add(hn::Set(du, static_cast<uint32_t>(high_shift)), hn::ShiftRight<3>(hn::Iota(du, 0)));
            hi = hn::PromoteTo(du, hn::BitCast(d8, hn::Set(d64, plane))) >> shifts;
          } else {
            hi = hn::ShiftRightSame(hn::PromoteTo(du, hn::LoadU(d8, row + high_offset)), high_shift);
          }
        } else {
          hi = hn::ShiftRightSame(hn::PromoteTo(du, hn::LoadU(d8, row + high_offset)), high_shift);
        }
        code = hn::Or(code, hn::ShiftLeft<2>(hn::And(hi, one)));
      }
      return hn::ConvertTo(df, hn::BitCast(di, code));
    };
    const float* c0 = coefs.coef + static_cast<size_t>(e / rows.group) * coefs.group_stride;
    const float* c1 = c0 + coefs.head_stride;
    const float* c2 = c1 + coefs.head_stride;
    const float* c3 = c2 + coefs.head_stride;
    float* o0 = out + e;
    float* o1 = o0 + out_stride;
    float* o2 = o1 + out_stride;
    float* o3 = o2 + out_stride;
    auto a0 = hn::LoadU(df, o0), a1 = hn::Zero(df), a2 = hn::Zero(df), a3 = hn::Zero(df);
    auto b0 = hn::Zero(df), b1 = hn::Zero(df), b2 = hn::Zero(df), b3 = hn::Zero(df);
    if constexpr (H > 1) a1 = hn::LoadU(df, o1);
    if constexpr (H > 2) a2 = hn::LoadU(df, o2);
    if constexpr (H > 3) a3 = hn::LoadU(df, o3);
    const uint8_t* row = rows.data;
    int r = 0;
    for (; r + 1 < rows.n_rows; r += 2, row += 2 * rows.row_bytes) {
      const auto x = codes_of(row), y = codes_of(row + rows.row_bytes);
      a0 = hn::MulAdd(hn::Set(df, c0[r]), x, a0);
      b0 = hn::MulAdd(hn::Set(df, c0[r + 1]), y, b0);
      if constexpr (H > 1) {
        a1 = hn::MulAdd(hn::Set(df, c1[r]), x, a1);
        b1 = hn::MulAdd(hn::Set(df, c1[r + 1]), y, b1);
      }
      if constexpr (H > 2) {
        a2 = hn::MulAdd(hn::Set(df, c2[r]), x, a2);
        b2 = hn::MulAdd(hn::Set(df, c2[r + 1]), y, b2);
      }
      if constexpr (H > 3) {
        a3 = hn::MulAdd(hn::Set(df, c3[r]), x, a3);
        b3 = hn::MulAdd(hn::Set(df, c3[r + 1]), y, b3);
      }
    }
    if (r < rows.n_rows) {
      const auto x = codes_of(row);
      a0 = hn::MulAdd(hn::Set(df, c0[r]), x, a0);
      if constexpr (H > 1) a1 = hn::MulAdd(hn::Set(df, c1[r]), x, a1);
      if constexpr (H > 2) a2 = hn::MulAdd(hn::Set(df, c2[r]), x, a2);
      if constexpr (H > 3) a3 = hn::MulAdd(hn::Set(df, c3[r]), x, a3);
    }
    hn::StoreU(hn::Add(a0, b0), df, o0);
    if constexpr (H > 1) hn::StoreU(hn::Add(a1, b1), df, o1);
    if constexpr (H > 2) hn::StoreU(hn::Add(a2, b2), df, o2);
    if constexpr (H > 3) hn::StoreU(hn::Add(a3, b3), df, o3);
  }
}

template <int H, class D>
void AccumulateHeadBlock(D df, const CodeRows& rows, const RowCoefficients& coefs, float* out, size_t out_stride) {
  if (rows.bits == 3) return AccumulateCodeRows<H, true>(df, rows, coefs, out, out_stride);
  AccumulateCodeRows<H, false>(df, rows, coefs, out, out_stride);
}

// AccumulateCodeRows over `heads` heads in blocks of up to four, on vectors of `lanes` (FusedLanes' choice).
template <class D>
void AccumulateAllHeads(D df, int heads, const CodeRows& rows, RowCoefficients coefs, float* out, size_t out_stride) {
  for (int h = 0; h < heads; h += 4, coefs.coef += 4 * coefs.head_stride, out += 4 * out_stride) {
    switch (std::min(4, heads - h)) {
      case 4: AccumulateHeadBlock<4>(df, rows, coefs, out, out_stride); break;
      case 3: AccumulateHeadBlock<3>(df, rows, coefs, out, out_stride); break;
      case 2: AccumulateHeadBlock<2>(df, rows, coefs, out, out_stride); break;
      default: AccumulateHeadBlock<1>(df, rows, coefs, out, out_stride); break;
    }
  }
}
// Whether a row set takes the sdot kernel (and the VNNI one, which also takes some 3-bit rows: VnniRowsFit): 2- or
// 4-bit codes, planes of whole 16-byte chunks, and value groups of whole 16-element chunks.
bool IntegerRowsFit(const CodeRows& rows) {
  return (rows.bits == 2 || rows.bits == 4) && rows.row_len * rows.bits / 8 % 16 == 0 && rows.group % 16 == 0;
}

// Per-thread scratch of the fused decode.
struct FusedScratch {
  std::vector<float> key_params;    // [head_dim][scale, min]
  std::vector<float> value_params;  // [tokens][n_groups][scale, min]
  std::vector<float> value_scale;   // [n_groups][tokens], from value_params
  std::vector<float> value_min;     // [n_groups][tokens]
  std::vector<float> key_coef;      // [group][head_dim]: q[d] * s[d] * softmax scale
  std::vector<float> scores;        // [group][tokens]: scores, then softmax weights
  std::vector<float> value_coef;    // [group][n_groups][tokens]: p[t] * s[t][g]
  std::vector<float> corrections;   // [group]
  std::vector<int32_t> coef_words;  // the integer kernel's coefficients (Int8Coefficients)
  std::vector<float> coef_scale;     // [group][n_groups]
  std::vector<uint8_t> unpacked_codes;  // 3-bit code planes unpacked for vpdpbusd (AccumulateThreeBit)
};

#undef KVTIER_FUSED_VNNI
#if HWY_TARGET == HWY_AVX3_DL
#define KVTIER_FUSED_VNNI 1
// Highway 1.0.3's AVX3_DL target string names VBMI but not AVX512-VNNI (which its runtime check requires).
#pragma GCC push_options
#pragma GCC target("avx512vnni")
#include "kernels/cpu/fused_decode_vnni-inl.h"
#pragma GCC pop_options
#endif  // HWY_TARGET == HWY_AVX3_DL

#undef KVTIER_FUSED_SDOT
#if HWY_TARGET == HWY_NEON && defined(__aarch64__)
#define KVTIER_FUSED_SDOT 1
#pragma GCC push_options
#pragma GCC target("arch=armv8.2-a+dotprod")
#include "kernels/cpu/fused_decode_sdot-inl.h"
#pragma GCC pop_options

// Whether this Arm core has the dot-product instructions (every Apple M-series core does; so do Cortex-A55/A76
// and later, but not A53/A72): the NEON target itself does not imply them.
bool HasDotProd() {
#if defined(__APPLE__)
  return true;
#elif defined(__linux__)
  static const bool has = (getauxval(AT_HWCAP) & HWCAP_ASIMDDP) != 0;
  return has;
#else
  return false;
#endif
}
#endif  // HWY_TARGET == HWY_NEON

// out[h][e] += sum_r coef[h][e / group][r] * code(row r, element e) for `heads` heads: the integer kernel
// where the target and the rows allow it, else AccumulateCodeRows on vectors of `lanes` (FusedDecodeLanes).
void AccumulateAt(int lanes, int heads, const CodeRows& rows, const RowCoefficients& coefs, float* out,
                  size_t out_stride, FusedScratch& s) {
#if defined(KVTIER_FUSED_VNNI)
  if (VnniRowsFit(rows)) {
    if (rows.bits == 4) return AccumulateVnni<4>(heads, rows, coefs, out, out_stride, s);
    if (rows.bits == 3) return AccumulateVnni<3>(heads, rows, coefs, out, out_stride, s);
    return AccumulateVnni<2>(heads, rows, coefs, out, out_stride, s);
  }
#elif defined(KVTIER_FUSED_SDOT)
  if (HasDotProd() && IntegerRowsFit(rows)) {
    if (rows.bits == 4) return AccumulateSdot<4>(heads, rows, coefs, out, out_stride, s);
    return AccumulateSdot<2>(heads, rows, coefs, out, out_stride, s);
  }
#else
  (void)s;
#endif
  if (lanes == static_cast<int>(hn::Lanes(DF()))) return AccumulateAllHeads(DF(), heads, rows, coefs, out, out_stride);
  if (lanes == 8) return AccumulateAllHeads(hn::CappedTag<float, 8>(), heads, rows, coefs, out, out_stride);
  AccumulateAllHeads(hn::CappedTag<float, 4>(), heads, rows, coefs, out, out_stride);
}

// FusedLanes, plus full 16-lane vectors over 3-bit rows of 64 codes (AccumulateCodeRows reads their 8-byte
// 1-bit plane twice), which FusedLanes would run on 8 lanes.
int FusedDecodeLanes(int n, int bits, int group) {
  const int full = static_cast<int>(hn::Lanes(DF()));
  if (hn::MaxLanes(DF()) == 16 && full == 16 && bits == 3 && n == 64 && group % 16 == 0) return 16;
  return FusedLanes(n, bits, group);
}

// Whether a page can take the fused decode: quantized, per-channel keys, rows that some vector width tiles.
bool CanFuse(const kv::PageFormat& f, int* key_lanes, int* value_lanes) {
  if (f.key_bits == 16 || f.value_bits == 16 || f.key_mode != kv::KeyMode::PerChannel) return false;
  *key_lanes = FusedDecodeLanes(f.tokens, f.key_bits, f.tokens);
  *value_lanes = FusedDecodeLanes(f.head_dim, f.value_bits, f.group);
  return *key_lanes > 0 && *value_lanes > 0;
}

// Folds `rows` tokens of one page (KV head kvh) into the online-softmax states of the GQA group's query heads
// for one query token.  q: [group][hd] (the group's query heads);  states: [group][state_floats];
// next: prefetched a quarter per stage (key coefficients, key codes, softmax, values).
void FusedDecodePage(const Work& w, const kv::PageRef& page, int kvh, int rows, int key_lanes, int value_lanes,
                     const float* q, float* states, FusedScratch& s, const NextPageHead& next) {
  PrefetchPart(next, 0, 4);
  const kv::PageFormat& f = *page.format;
  const int hd = f.head_dim, tokens = f.tokens, n_heads = w.group, n_groups = f.n_groups;
  const uint8_t* keys = page.data + f.key_section(kvh);
  const uint8_t* values = page.data + f.value_section(kvh);
  s.key_params.resize(2 * static_cast<size_t>(hd));
  s.key_coef.resize(static_cast<size_t>(n_heads) * hd);
  s.scores.resize(static_cast<size_t>(n_heads) * tokens);
  s.value_params.resize(2 * static_cast<size_t>(rows) * n_groups);
  s.value_coef.resize(static_cast<size_t>(n_heads) * n_groups * tokens);
  s.corrections.resize(n_heads);

  // Scores: coefficient q[d] s[d] per key row (channel d), constant sum_d q[d] m[d] as the start value.
  const DF df;
  const int lanes = static_cast<int>(hn::Lanes(df));
  DecodeF16(keys, 2 * static_cast<size_t>(hd), s.key_params.data());
  const auto vscale = hn::Set(df, w.scale);
  for (int h = 0; h < n_heads; ++h) {
    const float* qh = q + static_cast<size_t>(h) * hd;
    const float* params = s.key_params.data();
    float* coef = s.key_coef.data() + static_cast<size_t>(h) * hd;
    auto vconstant = hn::Zero(df);
    int d = 0;
    for (; d + lanes <= hd; d += lanes) {
      hn::Vec<DF> scale, min;
      hn::LoadInterleaved2(df, params + 2 * d, scale, min);
      const auto qd = hn::LoadU(df, qh + d);
      hn::StoreU(hn::Mul(hn::Mul(qd, scale), vscale), df, coef + d);
      vconstant = hn::MulAdd(qd, min, vconstant);
    }
    float constant = hn::GetLane(hn::SumOfLanes(df, vconstant));
    for (; d < hd; ++d) {
      coef[d] = qh[d] * params[2 * d] * w.scale;
      constant += qh[d] * params[2 * d + 1];
    }
    std::fill_n(s.scores.data() + static_cast<size_t>(h) * tokens, tokens, constant * w.scale);
  }
  PrefetchPart(next, 1, 4);
  const CodeRows key_rows{keys + f.key_codes_offset, f.key_row_code_bytes, hd, tokens, f.key_bits, tokens};
  AccumulateAt(key_lanes, n_heads, key_rows, {s.key_coef.data(), static_cast<size_t>(hd), 0}, s.scores.data(), tokens,
               s);

  // Softmax weights p[t] per head; value coefficients p[t] s[t][g] and the min term sum_t p[t] m[t][g].
  PrefetchPart(next, 2, 4);
  DecodeF16(values, s.value_params.size(), s.value_params.data());  // [rows][n_groups][scale, min]
  s.value_scale.resize(static_cast<size_t>(n_groups) * tokens);
  s.value_min.resize(static_cast<size_t>(n_groups) * tokens);
  int first_scalar = 0;  // to [n_groups][tokens] once per page, read by every head
  float* scale0 = s.value_scale.data();
  float* min0 = s.value_min.data();
  if (n_groups == 1) {
    for (; first_scalar + lanes <= rows; first_scalar += lanes) {
      hn::Vec<DF> scale, min;
      hn::LoadInterleaved2(df, s.value_params.data() + 2 * first_scalar, scale, min);
      hn::StoreU(scale, df, scale0 + first_scalar);
      hn::StoreU(min, df, min0 + first_scalar);
    }
  } else if (n_groups == 2) {
    for (; first_scalar + lanes <= rows; first_scalar += lanes) {
      hn::Vec<DF> scale_a, min_a, scale_b, min_b;
      hn::LoadInterleaved4(df, s.value_params.data() + 4 * first_scalar, scale_a, min_a, scale_b, min_b);
      hn::StoreU(scale_a, df, scale0 + first_scalar);
      hn::StoreU(min_a, df, min0 + first_scalar);
      hn::StoreU(scale_b, df, scale0 + tokens + first_scalar);
      hn::StoreU(min_b, df, min0 + tokens + first_scalar);
    }
  }
  for (int t = first_scalar; t < rows; ++t) {
    for (int g = 0; g < n_groups; ++g) {
      s.value_scale[static_cast<size_t>(g) * tokens + t] = s.value_params[(static_cast<size_t>(t) * n_groups + g) * 2];
      s.value_min[static_cast<size_t>(g) * tokens + t] = s.value_params[(static_cast<size_t>(t) * n_groups + g) * 2 + 1];
    }
  }
  for (int h = 0; h < n_heads; ++h) {
    float* p = s.scores.data() + static_cast<size_t>(h) * tokens;  // scores, then softmax weights
    float* state = states + static_cast<size_t>(h) * w.state_floats;
    const float correction = SoftmaxUpdate(rows, hd, p, state);
    const auto vcorrection = hn::Set(df, correction);
    for (int g = 0; g < n_groups; ++g) {
      const float* scale = s.value_scale.data() + static_cast<size_t>(g) * tokens;
      const float* min = s.value_min.data() + static_cast<size_t>(g) * tokens;
      float* coef = s.value_coef.data() + (static_cast<size_t>(h) * n_groups + g) * tokens;
      auto vmin_term = hn::Zero(df);
      int t = 0;
      for (; t + lanes <= rows; t += lanes) {
        const auto pt = hn::LoadU(df, p + t);
        hn::StoreU(hn::Mul(pt, hn::LoadU(df, scale + t)), df, coef + t);
        vmin_term = hn::MulAdd(pt, hn::LoadU(df, min + t), vmin_term);
      }
      float min_term = hn::GetLane(hn::SumOfLanes(df, vmin_term));
      for (; t < rows; ++t) {
        coef[t] = p[t] * scale[t];
        min_term += p[t] * min[t];
      }
      // acc = acc * correction + min term; the code rows add the rest. (lanes | group: FusedLanes.)
      const auto vmin = hn::Set(df, min_term);
      const int end = (g + 1) * f.group;
      int d = g * f.group;
      for (; d + lanes <= end; d += lanes) hn::StoreU(hn::MulAdd(hn::LoadU(df, state + d), vcorrection, vmin), df, state + d);
      for (; d < end; ++d) state[d] = state[d] * correction + min_term;
    }
  }
  PrefetchPart(next, 3, 4);
  const CodeRows value_rows{values + f.value_codes_offset, f.row_code_bytes, rows, hd, f.value_bits, f.group};
  AccumulateAt(value_lanes, n_heads, value_rows,
               {s.value_coef.data(), static_cast<size_t>(n_groups) * tokens, static_cast<size_t>(tokens)}, states,
               w.state_floats, s);
}

// Gemma 2's attention logit soft-capping: s = cap * tanh(s / cap) over scores[0, n) (cap 0: none).
void SoftCap(float* scores, int n, float cap) {
  if (cap <= 0) return;
  for (int t = 0; t < n; ++t) scores[t] = cap * std::tanh(scores[t] / cap);
}

// order: the item's place in the hand-out order (see Work).
HWY_NOINLINE void ProcessItem(const Work& w, int order) {
  const int chunk = order / (w.n_kv_heads * w.n_qblocks);
  const int kvh = order / w.n_qblocks % w.n_kv_heads;
  const int qb = order % w.n_qblocks;
  const int item = (kvh * w.n_qblocks + qb) * w.n_chunks + chunk;
  const int hd = w.head_dim;
  const int q0 = qb * w.q_block;
  const int nq = std::min(w.q_block, w.n_q - q0);
  const int last_visible = w.pos + q0 + nq - 1;
  // The block's first query sees the least far back: pages that end before its window are seen by none.
  const int block_first_visible = w.window > 0 ? std::max(0, w.pos + q0 - w.window + 1) : 0;
  float* states = w.states + static_cast<size_t>(item) * w.item_floats();
  for (int s = 0; s < nq * w.group; ++s) {
    float* state = states + static_cast<size_t>(s) * w.state_floats;
    std::fill(state, state + hd, 0.0f);
    state[hd] = -INFINITY;
    state[hd + 1] = 0.0f;
  }
  const size_t kstride = KeyStride(w.max_page_tokens);
  thread_local std::vector<float> k_tile, v_tile, scores;
  thread_local DecodeScratch scratch;
  thread_local FusedScratch fused;
  k_tile.resize(kstride * hd);                                   // [head_dim][kstride], keys transposed
  v_tile.resize(static_cast<size_t>(w.max_page_tokens) * hd);   // [max_page_tokens][head_dim]
  scores.resize(2 * kstride);                                    // [2][kstride]: a pair of heads
#ifdef KVTIER_FUSED_VNNI
  // Decode: the group's queries times the softmax scale, for VnniDecodePage. [group][head_dim]
  thread_local std::vector<float> q_scaled;
  const bool vnni_heads = nq == 1 && w.group % 4 == 0;
  if (vnni_heads) {
    const float* q_row = w.q + (static_cast<size_t>(q0) * w.n_heads + static_cast<size_t>(kvh) * w.group) * hd;
    q_scaled.resize(static_cast<size_t>(w.group) * hd);
    for (size_t i = 0; i < q_scaled.size(); ++i) q_scaled[i] = q_row[i] * w.scale;
  }
#endif
  const int page_begin = w.chunk_begin(chunk);
  const int page_end = w.chunk_begin(chunk + 1);
  for (int pi = page_begin; pi < page_end; ++pi) {
    const kv::PageRef& page = w.pages[pi];
    if (page.first_pos > last_visible) break;
    if (page.first_pos + page.n_tokens <= block_first_visible) continue;
    // The fused decode steps attend a page's rows from its first: only for pages wholly inside the window,
    // and without soft-capping (their scores never exist as an array to cap).
    const bool plain_page = w.softcap == 0 && page.first_pos >= block_first_visible;
    const int rows_needed = std::min(page.n_tokens, last_visible - page.first_pos + 1);
    int key_lanes = 0, value_lanes = 0;
    // One page ahead, prefetched spread over this page's work (PrefetchPart). Two ahead (as one burst) helped the
    // attention microbenchmark at 64K (q2, 2 threads: 3.21 -> 3.01 ms) but slowed the 16K model decode, where the
    // weights compete for the same memory (4 alternating pairs: 608 vs 527 tok/s medians), so it was not kept.
    NextPageHead next;
    if (pi + 1 < page_end) {
      const kv::PageRef& after = w.pages[pi + 1];
      next = {after.data + after.format->key_section(kvh), after.format->head_bytes};
    }
#ifdef KVTIER_FUSED_VNNI
    if (plain_page && vnni_heads && VnniPageFits(*page.format, rows_needed)) {
      VnniDecodePage(*page.format, page.data, kvh, w.group, q_scaled.data(), states, w.state_floats, fused, next);
      continue;
    }
#endif
    if (plain_page && nq == 1 && CanFuse(*page.format, &key_lanes, &value_lanes)) {
      const float* q_row = w.q + (static_cast<size_t>(q0) * w.n_heads + static_cast<size_t>(kvh) * w.group) * hd;
      FusedDecodePage(w, page, kvh, rows_needed, key_lanes, value_lanes, q_row, states, fused, next);
      continue;
    }
    // Decoded once here, read by every query head of the group and every query of the block.
    DecodeKeysTransposed(*page.format, page.data, kvh, rows_needed, k_tile.data(), kstride, scratch, next);
    DecodeValues(*page.format, page.data, kvh, rows_needed, v_tile.data(), scratch);
    for (int i = 0; i < nq; ++i) {
      const int rows = std::min(rows_needed, w.pos + q0 + i - page.first_pos + 1);
      // Rows [skip, rows) of the page are inside this query's window.
      const int skip = w.window > 0 ? std::max(0, w.pos + q0 + i - w.window + 1 - page.first_pos) : 0;
      if (rows <= skip) continue;
      const int kept = rows - skip;
      const float* v_kept = v_tile.data() + static_cast<size_t>(skip) * hd;
      const float* q_row = w.q + (static_cast<size_t>(q0 + i) * w.n_heads + static_cast<size_t>(kvh) * w.group) * hd;
      int g = 0;
      for (; g + 1 < w.group; g += 2) {  // heads in pairs: each key load serves two
        float* sb = scores.data() + kstride;
        ScoresPair(q_row + static_cast<size_t>(g) * hd, q_row + static_cast<size_t>(g + 1) * hd, k_tile.data(), kstride,
                   hd, rows, w.scale, scores.data(), sb);
        SoftCap(scores.data() + skip, kept, w.softcap);
        SoftCap(sb + skip, kept, w.softcap);
        FoldTile(v_kept, kept, hd, scores.data() + skip, states + static_cast<size_t>(i * w.group + g) * w.state_floats);
        FoldTile(v_kept, kept, hd, sb + skip, states + static_cast<size_t>(i * w.group + g + 1) * w.state_floats);
      }
      for (; g < w.group; ++g) {
        Scores(q_row + static_cast<size_t>(g) * hd, k_tile.data(), kstride, hd, rows, w.scale, scores.data());
        SoftCap(scores.data() + skip, kept, w.softcap);
        FoldTile(v_kept, kept, hd, scores.data() + skip, states + static_cast<size_t>(i * w.group + g) * w.state_floats);
      }
    }
  }
}

// Folds one row's attention over further pages (b, lse_b) into (a, lse_a), exactly (merge_attention's rule).
// A side with lse = -inf saw no position and contributes nothing.
void FoldRow(float* a, float* lse_a, const float* b, float lse_b, int hd) {
  if (lse_b == -INFINITY) return;
  if (*lse_a == -INFINITY) {
    std::copy(b, b + hd, a);
    *lse_a = lse_b;
    return;
  }
  const float m = std::max(*lse_a, lse_b);
  const float wa = std::exp(*lse_a - m), wb = std::exp(lse_b - m);
  const float inv = 1.0f / (wa + wb);
  for (int d = 0; d < hd; ++d) a[d] = (a[d] * wa + b[d] * wb) * inv;
  *lse_a = m + std::log(wa + wb);
}

// Merges the page-chunk states of one (kv head, query block) into out (and lse, when asked): each segment's
// chunks into one row, then the segments in order by FoldRow; with `fold`, the first segment too (out and lse
// hold earlier pages' attention). Not inlined: the decode and prefill callers must run the same instructions
// (a contracted multiply-add in one copy would change the bits).
HWY_NOINLINE void MergeStates(const Work& w, int kvh, int qb, float* out, float* lse, bool fold) {
  const int hd = w.head_dim;
  const int q0 = qb * w.q_block;
  const int nq = std::min(w.q_block, w.n_q - q0);
  const int first_item = (kvh * w.n_qblocks + qb) * w.n_chunks;
  thread_local std::vector<float> segment_row;  // [head_dim]: a segment's attention before it is folded in
  segment_row.resize(static_cast<size_t>(hd));
  for (int i = 0; i < nq; ++i) {
    for (int g = 0; g < w.group; ++g) {
      const size_t s = static_cast<size_t>(i * w.group + g) * w.state_floats;
      const size_t row = static_cast<size_t>(q0 + i) * w.n_heads + kvh * w.group + g;
      for (int seg = 0; seg < w.n_segments; ++seg) {
        const bool direct = seg == 0 && !fold;
        const int c0 = w.segment_chunks[seg], c1 = w.segment_chunks[seg + 1];
        float m = -INFINITY;
        for (int c = c0; c < c1; ++c) m = std::max(m, w.states[(first_item + c) * w.item_floats() + s + hd]);
        float* o = direct ? out + row * hd : segment_row.data();
        std::fill(o, o + hd, 0.0f);
        float l = 0;
        for (int c = c0; c < c1; ++c) {
          const float* state = w.states + (first_item + c) * w.item_floats() + s;
          if (state[hd] == -INFINITY) continue;
          const float weight = std::exp(state[hd] - m);
          l += state[hd + 1] * weight;
          for (int d = 0; d < hd; ++d) o[d] += state[d] * weight;
        }
        // l == 0: this query saw no position of these pages (a partial call); zero output, lse -inf.
        const float inv = l > 0 ? 1.0f / l : 0.0f;
        for (int d = 0; d < hd; ++d) o[d] *= inv;
        const float segment_lse = l > 0 ? m + std::log(l) : -INFINITY;
        if (direct) {
          if (lse != nullptr) lse[row] = segment_lse;
        } else {
          FoldRow(out + row * hd, lse + row, o, segment_lse, hd);
        }
      }
    }
  }
}

void PagedAttention(const PagedKv& kv, int pos, int n_q, int n_heads, const float* q, float scale, float* out,
                    float* lse, bool fold, ThreadPool& pool) {
  if (n_q <= 0) return;
  assert(!kv.pages.empty() && n_heads % kv.n_kv_heads == 0);
  assert(kv.segment_starts.empty() ||
         (kv.segment_starts.size() >= 2 && kv.segment_starts.front() == 0 &&
          kv.segment_starts.back() == static_cast<int>(kv.pages.size()) &&
          std::is_sorted(kv.segment_starts.begin(), kv.segment_starts.end(), std::less_equal<int>())));
  // Folding segments needs the running log-sum-exp.
  assert(lse != nullptr || (!fold && kv.segment_starts.size() <= 2));
  Work w;
  w.pages = kv.pages.data();
  w.n_pages = static_cast<int>(kv.pages.size());
  w.n_kv_heads = kv.n_kv_heads;
  w.head_dim = kv.head_dim;
  w.n_heads = n_heads;
  w.group = n_heads / kv.n_kv_heads;
  w.pos = pos;
  w.n_q = n_q;
  w.q = q;
  w.scale = scale;
  w.window = kv.window;
  w.softcap = kv.softcap;
  for (const kv::PageRef& p : kv.pages) w.max_page_tokens = std::max(w.max_page_tokens, p.format->tokens);
  // The pages hold the whole causal range, or (a partial call) a part of it.
  assert(kv.pages_are_prefix || kv.pages.back().first_pos + kv.pages.back().n_tokens >= pos + n_q);
  // Decode: one query, split the pages. Prefill: blocks of 32 queries share each decoded tile.
  w.q_block = n_q == 1 ? 1 : 32;
  w.n_qblocks = (n_q + w.q_block - 1) / w.q_block;
  // Each segment is split into chunks by its own length and the thread count only, never by the other segments,
  // so that a segment computed in a call of its own gets the same chunks (PagedKv::segment_starts).
  const int wanted_items = paged_detail::kItemsPerThread * pool.size();
  const int chunks_wanted = (wanted_items + w.n_kv_heads * w.n_qblocks - 1) / (w.n_kv_heads * w.n_qblocks);
  thread_local std::vector<int> chunk_pages, segment_chunks;  // Work::chunk_pages, Work::segment_chunks
  chunk_pages.clear();
  segment_chunks.clear();
  w.n_segments = kv.segment_starts.empty() ? 1 : static_cast<int>(kv.segment_starts.size()) - 1;
  for (int seg = 0; seg < w.n_segments; ++seg) {
    const int a = kv.segment_starts.empty() ? 0 : kv.segment_starts[seg];
    const int len = (kv.segment_starts.empty() ? w.n_pages : kv.segment_starts[seg + 1]) - a;
    const int n = std::clamp(chunks_wanted, 1, len);
    segment_chunks.push_back(static_cast<int>(chunk_pages.size()));
    for (int c = 0; c < n; ++c) chunk_pages.push_back(a + static_cast<int>(static_cast<int64_t>(c) * len / n));
  }
  segment_chunks.push_back(static_cast<int>(chunk_pages.size()));
  w.n_chunks = static_cast<int>(chunk_pages.size());
  chunk_pages.push_back(w.n_pages);
  w.chunk_pages = chunk_pages.data();
  w.segment_chunks = segment_chunks.data();
  w.state_floats = static_cast<size_t>(kv.head_dim) + 2;
  thread_local std::vector<float> states;  // [items][q_block][group][head_dim + 2]
  states.resize(static_cast<size_t>(w.items()) * w.item_floats());
  w.states = states.data();
  std::atomic<int> next_item{0};
  pool.run([&](int, int) {
    for (int item = next_item.fetch_add(1); item < w.items(); item = next_item.fetch_add(1)) ProcessItem(w, item);
  });
  const int merges = w.n_kv_heads * w.n_qblocks;
  if (n_q == 1) {  // decode: a few hundred flops per KV head, less than a pool job's hand-off
    for (int m = 0; m < merges; ++m) MergeStates(w, m / w.n_qblocks, m % w.n_qblocks, out, lse, fold);
    return;
  }
  std::atomic<int> next_merge{0};
  pool.run([&](int, int) {
    for (int m = next_merge.fetch_add(1); m < merges; m = next_merge.fetch_add(1)) {
      MergeStates(w, m / w.n_qblocks, m % w.n_qblocks, out, lse, fold);
    }
  });
}

const char* TargetName() { return hwy::TargetName(HWY_TARGET); }
bool UsesInt8Coefficients() {
#if defined(KVTIER_FUSED_VNNI)
  return true;
#elif defined(KVTIER_FUSED_SDOT)
  return HasDotProd();
#else
  return false;
#endif
}

}  // namespace kvtier::kernels::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace kvtier::kernels {
HWY_EXPORT(PagedAttention);
HWY_EXPORT(DecodePageHeadSimd);
HWY_EXPORT(TargetName);
HWY_EXPORT(UsesInt8Coefficients);

void paged_attention(const PagedKv& kv, int pos, int n_q, int n_heads, const float* q, float scale, float* out,
                     ThreadPool& pool, float* lse, bool fold) {
  std::vector<float> rotated;  // [n_q, n_heads, head_dim] when the keys are rotated
  if (kv.keys_rotated) {
    rotated.assign(q, q + static_cast<size_t>(n_q) * n_heads * kv.head_dim);
    kv::rotate_heads(rotated.data(), static_cast<int64_t>(n_q) * n_heads, kv.head_dim);
    q = rotated.data();
  }
  HWY_DYNAMIC_DISPATCH(PagedAttention)(kv, pos, n_q, n_heads, q, scale, out, lse, fold, pool);
}

void decode_page_head_simd(const kv::PageFormat& format, const uint8_t* page, int head, int n_tokens, float* k, float* v) {
  HWY_DYNAMIC_DISPATCH(DecodePageHeadSimd)(format, page, head, n_tokens, k, v);
}

const char* paged_attention_target() { return HWY_DYNAMIC_DISPATCH(TargetName)(); }
bool paged_attention_int8_coefficients() { return HWY_DYNAMIC_DISPATCH(UsesInt8Coefficients)(); }

void merge_attention(float* out_a, float* lse_a, const float* out_b, const float* lse_b, int64_t rows,
                     int head_dim) {
  for (int64_t r = 0; r < rows; ++r) {
    if (lse_b[r] == -INFINITY) continue;  // b saw no position
    float* a = out_a + r * head_dim;
    const float* b = out_b + r * head_dim;
    if (lse_a[r] == -INFINITY) {  // a saw none
      std::copy(b, b + head_dim, a);
      lse_a[r] = lse_b[r];
      continue;
    }
    const float m = std::max(lse_a[r], lse_b[r]);
    const float wa = std::exp(lse_a[r] - m), wb = std::exp(lse_b[r] - m);
    const float inv = 1.0f / (wa + wb);
    for (int d = 0; d < head_dim; ++d) a[d] = (a[d] * wa + b[d] * wb) * inv;
    lse_a[r] = m + std::log(wa + wb);
  }
}

}  // namespace kvtier::kernels
#endif
