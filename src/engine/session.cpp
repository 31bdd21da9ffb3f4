#include "kvtier/session.h"

#include <cmath>
#include <string>

namespace kvtier {

Session::Session(Model& model, std::unique_ptr<KvCache> cache, ThreadPool& pool)
    : model_(model), cache_(std::move(cache)), pool_(pool) {}

Status Session::append(const std::vector<int32_t>& tokens, const ProgressFn& progress) {
  if (tokens.empty()) return {};
  const int n = static_cast<int>(tokens.size());
  last_logits_.resize(model_.config().n_vocab);
  return model_.forward(tokens.data(), n, cache_->n_tokens(), *cache_, pool_, n - 1, last_logits_.data(),
                        progress);
}

Result<PerplexityResult> compute_perplexity(
    Model& model, const std::vector<int32_t>& tokens, int n_ctx, int n_chunks, int32_t bos, ThreadPool& pool,
    const std::function<std::unique_ptr<KvCache>()>& make_cache,
    const std::function<void(int, int, double)>& on_chunk) {
  if (n_ctx < 4) return Status::error("perplexity: context size must be at least 4");
  const int available = static_cast<int>(tokens.size() / n_ctx);
  if (available < 1) {
    return Status::error("perplexity: the text has " + std::to_string(tokens.size()) +
                         " tokens, fewer than one chunk of " + std::to_string(n_ctx));
  }
  const int chunks = n_chunks > 0 ? std::min(n_chunks, available) : available;
  const int n_vocab = model.config().n_vocab;
  const int first = n_ctx / 2;
  std::vector<float> logits(static_cast<size_t>(n_ctx - first) * n_vocab);  // [n_ctx - first, n_vocab]
  PerplexityResult result;
  double nll = 0, nll2 = 0;
  int64_t count = 0;
  for (int chunk = 0; chunk < chunks; ++chunk) {
    std::vector<int32_t> batch(tokens.begin() + static_cast<size_t>(chunk) * n_ctx,
                               tokens.begin() + static_cast<size_t>(chunk + 1) * n_ctx);
    if (bos >= 0) batch[0] = bos;
    std::unique_ptr<KvCache> cache = make_cache();
    if (Status s = model.forward(batch.data(), n_ctx, 0, *cache, pool, first, logits.data()); !s.ok()) return s;
    for (int i = first; i < n_ctx - 1; ++i) {
      const float* row = logits.data() + static_cast<size_t>(i - first) * n_vocab;
      float max_logit = row[0];
      for (int v = 1; v < n_vocab; ++v) max_logit = std::max(max_logit, row[v]);
      double sum = 0;
      for (int v = 0; v < n_vocab; ++v) sum += std::exp(static_cast<double>(row[v]) - max_logit);
      const double token_nll = -(row[batch[i + 1]] - max_logit - std::log(sum));
      nll += token_nll;
      nll2 += token_nll * token_nll;
      ++count;
    }
    result.running_ppl.push_back(std::exp(nll / count));
    if (on_chunk) on_chunk(chunk, chunks, result.running_ppl.back());
  }
  const double mean = nll / count;
  const double variance = nll2 / count - mean * mean;
  result.ppl = std::exp(mean);
  result.ppl_error = variance > 0 && count > 1 ? std::sqrt(variance / (count - 1)) * result.ppl : 0;
  result.scored_tokens = count;
  return result;
}

}  // namespace kvtier
