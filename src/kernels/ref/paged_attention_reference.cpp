// Scalar reference for paged attention: decode each page with the format's reference decoder, then a
// plain two-pass softmax in double precision. The definition the SIMD kernel is tested against.
#include <algorithm>
#include <cassert>
#include <cmath>
#include <vector>

#include "kernels/paged_attention.h"
#include "kv/codec.h"

namespace kvtier::kernels {

void paged_attention_reference(const PagedKv& kv, int pos, int n_q, int n_heads, const float* q, float scale,
                               float* out) {
  assert(n_heads % kv.n_kv_heads == 0);
  const int group = n_heads / kv.n_kv_heads;
  const int hd = kv.head_dim;
  // Positions [first_cached, n_cached) are in the pages (a windowed layer may have released older ones).
  const int first_cached = kv.pages.empty() ? 0 : kv.pages.front().first_pos;
  int n_cached = first_cached;
  for (const kv::PageRef& p : kv.pages) {
    assert(p.first_pos == n_cached);
    n_cached += p.n_tokens;
  }
  assert(pos + n_q <= n_cached);
  // Decoded keys and values of one KV head: [n_cached, head_dim] each.
  std::vector<float> keys(static_cast<size_t>(n_cached) * hd), values(keys.size());
  std::vector<float> query(hd);
  std::vector<double> scores(n_cached);
  for (int kvh = 0; kvh < kv.n_kv_heads; ++kvh) {
    for (const kv::PageRef& p : kv.pages) {
      kv::decode_page_head(*p.format, p.data, kvh, p.n_tokens, keys.data() + static_cast<size_t>(p.first_pos) * hd,
                           values.data() + static_cast<size_t>(p.first_pos) * hd);
    }
    for (int i = 0; i < n_q; ++i) {
      const int n_visible = pos + i + 1;
      const int first = kv.window > 0 ? std::max(0, pos + i - kv.window + 1) : 0;
      assert(first >= first_cached);
      for (int h = kvh * group; h < (kvh + 1) * group; ++h) {
        const size_t offset = (static_cast<size_t>(i) * n_heads + h) * hd;
        std::copy(q + offset, q + offset + hd, query.begin());
        if (kv.keys_rotated) kv::hadamard_rotate(query.data(), hd);
        double max_score = -INFINITY;
        for (int t = first; t < n_visible; ++t) {
          double dot = 0;
          for (int d = 0; d < hd; ++d) dot += static_cast<double>(query[d]) * keys[static_cast<size_t>(t) * hd + d];
          scores[t] = dot * scale;
          if (kv.softcap > 0) scores[t] = kv.softcap * std::tanh(scores[t] / kv.softcap);
          max_score = std::max(max_score, scores[t]);
        }
        double sum = 0;
        for (int t = first; t < n_visible; ++t) sum += scores[t] = std::exp(scores[t] - max_score);
        for (int d = 0; d < hd; ++d) {
          double acc = 0;
          for (int t = first; t < n_visible; ++t) acc += scores[t] * values[static_cast<size_t>(t) * hd + d];
          out[offset + d] = static_cast<float>(acc / sum);
        }
      }
    }
  }
}

}  // namespace kvtier::kernels
