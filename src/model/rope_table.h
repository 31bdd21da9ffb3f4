// The RoPE (cos, sin) table of the forward pass, shared by the CPU pass and the GPU backend (which computes it
// on the host too, so both round the angles alike).
#pragma once

#include <vector>

#include "kvtier/model.h"

namespace kvtier {

// cos_sin: [n][rope_dims] (cos, sin) pairs for positions [pos, pos + n), with the config's scaling (linear,
// YaRN) and per-dimension frequency factors (empty: none).
void rope_table(const ModelConfig& c, const std::vector<float>& freq_factors, int n, int pos, float* cos_sin);

}  // namespace kvtier
