#include "kvtier/session.h"

#include "engine/log_softmax.h"

#include <algorithm>
#include <cmath>
#include <string>

namespace kvtier {

Session::Session(Model& model, std::unique_ptr<KvCache> cache, ThreadPool& pool)
    : model_(model), cache_(std::move(cache)), pool_(pool) {
  // A cache handed in with content has no known token history; sessions start empty.
  cache_->truncate(0);
}

Status Session::evaluate(int pos, const std::vector<int32_t>& tokens, const ProgressFn& progress) {
  const int n = static_cast<int>(tokens.size());
  last_logits_.resize(model_.config().n_vocab);
  return model_.forward(tokens.data(), n, pos, *cache_, pool_, n - 1, last_logits_.data(), progress);
}

void Session::cut(int n_tokens) {
  n_tokens = std::clamp(n_tokens, 0, static_cast<int>(tokens_.size()));
  cache_->truncate(n_tokens);
  // A cache may keep less than asked: a sliding-window layer that released pages the next position would need
  // again (kv/tiered_store.h) drops everything. The tokens in between are evaluated again here; should that
  // fail, the session ends where the cache does.
  const int kept = std::min(n_tokens, cache_->n_tokens());
  if (kept < n_tokens) {
    const std::vector<int32_t> again(tokens_.begin() + kept, tokens_.begin() + n_tokens);
    if (!evaluate(kept, again, {}).ok()) {
      cache_->truncate(kept);
      n_tokens = std::min(kept, cache_->n_tokens());
    }
    last_logits_.clear();
  }
  tokens_.resize(static_cast<size_t>(n_tokens));
}

Status Session::append(const std::vector<int32_t>& tokens, const ProgressFn& progress) {
  stopped_ = false;
  if (!stop_requested_ || static_cast<int>(tokens.size()) <= kMaxBatch) return append_piece(tokens, progress);
  // Long inputs go in micro-batches so that a stop request (Ctrl-C) ends the evaluation at a batch boundary
  // with the cache and tokens() still in step (a session saved then resumes where it stopped).
  const size_t total = tokens.size();
  for (size_t done = 0; done < total;) {
    const size_t n = std::min(total - done, static_cast<size_t>(kMaxBatch));
    const std::vector<int32_t> piece(tokens.begin() + static_cast<std::ptrdiff_t>(done),
                                     tokens.begin() + static_cast<std::ptrdiff_t>(done + n));
    if (Status s = append_piece(piece, {}); !s.ok()) return s;
    done += n;
    if (progress) progress(done, total);
    if (done < total && stop_requested_()) {
      stopped_ = true;
      return Status();
    }
  }
  return Status();
}

std::vector<Status> Session::append_together(std::span<Session* const> sessions,
                                             std::span<const std::vector<int32_t>> pieces) {
  std::vector<Status> statuses(sessions.size());
  if (sessions.empty()) return statuses;
  if (sessions.size() > 1) {
    std::vector<ForwardSegment> segments;  // [sessions]
    for (size_t i = 0; i < sessions.size(); ++i) {
      Session& s = *sessions[i];
      const int n = static_cast<int>(pieces[i].size());
      s.stopped_ = false;
      s.last_logits_.resize(s.model_.config().n_vocab);
      segments.push_back({pieces[i].data(), n, static_cast<int>(s.tokens_.size()), s.cache_.get(), n - 1,
                          s.last_logits_.data()});
    }
    if (sessions[0]->model_.forward_segments(segments, sessions[0]->pool_).ok()) {
      for (size_t i = 0; i < sessions.size(); ++i) {
        sessions[i]->tokens_.insert(sessions[i]->tokens_.end(), pieces[i].begin(), pieces[i].end());
      }
      return statuses;
    }
    // Some caches may hold some layers of the failed batch: back to what they held, then one by one.
    for (Session* s : sessions) {
      s->cut(static_cast<int>(s->tokens_.size()));
      s->last_logits_.clear();
    }
  }
  for (size_t i = 0; i < sessions.size(); ++i) statuses[i] = sessions[i]->append(pieces[i]);
  return statuses;
}

Status Session::append_piece(const std::vector<int32_t>& tokens, const ProgressFn& progress) {
  if (tokens.empty()) return {};
  const int start = static_cast<int>(tokens_.size());
  Status status = evaluate(start, tokens, progress);
  if (status.ok()) {
    tokens_.insert(tokens_.end(), tokens.begin(), tokens.end());
    return status;
  }
  const int bad = cache_->first_bad_position();
  if (bad < 0 || bad > start) {
    cut(start);  // a failed batch may have stored some layers' positions
    last_logits_.clear();
    return status;
  }
  std::vector<int32_t> redo(tokens_.begin() + bad, tokens_.end());  // [start - bad + n] from the bad position on
  redo.insert(redo.end(), tokens.begin(), tokens.end());
  if (warn_) {
    warn_("KV cache damaged from position " + std::to_string(bad) + " (" + status.message() + "); recomputing " +
          std::to_string(redo.size()) + " tokens");
  }
  cut(bad);
  if (Status again = evaluate(bad, redo, progress); !again.ok()) {
    const int bad_again = cache_->first_bad_position();
    cut(bad_again >= 0 ? std::min(bad, bad_again) : bad);
    last_logits_.clear();
    return Status::error("recomputing the KV cache from position " + std::to_string(bad) +
                         " after damage failed: " + again.message());
  }
  tokens_.insert(tokens_.end(), redo.begin(), redo.end());
  return Status();
}

Status Session::save(const std::string& path, SessionIoStats* stats) {
  return write_session_file(path, model_, tokens_, *cache_, stats);
}

Status Session::restore(const std::string& path, SessionIoStats* stats) {
  tokens_.clear();
  last_logits_.clear();
  Result<SessionFileHeader> header = read_session_file(path, model_, *cache_, stats);
  if (!header.ok()) return header.status();
  tokens_ = std::move(header->tokens);
  return Status();
}

std::vector<int32_t> Session::reuse_prefix(const std::vector<int32_t>& prompt) {
  const size_t limit = std::min(tokens_.size(), prompt.empty() ? size_t{0} : prompt.size() - 1);
  size_t keep = 0;
  while (keep < limit && tokens_[keep] == prompt[keep]) ++keep;
  if (keep < tokens_.size()) {
    cut(static_cast<int>(keep));
    last_logits_.clear();
  }
  return std::vector<int32_t>(prompt.begin() + static_cast<std::ptrdiff_t>(keep), prompt.end());
}

namespace {
// A cache's save() stream held in memory, for copy_prefix.
class MemorySink final : public ByteSink {
 public:
  Status write(const void* data, size_t bytes) override {
    const auto* p = static_cast<const uint8_t*>(data);
    bytes_.insert(bytes_.end(), p, p + bytes);
    return Status();
  }
  const std::vector<uint8_t>& bytes() const { return bytes_; }

