// Token sampling: greedy, or a chain like llama.cpp's default
// (repetition penalty -> top-k -> top-p -> min-p -> temperature -> draw).
#pragma once

#include <cstdint>
#include <deque>
#include <random>
#include <string>
#include <vector>

#include "kvtier/status.h"

namespace kvtier {

struct SamplingParams {
  float temperature = 0.8f;   // <= 0 means greedy (argmax)
  int top_k = 40;             // <= 0 disables
  float top_p = 0.95f;        // >= 1 disables
  float min_p = 0.05f;        // <= 0 disables
  float repeat_penalty = 1.0f;  // 1 disables; divides positive logits, multiplies negative ones
  int repeat_last_n = 64;     // how many recent tokens the penalty looks at
  uint64_t seed = 0xC0FFEE;
};

// OK, or an error naming the first parameter out of range: temperature finite and >= 0, top_p in (0, 1],
// min_p in [0, 1], repeat_penalty finite and > 0, top_k and repeat_last_n >= 0. Every entry point (CLI,
// server) checks parameters with this before sampling, so NaN never reaches the sampler.
Status validate_sampling_params(const SamplingParams& params);

// A seed as a user writes it: decimal digits only, in [0, 2^64). "-5", "1e23", "0x10" and "" are refused
// (a wrapped or saturated seed would silently repeat another seed's output).
Result<uint64_t> parse_seed(const std::string& text);

class Sampler {
 public:
  explicit Sampler(const SamplingParams& params);
  // Picks the next token from logits [n_vocab] and records it for the penalty.
  int32_t sample(const float* logits, int n_vocab);
  // Records a token that was not sampled (e.g. the prompt) for the penalty window.
  void accept(int32_t token);

 private:
  struct Candidate {
    int32_t id;
    float logit;
  };
  SamplingParams params_;
  std::mt19937_64 rng_;
  std::deque<int32_t> recent_;
  std::vector<Candidate> candidates_;  // [n_vocab] working set
};

int32_t argmax(const float* logits, int n);

}  // namespace kvtier
