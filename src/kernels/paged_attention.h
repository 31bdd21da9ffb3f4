// Attention over a paged, mixed-precision KV cache (kv/page_format.h), dequantizing inside the kernel.
//
// The cache hands the kernel a position-ordered list of pages (kv::PageRef: data, format, first position,
// valid rows); pages may differ in precision (sinks and the hot ring f16, older pages 8/4/3/2-bit). The
// whole cache is never materialised in f32: each work item decodes one page-head of K and V into an
// L1-sized tile, once for all query heads of its GQA group, and folds it into an online softmax
// (flash-decoding). Work is split across threads by KV head, by query block (prefill) and by page range
// (decode); partial results are merged with their softmax statistics.
#pragma once

#include <cstdint>
#include <span>

#include "kv/page_format.h"
#include "kvtier/thread_pool.h"

namespace kvtier::kernels {

struct PagedKv {
  std::span<const kv::PageRef> pages;  // position order, contiguous (from position 0, or from where a windowed
                                       // layer's released pages end)
  int n_kv_heads = 0;
  int head_dim = 0;
  bool keys_rotated = false;  // keys are Hadamard-rotated (KeyMode::RotatedPerToken): queries are rotated too
  // A partial call: the pages are some of the cached positions, not necessarily reaching the queries (the
  // cache attends long page lists in segments and merges them with merge_attention). A query that sees none
  // of the pages gets a zero output and lse = -inf.
  bool pages_are_prefix = false;
  // Sliding window (> 0): query at p sees positions (p - window, p] only, as llama.cpp's standard SWA mask.
  int window = 0;
  // Gemma 2 logit soft-capping (> 0): a score s becomes softcap * tanh(s / softcap) before the softmax.
  float softcap = 0;
  // Segments (CSR offsets into pages: segment s is pages [segment_starts[s], segment_starts[s + 1]), first 0,
  // last pages.size()); empty: one segment. Each segment is reduced on its own (its page chunks depend only on
  // its length and the thread count) and the segments are folded into the result in order, as separate calls
  // with fold = true would: one call over a page list equals per-segment calls bit for bit, which lets the cache
  // read some segments from disk without changing the summation order (model/kv_paged.cpp).
  std::span<const int> segment_starts;
};

// Causal attention of n_q query tokens at positions [pos, pos + n_q): query i attends to cached
// positions [0, pos + i] (or its window of them), which the pages must hold. Query head h reads KV head h / (n_heads / n_kv_heads).
//   q: [n_q, n_heads, head_dim] f32 (not rotated; the kernel rotates when keys_rotated)
//   out: [n_q, n_heads, head_dim] f32;  scale multiplies q.k before the softmax.
void paged_attention_reference(const PagedKv& kv, int pos, int n_q, int n_heads, const float* q, float scale,
                               float* out);
//   lse (optional): [n_q, n_heads] log of the softmax denominator of each row (log sum_j exp(scale q.k_j)),
//   which lets results over disjoint page sets be merged exactly (merge_attention).
//   fold: out and lse (required) already hold the attention of earlier pages; this call's is folded into them
//   (merged as merge_attention does, in the kernel's own code, so that the result is the same bits as one call
//   over all the segments).
void paged_attention(const PagedKv& kv, int pos, int n_q, int n_heads, const float* q, float scale, float* out,
                     ThreadPool& pool, float* lse = nullptr, bool fold = false);

// Folds the attention of a disjoint set of pages (out_b, lse_b) into (out_a, lse_a), exactly:
// out = (e^lse_a out_a + e^lse_b out_b) / (e^lse_a + e^lse_b).  out_*: [rows, head_dim], lse_*: [rows].
// A side with lse = -inf (it saw no position) contributes nothing.
void merge_attention(float* out_a, float* lse_a, const float* out_b, const float* lse_b, int64_t rows,
                     int head_dim);

// The SIMD page-head decoder the kernel uses (dispatched), exposed so that tests can check it against
// kv::decode_page_head on every target.  k, v: [n_tokens, head_dim] f32.
void decode_page_head_simd(const kv::PageFormat& format, const uint8_t* page, int head, int n_tokens, float* k, float* v);

// Name of the Highway target the dispatched kernels run on now (for tests and benchmark labels).
const char* paged_attention_target();
// Whether that target's decode multiplies 2- and 4-bit per-channel-key pages' codes by 8-bit coefficients
// (AVX-512 VNNI): its results then differ from the f32 reference by the coefficients' rounding, not just
// by the order of f32 sums.
bool paged_attention_int8_coefficients();

}  // namespace kvtier::kernels
