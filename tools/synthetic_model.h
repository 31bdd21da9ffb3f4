// Synthetic GGUF models with random weights, for speed benchmarks at real
// model shapes without shipping a trained model: Llama-3.2-1B (llama),
// Qwen3-0.6B (qwen3: per-head q/k norms, NeoX RoPE), Gemma-3-1B (gemma3: also
// post-norms and sliding-window layers) and Qwen3-30B-A3B with fewer layers
// (qwen3moe: 128 experts, 8 used, as 3-D expert tensors and an F32 router).
// The metadata keys are the ones tools/arch_model.h and tools/gemma_model.h
// write for their test models (and kvtier's config readers check). Header-only so that tests/tools/ can check it without a
// library of its own; tools/gen_synthetic_model.cpp is the command line.
//
// Tensor types follow what llama.cpp's llama-quantize picks (src/llama-quant.cpp,
// llama_tensor_get_type_impl + tensor_type_fallback), for the two mixes used in
// benchmarks:
//   Q4_0   : every matrix Q4_0; output.weight Q6_K, and so is token_embd.weight
//            when embeddings are tied (llama-quantize quantizes a tied token_embd
//            as the output tensor).
//   Q4_K_M : every matrix Q4_K; output (and tied token_embd) Q6_K; attn_v and
//            ffn_down Q6_K in the "more bits" layers: i < n/8, i >= 7n/8, or
//            (i - n/8) % 3 == 2 (for 16 layers: 0, 1, 4, 7, 10, 13, 14, 15).
//   K-quant fallbacks when a row length is not a multiple of 256: Q4_K -> Q5_0,
//   Q6_K -> Q8_0 (and the output tensor goes straight to Q8_0). Gemma-3-1B's
//   n_embd of 1152 hits them: its attention and ffn_gate/up rows are Q5_0, its
//   tied embeddings Q8_0, as in published Gemma-3-1B Q4_K_M files.
//   Experts (3-D [ne0, ne1, n_expert] tensors) follow their 2-D roles: gate/up
//   Q4_K, ffn_down_exps Q6_K in the "more bits" layers (llama-quantize reads the
//   layer from the tensor name when n_expert > 1, so the rule is per layer as for
//   dense models). The router (ffn_gate_inp) is never quantized: F32 as the
//   converter writes it. Norms (attn/ffn/output, q/k and Gemma's post-norms) are
//   F32 near 1. Weights are random but valid blocks: random quant bits
// with small f16 scales so that every weight has a standard deviation of about
// `weight_std`, which keeps activations finite through all layers.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <numbers>
#include <string>
#include <vector>

#include "kvtier/f16.h"
#include "kvtier/ggml_types.h"
#include "kvtier/gguf.h"
#include "kvtier/gguf_writer.h"
#include "kvtier/status.h"

