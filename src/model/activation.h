// The gated activation between a feed-forward block's up and down projections, over the thread pool.
#pragma once

#include <cstddef>

#include "kvtier/thread_pool.h"

namespace kvtier {

// gate[i] = act(gate[i]) * up[i] for i < n: act = SiLU (SwiGLU: llama, qwen, phi3, experts) or GELU-tanh
// (GeGLU: Gemma). Elements are independent, so splitting them over the pool's threads changes no bit; blocks
// under kSerialElements (a decode step's few thousand) stay on the calling thread.
void gated_activation(bool gelu, float* gate, const float* up, size_t n, ThreadPool& pool);

}  // namespace kvtier
