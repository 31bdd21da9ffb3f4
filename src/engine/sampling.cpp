#include "kvtier/sampling.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <unordered_set>

namespace kvtier {

int32_t argmax(const float* logits, int n) {
  int32_t best = 0;
  for (int i = 1; i < n; ++i) {
    if (logits[i] > logits[best]) best = i;
  }
  return best;
}

Status validate_sampling_params(const SamplingParams& p) {
  if (!std::isfinite(p.temperature) || p.temperature < 0) {
    return Status::error("temperature must be a finite number >= 0 (0 = greedy)");
  }
  if (!(p.top_p > 0 && p.top_p <= 1)) return Status::error("top_p must be in (0, 1]");
  if (!(p.min_p >= 0 && p.min_p <= 1)) return Status::error("min_p must be in [0, 1]");
  if (!std::isfinite(p.repeat_penalty) || !(p.repeat_penalty > 0)) {
    return Status::error("repeat_penalty must be a finite number > 0 (1 = off)");
  }
  if (p.top_k < 0) return Status::error("top_k must be >= 0 (0 = off)");
  if (p.repeat_last_n < 0) return Status::error("repeat_last_n must be >= 0");
  return Status();
}

Result<uint64_t> parse_seed(const std::string& text) {
  if (text.empty()) return Status::error("the seed is empty");
  uint64_t value = 0;
  for (char ch : text) {
    if (ch < '0' || ch > '9') {
      return Status::error("seed '" + text + "' is not a whole number in [0, 2^64) (digits only)");
    }
    const uint64_t digit = static_cast<uint64_t>(ch - '0');
    if (value > (UINT64_MAX - digit) / 10) return Status::error("seed '" + text + "' is larger than 2^64 - 1");
    value = value * 10 + digit;
  }
  return value;
}

Sampler::Sampler(const SamplingParams& params) : params_(params), rng_(params.seed) {}

void Sampler::accept(int32_t token) {
  if (params_.repeat_last_n <= 0) return;
  recent_.push_back(token);
  while (static_cast<int>(recent_.size()) > params_.repeat_last_n) recent_.pop_front();
}

int32_t Sampler::sample(const float* logits, int n_vocab) {
  candidates_.resize(n_vocab);
  for (int i = 0; i < n_vocab; ++i) candidates_[i] = {i, logits[i]};

  if (params_.repeat_penalty != 1.0f && !recent_.empty()) {
    const std::unordered_set<int32_t> seen(recent_.begin(), recent_.end());
    for (int32_t id : seen) {
      if (id < 0 || id >= n_vocab) continue;
      float& l = candidates_[id].logit;
      l = l > 0 ? l / params_.repeat_penalty : l * params_.repeat_penalty;
    }
  }

  int32_t chosen;
  if (params_.temperature <= 0) {
    chosen = std::max_element(candidates_.begin(), candidates_.end(),
                              [](const Candidate& a, const Candidate& b) { return a.logit < b.logit; })
                 ->id;
  } else {
    auto by_logit = [](const Candidate& a, const Candidate& b) { return a.logit > b.logit; };
    size_t keep = candidates_.size();
    if (params_.top_k > 0 && static_cast<size_t>(params_.top_k) < keep) {
      keep = params_.top_k;
      std::partial_sort(candidates_.begin(), candidates_.begin() + keep, candidates_.end(), by_logit);
    } else {
      std::sort(candidates_.begin(), candidates_.end(), by_logit);
    }
    candidates_.resize(keep);
    // Softmax over what is left (sorted, so the first is the max).
    std::vector<double> probs(keep);
    double sum = 0;
    for (size_t i = 0; i < keep; ++i) sum += probs[i] = std::exp(candidates_[i].logit - candidates_[0].logit);
    for (double& p : probs) p /= sum;
    if (params_.top_p < 1.0f) {
      double cumulative = 0;
      size_t cut = keep;
      for (size_t i = 0; i < keep; ++i) {
        cumulative += probs[i];
        if (cumulative >= params_.top_p) {
          cut = i + 1;
          break;
        }
      }
      keep = cut;
    }
    if (params_.min_p > 0) {
      const double threshold = params_.min_p * probs[0];
      size_t cut = 1;
      while (cut < keep && probs[cut] >= threshold) ++cut;
      keep = cut;
    }
    // Temperature on the survivors, then draw.
    std::vector<double> weights(keep);
    for (size_t i = 0; i < keep; ++i) {
      weights[i] = std::exp((candidates_[i].logit - candidates_[0].logit) / params_.temperature);
    }
    std::discrete_distribution<size_t> dist(weights.begin(), weights.end());
    chosen = candidates_[dist(rng_)].id;
  }
  accept(chosen);
  return chosen;
}

}  // namespace kvtier
