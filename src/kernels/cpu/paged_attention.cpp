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
#include <vector>

#include "kernels/paged_attention.h"
#include "kv/codec.h"
#include "kvtier/f16.h"

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/cpu/paged_attention.cpp"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/highway.h>
#include <hwy/contrib/math/math-inl.h>

#ifndef KVTIER_PAGED_ATTENTION_SHARED
#define KVTIER_PAGED_ATTENTION_SHARED
namespace kvtier::kernels::paged_detail {

// One call's work: items are (kv head, query block, page chunk), row-major in that order.
struct Work {
  const kv::PageRef* pages = nullptr;
  int n_pages = 0;
  int n_kv_heads = 0, head_dim = 0, n_heads = 0, group = 0;
  int pos = 0, n_q = 0;
  const float* q = nullptr;  // [n_q, n_heads, head_dim], already rotated if the keys are
  float scale = 1;
  int q_block = 1, n_qblocks = 1, n_chunks = 1;
  int max_page_tokens = 0;
  size_t state_floats = 0;  // head_dim + 2: acc, m, l
  float* states = nullptr;  // [items][q_block][group][state_floats]
  int items() const { return n_kv_heads * n_qblocks * n_chunks; }
  size_t item_floats() const { return static_cast<size_t>(q_block) * group * state_floats; }
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
HWY_INLINE void UnpackPlane(const uint8_t* bytes, int n, int w, float weight, bool accumulate, float* out) {
  const DF df;
  const hn::RebindToSigned<DF> di;
  const hn::RebindToUnsigned<DF> du;
  const hn::Rebind<uint8_t, DF> d8;
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

// Decodes rows [0, rows) of one quantized section into out: [rows, head_dim].
// channel_scale/min: scratch [head_dim] for per-channel keys.
void DecodeQuantSection(const kv::PageFormat& f, const uint8_t* section, size_t codes_offset, bool per_channel,
                        int rows, float* out, float* channel_scale, float* channel_min) {
  const int bits = kv::precision_bits(f.precision);
  const int hd = f.head_dim;
  const auto* params = reinterpret_cast<const kv::GroupParams*>(section);
  if (per_channel) {
    for (int d = 0; d < hd; ++d) {
      channel_scale[d] = f16_to_f32(params[d].scale);
      channel_min[d] = f16_to_f32(params[d].min);
    }
  }
  for (int t = 0; t < rows; ++t) {
    float* o = out + static_cast<size_t>(t) * hd;
    UnpackRow(section + codes_offset + t * f.row_code_bytes, hd, bits, o);
    if (per_channel) {
      ScaleRunPerChannel(o, hd, channel_scale, channel_min);
    } else {
      const kv::GroupParams* p = params + static_cast<size_t>(t) * f.n_groups;
      for (int g = 0; g < f.n_groups; ++g) ScaleRun(o + g * f.group, f.group, f16_to_f32(p[g].scale), f16_to_f32(p[g].min));
    }
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

// k, v: [rows, head_dim]; channel scratch [head_dim] x 2.
void DecodeHead(const kv::PageFormat& f, const uint8_t* page, int head, int rows, float* k, float* v,
                float* channel_scale, float* channel_min) {
  const uint8_t* key = page + f.key_section(head);
  const uint8_t* value = page + f.value_section(head);
  if (f.precision == kv::Precision::F16) {
    DecodeF16(key, static_cast<size_t>(rows) * f.head_dim, k);
    DecodeF16(value, static_cast<size_t>(rows) * f.head_dim, v);
    return;
  }
  DecodeQuantSection(f, key, f.key_codes_offset, f.key_mode == kv::KeyMode::PerChannel, rows, k, channel_scale,
                     channel_min);
  DecodeQuantSection(f, value, f.value_codes_offset, false, rows, v, channel_scale, channel_min);
}

void DecodePageHeadSimd(const kv::PageFormat& f, const uint8_t* page, int head, int n_tokens, float* k, float* v) {
  std::vector<float> channel(2 * static_cast<size_t>(f.head_dim));  // scale [head_dim], min [head_dim]
  DecodeHead(f, page, head, n_tokens, k, v, channel.data(), channel.data() + f.head_dim);
}

HWY_INLINE float Dot(const float* a, const float* b, int n) {
  const DF df;
  const int lanes = static_cast<int>(hn::Lanes(df));
  auto acc = hn::Zero(df);
  int d = 0;
  for (; d + lanes <= n; d += lanes) acc = hn::MulAdd(hn::LoadU(df, a + d), hn::LoadU(df, b + d), acc);
  float sum = hn::GetLane(hn::SumOfLanes(df, acc));
  for (; d < n; ++d) sum += a[d] * b[d];
  return sum;
}

// Folds rows [0, rows) of a decoded tile into one query head's online-softmax state.
//   q: [hd]; k, v: [rows, hd]; scores: scratch [rows]; state: acc [hd], m, l.
void FoldTile(const float* q, const float* k, const float* v, int rows, int hd, float scale, float* scores,
              float* state) {
  const DF df;
  const int lanes = static_cast<int>(hn::Lanes(df));
  float page_max = -INFINITY;
  for (int t = 0; t < rows; ++t) {
    scores[t] = Dot(q, k + static_cast<size_t>(t) * hd, hd) * scale;
    page_max = std::max(page_max, scores[t]);
  }
  float& m = state[hd];
  float& l = state[hd + 1];
  const float m_new = std::max(m, page_max);
  const float correction = m == -INFINITY ? 0.0f : std::exp(m - m_new);
  const auto vmax = hn::Set(df, m_new);
  auto vsum = hn::Zero(df);
  int t = 0;
  for (; t + lanes <= rows; t += lanes) {
    const auto p = hn::Exp(df, hn::Sub(hn::LoadU(df, scores + t), vmax));
    vsum = hn::Add(vsum, p);
    hn::StoreU(p, df, scores + t);
  }
  float sum = hn::GetLane(hn::SumOfLanes(df, vsum));
  for (; t < rows; ++t) sum += scores[t] = std::exp(scores[t] - m_new);
  float* acc = state;
  if (correction != 1.0f) {
    const auto vc = hn::Set(df, correction);
    int d = 0;
    for (; d + lanes <= hd; d += lanes) hn::StoreU(hn::Mul(hn::LoadU(df, acc + d), vc), df, acc + d);
    for (; d < hd; ++d) acc[d] *= correction;
  }
  for (t = 0; t < rows; ++t) {
    const auto w = hn::Set(df, scores[t]);
    const float* row = v + static_cast<size_t>(t) * hd;
    int d = 0;
    for (; d + lanes <= hd; d += lanes) hn::StoreU(hn::MulAdd(w, hn::LoadU(df, row + d), hn::LoadU(df, acc + d)), df, acc + d);
    for (; d < hd; ++d) acc[d] += scores[t] * row[d];
  }
  m = m_new;
  l = l * correction + sum;
}

HWY_NOINLINE void ProcessItem(const Work& w, int item) {
  const int chunk = item % w.n_chunks;
  const int qb = (item / w.n_chunks) % w.n_qblocks;
  const int kvh = item / (w.n_chunks * w.n_qblocks);
  const int hd = w.head_dim;
  const int q0 = qb * w.q_block;
  const int nq = std::min(w.q_block, w.n_q - q0);
  const int last_visible = w.pos + q0 + nq - 1;
  float* states = w.states + static_cast<size_t>(item) * w.item_floats();
  for (int s = 0; s < nq * w.group; ++s) {
    float* state = states + static_cast<size_t>(s) * w.state_floats;
    std::fill(state, state + hd, 0.0f);
    state[hd] = -INFINITY;
    state[hd + 1] = 0.0f;
  }
  thread_local std::vector<float> tiles, scratch;
  tiles.resize(2 * static_cast<size_t>(w.max_page_tokens) * hd);  // k tile, v tile: [max_page_tokens, hd] each
  scratch.resize(static_cast<size_t>(w.max_page_tokens) + 2 * hd);  // scores, channel scale, channel min
  float* k_tile = tiles.data();
  float* v_tile = k_tile + static_cast<size_t>(w.max_page_tokens) * hd;
  float* scores = scratch.data();
  float* channel = scores + w.max_page_tokens;
  const int page_begin = static_cast<int>(static_cast<int64_t>(chunk) * w.n_pages / w.n_chunks);
  const int page_end = static_cast<int>(static_cast<int64_t>(chunk + 1) * w.n_pages / w.n_chunks);
  for (int pi = page_begin; pi < page_end; ++pi) {
    const kv::PageRef& page = w.pages[pi];
    if (page.first_pos > last_visible) break;
    const int rows_needed = std::min(page.n_tokens, last_visible - page.first_pos + 1);
    DecodeHead(*page.format, page.data, kvh, rows_needed, k_tile, v_tile, channel, channel + hd);
    for (int i = 0; i < nq; ++i) {
      const int rows = std::min(rows_needed, w.pos + q0 + i - page.first_pos + 1);
      if (rows <= 0) continue;
      for (int g = 0; g < w.group; ++g) {
        const int qh = kvh * w.group + g;
        const float* q = w.q + (static_cast<size_t>(q0 + i) * w.n_heads + qh) * hd;
        FoldTile(q, k_tile, v_tile, rows, hd, w.scale, scores, states + static_cast<size_t>(i * w.group + g) * w.state_floats);
      }
    }
  }
}

// Merges the page-chunk states of one (kv head, query block) into out.
void MergeStates(const Work& w, int kvh, int qb, float* out) {
  const int hd = w.head_dim;
  const int q0 = qb * w.q_block;
  const int nq = std::min(w.q_block, w.n_q - q0);
  const int first_item = (kvh * w.n_qblocks + qb) * w.n_chunks;
  for (int i = 0; i < nq; ++i) {
    for (int g = 0; g < w.group; ++g) {
      const size_t s = static_cast<size_t>(i * w.group + g) * w.state_floats;
      float m = -INFINITY;
      for (int c = 0; c < w.n_chunks; ++c) m = std::max(m, w.states[(first_item + c) * w.item_floats() + s + hd]);
      float* o = out + (static_cast<size_t>(q0 + i) * w.n_heads + kvh * w.group + g) * hd;
      std::fill(o, o + hd, 0.0f);
      float l = 0;
      for (int c = 0; c < w.n_chunks; ++c) {
        const float* state = w.states + (first_item + c) * w.item_floats() + s;
        if (state[hd] == -INFINITY) continue;
        const float weight = std::exp(state[hd] - m);
        l += state[hd + 1] * weight;
        for (int d = 0; d < hd; ++d) o[d] += state[d] * weight;
      }
      const float inv = 1.0f / l;
      for (int d = 0; d < hd; ++d) o[d] *= inv;
    }
  }
}

void PagedAttention(const PagedKv& kv, int pos, int n_q, int n_heads, const float* q, float scale, float* out,
                    ThreadPool& pool) {
  if (n_q <= 0) return;
  assert(!kv.pages.empty() && n_heads % kv.n_kv_heads == 0);
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
  for (const kv::PageRef& p : kv.pages) w.max_page_tokens = std::max(w.max_page_tokens, p.n_tokens);
  assert(kv.pages.back().first_pos + kv.pages.back().n_tokens >= pos + n_q);
  // Decode: one query, split the pages. Prefill: blocks of 32 queries share each decoded tile.
  w.q_block = n_q == 1 ? 1 : 32;
  w.n_qblocks = (n_q + w.q_block - 1) / w.q_block;
  const int wanted_items = 4 * pool.size();
  w.n_chunks = std::clamp((wanted_items + w.n_kv_heads * w.n_qblocks - 1) / (w.n_kv_heads * w.n_qblocks), 1, w.n_pages);
  w.state_floats = static_cast<size_t>(kv.head_dim) + 2;
  thread_local std::vector<float> states;
  states.resize(static_cast<size_t>(w.items()) * w.item_floats());
  w.states = states.data();
  std::atomic<int> next_item{0};
  pool.run([&](int, int) {
    for (int item = next_item.fetch_add(1); item < w.items(); item = next_item.fetch_add(1)) ProcessItem(w, item);
  });
  std::atomic<int> next_merge{0};
  const int merges = w.n_kv_heads * w.n_qblocks;
  pool.run([&](int, int) {
    for (int m = next_merge.fetch_add(1); m < merges; m = next_merge.fetch_add(1)) MergeStates(w, m / w.n_qblocks, m % w.n_qblocks, out);
  });
}

const char* TargetName() { return hwy::TargetName(HWY_TARGET); }

}  // namespace kvtier::kernels::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace kvtier::kernels {
HWY_EXPORT(PagedAttention);
HWY_EXPORT(DecodePageHeadSimd);
HWY_EXPORT(TargetName);

void paged_attention(const PagedKv& kv, int pos, int n_q, int n_heads, const float* q, float scale, float* out,
                     ThreadPool& pool) {
  std::vector<float> rotated;  // [n_q, n_heads, head_dim] when the keys are rotated
  if (kv.keys_rotated) {
    rotated.assign(q, q + static_cast<size_t>(n_q) * n_heads * kv.head_dim);
    kv::rotate_heads(rotated.data(), static_cast<int64_t>(n_q) * n_heads, kv.head_dim);
    q = rotated.data();
  }
  HWY_DYNAMIC_DISPATCH(PagedAttention)(kv, pos, n_q, n_heads, q, scale, out, pool);
}

void decode_page_head_simd(const kv::PageFormat& format, const uint8_t* page, int head, int n_tokens, float* k, float* v) {
  HWY_DYNAMIC_DISPATCH(DecodePageHeadSimd)(format, page, head, n_tokens, k, v);
}

const char* paged_attention_target() { return HWY_DYNAMIC_DISPATCH(TargetName)(); }

}  // namespace kvtier::kernels
#endif
