// Gemma 2 / Gemma 3 test models made from a trained Llama-architecture GGUF (the project's tiny-llama-6m):
// its weights placed in Gemma's tensor layout so that the model keeps peaked next-token distributions, and
// greedy text and perplexity are meaningful comparisons with llama.cpp (issue 17's method). Header-only so that
// tests build the file at run time (tests/model/gemma_reference_test.cpp); tools/make_gemma_model.cpp is the
// command line and scripts/make_gemma_references.sh records llama.cpp's outputs on the same files.
//
// What changes from the Llama weights, and why the model still works:
//   - RoPE: Gemma rotates NeoX halves, Llama adjacent pairs. The rows of attn_q/attn_k are permuted within each
//     head (even dims first, then odd) so NeoX rotation of the new rows is the Llama rotation of the old ones;
//     q.k is unchanged by permuting both alike.
//   - FFN: GeGLU instead of SwiGLU. gelu(x) ~ x sigmoid(1.702 x), so gate rows / 1.702 and up rows * 1.702 keep
//     silu(g) u nearly as it was.
//   - Gemma scales embeddings by sqrt(n_embd) (the residual stream becomes sqrt(n_embd) times Llama's; the
//     pre-norms do not mind) and normalises each sub-block's output (post-norms). attn_output and ffn_down are
//     scaled by `post_scale` (stored F32, too small for f16) so that their outputs' mean square is near the
//     norm's epsilon: the post-norm then mostly scales, out = y / sqrt(mean(y^2) + eps) * w, with the constant
//     weight w = sqrt(n_embd) sqrt(eps) / post_scale restoring the Llama contribution. Normalising a constant
//     RMS away outright (weights "ones-ish") destroys this model: its sub-block outputs differ in size from
//     token to token, and greedy text degenerates to repeating the prompt's last token.
//   - Gemma 3's per-head q/k norms: constant weights (`q_norm`, `k_norm`) that keep attention about as sharp.
//   - Sliding windows smaller than the test context (`window`); Gemma 2 soft-caps its attention and output
//     logits at values that bite on this model; Gemma 3 gets a distinct global RoPE base.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "kvtier/f16.h"
#include "kvtier/gguf.h"
#include "kvtier/gguf_writer.h"
#include "kvtier/status.h"

