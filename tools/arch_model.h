// Test models of the architectures kvtier supports besides `llama`, made from a trained llama GGUF (the
// shared tiny-llama-6m.f16.gguf) by laying its weights out as each architecture stores them, so the models
// keep peaked next-token distributions (greedy text is a meaningful comparison with llama.cpp) while using
// every feature of the architecture:
//   qwen3      16 query heads (each original head twice, wo halved) over 8 KV heads: GQA 2 and
//              attention.key_length 32 != n_embd / n_head; q/k rows reordered for NeoX RoPE; attn_q_norm /
//              attn_k_norm weights near a constant (they change the function: per-head RMSNorm of q and k).
//   qwen3-yarn qwen3 with rope.scaling.type = yarn, factor 4, original_context_length 256 (the correction range
//              then spans the low rotary dims of this 32-dim head).
//   qwen3moe   qwen3's attention; 4 experts, 2 used, each the dense FFN with its own random scale per hidden
//              unit (on ffn_down's columns), a random F32 router; expert_feed_forward_length 768 while
//              feed_forward_length says 3072.
//   llama-moe  Mixtral-style: architecture llama with expert_count / expert_used_count, experts as qwen3moe's
//              (their hidden size is feed_forward_length, as llama.cpp reads it for llama).
//   smollm3    the llama weights under smollm3: layer 3 of 4 runs without RoPE (llama.cpp's every 4th).
//   phi3       fused attn_qkv and ffn_up (gate rows, then up rows); NeoX RoPE over the first 16 of 32 dims
//              (rope.dimension_count 16), the even rotary pairs moved there, the odd ones left unrotated.
//   phi3-longrope  phi3 with LongRoPE as Phi-3-128K / Phi-4-mini files store it: rope_factors_short/long [8]
//              (long ones mild, up to ~2: steeper ones left near-ties in greedy text),
//              rope.scaling.original_context_length 256 (so contexts of 512 and 1024 use the long factors),
//              rope.scaling.attn_factor sqrt(1 + ln 4 / ln 256) as the converter computes it.
// Everything is deterministic (a fixed-seed FastRng), so tests and scripts/make_arch_references.sh make
// byte-identical files. Header-only like synthetic_model.h: tests include it directly.
#pragma once

#include <algorithm>
#include <cstring>
#include <numeric>
#include <span>
#include <string>
#include <vector>

#include "synthetic_model.h"

