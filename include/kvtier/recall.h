// Long-range retrieval under a KV cache: a span of text appears twice with
// filler between, and the model's NLL on the second copy (which it can copy
// from the first, S + F positions back) is compared between a reference cache
// (f16) and the cache under test. Quantizing old tokens hurts exactly here.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "kvtier/kv_cache.h"
#include "kvtier/model.h"
#include "kvtier/status.h"
#include "kvtier/thread_pool.h"

namespace kvtier {

struct RecallOptions {
  int span = 128;    // S: tokens of the repeated span
  int filler = 0;    // F: tokens between the copies (the text that follows the span)
  int trials = 8;    // K: different spans, spread evenly over the text
  bool decode = false;  // feed the second copy one token at a time (what sparse cold reads act on)
};

// One trial's sequence (length 1 + 2S + F, within the cache's capacity):
//   [BOS] text[a, a+S) text[a+S, a+S+F) text[a, a+S)
//         first copy   filler            second copy
// Scored: tokens 1..S-1 of each copy (token 0 of a copy cannot be predicted
// from the span; from token 1 on the model can recognise the repeat).
struct RecallTrial {
  int64_t span_start = 0;          // a: index of the span in the tokenized text
  double first_nll_base = 0;       // mean NLL per scored token, first copy, reference cache
  double second_nll_base = 0;      // second copy, reference cache
  double second_nll_test = 0;      // second copy, cache under test
};

struct RecallResult {
  int span = 0, filler = 0;
  std::vector<RecallTrial> trials;
  // Means over all scored tokens of all trials (nats per token).
  double first_nll_base = 0;
  double first_nll_test = 0;
  double second_nll_base = 0;
  double second_nll_test = 0;
  double second_nll_ratio = 0;       // second_nll_test / second_nll_base
  double second_nll_difference = 0;  // second_nll_test - second_nll_base
  // Second copy: fraction of tokens whose argmax is the true (copied) token.
  double copy_accuracy_base = 0;
  double copy_accuracy_test = 0;
  double second_kld = 0;             // mean KL(p_base || p_test) over the second copy's scored tokens
  int64_t scored_per_copy = 0;       // scored tokens per copy over all trials
};

// `tokens` is the whole text tokenized with BOS (tokens[0] is skipped). The
// caches must hold at least 1 + 2*span + filler positions. on_trial(i, K, trial)
// reports progress. Errors: options out of range, text too short, forward errors.
Result<RecallResult> compute_recall(
    Model& model, const std::vector<int32_t>& tokens, int32_t bos, const RecallOptions& options, ThreadPool& pool,
    const std::function<std::unique_ptr<KvCache>()>& make_base_cache,
    const std::function<std::unique_ptr<KvCache>()>& make_test_cache,
    const std::function<void(int trial, int n_trials, const RecallTrial&)>& on_trial = {});

}  // namespace kvtier
