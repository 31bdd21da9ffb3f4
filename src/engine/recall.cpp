#include "kvtier/recall.h"

#include "engine/log_softmax.h"

#include <algorithm>
#include <cmath>
#include <string>

namespace kvtier {

namespace {

using engine_detail::log_softmax;

int argmax_row(const float* row, int n) { return static_cast<int>(std::max_element(row, row + n) - row); }

// Logits of one trial's two copies under one cache.
struct CopyLogits {
  std::vector<float> first;   // [S-1, n_vocab]: rows at positions 1..S-1, predicting first-copy tokens 1..S-1
  std::vector<float> second;  // [S-1, n_vocab]: rows at positions p2..p2+S-2, predicting second-copy tokens 1..S-1
};

// Evaluates the trial sequence the way a user's session would: the first copy,
// then the filler (no logits needed), then the second copy.
// With decode set, the second copy is fed one token at a time, as generation reads the cache.
Status evaluate_trial(Model& model, const std::vector<int32_t>& sequence, int span, int filler, bool decode,
                      KvCache& cache, ThreadPool& pool, CopyLogits& out) {
  const int n_vocab = model.config().n_vocab;
  const int second_start = 1 + span + filler;  // p2
  out.first.resize(static_cast<size_t>(span - 1) * n_vocab);
  out.second.resize(static_cast<size_t>(span - 1) * n_vocab);
  // Positions [0, S): BOS and first-copy tokens 0..S-2; logits from position 1.
  if (Status s = model.forward(sequence.data(), span, 0, cache, pool, 1, out.first.data()); !s.ok()) return s;
  // Positions [S, p2): the last first-copy token and the filler; no logits.
  const int middle = second_start - span;
  if (Status s = model.forward(sequence.data() + span, middle, span, cache, pool, middle, nullptr); !s.ok()) return s;
  // Positions [p2, p2 + S - 1): second-copy tokens 0..S-2.
  if (!decode) return model.forward(sequence.data() + second_start, span - 1, second_start, cache, pool, 0, out.second.data());
  for (int i = 0; i < span - 1; ++i) {
    const int pos = second_start + i;
    float* row = out.second.data() + static_cast<size_t>(i) * n_vocab;
    if (Status s = model.forward(sequence.data() + pos, 1, pos, cache, pool, 0, row); !s.ok()) return s;
  }
  return Status();
}

}  // namespace

Result<RecallResult> compute_recall(
    Model& model, const std::vector<int32_t>& tokens, int32_t bos, const RecallOptions& options, ThreadPool& pool,
    const std::function<std::unique_ptr<KvCache>()>& make_base_cache,
    const std::function<std::unique_ptr<KvCache>()>& make_test_cache,
    const std::function<void(int, int, const RecallTrial&)>& on_trial) {
  const int span = options.span, filler = options.filler, n_trials = options.trials;
  if (span < 2) return Status::error("recall: span must be at least 2 tokens, got " + std::to_string(span));
  if (filler < 0) return Status::error("recall: filler must not be negative, got " + std::to_string(filler));
  if (n_trials < 1) return Status::error("recall: trials must be at least 1, got " + std::to_string(n_trials));
  const int64_t length = 1 + 2 * static_cast<int64_t>(span) + filler;  // trial sequence
  const int64_t text_needed = 1 + static_cast<int64_t>(span) + filler;  // BOS + span + filler from the text
  if (static_cast<int64_t>(tokens.size()) < text_needed) {
    return Status::error("recall: the text has " + std::to_string(tokens.size()) + " tokens, a span of " +
                         std::to_string(span) + " with a filler of " + std::to_string(filler) + " needs " +
                         std::to_string(text_needed));
  }
  const int n_vocab = model.config().n_vocab;
  // Spans spread evenly over the text: a_k = 1 + k * room / K.
  const int64_t room = static_cast<int64_t>(tokens.size()) - text_needed;

  RecallResult result;
  result.span = span;
  result.filler = filler;
  double first_base = 0, first_test = 0, second_base = 0, second_test = 0, kld = 0;
  int64_t correct_base = 0, correct_test = 0, count = 0;
  std::vector<int32_t> sequence(static_cast<size_t>(length));  // [1 + 2S + F]
  std::vector<double> log_p, log_q;
  CopyLogits base_logits, test_logits;
  for (int k = 0; k < n_trials; ++k) {
    const int64_t a = 1 + room * k / n_trials;
    sequence[0] = bos >= 0 ? bos : tokens[0];
    std::copy(tokens.begin() + a, tokens.begin() + a + span + filler, sequence.begin() + 1);
    std::copy(tokens.begin() + a, tokens.begin() + a + span, sequence.begin() + 1 + span + filler);

    for (auto* which : {&base_logits, &test_logits}) {
      std::unique_ptr<KvCache> cache = which == &base_logits ? make_base_cache() : make_test_cache();
      if (!cache) return Status::error("recall: could not build a KV cache");
      if (cache->geometry().max_tokens < length) {
        return Status::error("recall: a trial needs " + std::to_string(length) +
                             " positions (1 + 2*span + filler), the cache holds " +
                             std::to_string(cache->geometry().max_tokens));
      }
      if (Status s = evaluate_trial(model, sequence, span, filler, options.decode, *cache, pool, *which); !s.ok()) return s;
    }

    RecallTrial trial;
    trial.span_start = a;
    const int second_start = 1 + span + filler;
    for (int j = 1; j < span; ++j) {
      const size_t row = static_cast<size_t>(j - 1) * n_vocab;
      const int32_t first_token = sequence[1 + j];
      const int32_t second_token = sequence[second_start + j];
      log_softmax(base_logits.first.data() + row, n_vocab, log_p);
      trial.first_nll_base -= log_p[first_token];
      log_softmax(test_logits.first.data() + row, n_vocab, log_q);
      first_test -= log_q[first_token];

      log_softmax(base_logits.second.data() + row, n_vocab, log_p);
      log_softmax(test_logits.second.data() + row, n_vocab, log_q);
      trial.second_nll_base -= log_p[second_token];
      trial.second_nll_test -= log_q[second_token];
      double token_kld = 0;
      for (int v = 0; v < n_vocab; ++v) token_kld += std::exp(log_p[v]) * (log_p[v] - log_q[v]);
      kld += token_kld;
      correct_base += argmax_row(base_logits.second.data() + row, n_vocab) == second_token;
      correct_test += argmax_row(test_logits.second.data() + row, n_vocab) == second_token;
    }
    first_base += trial.first_nll_base;
    second_base += trial.second_nll_base;
    second_test += trial.second_nll_test;
    count += span - 1;
    trial.first_nll_base /= span - 1;
    trial.second_nll_base /= span - 1;
    trial.second_nll_test /= span - 1;
    result.trials.push_back(trial);
    if (on_trial) on_trial(k, n_trials, trial);
  }
  result.first_nll_base = first_base / count;
  result.first_nll_test = first_test / count;
  result.second_nll_base = second_base / count;
  result.second_nll_test = second_test / count;
  result.second_nll_ratio = result.second_nll_base > 0 ? result.second_nll_test / result.second_nll_base : 0;
  result.second_nll_difference = result.second_nll_test - result.second_nll_base;
  result.copy_accuracy_base = static_cast<double>(correct_base) / count;
  result.copy_accuracy_test = static_cast<double>(correct_test) / count;
  result.second_kld = kld / count;
  result.scored_per_copy = count;
  return result;
}

}  // namespace kvtier
