// The transformer forward pass (llama, qwen2, qwen3, qwen3moe, smollm3, phi3), batched over tokens.
//
// One micro-batch of n rows: the tokens of one or more sequences (segments), each at its own positions
// [pos, pos + n) of its own cache; everything but the attention runs over all rows at once:
//   x = embed(tokens)                                        x: [n, n_embd]
//   per layer:  xn = rmsnorm(x) * attn_norm
//               q, k, v = xn Wq^T (+bq), xn Wk^T (+bk), xn Wv^T (+bv)
//               q, k = rmsnorm per head * q_norm, k_norm       (qwen3)
//               RoPE on q and k                               (not on smollm3's NoPE layers)
//               per segment: cache.store(k, v); attn = cache.attend(q)   (causal, GQA)
//               x += attn Wo^T
//               xn = rmsnorm(x) * ffn_norm
//               x += (silu(xn Wgate^T) * (xn Wup^T)) Wdown^T      (in chunks of kFfnChunk tokens)
//                    or the routed experts' weighted sum of that (moe.cpp)
//   logits = (rmsnorm(x) * output_norm) Woutput^T            for the rows asked for
// Gemma 2/3 (config.gemma, model/gemma.h) adds: x scaled by sqrt(n_embd) after the embedding, per-head q/k
// RMSNorms, its own RoPE table for sliding-window layers, each layer's window (and soft-cap) in the attention,
// RMSNorms of the attention and FFN outputs before their residual adds, GeGLU instead of SwiGLU, and
// soft-capped logits.
#include <algorithm>
#include <cassert>
#include <cmath>

#include "kvtier/model.h"
#include "model/activation.h"
#include "model/gemma.h"
#include "model/rope_table.h"