namespace kvtier::tools {

inline const std::vector<std::string>& arch_model_variants() {
  static const std::vector<std::string> v = {"qwen3",   "qwen3-yarn", "qwen3moe",     "llama-moe",
                                             "smollm3", "phi3",       "phi3-longrope"};
  return v;
}

namespace arch_detail {

// A source tensor as f32 rows: [rows, cols] (GGUF ne = {cols, rows}).
struct Matrix {
  int64_t rows = 0, cols = 0;
  std::vector<float> v;  // [rows, cols]
  const float* row(int64_t r) const { return v.data() + r * cols; }
  float* row(int64_t r) { return v.data() + r * cols; }
};

inline Result<Matrix> read_matrix(const gguf::File& f, const std::string& name) {
  const gguf::TensorInfo* t = f.find_tensor(name);
  if (!t) return Status::error("source tensor " + name + " is missing");
  if (t->type != GgmlType::F16 && t->type != GgmlType::F32) return Status::error(name + ": source must be F16/F32");
  Matrix m;
  m.cols = t->ne[0];
  m.rows = t->n_dims > 1 ? t->ne[1] : 1;
  m.v.resize(static_cast<size_t>(m.rows * m.cols));
  for (size_t i = 0; i < m.v.size(); ++i) {
    if (t->type == GgmlType::F32) {
      std::memcpy(&m.v[i], t->data + 4 * i, 4);
    } else {
      uint16_t h;
      std::memcpy(&h, t->data + 2 * i, 2);
      m.v[i] = f16_to_f32(h);
    }
  }
  return m;
}

inline std::vector<uint8_t> f16_bytes(const std::vector<float>& v) {
  std::vector<uint8_t> out(v.size() * 2);
  for (size_t i = 0; i < v.size(); ++i) {
    const uint16_t h = f32_to_f16(v[i]);
    std::memcpy(out.data() + 2 * i, &h, 2);
  }
  return out;
}

inline Status add_f16(gguf::GgufWriter& w, const std::string& name, std::vector<int64_t> dims,
                      const std::vector<float>& v) {
  return w.add_tensor(name, GgmlType::F16, std::move(dims), f16_bytes(v));
}

inline Status add_f32(gguf::GgufWriter& w, const std::string& name, std::vector<int64_t> dims,
                      const std::vector<float>& v) {
  return w.add_tensor_f32(name, std::move(dims), v);
}

// Rows of each head (head_dim rows, llama's adjacent-pair RoPE order) reordered for NeoX RoPE over the first
// `rope_dims` dims. Pair p of a head (rows 2p, 2p+1) rotates at base^(-2p/head_dim) in llama; with NeoX over
// rope_dims dims, NeoX pair j (rows j, j + rope_dims/2) rotates at base^(-2j/rope_dims). `pairs_kept` maps NeoX
// pair j to the llama pair placed there; pairs not kept follow, unrotated, in their order.
inline Matrix neox_heads(const Matrix& m, int head_dim, int rope_dims, int pair_stride) {
  Matrix out = m;
  const int half = rope_dims / 2;
  const int n_heads = static_cast<int>(m.rows / head_dim);
  for (int h = 0; h < n_heads; ++h) {
    std::vector<int> order(head_dim, -1);  // new row -> old row (within the head)
    std::vector<bool> used(head_dim / 2, false);
    for (int j = 0; j < half; ++j) {
      const int pair = j * pair_stride;
      order[j] = 2 * pair;
      order[j + half] = 2 * pair + 1;
      used[pair] = true;
    }
    int next = rope_dims;
    for (int p = 0; p < head_dim / 2; ++p) {
      if (used[p]) continue;
      order[next++] = 2 * p;
      order[next++] = 2 * p + 1;
    }
    for (int r = 0; r < head_dim; ++r) {
      std::copy(m.row(h * head_dim + order[r]), m.row(h * head_dim + order[r]) + m.cols,
                out.row(h * head_dim + r));
    }
  }
  return out;
}

// Copies every metadata key, renaming `llama.` keys to `<arch>.` and skipping general.architecture/name.
inline void copy_metadata(const gguf::File& f, const std::string& arch, gguf::GgufWriter& w) {
  using gguf::ValueType;
  w.set_string("general.architecture", arch);
  for (const auto& [key_in, v] : f.metadata()) {
    if (key_in == "general.architecture") continue;
    const std::string key = key_in.rfind("llama.", 0) == 0 ? arch + key_in.substr(5) : key_in;
    switch (v.type) {
      case ValueType::UINT32: w.set_u32(key, static_cast<uint32_t>(v.u)); break;
      case ValueType::INT32: w.set_i32(key, static_cast<int32_t>(v.i)); break;
      case ValueType::UINT64: w.set_u64(key, v.u); break;
      case ValueType::FLOAT32: w.set_f32(key, static_cast<float>(v.f)); break;
      case ValueType::BOOL: w.set_bool(key, v.b); break;
      case ValueType::STRING: w.set_string(key, v.str); break;
      case ValueType::ARRAY:
        if (v.array_type == ValueType::STRING) {
          w.set_array_str(key, std::vector<std::string>(v.array_strings.begin(), v.array_strings.end()));
        } else if (v.array_type == ValueType::FLOAT32 || v.array_type == ValueType::INT32 ||
                   v.array_type == ValueType::UINT32) {
          std::vector<uint8_t> encoded(12 + 4 * v.array_count);
          const uint32_t type = static_cast<uint32_t>(v.array_type);
          std::memcpy(encoded.data(), &type, 4);
          std::memcpy(encoded.data() + 4, &v.array_count, 8);
          if (v.array_count > 0) std::memcpy(encoded.data() + 12, v.array_data, 4 * v.array_count);
          w.set_raw(key, static_cast<uint32_t>(ValueType::ARRAY), std::move(encoded));
        }
        break;
      default: break;  // the source llama files hold no other types
    }
  }
}

// Experts made from a dense FFN: every expert has all n_ff hidden units, expert e's down columns scaled by
// factors in [0.5, 1.5) of its own, so any renormalised mix of experts stays near the dense FFN (the model
// stays peaked) while a wrong routing or weighting changes the output.
// gate/up: [n_expert * n_ff, n_embd] (ne {n_embd, n_ff, n_expert}); down: [n_expert * n_embd, n_ff].
inline void make_experts(const Matrix& gate, const Matrix& up, const Matrix& down, int n_expert, FastRng& rng,
                         std::vector<float>& gate_exps, std::vector<float>& up_exps, std::vector<float>& down_exps) {
  const int64_t n_ff = gate.rows, n_embd = gate.cols;
  gate_exps.clear();
  up_exps.clear();
  down_exps.clear();
  for (int e = 0; e < n_expert; ++e) {
    std::vector<float> scale(static_cast<size_t>(n_ff));
    for (float& x : scale) x = rng.uniform(0.5f, 1.5f);
    gate_exps.insert(gate_exps.end(), gate.v.begin(), gate.v.end());
    up_exps.insert(up_exps.end(), up.v.begin(), up.v.end());
    for (int64_t r = 0; r < n_embd; ++r) {
      for (int64_t u = 0; u < n_ff; ++u) down_exps.push_back(down.row(r)[u] * scale[u]);
    }
  }
}

}  // namespace arch_detail

// Writes `variant` (one of arch_model_variants()) made from the llama F16 GGUF at `source` to `out`.
inline Status make_arch_model(const std::string& source, const std::string& variant, const std::string& out) {
  using namespace arch_detail;
  const auto& variants = arch_model_variants();
  if (std::find(variants.begin(), variants.end(), variant) == variants.end()) {
    return Status::error("unknown architecture variant '" + variant + "'");
  }
  auto file = gguf::File::open(source);
  if (!file.ok()) return file.status();
  const gguf::File& f = **file;
  auto u32 = [&](const char* k) {
    auto v = f.get_u32(std::string("llama.") + k);
    return v.ok() ? static_cast<int>(*v) : 0;
  };
  const int n_layer = u32("block_count"), n_head = u32("attention.head_count"), n_embd = u32("embedding_length");
  const int n_ff = u32("feed_forward_length");
  if (n_layer <= 0 || n_head <= 0 || n_embd <= 0 || u32("attention.head_count_kv") != n_head) {
    return Status::error(source + ": expected a llama model without GQA");
  }
  const int head_dim = n_embd / n_head;

  const bool qwen3 = variant.rfind("qwen3", 0) == 0;
  const bool moe = variant == "qwen3moe" || variant == "llama-moe";
  const bool phi3 = variant.rfind("phi3", 0) == 0;
  const std::string arch = variant == "qwen3-yarn" ? "qwen3" : variant == "llama-moe" ? "llama" : phi3 ? "phi3" : variant;
  constexpr int kExperts = 4, kExpertsUsed = 2;
  const int n_ff_exp = n_ff;
  const int rope_dims = phi3 ? head_dim / 2 : head_dim;
  FastRng rng(0x6b76746965720017ull);  // "kvtier" + issue 17

  gguf::GgufWriter w;
  copy_metadata(f, arch, w);
  // llama.cpp keys token attributes on general.name: a name with "phi3" in it expects phi-3 tokens.
  w.set_string("general.name", phi3 ? "tiny-phi-6m" : "tiny-" + variant + "-6m");
  w.set_u32(arch + ".rope.dimension_count", static_cast<uint32_t>(rope_dims));
  if (qwen3) {
    w.set_u32(arch + ".attention.head_count", static_cast<uint32_t>(2 * n_head));
    w.set_u32(arch + ".attention.head_count_kv", static_cast<uint32_t>(n_head));
    w.set_u32(arch + ".attention.key_length", static_cast<uint32_t>(head_dim));
    w.set_u32(arch + ".attention.value_length", static_cast<uint32_t>(head_dim));
  }
  if (variant == "qwen3-yarn") {
    w.set_string(arch + ".rope.scaling.type", "yarn");
    w.set_f32(arch + ".rope.scaling.factor", 4.0f);
    w.set_u32(arch + ".rope.scaling.original_context_length", 256);
  }
  if (variant == "phi3-longrope") {
    w.set_u32(arch + ".rope.scaling.original_context_length", 256);
    w.set_f32(arch + ".rope.scaling.attn_factor", std::sqrt(1.0f + std::log(4.0f) / std::log(256.0f)));
    std::vector<float> short_factors(rope_dims / 2), long_factors(rope_dims / 2);
    for (int i = 0; i < rope_dims / 2; ++i) {
      short_factors[i] = 1.0f + 0.05f * static_cast<float>(i) * rng.uniform(0.5f, 1.5f);
      long_factors[i] = 1.0f + 0.15f * static_cast<float>(i) * rng.uniform(0.5f, 1.5f);
    }
    if (Status s = add_f32(w, "rope_factors_short.weight", {rope_dims / 2}, short_factors); !s.ok()) return s;
    if (Status s = add_f32(w, "rope_factors_long.weight", {rope_dims / 2}, long_factors); !s.ok()) return s;
  }
  if (moe) {
    w.set_u32(arch + ".expert_count", kExperts);
    w.set_u32(arch + ".expert_used_count", kExpertsUsed);
    if (arch != "llama") {  // the dense width is unused; a different value checks that the expert key is read
      w.set_u32(arch + ".feed_forward_length", static_cast<uint32_t>(4 * n_ff));
      w.set_u32(arch + ".expert_feed_forward_length", static_cast<uint32_t>(n_ff_exp));
    }
  }

  auto copy = [&](const std::string& name) -> Status {
    const gguf::TensorInfo* t = f.find_tensor(name);
    if (!t) return Status::error("source tensor " + name + " is missing");
    return w.add_tensor(name, t->type, std::vector<int64_t>(t->ne, t->ne + t->n_dims),
                        std::span<const uint8_t>(t->data, t->n_bytes));
  };
  if (Status s = copy("token_embd.weight"); !s.ok()) return s;
  if (Status s = copy("output_norm.weight"); !s.ok()) return s;
  if (f.find_tensor("output.weight")) {
    if (Status s = copy("output.weight"); !s.ok()) return s;
  }
  for (int l = 0; l < n_layer; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    Result<Matrix> q = read_matrix(f, p + "attn_q.weight"), k = read_matrix(f, p + "attn_k.weight"),
                   v = read_matrix(f, p + "attn_v.weight"), o = read_matrix(f, p + "attn_output.weight"),
                   gate = read_matrix(f, p + "ffn_gate.weight"), up = read_matrix(f, p + "ffn_up.weight"),
                   down = read_matrix(f, p + "ffn_down.weight");
    for (const auto* r : {&q, &k, &v, &o, &gate, &up, &down}) {
      if (!r->ok()) return r->status();
    }
    Status s;
    if (s = copy(p + "attn_norm.weight"); !s.ok()) return s;
    if (s = copy(p + "ffn_norm.weight"); !s.ok()) return s;
    const bool neox = qwen3 || phi3;
    const Matrix qr = neox ? neox_heads(*q, head_dim, rope_dims, head_dim / rope_dims) : *q;
    const Matrix kr = neox ? neox_heads(*k, head_dim, rope_dims, head_dim / rope_dims) : *k;
    if (qwen3) {
      // Query head 2h and 2h+1 = original head h (both read KV head h); wo's columns of each halved.
      std::vector<float> q2, o2(static_cast<size_t>(n_embd) * 2 * n_embd);
      for (int h = 0; h < n_head; ++h) {
        for (int twice = 0; twice < 2; ++twice) {
          q2.insert(q2.end(), qr.row(h * head_dim), qr.row((h + 1) * head_dim));
        }
      }
      for (int r = 0; r < n_embd; ++r) {
        for (int c = 0; c < 2 * n_embd; ++c) {
          const int h = c / (2 * head_dim), i = c % head_dim;
          o2[static_cast<size_t>(r) * 2 * n_embd + c] = 0.5f * o->row(r)[h * head_dim + i];
        }
      }
      if (s = add_f16(w, p + "attn_q.weight", {n_embd, 2 * n_embd}, q2); !s.ok()) return s;
      if (s = add_f16(w, p + "attn_k.weight", {n_embd, n_embd}, kr.v); !s.ok()) return s;
      if (s = add_f16(w, p + "attn_v.weight", {n_embd, n_embd}, v->v); !s.ok()) return s;
      if (s = add_f16(w, p + "attn_output.weight", {2 * n_embd, n_embd}, o2); !s.ok()) return s;
      std::vector<float> q_norm(head_dim), k_norm(head_dim);
      // Near 2: unit-RMS q and k heads times 2 keep attention about as sharp as the trained model's (1, 1.5,
      // 2.5 and 3 give 2-4x the perplexity of 2 on eval.txt's first chunks).
      for (float& x : q_norm) x = 2.0f * rng.uniform(0.9f, 1.1f);
      for (float& x : k_norm) x = 2.0f * rng.uniform(0.9f, 1.1f);
      if (s = add_f32(w, p + "attn_q_norm.weight", {head_dim}, q_norm); !s.ok()) return s;
      if (s = add_f32(w, p + "attn_k_norm.weight", {head_dim}, k_norm); !s.ok()) return s;
    } else if (phi3) {
      std::vector<float> qkv = qr.v;
      qkv.insert(qkv.end(), kr.v.begin(), kr.v.end());
      qkv.insert(qkv.end(), v->v.begin(), v->v.end());
      if (s = add_f16(w, p + "attn_qkv.weight", {n_embd, 3 * n_embd}, qkv); !s.ok()) return s;
      if (s = copy(p + "attn_output.weight"); !s.ok()) return s;
    } else {
      for (const char* name : {"attn_q.weight", "attn_k.weight", "attn_v.weight", "attn_output.weight"}) {
        if (s = copy(p + name); !s.ok()) return s;
      }
    }
    if (moe) {
      std::vector<float> gate_exps, up_exps, down_exps, router(static_cast<size_t>(kExperts) * n_embd);
      make_experts(*gate, *up, *down, kExperts, rng, gate_exps, up_exps, down_exps);
      for (float& x : router) x = rng.uniform(-0.2f, 0.2f);
      if (s = add_f32(w, p + "ffn_gate_inp.weight", {n_embd, kExperts}, router); !s.ok()) return s;
      if (s = add_f16(w, p + "ffn_gate_exps.weight", {n_embd, n_ff_exp, kExperts}, gate_exps); !s.ok()) return s;
      if (s = add_f16(w, p + "ffn_up_exps.weight", {n_embd, n_ff_exp, kExperts}, up_exps); !s.ok()) return s;
      if (s = add_f16(w, p + "ffn_down_exps.weight", {n_ff_exp, n_embd, kExperts}, down_exps); !s.ok()) return s;
    } else if (phi3) {
      std::vector<float> gate_up = gate->v;
      gate_up.insert(gate_up.end(), up->v.begin(), up->v.end());
      if (s = add_f16(w, p + "ffn_up.weight", {n_embd, 2 * n_ff}, gate_up); !s.ok()) return s;
      if (s = copy(p + "ffn_down.weight"); !s.ok()) return s;
    } else {
      for (const char* name : {"ffn_gate.weight", "ffn_up.weight", "ffn_down.weight"}) {
        if (s = copy(p + name); !s.ok()) return s;
      }
    }
  }
  return w.write_file(out);
}

}  // namespace kvtier::tools