namespace kvtier::tools {

enum class WeightMix { Q4_0, Q4_K_M };

inline const char* weight_mix_name(WeightMix mix) { return mix == WeightMix::Q4_0 ? "Q4_0" : "Q4_K_M"; }

// llama_ftype values written to general.file_type (llama.h: MOSTLY_Q4_0 = 2, MOSTLY_Q4_K_M = 15).
inline uint32_t weight_mix_file_type(WeightMix mix) { return mix == WeightMix::Q4_0 ? 2 : 15; }

struct SyntheticShape {
  std::string architecture = "llama";  // llama, qwen3, gemma3 or qwen3moe
  std::string name = "synthetic-llama-3.2-1b";
  int64_t n_embd = 2048;
  int64_t n_layer = 16;
  int64_t n_head = 32;
  int64_t n_head_kv = 8;
  int64_t head_dim = 64;
  int64_t n_ff = 8192;
  int64_t n_vocab = 128256;
  int64_t n_ctx = 131072;
  float rope_base = 500000.0f;
  float rms_eps = 1e-5f;
  bool tied_embeddings = true;
  // Llama-3 RoPE scaling ("llama3" rope_type), stored as per-dimension frequency
  // divisors in rope_freqs.weight as Llama-3.2 GGUF files do. 0 disables it.
  float rope_scaling_factor = 32.0f;
  float rope_low_freq_factor = 1.0f;
  float rope_high_freq_factor = 4.0f;
  int64_t rope_original_ctx = 8192;
  // Mixture of experts (qwen3moe): n_expert > 0 replaces the dense FFN by
  // ffn_gate_inp + ffn_{gate,up,down}_exps of width n_ff_expert; n_ff is then
  // only recorded as feed_forward_length.
  int64_t n_expert = 0;
  int64_t n_expert_used = 0;
  int64_t n_ff_expert = 0;
  // Gemma 3: every sliding_window_pattern-th layer global, the others windowed
  // with their own RoPE base.
  int64_t sliding_window = 0;
  int64_t sliding_window_pattern = 0;
  float rope_base_swa = 10000.0f;
};

inline bool has_qk_norm(const SyntheticShape& s) {
  return s.architecture == "qwen3" || s.architecture == "qwen3moe" || s.architecture == "gemma3";
}
inline bool has_post_norms(const SyntheticShape& s) { return s.architecture == "gemma3"; }

// Llama-3.2-1B's shapes (its config.json).
inline SyntheticShape llama_3_2_1b_shape() { return SyntheticShape{}; }

// Qwen3-0.6B (config.json): head_dim 128 > n_embd / n_head, tied embeddings.
inline SyntheticShape qwen3_0_6b_shape() {
  SyntheticShape s;
  s.architecture = "qwen3";
  s.name = "synthetic-qwen3-0.6b";
  s.n_embd = 1024;
  s.n_layer = 28;
  s.n_head = 16;
  s.n_head_kv = 8;
  s.head_dim = 128;
  s.n_ff = 3072;
  s.n_vocab = 151936;
  s.n_ctx = 40960;
  s.rope_base = 1000000.0f;
  s.rms_eps = 1e-6f;
  s.rope_scaling_factor = 0;
  return s;
}

// Gemma-3-1B (config.json): MQA with head_dim 256, window 512 on 5 of every 6
// layers, its full 262144-token vocabulary (tied, so the embedding is also the
// output matrix: Q8_0, 340 MB, by far the largest tensor).
inline SyntheticShape gemma3_1b_shape() {
  SyntheticShape s;
  s.architecture = "gemma3";
  s.name = "synthetic-gemma-3-1b";
  s.n_embd = 1152;
  s.n_layer = 26;
  s.n_head = 4;
  s.n_head_kv = 1;
  s.head_dim = 256;
  s.n_ff = 6912;
  s.n_vocab = 262144;
  s.n_ctx = 32768;
  s.rope_base = 1000000.0f;
  s.rms_eps = 1e-6f;
  s.rope_scaling_factor = 0;
  s.sliding_window = 512;
  s.sliding_window_pattern = 6;
  return s;
}

// Qwen3-30B-A3B (config.json) with its 48 layers cut to `n_layer` (each layer's
// 128 experts are ~0.35 GB in Q4_K_M): untied output, 8 of 128 experts of width
// 768 per token.
inline SyntheticShape qwen3_30b_a3b_shape(int64_t n_layer = 6) {
  SyntheticShape s;
  s.architecture = "qwen3moe";
  s.name = "synthetic-qwen3-30b-a3b-" + std::to_string(n_layer) + "l";
  s.n_embd = 2048;
  s.n_layer = n_layer;
  s.n_head = 32;
  s.n_head_kv = 4;
  s.head_dim = 128;
  s.n_ff = 6144;
  s.n_expert = 128;
  s.n_expert_used = 8;
  s.n_ff_expert = 768;
  s.n_vocab = 151936;
  s.n_ctx = 40960;
  s.rope_base = 1000000.0f;
  s.rms_eps = 1e-6f;
  s.tied_embeddings = false;
  s.rope_scaling_factor = 0;
  return s;
}

inline const std::vector<std::string>& synthetic_architectures() {
  static const std::vector<std::string> v = {"llama", "qwen3", "gemma3", "qwen3moe"};
  return v;
}

// The real model shape each --arch stands for.
inline SyntheticShape synthetic_shape_for(const std::string& architecture) {
  if (architecture == "qwen3") return qwen3_0_6b_shape();
  if (architecture == "gemma3") return gemma3_1b_shape();
  if (architecture == "qwen3moe") return qwen3_30b_a3b_shape();
  return llama_3_2_1b_shape();
}

enum class TensorRole { TokenEmbd, Output, AttnQ, AttnK, AttnV, AttnOutput, FfnGate, FfnUp, FfnDown };

// llama-quantize's "use more bits" layers for Q4_K_M's attn_v and ffn_down.
inline bool quantize_uses_more_bits(int64_t layer, int64_t n_layer) {
  return layer < n_layer / 8 || layer >= 7 * n_layer / 8 || (layer - n_layer / 8) % 3 == 2;
}

// The type llama-quantize gives a matrix of row length ne0 (see the header comment).
inline GgmlType quantized_type_for(WeightMix mix, TensorRole role, int64_t layer, int64_t n_layer, bool tied,
                                   int64_t ne0) {
  const GgmlType base = mix == WeightMix::Q4_0 ? GgmlType::Q4_0 : GgmlType::Q4_K;
  GgmlType type = base;
  if (role == TensorRole::Output || (tied && role == TensorRole::TokenEmbd)) {
    type = ne0 % ggml_type_info(base).block_elems != 0 ? GgmlType::Q8_0 : GgmlType::Q6_K;
  } else if (mix == WeightMix::Q4_K_M && (role == TensorRole::AttnV || role == TensorRole::FfnDown) &&
             quantize_uses_more_bits(layer, n_layer)) {
    type = GgmlType::Q6_K;
  }
  // Shape fallbacks: a 256-element super-block type on a row that does not hold whole super-blocks.
  if (ne0 % ggml_type_info(type).block_elems != 0) {
    if (type == GgmlType::Q4_K) type = GgmlType::Q5_0;
    if (type == GgmlType::Q6_K) type = GgmlType::Q8_0;
    if (ne0 % ggml_type_info(type).block_elems != 0) type = GgmlType::F16;
  }
  return type;
}

// xoshiro256** seeded by splitmix64: fast and reproducible across platforms
// (std:: distributions are not), which matters for 0.8 GB of random bytes.
class FastRng {
 public:
  explicit FastRng(uint64_t seed) {
    for (uint64_t& s : state_) {
      seed += 0x9e3779b97f4a7c15ull;
      uint64_t z = seed;
      z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
      z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
      s = z ^ (z >> 31);
    }
  }
  uint64_t next() {
    const uint64_t result = rotl(state_[1] * 5, 7) * 9;
    const uint64_t t = state_[1] << 17;
    state_[2] ^= state_[0];
    state_[3] ^= state_[1];
    state_[1] ^= state_[2];
    state_[0] ^= state_[3];
    state_[2] ^= t;
    state_[3] = rotl(state_[3], 45);
    return result;
  }
  // Uniform in [lo, hi).
  float uniform(float lo, float hi) { return lo + (hi - lo) * static_cast<float>(next() >> 40) * 0x1.0p-24f; }
  void fill(uint8_t* dst, size_t n) {
    for (; n >= 8; n -= 8, dst += 8) {
      const uint64_t r = next();
      std::memcpy(dst, &r, 8);
    }
    if (n > 0) {
      const uint64_t r = next();
      std::memcpy(dst, &r, n);
    }
  }

