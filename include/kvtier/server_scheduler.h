// The scheduler behind `kvtier serve`: -np slots, each a Session with its own KV cache, and one worker thread
// that owns the model and the thread pool. Continuous batching: each turn of its loop gathers the decode step of
// every generating request and the next prompt chunk (256 tokens by default) of prefilling ones into one
// batched forward pass (Model::forward_segments: the weights are read once per turn for all of them), up to
// kMaxBatch tokens; a chunk that does not fit waits for the next turn, first in line. A long prompt therefore
// never freezes the other streams. Requests beyond the slots wait in a bounded queue.
//
// A request's output depends only on its own tokens and sampling parameters, never on what runs beside it:
// every slot has its own cache, a request's prompt is cut into the same chunks whatever else runs, and each
// row of a batched forward pass is computed independently of the other rows (docs/server.md, "Batch
// invariance").
//
// A --kv-budget is shared by all slots: before each turn a kv::BudgetArbiter (kv/budget_arbiter.h) gives every
// slot's cache its share, active requests first (the bytes their tokens of this turn can add), then what the
// caches hold, so that idle conversations spill their pages to the cold tier least recently used first. A
// returning conversation resumes from its pages wherever they are and evaluates only its new tokens; with exact
// cold reads (--kv-cold exact) its output is bit-identical to an unspilled run. A request whose step does not
// fit waits; one that cannot fit even with every other request waiting fails (FinishReason::kError) rather than
// go over the budget.
//
// Prefix cache (kvtier/prefix_cache.h): a request whose prompt begins with full KV pages that another slot holds
// (or --cache-dir keeps) gets them copied into its slot and evaluates only the rest; with the default f16 cache
// its output is bit-identical to a run without the copy (docs/server.md, "Prefix cache"). The copy (or the read of
// the entry) runs on a transfer thread of its own, outside the scheduler's mutex: the worker reserves the slot and
// claims the source, leaves both caches alone while the transfer runs (the other streams keep stepping), and
// publishes the result at the start of a later turn.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "kvtier/kv_options.h"
#include "kvtier/model.h"
#include "kvtier/sampling.h"
#include "kvtier/status.h"
#include "kvtier/thread_pool.h"
#include "kvtier/tokenizer.h"

namespace kvtier {
namespace kv {
class BudgetArbiter;
}
class PrefixIndex;
class PrefixDiskCache;

struct SchedulerOptions {
  int n_slots = 1;             // -np
  int n_ctx = 0;               // positions per slot (-c): each slot holds its own context of this size
  int threads = 0;             // -t; 0 = all cores
  int max_queued = 64;         // requests waiting for a slot; past this, submit() refuses (the server's 503)
  int prefill_chunk = 256;     // prompt tokens one request evaluates per turn of the loop
  KvCacheOptions kv;           // as `kvtier run` takes it; a --kv-budget is shared by all slots
  bool prefix_cache = true;    // copy a prompt's full prefix pages from another slot (or cache_dir) into its slot
  std::string cache_dir;       // --cache-dir: keep full prefix pages across restarts (empty: none)
  uint64_t cache_dir_max_bytes = 4ull << 30;  // --cache-size: the most cache_dir's entries of this model may take
  std::function<void(const std::string&)> warn;  // one-line warnings (a dropped cache entry, a failed write)
  // Tests: called on the transfer thread as each prefix copy or --cache-dir read begins, before it touches a
  // cache (holding it there shows that the other streams keep stepping meanwhile).
  std::function<void()> prefix_transfer_hook;
};

struct GenerationRequest {
  std::vector<int32_t> prompt;  // with BOS and the chat template applied; at most n_ctx - 1 tokens
  SamplingParams sampling;
  int max_tokens = 16;          // generation also stops at the slot's context size ("length")
  std::vector<std::string> stop_strings;  // never part of the output (kvtier/stop_strings.h)
  bool ignore_eos = false;
  int top_logprobs = -1;        // -1: no log-probabilities; 0..20: the chosen token's, and this many alternatives
};

enum class FinishReason { kNone, kStop, kLength, kCancelled, kError };
const char* finish_reason_name(FinishReason reason);  // "stop", "length", "cancelled", "error"

struct TokenLogprob {
  int32_t token = -1;
  float logprob = 0;  // natural log of the model's probability (before sampling's filters)
};

// What one decode step produced: the token, and the text it completed (possibly empty: bytes of an
// unfinished UTF-8 character, or text held back because it could still become a stop string).
struct GeneratedToken {
  int32_t token = -1;
  std::string text;
  TokenLogprob chosen;                // filled when the request asked for logprobs
  std::vector<TokenLogprob> top;      // [top_logprobs] the most likely tokens, best first
};

struct GenerationSummary {
  FinishReason finish = FinishReason::kNone;
  std::string error;          // FinishReason::kError: what went wrong
  int prompt_tokens = 0;
  int cached_tokens = 0;      // prompt tokens not evaluated: the slot held them, or the prefix cache copied them
  int completion_tokens = 0;
  std::string tail_text;      // text released at the end (held-back bytes that were no stop string)
  double prompt_seconds = 0, decode_seconds = 0;
};

// The two ends of one request: the worker pushes tokens and the summary; the caller (an HTTP thread) takes
// them, and may cancel. All members are thread-safe.
class RequestStream {
 public:
  // Waits until tokens are ready, the request finished, or `timeout` passed; moves the ready tokens into `out`.
  // Returns true once the request has finished and every token was taken.
  bool wait(std::vector<GeneratedToken>& out, std::chrono::milliseconds timeout);
  // Stops the request at its next step (a closed connection): the slot is freed, finish is kCancelled.
  void cancel() { cancelled_.store(true); }
  bool cancelled() const { return cancelled_.load(); }
  // Valid once wait() returned true.
  const GenerationSummary& summary() const { return summary_; }

