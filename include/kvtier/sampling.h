// Token sampling: greedy, or a chain like llama.cpp's default
// (repetition penalty -> top-k -> top-p -> min-p -> temperature -> draw).
#pragma once

#include <cstdint>
#include <deque>
#include <random>
#include <vector>

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
