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
}  // namespace

Result<ModelConfig> ModelConfig::from_gguf(const gguf::File& file) {
  ModelConfig c;
  auto arch = file.get_string("general.architecture");
  if (!arch.ok()) return Status::error(arch.error());
  c.architecture = *arch;
  if (c.architecture != "llama" && c.architecture != "qwen2" && !is_gemma_architecture(c.architecture)) {
    return Status::error("unsupported architecture '" + c.architecture +
                         "' (general.architecture); kvtier runs llama, qwen2, gemma2 and gemma3");
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

  c.rope_mode = a == "qwen2" ? RopeMode::kNeox : RopeMode::kNormal;
  c.has_qkv_bias = a == "qwen2";
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
  // Linear RoPE scaling (rope.scaling.type = "linear", rope.scaling.factor).
  if (auto type = file.get_string(key(a, "rope.scaling.type")); type.ok()) {
    if (*type == "linear") {
      auto factor = file.get_f32(key(a, "rope.scaling.factor"));
      if (!factor.ok()) return factor.status();
      if (!(*factor >= 1) || !std::isfinite(*factor)) {
        return Status::error(key(a, "rope.scaling.factor") + " must be finite and >= 1");
      }
      c.rope_freq_scale = 1.0f / *factor;
    } else if (*type != "none") {
      return Status::error("unsupported RoPE scaling '" + *type + "' (" + key(a, "rope.scaling.type") + ")");
    }
  } else if (file.find(key(a, "rope.scale_linear"))) {
    auto factor = file.get_f32(key(a, "rope.scale_linear"));
    if (!factor.ok()) return factor.status();
    if (!(*factor >= 1) || !std::isfinite(*factor)) {
      return Status::error(key(a, "rope.scale_linear") + " must be finite and >= 1");
    }
    c.rope_freq_scale = 1.0f / *factor;
  }

  const gguf::TensorInfo* embd = file.find_tensor("token_embd.weight");
  if (!embd) return Status::error("tensor token_embd.weight is missing");
  c.n_vocab = static_cast<int>(embd->ne[1]);
  if (Status s = positive("token_embd.weight rows (vocabulary)", embd->ne[1], 1 << 24); !s.ok()) return s;
  c.tied_embeddings = file.find_tensor("output.weight") == nullptr;
  c.has_rope_freq_factors = file.find_tensor("rope_freqs.weight") != nullptr;
  if (is_gemma_architecture(a)) {
    if (Status s = read_gemma_config(file, c); !s.ok()) return s;
  }
  return c;
}

}  // namespace kvtier