namespace kvtier {

namespace {

// out = x / sqrt(mean(x^2) + eps) * weight, for each of n rows of width d.
// The sum of squares is taken in double, as GGML does.
void rms_norm(const float* x, const float* weight, int n, int d, float eps, float* out) {
  for (int t = 0; t < n; ++t) {
    const float* row = x + static_cast<size_t>(t) * d;
    float* dst = out + static_cast<size_t>(t) * d;
    double sum = 0;
    for (int i = 0; i < d; ++i) sum += static_cast<double>(row[i] * row[i]);
    const float scale = 1.0f / std::sqrt(static_cast<float>(sum / d) + eps);
    for (int i = 0; i < d; ++i) dst[i] = row[i] * scale * weight[i];
  }
}

void add_bias(float* rows, const float* bias, int n, int d) {
  if (!bias) return;
  for (int t = 0; t < n; ++t) {
    for (int i = 0; i < d; ++i) rows[static_cast<size_t>(t) * d + i] += bias[i];
  }
}

// YaRN's correction range (ggml_rope_yarn_corr_dims): the rotary dims whose wavelength fits between
// beta_fast and beta_slow turns over the original context.  dims[0] <= dims[1].
void yarn_corr_dims(const ModelConfig& c, float dims[2]) {
  const int n_dims = c.rope_dims;
  auto corr_dim = [&](float n_rot) {
    return static_cast<float>(n_dims) * std::log(static_cast<float>(c.rope_n_ctx_orig) / (n_rot * 2.0f * 3.14159265358979323846f)) /
           (2.0f * std::log(c.rope_freq_base));
  };
  dims[0] = std::max(0.0f, std::floor(corr_dim(c.yarn_beta_fast)));
  dims[1] = std::min(static_cast<float>(n_dims - 1), std::ceil(corr_dim(c.yarn_beta_slow)));
}

}  // namespace

// Rotary position embedding, computed as GGML does (theta multiplied by theta_scale pair after pair, in
// float) so results match llama.cpp closely. The angles depend only on the position, so one table serves q
// and k of every layer.  cos_sin: [n][rope_dims] (cos, sin) pairs for positions [pos, pos + n).
void rope_table(const ModelConfig& c, const std::vector<float>& freq_factors, int n, int pos, float* cos_sin) {
  const int dims = c.rope_dims;
  const float theta_scale = std::pow(c.rope_freq_base, -2.0f / static_cast<float>(dims));
  const bool yarn = c.rope_scaling == RopeScaling::kYarn;
  float corr[2] = {0, 0};
  if (yarn) yarn_corr_dims(c, corr);
  const float mscale = c.rope_mscale;
  for (int t = 0; t < n; ++t) {
    float theta = static_cast<float>(pos + t);
    float* row = cos_sin + static_cast<size_t>(t) * dims;
    for (int i = 0; i < dims; i += 2) {
      const float factor = freq_factors.empty() ? 1.0f : freq_factors[i / 2];
      const float extrapolated = theta / factor;
      float angle = c.rope_freq_scale * extrapolated;
      if (yarn) {  // ramp from extrapolation (fast dims, below corr[0]) to interpolation (above corr[1])
        const float y = (static_cast<float>(i / 2) - corr[0]) / std::max(0.001f, corr[1] - corr[0]);
        const float ramp = 1.0f - std::min(1.0f, std::max(0.0f, y));
        angle = angle * (1.0f - ramp) + extrapolated * ramp;
      }
      row[i] = std::cos(angle) * mscale;
      row[i + 1] = std::sin(angle) * mscale;
      theta *= theta_scale;
    }
  }
}

namespace {

// rows: [n, n_heads, head_dim], rotated in place with the table of rope_table.
void apply_rope(const ModelConfig& c, const std::vector<float>& cos_sin, float* rows, int n_heads, int n) {
  const int dims = c.rope_dims;
  for (int t = 0; t < n; ++t) {
    const float* cs = cos_sin.data() + static_cast<size_t>(t) * dims;
    for (int h = 0; h < n_heads; ++h) {
      float* v = rows + (static_cast<size_t>(t) * n_heads + h) * c.head_dim;
      for (int i = 0; i < dims; i += 2) {
        // Normal mode rotates adjacent pairs; NeoX rotates element j with j + dims/2.
        const int a = c.rope_mode == RopeMode::kNormal ? i : i / 2;
        const int b = c.rope_mode == RopeMode::kNormal ? i + 1 : i / 2 + dims / 2;
        const float x0 = v[a], x1 = v[b];
        v[a] = x0 * cs[i] - x1 * cs[i + 1];
        v[b] = x0 * cs[i + 1] + x1 * cs[i];
      }
    }
  }
}

}  // namespace

void Model::ensure_scratch(int n) {
  if (n <= scratch_tokens_) return;
  const ModelConfig& c = config_;
  const size_t tokens = static_cast<size_t>(n);
  const size_t q_dim = static_cast<size_t>(c.n_heads) * c.head_dim;
  const size_t kv_dim = static_cast<size_t>(c.n_kv_heads) * c.head_dim;
  x_.resize(tokens * c.n_embd);
  xn_.resize(tokens * c.n_embd);
  q_.resize(tokens * q_dim);
  k_.resize(tokens * kv_dim);
  v_.resize(tokens * kv_dim);
  attn_.resize(tokens * q_dim);
  const size_t ffn_tokens = std::min<size_t>(tokens, kFfnChunk);
  const size_t ff = static_cast<size_t>(std::max(c.n_ff, c.n_ff_expert));
  gate_.resize(ffn_tokens * ff);
  up_.resize(ffn_tokens * ff);
  if (c.n_expert > 0) {
    router_.resize(tokens * c.n_expert);
    expert_in_.resize(ffn_tokens * c.n_embd);
    expert_out_.resize(ffn_tokens * c.n_embd);
  }
  proj_.resize(tokens * c.n_embd);
  scratch_tokens_ = n;
}

Status Model::check_segment(const ForwardSegment& seg) const {
  const ModelConfig& c = config_;
  if (seg.n <= 0 || seg.cache == nullptr || seg.tokens == nullptr) return Status::error("forward: empty batch");
  if (seg.pos != seg.cache->n_tokens()) {
    return Status::error("forward: position " + std::to_string(seg.pos) + " does not follow the cache's " +
                         std::to_string(seg.cache->n_tokens()) + " tokens");
  }
  if (seg.pos + seg.n > seg.cache->geometry().max_tokens) {
    return Status::error("context is full: " + std::to_string(seg.pos + seg.n) + " tokens exceed the context size " +
                         std::to_string(seg.cache->geometry().max_tokens) + " (raise -c)");
  }
  for (int i = 0; i < seg.n; ++i) {
    if (seg.tokens[i] < 0 || seg.tokens[i] >= c.n_vocab) {
      return Status::error("token id " + std::to_string(seg.tokens[i]) + " is outside the vocabulary");
    }
  }
  return {};
}

Status Model::forward(const int32_t* tokens, int n, int pos, KvCache& cache, ThreadPool& pool, int logits_from,
                      float* logits, const ProgressFn& progress) {
  if (Status s = check_segment({tokens, n, pos, &cache, 0, nullptr}); !s.ok()) return s;
  logits_from = std::clamp(logits_from, 0, n);
  // A cache in a GPU's memory: the whole pass runs there (kvtier/device.h).
  if (DeviceForward* device = cache.device_forward()) return device->forward(tokens, n, pos, logits_from, logits, progress);
  for (int start = 0; start < n; start += kMaxBatch) {
    const int count = std::min(kMaxBatch, n - start);
    // Logits rows of this micro-batch: [max(logits_from - start, 0), count).
    const int local_from = std::clamp(logits_from - start, 0, count);
    float* local_logits = logits ? logits + static_cast<size_t>(std::max(0, start - logits_from)) * config_.n_vocab
                                 : nullptr;
    const ForwardSegment segment{tokens + start, count, pos + start, &cache, local_from, local_logits};
    if (Status s = forward_batch({&segment, 1}, pool); !s.ok()) return s;
    if (progress) progress(start + count, n);
  }
  return {};
}

Status Model::forward_segments(std::span<const ForwardSegment> segments, ThreadPool& pool) {
  int total = 0;
  for (size_t i = 0; i < segments.size(); ++i) {
    if (Status s = check_segment(segments[i]); !s.ok()) return s;
    for (size_t j = 0; j < i; ++j) {
      if (segments[j].cache == segments[i].cache) return Status::error("forward: two segments share one cache");
    }
    total += segments[i].n;
  }
  if (segments.empty()) return Status::error("forward: empty batch");
  for (const ForwardSegment& seg : segments) {
    if (DeviceForward* device = seg.cache->device_forward()) {
      if (segments.size() > 1) {
        return Status::error("forward: batches of several sequences do not run on the GPU backend yet");
      }
      return device->forward(seg.tokens, seg.n, seg.pos, std::clamp(seg.logits_from, 0, seg.n), seg.logits, {});
    }
  }
  if (total > kMaxBatch) {
    return Status::error("forward: " + std::to_string(total) + " tokens in one batch, more than " +
                         std::to_string(kMaxBatch));
  }
  return forward_batch(segments, pool);
}

// One micro-batch: the rows of every segment, one after another (segment i's rows start at first_row[i]).
Status Model::forward_batch(std::span<const ForwardSegment> segments, ThreadPool& pool) {
  const ModelConfig& c = config_;
  std::vector<int> first_row(segments.size() + 1, 0);  // [segments + 1] row offsets
  for (size_t i = 0; i < segments.size(); ++i) first_row[i + 1] = first_row[i] + segments[i].n;
  const int n = first_row.back();
  ensure_scratch(n);
  const int d = c.n_embd;
  const int q_dim = c.n_heads * c.head_dim;
  const int kv_dim = c.n_kv_heads * c.head_dim;
  const float attn_scale = c.attn_scale > 0 ? c.attn_scale : 1.0f / std::sqrt(static_cast<float>(c.head_dim));
  // Sliding-window layers with a RoPE base of their own (Gemma 3: 10000 locally, the scaled base globally).
  const bool windowed_rope = c.sliding_window > 0 &&
                             (c.rope_freq_base_swa != c.rope_freq_base || c.rope_freq_scale_swa != c.rope_freq_scale);
  rope_.resize(static_cast<size_t>(n) * c.rope_dims);
  if (windowed_rope) rope_swa_.resize(static_cast<size_t>(n) * c.rope_dims);
  for (size_t i = 0; i < segments.size(); ++i) {
    const ForwardSegment& seg = segments[i];
    const size_t row0 = static_cast<size_t>(first_row[i]) * c.rope_dims;
    // LongRoPE: the long factors when the context (the cache's size) exceeds the original one, as llama.cpp.
    const bool long_rope = !rope_factors_long_.empty() && seg.cache->geometry().max_tokens > c.rope_n_ctx_orig;
    rope_table(c, long_rope ? rope_factors_long_ : rope_freq_factors_, seg.n, seg.pos, rope_.data() + row0);
    if (windowed_rope) {
      ModelConfig local = c;
      local.rope_freq_base = c.rope_freq_base_swa;
      local.rope_freq_scale = c.rope_freq_scale_swa;
      rope_table(local, {}, seg.n, seg.pos, rope_swa_.data() + row0);
    }
    for (int t = 0; t < seg.n; ++t) {
      kernels::get_row(token_embd_, seg.tokens[t], x_.data() + static_cast<size_t>(first_row[i] + t) * d);
    }
  }
  if (c.gemma) scale_embeddings(x_.data(), n, d);

  for (int l = 0; l < c.n_layers; ++l) {
    const LayerWeights& w = layers_[l];
    rms_norm(x_.data(), w.attn_norm, n, d, c.rms_eps, xn_.data());
    const kernels::MatmulOutput qkv[] = {{&w.wq, q_.data()}, {&w.wk, k_.data()}, {&w.wv, v_.data()}};
    kernels::matmul_shared(qkv, xn_.data(), n, pool);
    add_bias(q_.data(), w.bq, n, q_dim);
    add_bias(k_.data(), w.bk, n, kv_dim);
    add_bias(v_.data(), w.bv, n, kv_dim);
    if (w.q_norm) rms_norm(q_.data(), w.q_norm, n * c.n_heads, c.head_dim, c.rms_eps, q_.data());
    if (w.k_norm) rms_norm(k_.data(), w.k_norm, n * c.n_kv_heads, c.head_dim, c.rms_eps, k_.data());
    if (c.layer_uses_rope(l)) {
      const std::vector<float>& rope = windowed_rope && c.layer_is_windowed(l) ? rope_swa_ : rope_;
      apply_rope(c, rope, q_.data(), c.n_heads, n);
      apply_rope(c, rope, k_.data(), c.n_kv_heads, n);
    }
    // Attention: each segment over its own cache.
    const AttentionParams attention{attn_scale, c.layer_window(l), c.attn_softcap};
    for (size_t i = 0; i < segments.size(); ++i) {
      const ForwardSegment& seg = segments[i];
      const size_t row = static_cast<size_t>(first_row[i]);
      if (Status s = seg.cache->store(l, seg.pos, seg.n, k_.data() + row * kv_dim, v_.data() + row * kv_dim);
          !s.ok()) {
        return s;
      }
      if (Status s = seg.cache->attend(l, seg.pos, seg.n, c.n_heads, q_.data() + row * q_dim,
                                       attn_.data() + row * q_dim, attention, pool);
          !s.ok()) {
        return s;
      }
    }
    kernels::matmul(w.wo, attn_.data(), n, proj_.data(), pool);
    if (w.attn_post_norm) rms_norm(proj_.data(), w.attn_post_norm, n, d, c.rms_eps, proj_.data());
    for (size_t i = 0; i < static_cast<size_t>(n) * d; ++i) x_[i] += proj_[i];

    rms_norm(x_.data(), w.ffn_norm, n, d, c.rms_eps, xn_.data());
    if (c.n_expert > 0) moe_ffn(w, n, pool);
    for (int first = 0; first < n && c.n_expert == 0; first += kFfnChunk) {  // tokens [first, first + rows)
      const int rows = std::min(kFfnChunk, n - first);
      const float* xn_rows = xn_.data() + static_cast<size_t>(first) * d;
      const kernels::MatmulOutput gate_up[] = {{&w.w_gate, gate_.data()}, {&w.w_up, up_.data()}};
      kernels::matmul_shared(gate_up, xn_rows, rows, pool);
      gated_activation(c.gemma, gate_.data(), up_.data(), static_cast<size_t>(rows) * c.n_ff, pool);
      kernels::matmul(w.w_down, gate_.data(), rows, proj_.data() + static_cast<size_t>(first) * d, pool);
    }
    if (w.ffn_post_norm) rms_norm(proj_.data(), w.ffn_post_norm, n, d, c.rms_eps, proj_.data());
    for (size_t i = 0; i < static_cast<size_t>(n) * d; ++i) x_[i] += proj_[i];
  }

  // Logits: the rows asked for, of every segment, gathered into xn_ and through the output matrix at once.
  int rows = 0;
  for (size_t i = 0; i < segments.size(); ++i) {
    const ForwardSegment& seg = segments[i];
    const int from = std::clamp(seg.logits_from, 0, seg.n);
    if (!seg.logits || from == seg.n) continue;
    const size_t src = static_cast<size_t>(first_row[i] + from) * d;
    rms_norm(x_.data() + src, output_norm_, seg.n - from, d, c.rms_eps, xn_.data() + static_cast<size_t>(rows) * d);
    rows += seg.n - from;
  }
  if (rows == 0) return {};
  const size_t vocab = static_cast<size_t>(c.n_vocab);
  // One segment's logits go straight to its buffer; several are computed together, then handed out.
  const bool direct = segments.size() == 1;
  if (!direct) logits_.resize(static_cast<size_t>(rows) * vocab);
  float* out = direct ? segments[0].logits : logits_.data();
  kernels::matmul(output_, xn_.data(), rows, out, pool);
  if (c.final_softcap > 0) soft_cap(out, static_cast<size_t>(rows) * vocab, c.final_softcap);
  if (direct) return {};
  size_t row = 0;
  for (const ForwardSegment& seg : segments) {
    const int from = std::clamp(seg.logits_from, 0, seg.n);
    if (!seg.logits || from == seg.n) continue;
    const size_t count = static_cast<size_t>(seg.n - from) * vocab;
    std::copy(logits_.data() + row * vocab, logits_.data() + row * vocab + count, seg.logits);
    row += static_cast<size_t>(seg.n - from);
  }
  return {};
}

}  // namespace kvtier
