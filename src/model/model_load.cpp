// Loading a model: config, tensor binding with type and shape checks, and the placement of the weights
// (mapped, locked or copied: kvtier/model.h WeightResidency).
#include <algorithm>
#include <cstring>
#include <functional>
#include <utility>
#include <vector>
#include <string>

#include "kvtier/f16.h"
#include "kvtier/model.h"
#include "kvtier/resources.h"
#include "model/gemma.h"

namespace kvtier {

namespace {

// Rows [first, first + count) of a matrix, as a matrix (a view of the same bytes).
kernels::WeightMatrix row_range(const kernels::WeightMatrix& m, int64_t first, int64_t count) {
  kernels::WeightMatrix r = m;
  r.data = static_cast<const uint8_t*>(m.data) + static_cast<size_t>(first) * m.row_bytes;
  r.rows = count;
  return r;
}

std::string shape_string(const gguf::TensorInfo& t) {
  std::string s = "[";
  for (int i = 0; i < t.n_dims; ++i) s += (i ? ", " : "") + std::to_string(t.ne[i]);
  return s + "]";
}

// Binds a 1-D f32 tensor of n elements (bind_weights' `vector`).
using BindVector = std::function<Status(const std::string& name, int64_t n, bool required, const float*& out)>;
Status bind_gemma_weights(const ModelConfig& c, const BindVector& bind_vector, std::vector<LayerWeights>& layers);

}  // namespace

Result<std::unique_ptr<Model>> Model::load(const std::string& path, const ModelLoadOptions& options,
                                           const ProgressFn& progress) {
  auto file = gguf::File::open(path);
  if (!file.ok()) return Status::error(file.error());
  auto bound = from_file(std::move(*file));
  if (!bound.ok()) return Status::error(path + ": " + bound.error());
  std::unique_ptr<Model> model = std::move(*bound);

  // Only tensor bytes are ever read: bytes of the file that no tensor uses (padding, anything appended after
  // the last tensor) stay on disk whatever the residency.
  gguf::File& f = *model->file_;
  switch (options.residency) {
    case WeightResidency::kMapped:
      // Read-ahead in the background: loading returns at once and the first tokens rarely wait for the disk.
      // Experts ("*_exps" tensors) are left to first use, so an MoE model reads only the experts it routes to.
      for (const gguf::TensorInfo& t : f.tensors()) {
        if (t.name.find("_exps.") == std::string::npos) f.advise_will_need(t);
      }
      break;
    case WeightResidency::kLocked:
      if (Status s = f.lock_tensors(progress); !s.ok()) model->load_warnings_.push_back(s.message());
      break;
    case WeightResidency::kCopied: {
      const uint64_t bytes = f.tensor_bytes();
      if (Status s = check_memory({{"weights read into memory", bytes}}, available_memory()); !s.ok()) {
        return Status::error(path + ": " + s.message());
      }
      if (Status s = f.copy_tensors_into_memory(progress); !s.ok()) return s;
      // 1-D tensors and matrices were bound to the mapping: bind them again to the copy.
      model->converted_.clear();
      if (Status s = model->bind_weights(); !s.ok()) return Status::error(path + ": " + s.message());
      break;
    }
  }
  return model;
}

Result<std::unique_ptr<Model>> Model::from_file(std::unique_ptr<gguf::File> file) {
  std::unique_ptr<Model> model(new Model());
  model->file_ = std::move(file);
  auto config = ModelConfig::from_gguf(*model->file_);
  if (!config.ok()) return config.status();
  model->config_ = *config;
  if (Status s = model->bind_weights(); !s.ok()) return s;
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
  // Layers grow as they bind: a block_count far beyond the tensors fails at the first missing one without
  // allocating for all of them first.
  layers_.clear();
  for (int l = 0; l < c.n_layers; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    LayerWeights& w = layers_.emplace_back();
    Status s;
    if (s = vector(p + "attn_norm.weight", c.n_embd, true, w.attn_norm); !s.ok()) return s;
    if (f.find_tensor(p + "attn_qkv.weight")) {  // fused (phi3): q rows, then k rows, then v rows
      kernels::WeightMatrix qkv;
      if (s = matrix(p + "attn_qkv.weight", q_dim + 2 * kv_dim, c.n_embd, qkv); !s.ok()) return s;
      w.wq = row_range(qkv, 0, q_dim);
      w.wk = row_range(qkv, q_dim, kv_dim);
      w.wv = row_range(qkv, q_dim + kv_dim, kv_dim);
    } else {
      if (s = matrix(p + "attn_q.weight", q_dim, c.n_embd, w.wq); !s.ok()) return s;
      if (s = matrix(p + "attn_k.weight", kv_dim, c.n_embd, w.wk); !s.ok()) return s;
      if (s = matrix(p + "attn_v.weight", kv_dim, c.n_embd, w.wv); !s.ok()) return s;
    }
    if (s = matrix(p + "attn_output.weight", c.n_embd, q_dim, w.wo); !s.ok()) return s;
    if (s = vector(p + "attn_q.bias", q_dim, c.has_qkv_bias, w.bq); !s.ok()) return s;
    if (s = vector(p + "attn_k.bias", kv_dim, c.has_qkv_bias, w.bk); !s.ok()) return s;
    if (s = vector(p + "attn_v.bias", kv_dim, c.has_qkv_bias, w.bv); !s.ok()) return s;
    if (s = vector(p + "attn_q_norm.weight", c.head_dim, c.has_qk_norm, w.q_norm); !s.ok()) return s;
    if (s = vector(p + "attn_k_norm.weight", c.head_dim, c.has_qk_norm, w.k_norm); !s.ok()) return s;
    if (s = vector(p + "ffn_norm.weight", c.n_embd, true, w.ffn_norm); !s.ok()) return s;
    if (c.n_expert > 0) {
      if (s = bind_experts(p, w); !s.ok()) return s;
    } else if (c.fused_gate_up) {  // phi3: ffn_up = [gate rows; up rows]
      kernels::WeightMatrix gate_up;
      if (s = matrix(p + "ffn_up.weight", 2 * static_cast<int64_t>(c.n_ff), c.n_embd, gate_up); !s.ok()) return s;
      w.w_gate = row_range(gate_up, 0, c.n_ff);
      w.w_up = row_range(gate_up, c.n_ff, c.n_ff);
    } else {
      if (s = matrix(p + "ffn_gate.weight", c.n_ff, c.n_embd, w.w_gate); !s.ok()) return s;
      if (s = matrix(p + "ffn_up.weight", c.n_ff, c.n_embd, w.w_up); !s.ok()) return s;
    }
    if (c.n_expert == 0) {
      if (s = matrix(p + "ffn_down.weight", c.n_embd, c.n_ff, w.w_down); !s.ok()) return s;
    }
  }
  if (c.has_longrope_factors) {  // both required, [rope_dims / 2] each
    const float* short_factors = nullptr;
    const float* long_factors = nullptr;
    if (Status s = vector("rope_factors_short.weight", c.rope_dims / 2, true, short_factors); !s.ok()) return s;
    if (Status s = vector("rope_factors_long.weight", c.rope_dims / 2, true, long_factors); !s.ok()) return s;
    rope_freq_factors_.assign(short_factors, short_factors + c.rope_dims / 2);
    rope_factors_long_.assign(long_factors, long_factors + c.rope_dims / 2);
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

// Gemma's extra norms (llama.cpp names): blk.N.post_attention_norm and blk.N.post_ffw_norm [n_embd] (gemma3's
// attn_q_norm / attn_k_norm are bound with qwen3's, by has_qk_norm). Gemma ties the output to token_embd.
Status bind_gemma_weights(const ModelConfig& c, const BindVector& bind_vector, std::vector<LayerWeights>& layers) {
  for (int l = 0; l < c.n_layers; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    LayerWeights& w = layers[l];
    if (Status s = bind_vector(p + "post_attention_norm.weight", c.n_embd, true, w.attn_post_norm); !s.ok()) return s;
    if (Status s = bind_vector(p + "post_ffw_norm.weight", c.n_embd, true, w.ffn_post_norm); !s.ok()) return s;
  }
  return {};
}

}  // namespace

}  // namespace kvtier