 private:
  std::vector<uint8_t> bytes_;  // [bytes written]
};

class MemorySource final : public ByteSource {
 public:
  explicit MemorySource(const std::vector<uint8_t>& bytes) : bytes_(bytes) {}
  Status read(void* data, size_t bytes) override {
    if (bytes > bytes_.size() - pos_) return Status::error("the copied KV stream ends early");
    std::copy_n(bytes_.data() + pos_, bytes, static_cast<uint8_t*>(data));
    pos_ += bytes;
    return Status();
  }

 private:
  const std::vector<uint8_t>& bytes_;
  size_t pos_ = 0;
};
}  // namespace

Status Session::copy_prefix(Session& source, int n_tokens) {
  if (&source == this) return Status::error("a session cannot copy its own prefix");
  clear();
  last_logits_.clear();
  if (&source.model_ != &model_) return Status::error("prefix copy between sessions of different models");
  if (source.cache_->policy() != cache_->policy()) {
    return Status::error("prefix copy between caches of different policies ('" + source.cache_->policy() + "', '" +
                         cache_->policy() + "')");
  }
  if (n_tokens < 0 || n_tokens > static_cast<int>(source.tokens_.size())) {
    return Status::error("prefix copy of " + std::to_string(n_tokens) + " tokens from a session holding " +
                         std::to_string(source.tokens_.size()));
  }
  if (n_tokens == 0) return Status();
  // The whole stream of the source (its cache's save() has no prefix form), then cut to the prefix here.
  MemorySink stream;
  if (Status s = source.cache_->save(stream); !s.ok()) return Status::error("prefix copy: " + s.message());
  MemorySource in(stream.bytes());
  if (Status s = cache_->load(in); !s.ok()) {
    cache_->truncate(0);
    return Status::error("prefix copy: " + s.message());
  }
  if (cache_->n_tokens() != static_cast<int>(source.tokens_.size())) {
    cache_->truncate(0);
    return Status::error("prefix copy: the copied cache holds " + std::to_string(cache_->n_tokens()) +
                         " positions, the source's sequence " + std::to_string(source.tokens_.size()));
  }
  tokens_ = source.tokens_;
  truncate(n_tokens);
  return Status();
}

Result<int> Session::shift_context(int n_keep, int n_discard, const ProgressFn& progress) {
  const int n = static_cast<int>(tokens_.size());
  if (n_keep < 0 || n_discard <= 0 || n_keep + n_discard > n) {
    return Status::error("context shift: cannot drop tokens [" + std::to_string(n_keep) + ", " +
                         std::to_string(n_keep + n_discard) + ") of " + std::to_string(n));
  }
  const std::vector<int32_t> tail(tokens_.begin() + n_keep + n_discard, tokens_.end());
  cut(n_keep);
  last_logits_.clear();
  if (tail.empty()) return 0;
  if (Status s = append(tail, progress); !s.ok()) return s;
  return static_cast<int>(tail.size());
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

namespace {
using engine_detail::log_softmax;
}  // namespace

Result<KvQualityResult> compare_kv_caches(
    Model& model, const std::vector<int32_t>& tokens, int n_ctx, int n_chunks, int32_t bos, ThreadPool& pool,
    const std::function<std::unique_ptr<KvCache>()>& make_base_cache,
    const std::function<std::unique_ptr<KvCache>()>& make_test_cache,
    const std::function<void(int, int, const KvQualityResult&)>& on_chunk, bool score_by_decode) {
  if (n_ctx < 4) return Status::error("kv quality: context size must be at least 4");
  const int available = static_cast<int>(tokens.size() / n_ctx);
  if (available < 1) return Status::error("kv quality: the text is shorter than one chunk");
  const int chunks = n_chunks > 0 ? std::min(n_chunks, available) : available;
  const int n_vocab = model.config().n_vocab;
  const int first = n_ctx / 2;
  const size_t rows = static_cast<size_t>(n_ctx - first);
  std::vector<float> base_logits(rows * n_vocab), test_logits(rows * n_vocab);  // [rows, n_vocab] each
  std::vector<double> log_p, log_q;
  double nll_base = 0, nll_test = 0, kld = 0, kld2 = 0;
  int64_t same = 0, count = 0;
  KvQualityResult r;
  for (int chunk = 0; chunk < chunks; ++chunk) {
    std::vector<int32_t> batch(tokens.begin() + static_cast<size_t>(chunk) * n_ctx,
                               tokens.begin() + static_cast<size_t>(chunk + 1) * n_ctx);
    if (bos >= 0) batch[0] = bos;
    // Prefill the chunk, or (score_by_decode) prefill its first half and feed the scored half one token at
    // a time, as generation does.
    auto evaluate = [&](KvCache& cache, float* logits) -> Status {
      if (!score_by_decode) return model.forward(batch.data(), n_ctx, 0, cache, pool, first, logits);
      if (Status s = model.forward(batch.data(), first, 0, cache, pool, first, nullptr); !s.ok()) return s;
      for (int i = first; i < n_ctx; ++i) {
        float* row = logits + static_cast<size_t>(i - first) * n_vocab;
        if (Status s = model.forward(batch.data() + i, 1, i, cache, pool, 0, row); !s.ok()) return s;
      }
      return Status();
    };
    auto base = make_base_cache();
    if (Status s = evaluate(*base, base_logits.data()); !s.ok()) return s;
    base.reset();
    auto test = make_test_cache();
    if (Status s = evaluate(*test, test_logits.data()); !s.ok()) return s;
    for (int i = first; i < n_ctx - 1; ++i) {
      const size_t row = static_cast<size_t>(i - first) * n_vocab;
      log_softmax(base_logits.data() + row, n_vocab, log_p);
      log_softmax(test_logits.data() + row, n_vocab, log_q);
      double token_kld = 0;
      int best_p = 0, best_q = 0;
      for (int v = 0; v < n_vocab; ++v) {
        token_kld += std::exp(log_p[v]) * (log_p[v] - log_q[v]);
        if (log_p[v] > log_p[best_p]) best_p = v;
        if (log_q[v] > log_q[best_q]) best_q = v;
      }
      kld += token_kld;
      kld2 += token_kld * token_kld;
      same += best_p == best_q;
      nll_base -= log_p[batch[i + 1]];
      nll_test -= log_q[batch[i + 1]];
      ++count;
    }
    r.ppl_base = std::exp(nll_base / count);
    r.ppl_test = std::exp(nll_test / count);
    r.ppl_ratio = r.ppl_test / r.ppl_base;
    r.mean_kld = kld / count;
    const double variance = kld2 / count - r.mean_kld * r.mean_kld;
    r.kld_error = variance > 0 && count > 1 ? std::sqrt(variance / (count - 1)) : 0;
    r.same_top1 = static_cast<double>(same) / count;
    r.scored_tokens = count;
    if (on_chunk) on_chunk(chunk, chunks, r);
  }
  return r;
}

}  // namespace kvtier