 private:
  friend class Scheduler;
  void push(GeneratedToken token);
  void finish(GenerationSummary summary);

  std::mutex mutex_;
  std::condition_variable ready_;
  std::vector<GeneratedToken> tokens_;
  bool finished_ = false;
  GenerationSummary summary_;
  std::atomic<bool> cancelled_{false};
};

// Counters for /metrics. Totals count since the start; the gauges are the state now.
struct SchedulerMetrics {
  uint64_t requests_finished = 0, requests_cancelled = 0, requests_failed = 0, requests_refused = 0;
  uint64_t prompt_tokens = 0, prompt_tokens_evaluated = 0, cached_tokens = 0, generated_tokens = 0;
  double prompt_seconds = 0, decode_seconds = 0;  // worker time spent on each kind of work
  int queue_depth = 0, active_slots = 0, n_slots = 0;
  // All slots' KV caches (KvUsage summed), as of the last turn.
  uint64_t kv_resident_bytes = 0;       // RAM, free page-pool slots included
  uint64_t kv_budget_bytes = 0;         // the shared --kv-budget (0: none)
  uint64_t kv_budgeted_bytes = 0;       // what the budget counts (KvUsage::budgeted_bytes)
  uint64_t kv_budgeted_peak_bytes = 0;  // the most it counted after any turn's spills or steps
  uint64_t kv_cold_pages = 0, kv_cold_bytes = 0;  // on disk
  std::vector<KvUsage::Pages> kv_ram_pages;       // live pages in RAM by precision
  uint64_t kv_spilled_pages = 0;        // pages written to the cold tier since the start
  uint64_t kv_dropped_conversations = 0;  // idle conversations emptied to make room (recomputed if they return)
  uint64_t kv_budget_waits = 0;         // times a request's step waited a turn for room in the budget
  // Prefix cache: requests that got pages from another slot or from --cache-dir, and the tokens they got.
  uint64_t prefix_hits_slot = 0, prefix_hits_disk = 0;
  uint64_t prefix_tokens_slot = 0, prefix_tokens_disk = 0;
  uint64_t prefix_failures = 0;         // copies or loads that failed (the prompt was evaluated instead)
  bool prefix_disk = false;             // --cache-dir in use
  uint64_t prefix_disk_entries = 0, prefix_disk_bytes = 0;  // now
  uint64_t prefix_disk_stored = 0, prefix_disk_evicted = 0, prefix_disk_dropped = 0;  // since the start
};

class Scheduler {
 public:
  // Builds the slots' caches (errors name the bad KV option) and starts the worker.
  static Result<std::unique_ptr<Scheduler>> create(Model& model, const Tokenizer& tokenizer,
                                                   const SchedulerOptions& options);
  ~Scheduler();  // shutdown(), and joins the worker
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  // Queues a request. Errors: the prompt is empty or does not fit a slot's context, max_tokens < 1, bad sampling
  // parameters, or the queue is full (queue_full() tells that one apart: the server answers 503, not 400).
  Result<std::shared_ptr<RequestStream>> submit(GenerationRequest request);
  static bool queue_full(const Status& status);
  // Cancels whatever runs or waits (their streams finish as kCancelled) and refuses new requests. Idempotent.
  void shutdown();

