// log-softmax of one row of logits, in double: out[v] = logits[v] - logsumexp(logits).
// Shared by the perplexity/KL harness and recall.
#pragma once

#include <algorithm>
#include <cmath>
#include <vector>

namespace kvtier::engine_detail {

inline void log_softmax(const float* logits, int n, std::vector<double>& out) {
  out.resize(n);
  float max_logit = logits[0];
  for (int v = 1; v < n; ++v) max_logit = std::max(max_logit, logits[v]);
  double sum = 0;
  for (int v = 0; v < n; ++v) sum += std::exp(static_cast<double>(logits[v]) - max_logit);
  const double log_sum = std::log(sum) + max_logit;
  for (int v = 0; v < n; ++v) out[v] = logits[v] - log_sum;
}

}  // namespace kvtier::engine_detail
