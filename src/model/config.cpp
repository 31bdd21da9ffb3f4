#include <cmath>
#include <string>

#include "kvtier/model.h"
#include "model/gemma.h"

namespace kvtier {

namespace {
std::string key(const std::string& arch, const char* suffix) { return arch + "." + suffix; }

Status positive(const std::string& name, int64_t value, int64_t limit) {
  if (value <= 0 || value > limit) {
    return Status::error("model metadata " + name + " = " + std::to_string(value) + " is out of range (1.." +
                         std::to_string(limit) + ")");
  }
  return {};
}

// What each supported architecture does differently from `llama` (the forward pass reads these flags).
struct ArchTraits {
  const char* name;
  RopeMode rope_mode;
  bool qkv_bias;       // attn_{q,k,v}.bias required
  bool qk_norm;        // attn_{q,k}_norm required
  bool moe;            // routed experts required (llama: optional, when expert_count is set)
  int no_rope_layer_step;
  bool fused_gate_up;  // ffn_up = [gate; up]
};
constexpr ArchTraits kArchTraits[] = {
    {"llama", RopeMode::kNormal, false, false, false, 0, false},
    {"qwen2", RopeMode::kNeox, true, false, false, 0, false},
    {"qwen3", RopeMode::kNeox, false, true, false, 0, false},
    {"qwen3moe", RopeMode::kNeox, false, true, true, 0, false},
    {"smollm3", RopeMode::kNormal, false, false, false, 4, false},
    {"phi3", RopeMode::kNeox, false, false, false, 0, true},
    {"gemma2", RopeMode::kNeox, false, false, false, 0, false},  // the rest: read_gemma_config
    {"gemma3", RopeMode::kNeox, false, true, false, 0, false},
};

const ArchTraits* find_arch(const std::string& name) {
  for (const ArchTraits& t : kArchTraits) {
    if (name == t.name) return &t;
  }
  return nullptr;
}

std::string supported_arch_list() {
  std::string s;
  for (const ArchTraits& t : kArchTraits) s += (s.empty() ? "" : ", ") + std::string(t.name);
  return s;
}

Status finite_at_least(const std::string& name, float value, float low) {
  if (!(value >= low) || !std::isfinite(value)) {
    return Status::error(name + " = " + std::to_string(value) + " must be finite and >= " + std::to_string(low));
  }
  return {};
}

// The rope.scaling.* keys of a file whose scaling type is `type`.
Status read_rope_scaling(const gguf::File& file, const std::string& a, const std::string& type, ModelConfig& c) {
  if (type == "none") return {};
  if (type != "linear" && type != "yarn") {
    return Status::error("unsupported RoPE scaling '" + type + "' (" + key(a, "rope.scaling.type") +
                         "); kvtier supports none, linear and yarn");
  }
  auto factor = file.get_f32(key(a, "rope.scaling.factor"));
  if (!factor.ok()) return factor.status();
  if (Status s = finite_at_least(key(a, "rope.scaling.factor"), *factor, 1.0f); !s.ok()) return s;
  c.rope_freq_scale = 1.0f / *factor;
  if (type == "linear") {
    c.rope_scaling = RopeScaling::kLinear;
    return {};
  }
  c.rope_scaling = RopeScaling::kYarn;
  for (auto [suffix, out] : {std::pair{"rope.scaling.yarn_beta_fast", &c.yarn_beta_fast},
                             {"rope.scaling.yarn_beta_slow", &c.yarn_beta_slow}}) {
    if (!file.find(key(a, suffix))) continue;
    auto v = file.get_f32(key(a, suffix));
    if (!v.ok()) return v.status();
    if (!(*v > 0) || !std::isfinite(*v)) return Status::error(key(a, suffix) + " must be finite and > 0");
    *out = *v;
  }
  for (const char* suffix : {"rope.scaling.yarn_log_multiplier", "rope.scaling.yarn_ext_factor",
                             "rope.scaling.yarn_attn_factor"}) {
    if (file.find(key(a, suffix))) return Status::error(key(a, suffix) + " is not supported");
  }
  // cos/sin are scaled by (1 + 0.1 ln factor) * attn_factor, computed in llama.cpp's steps (llama_context
  // divides its mscale by 1 + 0.1 ln factor, which ggml's rope_yarn multiplies back) to round alike.
  const float mscale = 0.1f * std::log(*factor) + 1.0f;
  const float passed = mscale * (1.0f / (1.0f + 0.1f * std::log(*factor))) * c.rope_mscale;
  c.rope_mscale = passed * (1.0f + 0.1f * std::log(1.0f / c.rope_freq_scale));
  return {};
}

// Keys every RoPE scaling may use: the original context (YaRN's correction range, LongRoPE's choice of
// factors) and the attention factor (cos/sin scale).
Status read_rope_common(const gguf::File& file, const std::string& a, ModelConfig& c) {
  c.rope_n_ctx_orig = c.n_ctx_train;
  if (file.find(key(a, "rope.scaling.original_context_length"))) {
    auto orig = file.get_u32(key(a, "rope.scaling.original_context_length"));
    if (!orig.ok()) return orig.status();
    if (Status s = positive(key(a, "rope.scaling.original_context_length"), *orig, 1 << 24); !s.ok()) return s;
    c.rope_n_ctx_orig = static_cast<int>(*orig);
  }
  if (file.find(key(a, "rope.scaling.attn_factor"))) {
    auto v = file.get_f32(key(a, "rope.scaling.attn_factor"));
    if (!v.ok()) return v.status();
    if (!(*v > 0) || !std::isfinite(*v)) return Status::error(key(a, "rope.scaling.attn_factor") + " must be finite and > 0");
    c.rope_mscale = *v;
  }
  return {};
}

// {arch}.expert_* keys; a dense model has none.
Status read_experts(const gguf::File& file, const std::string& a, bool required, ModelConfig& c) {
  if (!file.find(key(a, "expert_count"))) {
    if (required) return Status::error("model metadata " + key(a, "expert_count") + " is missing");
    return {};
  }
  for (auto [suffix, out] : {std::pair{"expert_count", &c.n_expert}, {"expert_used_count", &c.n_expert_used}}) {
    auto v = file.get_u32(key(a, suffix));
    if (!v.ok()) return v.status();
    if (Status s = positive(key(a, suffix), *v, 1 << 12); !s.ok()) return s;
    *out = static_cast<int>(*v);
  }
  if (c.n_expert_used > c.n_expert) {
    return Status::error(key(a, "expert_used_count") + " (" + std::to_string(c.n_expert_used) +
                         ") exceeds expert_count (" + std::to_string(c.n_expert) + ")");
  }
  c.n_ff_expert = c.n_ff;
  if (file.find(key(a, "expert_feed_forward_length"))) {
    auto v = file.get_u32(key(a, "expert_feed_forward_length"));
    if (!v.ok()) return v.status();
    if (Status s = positive(key(a, "expert_feed_forward_length"), *v, 1 << 24); !s.ok()) return s;
    c.n_ff_expert = static_cast<int>(*v);
  } else if (a == "qwen3moe") {
    c.n_ff_expert = c.n_ff / c.n_expert_used;  // llama.cpp's default for qwen3moe
  }
  if (file.find(key(a, "expert_weights_scale"))) {
    auto v = file.get_f32(key(a, "expert_weights_scale"));
    if (!v.ok()) return v.status();
    if (!std::isfinite(*v)) return Status::error(key(a, "expert_weights_scale") + " must be finite");
    c.expert_weights_scale = *v;
  }
  return {};
}
}  // namespace

Result<ModelConfig> ModelConfig::from_gguf(const gguf::File& file) {
  ModelConfig c;
  auto arch = file.get_string("general.architecture");
  if (!arch.ok()) return Status::error(arch.error());
  c.architecture = *arch;
  const ArchTraits* traits = find_arch(c.architecture);
  if (!traits) {
    return Status::error("unsupported architecture '" + c.architecture + "' (general.architecture); kvtier runs " +
                         supported_arch_list());
  }
  if (auto name = file.get_string("general.name"); name.ok()) c.name = *name;
  const std::string& a = c.architecture;

  auto get_int = [&](const char* suffix, int& out) -> Status {
    auto v = file.get_u32(key(a, suffix));
    if (!v.ok()) return v.status();
    out = static_cast<int>(*v);
    return positive(key(a, suffix), *v, 1 << 24);
  };
  for (auto [suffix, out] : {std::pair{"embedding_length", &c.n_embd}, {"block_count", &c.n_layers},
                             {"feed_forward_length", &c.n_ff}, {"attention.head_count", &c.n_heads},
                             {"context_length", &c.n_ctx_train}}) {
    if (Status s = get_int(suffix, *out); !s.ok()) return s;
  }
  c.n_kv_heads = c.n_heads;
  if (file.find(key(a, "attention.head_count_kv"))) {
    if (Status s = get_int("attention.head_count_kv", c.n_kv_heads); !s.ok()) return s;
  }
  if (c.n_heads % c.n_kv_heads != 0) {
    return Status::error(key(a, "attention.head_count") + " (" + std::to_string(c.n_heads) +
                         ") is not a multiple of attention.head_count_kv (" + std::to_string(c.n_kv_heads) + ")");
  }
  c.head_dim = c.n_embd / c.n_heads;
  if (file.find(key(a, "attention.key_length"))) {
    if (Status s = get_int("attention.key_length", c.head_dim); !s.ok()) return s;
    int value_length = c.head_dim;
    if (file.find(key(a, "attention.value_length"))) {
      if (Status s = get_int("attention.value_length", value_length); !s.ok()) return s;
    }
    if (value_length != c.head_dim) {
      return Status::error(key(a, "attention.value_length") + " differs from attention.key_length; unsupported");
    }
  }
  if (c.head_dim % 2 != 0) return Status::error("head dimension must be even for RoPE");
  auto eps = file.get_f32(key(a, "attention.layer_norm_rms_epsilon"));
  if (!eps.ok()) return eps.status();
  c.rms_eps = *eps;
  if (!(c.rms_eps > 0 && c.rms_eps < 1)) return Status::error(key(a, "attention.layer_norm_rms_epsilon") + " out of range");

  c.rope_mode = traits->rope_mode;
  c.has_qkv_bias = traits->qkv_bias;
  c.has_qk_norm = traits->qk_norm;
  c.no_rope_layer_step = traits->no_rope_layer_step;
  c.fused_gate_up = traits->fused_gate_up;
  if (Status s = read_experts(file, a, traits->moe, c); !s.ok()) return s;
  c.rope_dims = c.head_dim;
  if (file.find(key(a, "rope.dimension_count"))) {
    if (Status s = get_int("rope.dimension_count", c.rope_dims); !s.ok()) return s;
    if (c.rope_dims > c.head_dim || c.rope_dims % 2 != 0) {
      return Status::error(key(a, "rope.dimension_count") + " must be even and <= the head dimension");
    }
  }
  if (file.find(key(a, "rope.freq_base"))) {
    auto base = file.get_f32(key(a, "rope.freq_base"));
    if (!base.ok()) return base.status();
    c.rope_freq_base = *base;
    if (!(c.rope_freq_base > 1) || !std::isfinite(c.rope_freq_base)) {
      return Status::error(key(a, "rope.freq_base") + " must be finite and > 1 (it is " + std::to_string(*base) + ")");
    }
  }
  // RoPE scaling: rope.scaling.type = linear or yarn, with rope.scaling.factor.
  if (Status s = read_rope_common(file, a, c); !s.ok()) return s;
  if (auto type = file.get_string(key(a, "rope.scaling.type")); type.ok()) {
    if (Status s = read_rope_scaling(file, a, *type, c); !s.ok()) return s;
  } else if (file.find(key(a, "rope.scale_linear"))) {
    auto factor = file.get_f32(key(a, "rope.scale_linear"));
    if (!factor.ok()) return factor.status();
    if (!(*factor >= 1) || !std::isfinite(*factor)) {
      return Status::error(key(a, "rope.scale_linear") + " must be finite and >= 1");
    }
    c.rope_freq_scale = 1.0f / *factor;
    c.rope_scaling = RopeScaling::kLinear;
  }
  if (c.has_qk_norm && c.rope_dims != c.head_dim) {
    return Status::error(key(a, "rope.dimension_count") + " must equal the head dimension for " + a);
  }

  const gguf::TensorInfo* embd = file.find_tensor("token_embd.weight");
  if (!embd) return Status::error("tensor token_embd.weight is missing");
  c.n_vocab = static_cast<int>(embd->ne[1]);
  if (Status s = positive("token_embd.weight rows (vocabulary)", embd->ne[1], 1 << 24); !s.ok()) return s;
  c.tied_embeddings = file.find_tensor("output.weight") == nullptr;
  c.has_rope_freq_factors = file.find_tensor("rope_freqs.weight") != nullptr;
  c.has_longrope_factors = file.find_tensor("rope_factors_long.weight") || file.find_tensor("rope_factors_short.weight");
  if (c.has_rope_freq_factors && c.has_longrope_factors) {
    return Status::error("tensors rope_freqs.weight and rope_factors_long/short.weight both present");
  }
  if (is_gemma_architecture(a)) {
    if (Status s = read_gemma_config(file, c); !s.ok()) return s;
  }
  return c;
}

}  // namespace kvtier