  SchedulerMetrics metrics() const;
  const SchedulerOptions& options() const { return options_; }
  // The tokens each slot's cache holds now (tests: which slot kept which prefix).
  std::vector<std::vector<int32_t>> slot_tokens() const;
  // Each slot's KV cache as of the last turn (tests: which conversation went to disk).
  std::vector<KvUsage> slot_kv_usage() const;
  // Empties the caches of the idle slots (their conversations are forgotten: cached_tokens 0 next time) and
  // returns once the worker did it and updated metrics(). Busy slots keep theirs.
  void clear_idle_slots();

 private:
  struct Slot;
  struct Transfer;  // a prefix copy or --cache-dir read in progress
  struct Pending {
    GenerationRequest request;
    std::shared_ptr<RequestStream> stream;
  };
  Scheduler(Model& model, const Tokenizer& tokenizer, const SchedulerOptions& options);
  void run();
  bool has_work() const;                // under mutex_ (worker): whether a turn has anything to do
  void admit_waiting();                 // under mutex_: queued requests into idle slots
  void step(const std::vector<Slot*>& active, uint64_t turn);  // one batched forward pass of the active requests
  // The shared budget's shares for this turn (set on every slot's cache); returns the active requests that fit.
  std::vector<Slot*> share_budget(std::vector<Slot*> active);
  size_t tokens_this_turn(const Slot& slot) const;  // what step() may evaluate for the slot
  void record_kv_usage();               // metrics_' KV fields from the caches (worker thread, takes mutex_)
  void emit_token(Slot& slot);          // samples the slot's next token from its session's last logits
  void start(Slot& slot, Pending pending);
  // The prefix cache's part of start(): when another slot or the disk holds a longer run of the prompt's full pages
  // than the slot kept, reserves the slot, claims the source and queues the transfer (true: the slot waits for
  // publish_transfers()). Under mutex_.
  bool claim_cached_prefix(Slot& slot, size_t kept);
  void run_transfers();                 // the transfer thread: copies and reads, outside mutex_
  void publish_transfers();             // under mutex_ (worker): the finished transfers' slots start their prefill
  void begin_prefill(Slot& slot);       // under mutex_ (worker): the prompt after what the slot holds is to evaluate
  void forget(Slot& slot);              // empties the slot's cache (and its prefix index entry); under mutex_
  void record_prefix_disk_stats();      // metrics_' --cache-dir fields (worker thread, under mutex_)
  void finish(Slot& slot, FinishReason reason, const std::string& error = "");

  Model& model_;
  const Tokenizer& tokenizer_;
  SchedulerOptions options_;
  ThreadPool pool_;
  std::vector<std::unique_ptr<Slot>> slots_;
  std::unique_ptr<kv::BudgetArbiter> arbiter_;  // with a --kv-budget
  std::unique_ptr<PrefixIndex> prefix_index_;   // the slots' full pages (worker thread); null when disabled
  std::unique_ptr<PrefixDiskCache> prefix_disk_;  // --cache-dir (worker thread)

  mutable std::mutex mutex_;            // guards queue_, stopping_, metrics_, the slots' busy flags and tokens
  std::condition_variable work_;
  std::deque<Pending> queue_;
  bool stopping_ = false;
  bool clear_requested_ = false;        // clear_idle_slots() waits on cleared_ until the worker reset it
  std::condition_variable cleared_;
  SchedulerMetrics metrics_;
  std::vector<KvUsage> slot_usage_;     // [slots] as of the last turn
  // Prefix transfers: queued by the worker, run by transfer_thread_, published by the worker (both lists under
  // mutex_). transfers_in_flight_ (worker thread) counts those claimed and not yet published.
  std::deque<std::unique_ptr<Transfer>> transfers_waiting_, transfers_done_;
  bool transfers_stop_ = false;         // under mutex_: the transfer thread ends
  std::condition_variable transfer_work_;
  int transfers_in_flight_ = 0;
  bool stalled_ = false;                // worker thread: the last turn's requests all waited for room behind transfers
  std::thread transfer_thread_;
  std::thread worker_;
};

}  // namespace kvtier