namespace kvtier::tools {

struct GemmaModelOptions {
  std::string architecture = "gemma3";  // gemma2 or gemma3
  int window = 32;                      // attention.sliding_window
  int pattern = 2;                      // attention.sliding_window_pattern (every pattern-th layer global)
  float attn_softcap = 20.0f;           // gemma2 only
  float final_softcap = 15.0f;          // gemma2 only
  float global_rope_base = 20000.0f;    // gemma3 global layers (the windowed ones keep 10000)
  float post_scale = 1e-3f;
  float q_norm = 1.0f, k_norm = 2.0f;   // gemma3
};

namespace gemma_detail {

inline std::vector<float> tensor_floats(const gguf::TensorInfo& t) {
  std::vector<float> out(static_cast<size_t>(t.n_elements()));
  for (size_t i = 0; i < out.size(); ++i) {
    if (t.type == GgmlType::F32) {
      std::memcpy(&out[i], t.data + 4 * i, 4);
    } else {
      uint16_t bits;
      std::memcpy(&bits, t.data + 2 * i, 2);
      out[i] = t.type == GgmlType::F16 ? f16_to_f32(bits) : bf16_to_f32(bits);
    }
  }
  return out;
}

inline std::vector<uint8_t> to_f16_bytes(const std::vector<float>& v) {
  std::vector<uint8_t> out(v.size() * 2);
  for (size_t i = 0; i < v.size(); ++i) {
    const uint16_t bits = f32_to_f16(v[i]);
    std::memcpy(out.data() + 2 * i, &bits, 2);
  }
  return out;
}

// Copies one metadata value (the types a tokenizer uses); false for a type it does not handle.
inline bool copy_value(gguf::GgufWriter& w, const std::string& key, const gguf::Value& v) {
  using gguf::ValueType;
  switch (v.type) {
    case ValueType::STRING: w.set_string(key, v.str); return true;
    case ValueType::UINT32: w.set_u32(key, static_cast<uint32_t>(v.u)); return true;
    case ValueType::INT32: w.set_i32(key, static_cast<int32_t>(v.i)); return true;
    case ValueType::BOOL: w.set_bool(key, v.b); return true;
    case ValueType::FLOAT32: w.set_f32(key, static_cast<float>(v.f)); return true;
    case ValueType::ARRAY:
      if (v.array_type == ValueType::STRING) {
        w.set_array_str(key, std::vector<std::string>(v.array_strings.begin(), v.array_strings.end()));
        return true;
      }
      if (v.array_type == ValueType::INT32) {
        std::vector<int32_t> a(v.array_count);
        std::memcpy(a.data(), v.array_data, a.size() * 4);
        w.set_array_i32(key, a);
        return true;
      }
      if (v.array_type == ValueType::FLOAT32) {
        std::vector<float> a(v.array_count);
        std::memcpy(a.data(), v.array_data, a.size() * 4);
        w.set_array_f32(key, a);
        return true;
      }
      return false;
    default: return false;
  }
}

}  // namespace gemma_detail

// Fills `w` with the Gemma model made from a Llama-architecture source file (an untied output is dropped:
// Gemma ties it to token_embd).
inline Status make_gemma_model(const gguf::File& src, const GemmaModelOptions& o, gguf::GgufWriter& w) {
  using namespace gemma_detail;
  if (o.architecture != "gemma2" && o.architecture != "gemma3") {
    return Status::error("architecture must be gemma2 or gemma3, not '" + o.architecture + "'");
  }
  auto arch = src.get_string("general.architecture");
  if (!arch.ok() || *arch != "llama") return Status::error("the source model must be a llama-architecture GGUF");
  const bool g3 = o.architecture == "gemma3";
  auto u32 = [&](const char* k) { return src.get_u32(std::string("llama.") + k); };
  auto embd = u32("embedding_length"), layers = u32("block_count"), ff = u32("feed_forward_length"),
       heads = u32("attention.head_count"), ctx = u32("context_length");
  for (const auto* r : {&embd, &layers, &ff, &heads, &ctx}) {
    if (!r->ok()) return r->status();
  }
  const uint32_t kv_heads = src.find("llama.attention.head_count_kv") ? *u32("attention.head_count_kv") : *heads;
  const int n_embd = static_cast<int>(*embd), n_head = static_cast<int>(*heads);
  const int head_dim = n_embd / n_head;
  auto eps = src.get_f32("llama.attention.layer_norm_rms_epsilon");
  if (!eps.ok()) return eps.status();

  const std::string a = o.architecture + ".";
  w.set_string("general.architecture", o.architecture);
  w.set_string("general.name", "kvtier test " + o.architecture + " from tiny-llama weights");
  w.set_u32("general.file_type", 1);  // MOSTLY_F16
  w.set_u32(a + "context_length", *ctx);
  w.set_u32(a + "embedding_length", *embd);
  w.set_u32(a + "block_count", *layers);
  w.set_u32(a + "feed_forward_length", *ff);
  w.set_u32(a + "attention.head_count", *heads);
  w.set_u32(a + "attention.head_count_kv", kv_heads);
  w.set_u32(a + "attention.key_length", static_cast<uint32_t>(head_dim));
  w.set_u32(a + "attention.value_length", static_cast<uint32_t>(head_dim));
  w.set_f32(a + "attention.layer_norm_rms_epsilon", *eps);
  w.set_u32(a + "attention.sliding_window", static_cast<uint32_t>(o.window));
  w.set_u32(a + "attention.sliding_window_pattern", static_cast<uint32_t>(o.pattern));
  if (g3) {
    w.set_f32(a + "rope.freq_base", o.global_rope_base);
    w.set_f32(a + "rope.freq_base_swa", 10000.0f);
  } else {
    w.set_f32(a + "rope.freq_base", 10000.0f);
    w.set_f32(a + "attn_logit_softcapping", o.attn_softcap);
    w.set_f32(a + "final_logit_softcapping", o.final_softcap);
  }
  for (const auto& [key, value] : src.metadata()) {
    if (key.rfind("tokenizer.", 0) == 0 && !copy_value(w, key, value)) {
      return Status::error("cannot copy metadata " + key + " (value type)");
    }
  }

  auto tensor = [&](const std::string& name) -> Result<const gguf::TensorInfo*> {
    const gguf::TensorInfo* t = src.find_tensor(name);
    if (!t) return Status::error("source tensor " + name + " is missing");
    if (t->type != GgmlType::F16 && t->type != GgmlType::F32 && t->type != GgmlType::BF16) {
      return Status::error("source tensor " + name + " must be F16/BF16/F32");
    }
    return t;
  };
  auto add_f16 = [&](const std::string& name, const std::vector<float>& v, std::vector<int64_t> dims) {
    return w.add_tensor(name, GgmlType::F16, std::move(dims), to_f16_bytes(v));
  };

  auto embd_t = tensor("token_embd.weight");
  if (!embd_t.ok()) return embd_t.status();
  const std::vector<float> embeddings = tensor_floats(**embd_t);
  const float post_norm = std::sqrt(static_cast<float>(n_embd)) * std::sqrt(*eps) / o.post_scale;
  if (Status s = add_f16("token_embd.weight", embeddings, {(*embd_t)->ne[0], (*embd_t)->ne[1]}); !s.ok()) return s;
  auto out_norm = tensor("output_norm.weight");
  if (!out_norm.ok()) return out_norm.status();
  if (Status s = w.add_tensor_f32("output_norm.weight", {n_embd}, tensor_floats(**out_norm)); !s.ok()) return s;

  for (uint32_t l = 0; l < *layers; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    for (const char* name : {"attn_norm.weight", "ffn_norm.weight"}) {
      auto t = tensor(p + name);
      if (!t.ok()) return t.status();
      if (Status s = w.add_tensor_f32(p + name, {n_embd}, tensor_floats(**t)); !s.ok()) return s;
    }
    for (const char* name : {"attn_q.weight", "attn_k.weight", "attn_v.weight", "attn_output.weight",
                             "ffn_gate.weight", "ffn_up.weight", "ffn_down.weight"}) {
      auto t = tensor(p + name);
      if (!t.ok()) return t.status();
      std::vector<float> v = tensor_floats(**t);
      const int64_t cols = (*t)->ne[0], rows = (*t)->ne[1];
      const std::string n = name;
      if (n == "attn_q.weight" || n == "attn_k.weight") {  // per head: rows 0,2,4,.. then 1,3,5,..
        std::vector<float> permuted(v.size());
        for (int64_t r = 0; r < rows; ++r) {
          const int64_t head = r / head_dim, i = r % head_dim;
          const int64_t from = head * head_dim + (i < head_dim / 2 ? 2 * i : 2 * (i - head_dim / 2) + 1);
          std::memcpy(&permuted[r * cols], &v[from * cols], cols * sizeof(float));
        }
        v.swap(permuted);
      } else if (n == "ffn_gate.weight" || n == "ffn_up.weight") {
        const float factor = n == "ffn_gate.weight" ? 1.0f / 1.702f : 1.702f;
        for (float& x : v) x *= factor;
      } else if (n == "attn_output.weight" || n == "ffn_down.weight") {
        for (float& x : v) x *= o.post_scale;
        if (Status s = w.add_tensor_f32(p + name, {cols, rows}, v); !s.ok()) return s;
        continue;
      }
      if (Status s = add_f16(p + name, v, {cols, rows}); !s.ok()) return s;
    }
    const std::vector<float> post(n_embd, post_norm);
    if (Status s = w.add_tensor_f32(p + "post_attention_norm.weight", {n_embd}, post); !s.ok()) return s;
    if (Status s = w.add_tensor_f32(p + "post_ffw_norm.weight", {n_embd}, post); !s.ok()) return s;
    if (g3) {
      const std::vector<float> qn(head_dim, o.q_norm), kn(head_dim, o.k_norm);
      if (Status s = w.add_tensor_f32(p + "attn_q_norm.weight", {head_dim}, qn); !s.ok()) return s;
      if (Status s = w.add_tensor_f32(p + "attn_k_norm.weight", {head_dim}, kn); !s.ok()) return s;
    }
  }
  return Status();
}

}  // namespace kvtier::tools