 private:
  static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  uint64_t state_[4];
};

namespace detail {

// GGML block layouts (ggml-common.h) of the K-quants the generator writes; the
// 32-element formats are in src/kernels/weight_blocks.h, repeated here so that
// the tool does not depend on kernel internals.
struct BlockQ4K {  // 256 weights: w = d * sc[j] * q - dmin * m[j] for sub-block j (32 weights)
  uint16_t d, dmin;      // f16 super-block scales
  uint8_t scales[12];    // 8 x 6-bit scales and 8 x 6-bit mins, packed
  uint8_t qs[128];       // 4-bit quants
};
static_assert(sizeof(BlockQ4K) == 144, "GGML block_q4_K is 144 bytes");
struct BlockQ6K {  // 256 weights: w = d * scales[j] * (q - 32) for sub-block j (16 weights)
  uint8_t ql[128];       // low 4 bits
  uint8_t qh[64];        // high 2 bits
  int8_t scales[16];
  uint16_t d;
};
static_assert(sizeof(BlockQ6K) == 210, "GGML block_q6_K is 210 bytes");

// f16 scale with a random +-25% spread; kept above f16's smallest normal so no
// kernel ever meets a subnormal (which would not be a realistic weight).
inline uint16_t random_scale(FastRng& rng, float mean) {
  return f32_to_f16(std::max(mean * rng.uniform(0.75f, 1.25f), 6.2e-5f));
}

}  // namespace detail

// Fills `out` with n_elements of `type` as random valid blocks whose weights
// have a standard deviation of roughly `weight_std`. The divisors below are
// the standard deviation of a weight in units of the block scale.
inline Status fill_random_weights(GgmlType type, int64_t n_elements, float weight_std, FastRng& rng,
                                  std::vector<uint8_t>& out) {
  const GgmlTypeInfo& info = ggml_type_info(type);
  if (n_elements % info.block_elems != 0) {
    return Status::error(std::string("synthetic weights: ") + info.name + " needs a multiple of " +
                         std::to_string(info.block_elems) + " elements");
  }
  const int64_t n_blocks = n_elements / info.block_elems;
  out.resize(static_cast<size_t>(n_blocks * info.block_bytes));  // [n_blocks][block_bytes]
  uint8_t* p = out.data();
  switch (type) {
    case GgmlType::F32:
    case GgmlType::F16:
      for (int64_t i = 0; i < n_elements; ++i) {
        const float w = weight_std * std::sqrt(3.0f) * rng.uniform(-1.0f, 1.0f);
        if (type == GgmlType::F32) {
          std::memcpy(p + 4 * i, &w, 4);
        } else {
          const uint16_t h = f32_to_f16(w);
          std::memcpy(p + 2 * i, &h, 2);
        }
      }
      return Status();
    case GgmlType::Q4_0:  // {f16 d; u8 qs[16]}: w = d * (q - 8), std(q) = 4.6
    case GgmlType::Q5_0:  // {f16 d; u8 qh[4]; u8 qs[16]}: w = d * (q - 16), std(q) = 9.2
    case GgmlType::Q8_0:  // {f16 d; i8 qs[32]}: w = d * q, std(q) = 74
    {
      const float unit = type == GgmlType::Q4_0 ? 4.6f : type == GgmlType::Q5_0 ? 9.2f : 74.0f;
      rng.fill(p, out.size());
      for (int64_t b = 0; b < n_blocks; ++b) {
        const uint16_t d = detail::random_scale(rng, weight_std / unit);
        std::memcpy(p + b * info.block_bytes, &d, 2);
      }
      return Status();
    }
    case GgmlType::Q4_K: {
      // Random 6-bit scales and mins (mean 31.5 each); dmin = 7.5 d centres a
      // sub-block on average, and sub-block offsets plus spread give std ~ 240 d.
      rng.fill(p, out.size());
      auto* blocks = reinterpret_cast<detail::BlockQ4K*>(p);
      for (int64_t b = 0; b < n_blocks; ++b) {
        const float d = f16_to_f32(detail::random_scale(rng, weight_std / 240.0f));
        blocks[b].d = f32_to_f16(d);
        blocks[b].dmin = f32_to_f16(7.5f * d);
      }
      return Status();
    }
    case GgmlType::Q6_K: {
      // Sub-block scales in [1, 16] (rms 9.8) times std(q - 32) = 18.5: std ~ 181 d.
      rng.fill(p, out.size());
      auto* blocks = reinterpret_cast<detail::BlockQ6K*>(p);
      for (int64_t b = 0; b < n_blocks; ++b) {
        for (int8_t& s : blocks[b].scales) s = static_cast<int8_t>(1 + (static_cast<uint8_t>(s) & 15));
        blocks[b].d = detail::random_scale(rng, weight_std / 181.0f);
      }
      return Status();
    }
    default:
      return Status::error(std::string("synthetic weights: no random block writer for ") + info.name);
  }
}

// Llama-3 RoPE frequency divisors (rope_freqs.weight, [head_dim / 2]): 1 for
// short wavelengths, `factor` for long ones, a smooth blend in between.
inline std::vector<float> llama3_rope_freq_factors(const SyntheticShape& s) {
  std::vector<float> factors(static_cast<size_t>(s.head_dim / 2));  // [head_dim / 2]
  const double low_freq_wavelen = static_cast<double>(s.rope_original_ctx) / s.rope_low_freq_factor;
  const double high_freq_wavelen = static_cast<double>(s.rope_original_ctx) / s.rope_high_freq_factor;
  for (size_t i = 0; i < factors.size(); ++i) {
    const double freq = std::pow(static_cast<double>(s.rope_base), -2.0 * i / s.head_dim);
    const double wavelen = 2 * std::numbers::pi / freq;
    double factor = 1.0;
    if (wavelen > low_freq_wavelen) {
      factor = s.rope_scaling_factor;
    } else if (wavelen >= high_freq_wavelen) {
      const double smooth = (s.rope_original_ctx / wavelen - s.rope_low_freq_factor) /
                            (s.rope_high_freq_factor - s.rope_low_freq_factor);
      factor = 1.0 / ((1 - smooth) / s.rope_scaling_factor + smooth);
    }
    factors[i] = static_cast<float>(factor);
  }
  return factors;
}

// Copies the byte-level BPE tokenizer of `vocab_source` (tokens, types, merges,
// pre-tokenizer, BOS/EOS) and pads the token list to n_vocab with
// "<|reserved_special_token_N|>" control tokens, as Llama-3 vocabularies do.
inline Status set_padded_tokenizer(const gguf::File& vocab_source, int64_t n_vocab, gguf::GgufWriter& w) {
  auto model = vocab_source.get_string("tokenizer.ggml.model");
  if (!model.ok()) return model.status();
  auto tokens = vocab_source.get_string_array("tokenizer.ggml.tokens");
  if (!tokens.ok()) return tokens.status();
  auto types = vocab_source.get_i32_array("tokenizer.ggml.token_type", tokens->size());
  if (!types.ok()) return types.status();
  if (static_cast<int64_t>(tokens->size()) > n_vocab) {
    return Status::error("vocabulary source has " + std::to_string(tokens->size()) + " tokens, more than n_vocab " +
                         std::to_string(n_vocab));
  }
  constexpr int32_t kControlToken = 3;  // llama_token_type LLAMA_TOKEN_TYPE_CONTROL
  std::vector<std::string> padded_tokens(tokens->begin(), tokens->end());  // [n_vocab]
  std::vector<int32_t> padded_types(types->begin(), types->end());         // [n_vocab]
  for (int64_t i = 0; static_cast<int64_t>(padded_tokens.size()) < n_vocab; ++i) {
    padded_tokens.push_back("<|reserved_special_token_" + std::to_string(i) + "|>");
    padded_types.push_back(kControlToken);
  }
  w.set_string("tokenizer.ggml.model", *model);
  if (auto pre = vocab_source.get_string("tokenizer.ggml.pre"); pre.ok()) w.set_string("tokenizer.ggml.pre", *pre);
  w.set_array_str("tokenizer.ggml.tokens", padded_tokens);
  w.set_array_i32("tokenizer.ggml.token_type", padded_types);
  if (vocab_source.find("tokenizer.ggml.merges")) {
    auto merges = vocab_source.get_string_array("tokenizer.ggml.merges");
    if (!merges.ok()) return merges.status();
    w.set_array_str("tokenizer.ggml.merges", std::vector<std::string>(merges->begin(), merges->end()));
  }
  for (const char* key : {"tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id"}) {
    auto id = vocab_source.get_u32(key);
    if (!id.ok()) return id.status();
    w.set_u32(key, *id);
  }
  for (const char* key : {"tokenizer.ggml.add_bos_token", "tokenizer.ggml.add_eos_token"}) {
    if (auto flag = vocab_source.get_bool(key); flag.ok()) w.set_bool(key, *flag);
  }
  return Status();
}

// Called before each tensor is generated: (index, count, name, type).
using SyntheticProgressFn = std::function<void(size_t, size_t, const std::string&, GgmlType)>;

struct SyntheticOptions {
  SyntheticShape shape;
  WeightMix mix = WeightMix::Q4_K_M;
  uint64_t seed = 1;
  float weight_std = 0.02f;  // like a trained model's matrices
};

// Builds the whole model into `w` (metadata, tokenizer, every tensor).
inline Status build_synthetic_model(const SyntheticOptions& o, const gguf::File& vocab_source, gguf::GgufWriter& w,
                                    const SyntheticProgressFn& progress = {}) {
  const SyntheticShape& s = o.shape;
  if (s.n_head % s.n_head_kv != 0 || s.n_embd <= 0 || s.n_layer <= 0 || s.head_dim % 2 != 0) {
    return Status::error("synthetic model: inconsistent shape (n_head must be a multiple of n_head_kv)");
  }
  const auto& archs = synthetic_architectures();
  if (std::find(archs.begin(), archs.end(), s.architecture) == archs.end()) {
    return Status::error("synthetic model: unknown architecture '" + s.architecture + "'");
  }
  if ((s.n_expert > 0) != (s.architecture == "qwen3moe") || s.n_expert_used > s.n_expert ||
      (s.n_expert > 0 && s.n_ff_expert <= 0)) {
    return Status::error("synthetic model: experts (qwen3moe only) need 0 < expert_used <= expert_count, n_ff_expert > 0");
  }
  const std::string a = s.architecture + ".";
  w.set_string("general.architecture", s.architecture);
  w.set_string("general.name", s.name + "-" + weight_mix_name(o.mix));
  w.set_u32(a + "context_length", static_cast<uint32_t>(s.n_ctx));
  w.set_u32(a + "embedding_length", static_cast<uint32_t>(s.n_embd));
  w.set_u32(a + "block_count", static_cast<uint32_t>(s.n_layer));
  w.set_u32(a + "feed_forward_length", static_cast<uint32_t>(s.n_ff));
  w.set_u32(a + "attention.head_count", static_cast<uint32_t>(s.n_head));
  w.set_u32(a + "attention.head_count_kv", static_cast<uint32_t>(s.n_head_kv));
  w.set_u32(a + "attention.key_length", static_cast<uint32_t>(s.head_dim));
  w.set_u32(a + "attention.value_length", static_cast<uint32_t>(s.head_dim));
  w.set_f32(a + "rope.freq_base", s.rope_base);
  w.set_u32(a + "rope.dimension_count", static_cast<uint32_t>(s.head_dim));
  w.set_f32(a + "attention.layer_norm_rms_epsilon", s.rms_eps);
  w.set_u32(a + "vocab_size", static_cast<uint32_t>(s.n_vocab));
  if (s.n_expert > 0) {
    w.set_u32(a + "expert_count", static_cast<uint32_t>(s.n_expert));
    w.set_u32(a + "expert_used_count", static_cast<uint32_t>(s.n_expert_used));
    w.set_u32(a + "expert_feed_forward_length", static_cast<uint32_t>(s.n_ff_expert));
  }
  if (s.sliding_window > 0) {
    w.set_u32(a + "attention.sliding_window", static_cast<uint32_t>(s.sliding_window));
    w.set_u32(a + "attention.sliding_window_pattern", static_cast<uint32_t>(s.sliding_window_pattern));
    w.set_f32(a + "rope.freq_base_swa", s.rope_base_swa);
  }
  if (Status st = set_padded_tokenizer(vocab_source, s.n_vocab, w); !st.ok()) return st;
  w.set_u32("general.quantization_version", 2);
  w.set_u32("general.file_type", weight_mix_file_type(o.mix));

  struct Planned {
    std::string name;
    TensorRole role;  // unused for norms and the router
    int64_t layer;
    GgmlType type;
    std::vector<int64_t> dims;  // ne[0] first
  };
  std::vector<Planned> plan;
  // ne2 > 1: one [ne0, ne1] matrix per expert, typed as its 2-D role.
  auto matrix = [&](std::string name, TensorRole role, int64_t layer, int64_t ne0, int64_t ne1, int64_t ne2 = 1) {
    const GgmlType t = quantized_type_for(o.mix, role, layer, s.n_layer, s.tied_embeddings, ne0);
    std::vector<int64_t> dims = {ne0, ne1};
    if (ne2 > 1) dims.push_back(ne2);
    plan.push_back({std::move(name), role, layer, t, std::move(dims)});
  };
  auto router = [&](std::string name, int64_t ne0, int64_t ne1) {
    plan.push_back({std::move(name), TensorRole::TokenEmbd, -1, GgmlType::F32, {ne0, ne1}});
  };
  auto norm = [&](std::string name, int64_t n) {
    plan.push_back({std::move(name), TensorRole::TokenEmbd, -1, GgmlType::F32, {n}});
  };
  const int64_t q_dim = s.n_head * s.head_dim, kv_dim = s.n_head_kv * s.head_dim;
  matrix("token_embd.weight", TensorRole::TokenEmbd, -1, s.n_embd, s.n_vocab);
  norm("output_norm.weight", s.n_embd);
  if (!s.tied_embeddings) matrix("output.weight", TensorRole::Output, -1, s.n_embd, s.n_vocab);
  const bool rope_freqs = s.rope_scaling_factor > 0;
  for (int64_t i = 0; i < s.n_layer; ++i) {
    const std::string p = "blk." + std::to_string(i) + ".";
    norm(p + "attn_norm.weight", s.n_embd);
    matrix(p + "attn_q.weight", TensorRole::AttnQ, i, s.n_embd, q_dim);
    matrix(p + "attn_k.weight", TensorRole::AttnK, i, s.n_embd, kv_dim);
    matrix(p + "attn_v.weight", TensorRole::AttnV, i, s.n_embd, kv_dim);
    matrix(p + "attn_output.weight", TensorRole::AttnOutput, i, q_dim, s.n_embd);
    if (has_qk_norm(s)) {
      norm(p + "attn_q_norm.weight", s.head_dim);
      norm(p + "attn_k_norm.weight", s.head_dim);
    }
    if (has_post_norms(s)) norm(p + "post_attention_norm.weight", s.n_embd);
    norm(p + "ffn_norm.weight", s.n_embd);
    if (s.n_expert > 0) {
      router(p + "ffn_gate_inp.weight", s.n_embd, s.n_expert);
      matrix(p + "ffn_gate_exps.weight", TensorRole::FfnGate, i, s.n_embd, s.n_ff_expert, s.n_expert);
      matrix(p + "ffn_up_exps.weight", TensorRole::FfnUp, i, s.n_embd, s.n_ff_expert, s.n_expert);
      matrix(p + "ffn_down_exps.weight", TensorRole::FfnDown, i, s.n_ff_expert, s.n_embd, s.n_expert);
    } else {
      matrix(p + "ffn_gate.weight", TensorRole::FfnGate, i, s.n_embd, s.n_ff);
      matrix(p + "ffn_up.weight", TensorRole::FfnUp, i, s.n_embd, s.n_ff);
      matrix(p + "ffn_down.weight", TensorRole::FfnDown, i, s.n_ff, s.n_embd);
    }
    if (has_post_norms(s)) norm(p + "post_ffw_norm.weight", s.n_embd);
  }

  const size_t n_total = plan.size() + (rope_freqs ? 1 : 0);
  FastRng rng(o.seed);
  std::vector<uint8_t> bytes;  // one tensor's data, reused: [n_bytes]
  for (size_t k = 0; k < plan.size(); ++k) {
    const Planned& t = plan[k];
    if (progress) progress(k, n_total, t.name, t.type);
    if (t.dims.size() == 1) {
      // RMSNorm gains near 1, as in trained models.
      std::vector<float> gains(static_cast<size_t>(t.dims[0]));  // [n_embd]
      for (float& g : gains) g = rng.uniform(0.9f, 1.1f);
      if (Status st = w.add_tensor_f32(t.name, t.dims, gains); !st.ok()) return st;
      continue;
    }
    int64_t n_elements = 1;
    for (int64_t d : t.dims) n_elements *= d;
    if (Status st = fill_random_weights(t.type, n_elements, o.weight_std, rng, bytes); !st.ok()) {
      return Status::error(t.name + ": " + st.message());
    }
    if (Status st = w.add_tensor(t.name, t.type, t.dims, bytes); !st.ok()) return st;
  }
  if (rope_freqs) {
    if (progress) progress(plan.size(), n_total, "rope_freqs.weight", GgmlType::F32);
    const std::vector<float> factors = llama3_rope_freq_factors(s);
    if (Status st = w.add_tensor_f32("rope_freqs.weight", {static_cast<int64_t>(factors.size())}, factors);
        !st.ok()) {
      return st;
    }
  }
  return Status();
}

}  // namespace kvtier::tools
