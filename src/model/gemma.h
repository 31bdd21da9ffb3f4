// Gemma 2 / Gemma 3 specifics of the llama-family model (docs/sliding_window.md): their metadata keys and the
// per-layer steps the forward pass adds for them. Everything else (attention, RoPE, the cache) is shared.
#pragma once

#include <string>

#include "kvtier/gguf.h"
#include "kvtier/model.h"

namespace kvtier {

bool is_gemma_architecture(const std::string& arch);

// Reads {gemma2,gemma3}.* keys into a config already holding the common ones: NeoX RoPE, the attention
// scale llama.cpp uses, soft-capping, the sliding window, its layer pattern and RoPE base. Errors name the key.
Status read_gemma_config(const gguf::File& file, ModelConfig& config);

// x [n, d] *= sqrt(d): Gemma's embedding scale.
void scale_embeddings(float* x, int n, int d);

// gate[i] = gelu_tanh(gate[i]) * up[i]  (GeGLU, the tanh approximation, as Gemma and llama.cpp use).
void geglu(float* gate, const float* up, size_t n);

// logits[i] = cap * tanh(logits[i] / cap).
void soft_cap(float* logits, size_t n, float cap);

}  // namespace kvtier
