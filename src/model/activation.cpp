#include "model/activation.h"

#include <cmath>

#include "model/gemma.h"

namespace kvtier {

namespace {

constexpr size_t kSerialElements = 16384;

void swiglu(float* gate, const float* up, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    const float g = gate[i];
    gate[i] = g / (1.0f + std::exp(-g)) * up[i];
  }
}

void activate(bool gelu, float* gate, const float* up, size_t n) {
  if (gelu) {
    geglu(gate, up, n);
  } else {
    swiglu(gate, up, n);
  }
}

}  // namespace

void gated_activation(bool gelu, float* gate, const float* up, size_t n, ThreadPool& pool) {
  if (n < kSerialElements) {
    activate(gelu, gate, up, n);
    return;
  }
  pool.parallel_for(static_cast<int64_t>(n), [&](int64_t begin, int64_t end, int) {
    activate(gelu, gate + begin, up + begin, static_cast<size_t>(end - begin));
  });
}

}  // namespace kvtier
