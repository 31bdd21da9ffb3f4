// Gemma 2 / 3 metadata, as llama.cpp reads it (src/models/gemma2.cpp, gemma3.cpp) and convert_hf_to_gguf.py
// writes it. Norm weights need nothing here: the converter stores Gemma's (1 + w) RMSNorm weights already
// shifted, so they multiply like any other norm weight.
#include <cmath>
#include <string>

#include "model/gemma.h"

namespace kvtier {

namespace {

Status read_float(const gguf::File& file, const std::string& key, float& out, float min, float max) {
  if (!file.find(key)) return {};
  auto v = file.get_f32(key);
  if (!v.ok()) return v.status();
  if (!std::isfinite(*v) || *v < min || *v > max) {
    return Status::error("model metadata " + key + " = " + std::to_string(*v) + " is out of range");
  }
  out = *v;
  return {};
}

}  // namespace

bool is_gemma_architecture(const std::string& arch) { return arch == "gemma2" || arch == "gemma3"; }

Status read_gemma_config(const gguf::File& file, ModelConfig& c) {
  const std::string a = c.architecture + ".";
  const bool gemma2 = c.architecture == "gemma2";
  c.gemma = true;
  c.rope_mode = RopeMode::kNeox;
  c.has_qk_norm = !gemma2;
  // llama.cpp scales queries by 1/sqrt(n_embd / n_heads) for the 27B models (query_pre_attn_scalar there is
  // n_embd / n_heads, which llama.cpp recognises by the layer count) and by 1/sqrt(head_dim) otherwise.
  const bool is_27b = c.n_layers == (gemma2 ? 46 : 62);
  c.attn_scale = 1.0f / std::sqrt(static_cast<float>(is_27b ? c.n_embd / c.n_heads : c.head_dim));

  if (gemma2) {
    c.attn_softcap = 50.0f;   // llama.cpp's defaults when the keys are absent
    c.final_softcap = 30.0f;
    c.sliding_window = 4096;
    c.sliding_window_pattern = 2;
    if (Status s = read_float(file, a + "attn_logit_softcapping", c.attn_softcap, 1e-3f, 1e9f); !s.ok()) return s;
  } else {
    c.sliding_window_pattern = 6;
  }
  if (Status s = read_float(file, a + "final_logit_softcapping", c.final_softcap, 0.0f, 1e9f); !s.ok()) return s;
  const std::string window_key = a + "attention.sliding_window";
  if (file.find(window_key)) {
    auto w = file.get_u32(window_key);
    if (!w.ok()) return w.status();
    if (*w > (1u << 24)) return Status::error("model metadata " + window_key + " = " + std::to_string(*w) + " is out of range");
    c.sliding_window = static_cast<int>(*w);
    if (c.sliding_window > c.n_ctx_train) {
      return Status::error("model metadata " + window_key + " = " + std::to_string(*w) + " exceeds the trained context (" +
                           a + "context_length = " + std::to_string(c.n_ctx_train) + ")");
    }
  }
  const std::string pattern_key = a + "attention.sliding_window_pattern";
  if (c.sliding_window > 0 && file.find(pattern_key)) {
    auto p = file.get_u32(pattern_key);
    if (!p.ok()) return Status::error(p.error() + " (kvtier reads " + pattern_key + " as one period, not per-layer flags)");
    c.sliding_window_pattern = static_cast<int>(*p);
  }
  // Windowed layers rotate with their own base and no scaling (llama.cpp: rope_freq_base_train_swa, 10000
  // unless rope.freq_base_swa says otherwise; gemma2 uses the global values).
  if (gemma2) {
    c.rope_freq_base_swa = c.rope_freq_base;
    c.rope_freq_scale_swa = c.rope_freq_scale;
  }
  if (Status s = read_float(file, a + "rope.freq_base_swa", c.rope_freq_base_swa, 1.0001f, 1e12f); !s.ok()) return s;
  return {};
}

}  // namespace kvtier
