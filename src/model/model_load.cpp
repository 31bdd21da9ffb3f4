// Loading a model: config, tensor binding with type and shape checks, and a
// pass over the mapped weights so their pages are resident before the first token.
#include <algorithm>
#include <cstring>
#include <functional>
#include <utility>
#include <vector>
#include <string>

#include "kvtier/f16.h"
#include "kvtier/model.h"
#include "model/gemma.h"

namespace kvtier {

namespace {

std::string shape_string(const gguf::TensorInfo& t) {
  std::string s = "[";
  for (int i = 0; i < t.n_dims; ++i) s += (i ? ", " : "") + std::to_string(t.ne[i]);
  return s + "]";
}

// Binds a 1-D f32 tensor of n elements (bind_weights' `vector`).
using BindVector = std::function<Status(const std::string& name, int64_t n, bool required, const float*& out)>;
Status bind_gemma_weights(const ModelConfig& c, const BindVector& bind_vector, std::vector<LayerWeights>& layers);

}  // namespace

Result<std::unique_ptr<Model>> Model::load(const std::string& path, const ProgressFn& progress) {
  auto file = gguf::File::open(path);
  if (!file.ok()) return Status::error(file.error());
  std::unique_ptr<Model> model(new Model());
  model->file_ = std::move(*file);
  auto config = ModelConfig::from_gguf(*model->file_);
  if (!config.ok()) return Status::error(path + ": " + config.error());
  model->config_ = *config;
  if (Status s = model->bind_weights(); !s.ok()) return Status::error(path + ": " + s.message());

  // Touch one byte per page of the tensors' bytes so the weights are resident (and a progress bar can show
  // the load) before the first forward pass. Only tensor bytes: bytes of the file that no tensor uses (padding,
  // anything appended after the last tensor) are never read.
  const gguf::File& f = *model->file_;
  std::vector<std::pair<uint64_t, uint64_t>> ranges;  // [begin, end) offsets into the data section, merged
  for (const gguf::TensorInfo& t : f.tensors()) ranges.emplace_back(t.offset, t.offset + t.n_bytes);
  std::sort(ranges.begin(), ranges.end());
  std::vector<std::pair<uint64_t, uint64_t>> merged;
  for (const auto& r : ranges) {
    if (!merged.empty() && r.first <= merged.back().second) {
      merged.back().second = std::max(merged.back().second, r.second);
    } else {
      merged.push_back(r);
    }
  }
  uint64_t total = 0;
  for (const auto& r : merged) total += r.second - r.first;
  constexpr uint64_t kPage = 4096;
  constexpr uint64_t kReport = 16ull << 20;
  const uint8_t* data = f.base() + f.data_offset();
  volatile uint8_t sink = 0;
  uint64_t done = 0, next_report = 0;
  for (const auto& [begin, end] : merged) {
    for (uint64_t off = begin; off < end; off += kPage) sink = sink + data[off];
    done += end - begin;
    if (progress && done >= next_report) {
      progress(done, total);
      next_report = done + kReport;
    }
  }
  if (progress) progress(total, total);
  return model;
}

Status Model::bind_weights() {
  const ModelConfig& c = config_;
  const gguf::File& f = *file_;
  weight_bytes_ = 0;

  // A 2-D weight matrix [rows, cols] (GGUF ne = {cols, rows}) of a computable type.
  auto matrix = [&](const std::string& name, int64_t rows, int64_t cols,
                    kernels::WeightMatrix& out) -> Status {
    const gguf::TensorInfo* t = f.find_tensor(name);
    if (!t) return Status::error("tensor " + name + " is missing");
    if (t->n_dims != 2 || t->ne[0] != cols || t->ne[1] != rows) {
      return Status::error("tensor " + name + " has shape " + shape_string(*t) + ", expected [" +
                           std::to_string(cols) + ", " + std::to_string(rows) + "]");
    }
    if (!kernels::is_supported_weight_type(t->type)) {
      return Status::error("tensor " + name + " has type " + ggml_type_name(t->type) +
                           ", which kvtier cannot compute with yet");
    }
    out = {t->type, t->data, rows, cols, ggml_row_bytes(t->type, cols)};
    weight_bytes_ += t->n_bytes;
    return {};
  };
  // A 1-D f32 vector of n elements (F16/BF16 are converted once).
  auto vector = [&](const std::string& name, int64_t n, bool required, const float*& out) -> Status {
    const gguf::TensorInfo* t = f.find_tensor(name);
    if (!t) {
      out = nullptr;
      return required ? Status::error("tensor " + name + " is missing") : Status();
    }
    if (t->n_elements() != n) {
      return Status::error("tensor " + name + " has shape " + shape_string(*t) + ", expected [" +
                           std::to_string(n) + "]");
    }
    weight_bytes_ += t->n_bytes;
    if (t->type == GgmlType::F32) {
      out = reinterpret_cast<const float*>(t->data);
      return {};
    }
    if (t->type != GgmlType::F16 && t->type != GgmlType::BF16) {
      return Status::error("tensor " + name + " has type " + ggml_type_name(t->type) + ", expected F32");
    }
    std::vector<float>& converted = converted_.emplace_back(n);
    for (int64_t i = 0; i < n; ++i) {
      uint16_t bits;
      std::memcpy(&bits, t->data + 2 * i, 2);
      converted[i] = t->type == GgmlType::F16 ? f16_to_f32(bits) : bf16_to_f32(bits);
    }
    out = converted.data();
    return {};
  };

  const int64_t q_dim = static_cast<int64_t>(c.n_heads) * c.head_dim;
  const int64_t kv_dim = static_cast<int64_t>(c.n_kv_heads) * c.head_dim;
  if (Status s = matrix("token_embd.weight", c.n_vocab, c.n_embd, token_embd_); !s.ok()) return s;
  if (c.tied_embeddings) {
    output_ = token_embd_;
  } else if (Status s = matrix("output.weight", c.n_vocab, c.n_embd, output_); !s.ok()) {
    return s;
  }
  if (Status s = vector("output_norm.weight", c.n_embd, true, output_norm_); !s.ok()) return s;
  layers_.assign(c.n_layers, {});
  for (int l = 0; l < c.n_layers; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    LayerWeights& w = layers_[l];
    Status s;
    if (s = vector(p + "attn_norm.weight", c.n_embd, true, w.attn_norm); !s.ok()) return s;
    if (s = matrix(p + "attn_q.weight", q_dim, c.n_embd, w.wq); !s.ok()) return s;
    if (s = matrix(p + "attn_k.weight", kv_dim, c.n_embd, w.wk); !s.ok()) return s;
    if (s = matrix(p + "attn_v.weight", kv_dim, c.n_embd, w.wv); !s.ok()) return s;
    if (s = matrix(p + "attn_output.weight", c.n_embd, q_dim, w.wo); !s.ok()) return s;
    if (s = vector(p + "attn_q.bias", q_dim, c.has_qkv_bias, w.bq); !s.ok()) return s;
    if (s = vector(p + "attn_k.bias", kv_dim, c.has_qkv_bias, w.bk); !s.ok()) return s;
    if (s = vector(p + "attn_v.bias", kv_dim, c.has_qkv_bias, w.bv); !s.ok()) return s;
    if (s = vector(p + "ffn_norm.weight", c.n_embd, true, w.ffn_norm); !s.ok()) return s;
    if (s = matrix(p + "ffn_gate.weight", c.n_ff, c.n_embd, w.w_gate); !s.ok()) return s;
    if (s = matrix(p + "ffn_up.weight", c.n_ff, c.n_embd, w.w_up); !s.ok()) return s;
    if (s = matrix(p + "ffn_down.weight", c.n_embd, c.n_ff, w.w_down); !s.ok()) return s;
  }
  if (c.has_rope_freq_factors) {
    const float* factors = nullptr;
    if (Status s = vector("rope_freqs.weight", c.rope_dims / 2, true, factors); !s.ok()) return s;
    rope_freq_factors_.assign(factors, factors + c.rope_dims / 2);
  }
  if (c.gemma) return bind_gemma_weights(c, vector, layers_);
  return {};
}

namespace {

// Gemma's extra norms (llama.cpp names): blk.N.post_attention_norm and blk.N.post_ffw_norm [n_embd], and for
// gemma3 blk.N.attn_q_norm and blk.N.attn_k_norm [head_dim]. Gemma ties the output to token_embd.
Status bind_gemma_weights(const ModelConfig& c, const BindVector& bind_vector, std::vector<LayerWeights>& layers) {
  for (int l = 0; l < c.n_layers; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    LayerWeights& w = layers[l];
    const struct {
      std::string name;
      int64_t n;
      bool wanted;
      const float** out;
    } norms[] = {{p + "post_attention_norm.weight", c.n_embd, true, &w.attn_post_norm},
                 {p + "post_ffw_norm.weight", c.n_embd, true, &w.ffn_post_norm},
                 {p + "attn_q_norm.weight", c.head_dim, c.has_qk_norm, &w.attn_q_norm},
                 {p + "attn_k_norm.weight", c.head_dim, c.has_qk_norm, &w.attn_k_norm}};
    for (const auto& norm : norms) {
      if (!norm.wanted) continue;
      if (Status s = bind_vector(norm.name, norm.n, true, *norm.out); !s.ok()) return s;
    }
  }
  return {};
}

}  // namespace

}  // namespace kvtier
