// A sequence being generated: a model, its KV cache, and the logits of the
// last evaluated token. Plus the llama.cpp perplexity protocol on top of it.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "kvtier/kv_cache.h"
#include "kvtier/model.h"
#include "kvtier/session_file.h"
#include "kvtier/status.h"
#include "kvtier/thread_pool.h"

namespace kvtier {

class Session {
 public:
  Session(Model& model, std::unique_ptr<KvCache> cache, ThreadPool& pool);

  // Evaluates tokens after those already in the cache; afterwards last_logits() holds the distribution
  // for the next token and tokens() ends with them.
  // Damage: when evaluation fails and the cache reports a damaged range (KvCache::first_bad_position(),
  // e.g. a cold page failed its checksum), the warning handler is told, the cache is cut at the first bad
  // position and the tokens from there are evaluated again, once; a second failure is an error. Any error
  // leaves the cache and tokens() consistent (the cache holds exactly tokens()).
  Status append(const std::vector<int32_t>& tokens, const ProgressFn& progress = {});
  // Continuous batching: appends pieces[i] (non-empty) to sessions[i] (distinct sessions of one model) in one
  // batched forward pass (Model::forward_segments; at most kMaxBatch tokens in all), as append() would one by
  // one: each session's last_logits() and tokens() come out the same, bit for bit. When the batched pass fails
  // (a damaged cold page, a full context), every session is cut back to its tokens() and its piece is
  // appended alone, where append()'s recovery applies. Returns each session's status, [sessions.size()].
  static std::vector<Status> append_together(std::span<Session* const> sessions,
                                             std::span<const std::vector<int32_t>> pieces);
  const std::vector<float>& last_logits() const { return last_logits_; }  // [n_vocab]; empty after restore
  int n_past() const { return cache_->n_tokens(); }
  const std::vector<int32_t>& tokens() const { return tokens_; }  // [n_past()] the evaluated sequence
  KvCache& cache() { return *cache_; }
  Model& model() { return model_; }
  void set_warning_handler(std::function<void(const std::string&)> warn) { warn_ = std::move(warn); }
  // A stop request (e.g. Ctrl-C) checked between the micro-batches of a long append(): when it returns
  // true, append() stops there and returns OK with stopped() set; tokens() and the cache hold what was
  // evaluated, and last_logits() follows its last token.
  void set_stop_check(std::function<bool()> stop_requested) { stop_requested_ = std::move(stop_requested); }
  bool stopped() const { return stopped_; }

  // Session files (include/kvtier/session_file.h): save writes tokens() and the cache atomically;
  // restore replaces both with the file's (the session is empty after an error; last_logits() is empty
  // until the next append).
  Status save(const std::string& path, SessionIoStats* stats = nullptr);
  Status restore(const std::string& path, SessionIoStats* stats = nullptr);

  // Prompt reuse (llama.cpp's --prompt-cache): keeps the longest common prefix of tokens() and `prompt`,
  // but at most prompt.size() - 1 tokens so that evaluating the rest yields logits, truncates the cache
  // there, and returns the tokens of `prompt` still to evaluate (pass them to append()).
  std::vector<int32_t> reuse_prefix(const std::vector<int32_t>& prompt);
  // Forgets the sequence: the cache and tokens() become empty (a server dropping an idle conversation).
  void clear() { cut(0); }
  // Keeps the first n_tokens of the sequence (the cache is cut there; last_logits() becomes empty).
  void truncate(int n_tokens) {
    cut(n_tokens);
    last_logits_.clear();
  }
  // Prefix caching (kvtier serve): replaces this session's sequence with the first n_tokens of `source`'s, a
  // session of the same model whose cache has the same policy(). The pages are copied, byte for byte, through
  // the caches' save/load stream (cold pages of the source are read back), so the copy holds what the source
  // holds, at the rungs it holds it. Errors leave this session empty; `source` is never changed.
  Status copy_prefix(Session& source, int n_tokens);
  // Context shift, when the sequence reaches the cache's size: drops tokens [n_keep, n_keep + n_discard) and
  // evaluates the tokens after them again at their new positions; the cache keeps [0, n_keep) as it is.
  // Re-evaluating instead of re-rotating cached keys keeps the result exact — the same as evaluating the
  // shorter sequence from scratch, whatever rung or tier its pages were on — at the cost of one prefill of
  // the kept tail (docs/chat.md measures it). Returns the tokens evaluated again.
  Result<int> shift_context(int n_keep, int n_discard, const ProgressFn& progress = {});

 private:
  Status append_piece(const std::vector<int32_t>& tokens, const ProgressFn& progress);
  Status evaluate(int pos, const std::vector<int32_t>& tokens, const ProgressFn& progress);
  void cut(int n_tokens);  // truncates the cache and tokens_ together

  Model& model_;
  std::unique_ptr<KvCache> cache_;
  ThreadPool& pool_;
  std::vector<float> last_logits_;
  std::vector<int32_t> tokens_;  // [n_past()]
  std::function<void(const std::string&)> warn_;
  std::function<bool()> stop_requested_;
  bool stopped_ = false;
};

struct PerplexityResult {
  double ppl = 0;
  double ppl_error = 0;                  // llama.cpp's +/- estimate
  std::vector<double> running_ppl;       // after each chunk
  int64_t scored_tokens = 0;
};

// llama.cpp's protocol: chunks of n_ctx tokens, first token of each replaced by
// BOS, evaluated from an empty cache, scoring positions [n_ctx/2, n_ctx - 1).
// `tokens` is the whole text tokenized with BOS. n_chunks <= 0 means all.
// make_cache builds a fresh cache for each chunk. on_chunk(i, running_ppl) reports progress.
Result<PerplexityResult> compute_perplexity(
    Model& model, const std::vector<int32_t>& tokens, int n_ctx, int n_chunks, int32_t bos, ThreadPool& pool,
    const std::function<std::unique_ptr<KvCache>()>& make_cache,
    const std::function<void(int chunk, int n_chunks, double running_ppl)>& on_chunk = {});

// KV-cache quality: each chunk is evaluated twice, with a reference cache (f16)
// and the cache under test, and the next-token distributions are compared at
// the scored positions (llama.cpp's --kl-divergence statistics).
struct KvQualityResult {
  double ppl_base = 0;
  double ppl_test = 0;
  double ppl_ratio = 0;      // ppl_test / ppl_base
  double mean_kld = 0;       // mean KL(p_base || p_test) in nats
  double kld_error = 0;      // standard error of the mean
  double same_top1 = 0;      // fraction of positions with the same argmax
  int64_t scored_tokens = 0;
};

Result<KvQualityResult> compare_kv_caches(
    Model& model, const std::vector<int32_t>& tokens, int n_ctx, int n_chunks, int32_t bos, ThreadPool& pool,
    const std::function<std::unique_ptr<KvCache>()>& make_base_cache,
    const std::function<std::unique_ptr<KvCache>()>& make_test_cache,
    const std::function<void(int chunk, int n_chunks, const KvQualityResult& running)>& on_chunk = {},
    bool score_by_decode = false);  // feed the scored half one token at a time (what sparse cold reads act on)

}  // namespace kvtier
