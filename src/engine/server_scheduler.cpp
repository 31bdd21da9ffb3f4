#include "kvtier/server_scheduler.h"

#include <algorithm>
#include <limits>
#include <numeric>
#include <string_view>

#include "engine/log_softmax.h"
#include "kv/budget_arbiter.h"
#include "kv/page_format.h"
#include "kvtier/prefix_cache.h"
#include "kvtier/session.h"
#include "kvtier/stop_strings.h"

namespace kvtier {

namespace {
// The start of the message submit() refuses a request with when the queue is full (queue_full() looks for it).
constexpr const char* kQueueFullMessage = "too many requests: all slots are busy and the queue is full";
constexpr int kMaxTopLogprobs = 20;  // OpenAI's limit

double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}
}  // namespace

const char* finish_reason_name(FinishReason reason) {
  switch (reason) {
    case FinishReason::kStop: return "stop";
    case FinishReason::kLength: return "length";
    case FinishReason::kCancelled: return "cancelled";
    case FinishReason::kError: return "error";
    case FinishReason::kNone: break;
  }
  return "none";
}

bool RequestStream::wait(std::vector<GeneratedToken>& out, std::chrono::milliseconds timeout) {
  std::unique_lock lock(mutex_);
  ready_.wait_for(lock, timeout, [&] { return !tokens_.empty() || finished_; });
  for (GeneratedToken& t : tokens_) out.push_back(std::move(t));
  tokens_.clear();
  return finished_;
}

void RequestStream::push(GeneratedToken token) {
  {
    std::lock_guard lock(mutex_);
    tokens_.push_back(std::move(token));
  }
  ready_.notify_all();
}

void RequestStream::finish(GenerationSummary summary) {
  {
    std::lock_guard lock(mutex_);
    summary_ = std::move(summary);
    finished_ = true;
  }
  ready_.notify_all();
}

// One slot: a session (its own cache) and the state of the request it serves, if any.
struct Scheduler::Slot {
  Slot(Model& model, std::unique_ptr<KvCache> cache, ThreadPool& pool, int index)
      : session(model, std::move(cache), pool), index(index) {}
  Session session;
  const int index;          // in slots_ (its owner id in the prefix index)
  bool busy = false;        // under Scheduler::mutex_
  uint64_t last_used = 0;   // under Scheduler::mutex_: the turn a request last left it (idle slots: LRU)
  uint64_t waited = 0;      // worker thread: turns the current request's step waited for room in the budget
  std::vector<int32_t> held_tokens;  // under Scheduler::mutex_: session.tokens() as of the last admission/finish
  // Prefix transfers (worker thread): while `transfers` > 0 a transfer thread reads (a source) or writes (the
  // `receiving` slot) this session, so the worker leaves it alone: no step, no budget change, no usage() read,
  // no admission, no clearing. The budget counts it at `frozen_bytes` meanwhile.
  int transfers = 0;
  bool receiving = false;
  size_t frozen_bytes = 0;
  size_t share_bytes = 0;   // worker thread: the budget share last set on its cache (with a --kv-budget)
  size_t empty_bytes = 0;   // its cache empty (KvUsage::empty_bytes)
  uint64_t pages_written = 0;  // worker thread: its cache's io_stats().pages_written as of the last turn

  // The request being served (worker thread only).
  GenerationRequest request;
  std::shared_ptr<RequestStream> stream;
  std::unique_ptr<Sampler> sampler;
  std::unique_ptr<StreamingDetokenizer> detok;
  std::unique_ptr<StopStringFilter> stops;
  std::vector<int32_t> to_prefill;  // [prompt tokens the cache did not hold]
  size_t prefilled = 0;
  int32_t pending_token = -1;       // sampled and sent, not yet evaluated
  GenerationSummary summary;
  std::chrono::steady_clock::time_point decode_start;
};

// A prefix copy from another slot, or a read of a --cache-dir entry, into `dest`'s session.
struct Scheduler::Transfer {
  Slot* dest = nullptr;
  Slot* source = nullptr;        // copying this slot's first `tokens`, or (null) reading `file`
  PrefixDiskCache::Hit disk;     // the pinned entry
  std::string file;
  std::vector<int32_t> prefix;   // [tokens] the prompt's tokens the transfer brings
  int tokens = 0;
  Status status;                 // the transfer thread's outcome
};

Scheduler::Scheduler(Model& model, const Tokenizer& tokenizer, const SchedulerOptions& options)
    : model_(model), tokenizer_(tokenizer), options_(options), pool_(options.threads) {}

Scheduler::~Scheduler() {
  shutdown();
  if (worker_.joinable()) worker_.join();  // run() stops and joins the transfer thread on its way out
}

Result<std::unique_ptr<Scheduler>> Scheduler::create(Model& model, const Tokenizer& tokenizer,
                                                     const SchedulerOptions& options) {
  if (options.n_slots < 1) return Status::error("-np: at least one slot is needed");
  if (options.n_ctx < 2) return Status::error("-c: the context must hold at least 2 tokens");
  if (options.prefill_chunk < 1) return Status::error("prefill chunk must be at least 1 token");
  if (options.max_queued < 0) return Status::error("the queue length must be >= 0");
  std::unique_ptr<Scheduler> s(new Scheduler(model, tokenizer, options));
  // With a --kv-budget every slot's cache gets a cold tier, made with a budget it cannot reach (the check below
  // covers all slots at once); before every turn the arbiter sets each one's share (share_budget).
  const size_t budget = options.kv.budget_bytes;
  KvCacheOptions slot_kv = options.kv;
  if (budget > 0) slot_kv.budget_bytes = std::numeric_limits<size_t>::max() / 2;
  size_t fixed = 0;  // what the slots' caches hold empty, all of them
  for (int i = 0; i < options.n_slots; ++i) {
    auto cache = make_kv_cache(model.config(), options.n_ctx, slot_kv, &s->pool_);
    if (!cache.ok()) return cache.status();
    const size_t empty = (*cache)->usage().empty_bytes;
    fixed += empty;
    s->slots_.push_back(std::make_unique<Slot>(model, std::move(*cache), s->pool_, i));
    s->slots_.back()->empty_bytes = empty;
  }
  if (budget > 0) {
    if (fixed > budget) {
      return Status::error("--kv-budget " + std::to_string(budget) + " bytes is below what the " +
                           std::to_string(options.n_slots) + " slots' caches hold empty, " + std::to_string(fixed) +
                           " bytes (hot rings, sinks and cold-tier buffers of each); raise it, or use fewer slots (-np)");
    }
    s->arbiter_ = std::make_unique<kv::BudgetArbiter>(budget);
    // Equal shares until the first turn sets them (a prefix copy before it must stay within one too); every empty
    // cache fits its share, as the check above says.
    for (auto& slot : s->slots_) {
      if (Status set = slot->session.cache().set_budget(budget / s->slots_.size()); !set.ok()) return set;
      slot->share_bytes = budget / s->slots_.size();
    }
  }
  if (options.prefix_cache || !options.cache_dir.empty()) {
    const std::string policy = s->slots_[0]->session.cache().policy();
    s->prefix_index_ = std::make_unique<PrefixIndex>(
        prefix_cache_seed(model.file().header_hash(), policy, kv::kTokensPerPage), kv::kTokensPerPage);
    if (!options.cache_dir.empty()) {
      auto disk = PrefixDiskCache::open(options.cache_dir, options.cache_dir_max_bytes, model, policy,
                                        options.n_ctx, options.warn);
      if (!disk.ok()) return disk.status();
      s->prefix_disk_ = std::move(*disk);
      s->metrics_.prefix_disk = true;
    }
  }
  s->metrics_.n_slots = options.n_slots;
  s->metrics_.kv_budget_bytes = budget;
  s->record_kv_usage();
  if (s->prefix_index_) s->transfer_thread_ = std::thread([raw = s.get()] { raw->run_transfers(); });
  s->worker_ = std::thread([raw = s.get()] { raw->run(); });
  return s;
}

void Scheduler::shutdown() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  work_.notify_all();
}

bool Scheduler::queue_full(const Status& status) {
  return !status.ok() && status.message().rfind(kQueueFullMessage, 0) == 0;
}

Result<std::shared_ptr<RequestStream>> Scheduler::submit(GenerationRequest request) {
  if (request.prompt.empty()) return Status::error("the prompt is empty");
  if (static_cast<int>(request.prompt.size()) >= options_.n_ctx) {
    return Status::error("the prompt has " + std::to_string(request.prompt.size()) +
                         " tokens; the context size per slot is " + std::to_string(options_.n_ctx) +
                         " (it must leave room for at least one generated token)");
  }
  if (request.max_tokens < 1) return Status::error("max_tokens must be at least 1");
  if (request.top_logprobs > kMaxTopLogprobs) {
    return Status::error("top_logprobs must be at most " + std::to_string(kMaxTopLogprobs));
  }
  const int32_t n_vocab = model_.config().n_vocab;
  for (int32_t t : request.prompt) {
    if (t < 0 || t >= n_vocab) return Status::error("prompt token " + std::to_string(t) + " is not in the vocabulary");
  }
  if (Status s = validate_sampling_params(request.sampling); !s.ok()) return s;
  auto stream = std::make_shared<RequestStream>();
  {
    std::lock_guard lock(mutex_);
    if (stopping_) return Status::error("the server is shutting down");
    const int idle = static_cast<int>(std::count_if(slots_.begin(), slots_.end(), [](auto& s) { return !s->busy; }));
    // Requests up to the idle slots' number start at the next turn; the queue holds the ones beyond them.
    if (static_cast<int>(queue_.size()) >= idle + options_.max_queued) {
      ++metrics_.requests_refused;
      return Status::error(std::string(kQueueFullMessage) + " (" + std::to_string(options_.n_slots) + " slots, " +
                           std::to_string(options_.max_queued) + " queued)");
    }
    queue_.push_back(Pending{std::move(request), stream});
  }
  work_.notify_all();
  return stream;
}

SchedulerMetrics Scheduler::metrics() const {
  std::lock_guard lock(mutex_);
  SchedulerMetrics m = metrics_;
  m.active_slots = static_cast<int>(std::count_if(slots_.begin(), slots_.end(), [](auto& s) { return s->busy; }));
  const int idle = m.n_slots - m.active_slots;
  m.queue_depth = std::max(0, static_cast<int>(queue_.size()) - idle);
  return m;
}

std::vector<std::vector<int32_t>> Scheduler::slot_tokens() const {
  std::lock_guard lock(mutex_);
  std::vector<std::vector<int32_t>> held;
  for (const auto& s : slots_) held.push_back(s->held_tokens);
  return held;
}

std::vector<KvUsage> Scheduler::slot_kv_usage() const {
  std::lock_guard lock(mutex_);
  return slot_usage_;
}

void Scheduler::clear_idle_slots() {
  std::unique_lock lock(mutex_);
  if (stopping_) return;
  clear_requested_ = true;
  work_.notify_all();
  cleared_.wait(lock, [&] { return !clear_requested_ || stopping_; });
}

void Scheduler::admit_waiting() {
  while (!queue_.empty()) {
    // The idle slot whose tokens share the longest prefix with the prompt, when that prefix is worth keeping (half
    // the prompt, or 64 tokens: a conversation's next turn, a shared system prompt); otherwise the least recently
    // used idle slot, so that a request sharing little (a BOS token) does not evict another conversation's prefix.
    Slot* longest = nullptr;
    Slot* oldest = nullptr;
    size_t longest_shared = 0;
    const std::vector<int32_t>& prompt = queue_.front().request.prompt;
    for (auto& slot : slots_) {
      if (slot->busy || slot->transfers > 0) continue;  // a transfer's source stays as it is until published
      const std::vector<int32_t>& held = slot->session.tokens();
      const size_t limit = std::min(held.size(), prompt.size());
      size_t shared = 0;
      while (shared < limit && held[shared] == prompt[shared]) ++shared;
      if (longest == nullptr || shared > longest_shared) {
        longest = slot.get();
        longest_shared = shared;
      }
      if (oldest == nullptr || slot->last_used < oldest->last_used) oldest = slot.get();
    }
    if (oldest == nullptr) return;
    const bool worth_keeping = longest_shared * 2 >= prompt.size() || longest_shared >= 64;
    Slot* chosen = worth_keeping ? longest : oldest;
    // With the prefix cache, a new conversation that shares only a preamble with an idle one (the prompt departs
    // from the held sequence, which goes on for at least a page past the shared part) takes the least recently
    // used slot and gets the shared pages copied there, rather than cutting the other conversation back to the
    // preamble. A prompt that the held sequence contains whole (a request repeated) stays where it is.
    if (prefix_index_ && chosen == longest && oldest != longest && longest_shared < prompt.size() &&
        longest->session.tokens().size() >= longest_shared + kv::kTokensPerPage) {
      chosen = oldest;
    }
    chosen->busy = true;
    Pending pending = std::move(queue_.front());
    queue_.pop_front();
    start(*chosen, std::move(pending));
  }
}

void Scheduler::start(Slot& slot, Pending pending) {
  slot.request = std::move(pending.request);
  slot.stream = std::move(pending.stream);
  slot.summary = GenerationSummary();
  slot.summary.prompt_tokens = static_cast<int>(slot.request.prompt.size());
  const size_t kept = slot.request.prompt.size() - slot.session.reuse_prefix(slot.request.prompt).size();
  slot.prefilled = 0;
  slot.pending_token = -1;
  slot.waited = 0;
  SamplingParams sampling = slot.request.sampling;
  slot.sampler = std::make_unique<Sampler>(sampling);
  for (int32_t t : slot.request.prompt) slot.sampler->accept(t);
  slot.detok = std::make_unique<StreamingDetokenizer>(tokenizer_);
  slot.stops = std::make_unique<StopStringFilter>(slot.request.stop_strings);
  metrics_.prompt_tokens += static_cast<uint64_t>(slot.summary.prompt_tokens);
  // With a transfer claimed the slot waits (out of the turns' steps) until publish_transfers() begins its prefill.
  if (!(prefix_index_ && claim_cached_prefix(slot, kept))) begin_prefill(slot);
}

void Scheduler::begin_prefill(Slot& slot) {
  const std::vector<int32_t>& prompt = slot.request.prompt;
  const size_t held = slot.session.tokens().size();  // a prefix of the prompt, leaving at least its last token
  slot.to_prefill.assign(prompt.begin() + static_cast<std::ptrdiff_t>(held), prompt.end());
  slot.summary.cached_tokens = slot.summary.prompt_tokens - static_cast<int>(slot.to_prefill.size());
  slot.held_tokens = slot.session.tokens();
  if (prefix_index_) prefix_index_->assign(static_cast<uint64_t>(slot.index), slot.session.tokens());
  metrics_.cached_tokens += static_cast<uint64_t>(slot.summary.cached_tokens);
}

void Scheduler::record_prefix_disk_stats() {
  if (!prefix_disk_) return;
  const PrefixDiskStats& d = prefix_disk_->stats();
  metrics_.prefix_disk_entries = d.entries;
  metrics_.prefix_disk_bytes = d.bytes;
  metrics_.prefix_disk_stored = d.stored;
  metrics_.prefix_disk_evicted = d.evicted;
  metrics_.prefix_disk_dropped = d.dropped;
}

void Scheduler::forget(Slot& slot) {
  slot.session.clear();
  slot.held_tokens.clear();
  if (prefix_index_) prefix_index_->erase(static_cast<uint64_t>(slot.index));
}

bool Scheduler::claim_cached_prefix(Slot& slot, size_t kept) {
  const std::vector<int32_t>& prompt = slot.request.prompt;
  // At most prompt.size() - 1 tokens: the last one is evaluated for the logits of the first generated token.
  const int limit = static_cast<int>(prompt.size()) - 1;
  // Not from itself, nor from a slot that is receiving a transfer (its pages are changing).
  const auto usable = [&](uint64_t owner) {
    return owner != static_cast<uint64_t>(slot.index) && !slots_[owner]->receiving;
  };
  const PrefixIndex::Match in_ram = prefix_index_->longest(prompt, limit, usable);
  const PrefixDiskCache::Hit on_disk = prefix_disk_ ? prefix_disk_->lookup(prompt, limit) : PrefixDiskCache::Hit{};
  const int best = std::max(in_ram.tokens, on_disk.tokens);
  if (best <= static_cast<int>(kept)) return false;
  auto transfer = std::make_unique<Transfer>();
  transfer->dest = &slot;
  transfer->tokens = best;
  transfer->prefix.assign(prompt.begin(), prompt.begin() + best);
  if (in_ram.tokens >= on_disk.tokens) {  // RAM first: no disk read
    Slot& source = *slots_[in_ram.owner];
    const std::vector<int32_t>& held = source.session.tokens();
    // The index follows what a slot held when a request started or ended; a failed batch may have cut it since.
    // Then the entry is corrected and the slot keeps its own prefix.
    if (held.size() < static_cast<size_t>(best) || !std::equal(prompt.begin(), prompt.begin() + best, held.begin())) {
      prefix_index_->assign(in_ram.owner, held);
      return false;
    }
    if (source.transfers++ == 0 && arbiter_) source.frozen_bytes = source.session.cache().usage().budgeted_bytes;
    transfer->source = &source;
  } else {
    Result<std::string> file = prefix_disk_->pin(on_disk);
    if (!file.ok()) return false;  // the index and the entries disagree: cannot happen
    transfer->disk = on_disk;
    transfer->file = std::move(*file);
  }
  // The slot's cache may grow up to its share while the transfer loads it (pages past it go to its cold tier as
  // they come); the budget counts it at that until the transfer is published.
  ++slot.transfers;
  slot.receiving = true;
  slot.frozen_bytes = slot.share_bytes;
  prefix_index_->erase(static_cast<uint64_t>(slot.index));
  ++transfers_in_flight_;
  transfers_waiting_.push_back(std::move(transfer));
  transfer_work_.notify_all();
  return true;
}

void Scheduler::run_transfers() {
  std::unique_lock lock(mutex_);
  for (;;) {
    transfer_work_.wait(lock, [&] { return transfers_stop_ || !transfers_waiting_.empty(); });
    if (transfers_stop_) return;
    std::unique_ptr<Transfer> t = std::move(transfers_waiting_.front());
    transfers_waiting_.pop_front();
    lock.unlock();
    // The claims keep the worker away from both sessions until the transfer is published.
    if (options_.prefix_transfer_hook) options_.prefix_transfer_hook();
    t->status = t->source != nullptr ? t->dest->session.copy_prefix(t->source->session, t->tokens)
                                     : PrefixDiskCache::read(t->file, t->prefix, t->tokens, t->dest->session);
    lock.lock();
    transfers_done_.push_back(std::move(t));
    work_.notify_all();
  }
}

void Scheduler::publish_transfers() {
  while (!transfers_done_.empty()) {
    std::unique_ptr<Transfer> t = std::move(transfers_done_.front());
    transfers_done_.pop_front();
    --transfers_in_flight_;
    Slot& slot = *t->dest;
    --slot.transfers;
    slot.receiving = false;
    const bool from_slot = t->source != nullptr;
    if (from_slot) --t->source->transfers;
    Status status = from_slot ? t->status : prefix_disk_->unpin(t->disk, t->status);
    if (status.ok()) {
      (from_slot ? metrics_.prefix_hits_slot : metrics_.prefix_hits_disk) += 1;
      (from_slot ? metrics_.prefix_tokens_slot : metrics_.prefix_tokens_disk) += static_cast<uint64_t>(t->tokens);
    } else {
      // The slot is empty now (a failed copy or load empties it): the whole prompt is evaluated.
      ++metrics_.prefix_failures;
      if (options_.warn) options_.warn("prefix cache: " + status.message() + "; evaluating the prompt instead");
      slot.session.clear();
    }
    record_prefix_disk_stats();  // a dropped entry
    begin_prefill(slot);
  }
}

void Scheduler::run() {
  uint64_t turn = 0;
  std::unique_lock lock(mutex_);
  for (;;) {
    work_.wait(lock, [&] { return has_work(); });
    if (stopping_) break;
    publish_transfers();
    // Clearing waits until no transfer reads an idle slot.
    const bool clearing = clear_requested_ && transfers_in_flight_ == 0;
    if (clearing) {
      for (auto& slot : slots_) {
        if (!slot->busy) forget(*slot);
      }
    }
    admit_waiting();
    std::vector<Slot*> active;  // the requests to step: busy, and no transfer holds their session
    for (auto& slot : slots_) {
      if (slot->busy && slot->transfers == 0) active.push_back(slot.get());
    }
    lock.unlock();
    // The budget's shares first (idle conversations spill, least recently used first), then one batched forward
    // pass over the active requests that fit: every stream advances by one step per turn.
    const bool any_active = !active.empty();
    if (arbiter_) active = share_budget(std::move(active));
    step(active, turn);
    record_kv_usage();
    lock.lock();
    // Nothing could run for want of room while transfers hold sessions (counted at their shares): the next turn
    // waits for a transfer's end or new work, rather than turning in place until then.
    stalled_ = any_active && active.empty() && transfers_in_flight_ > 0;
    ++turn;
    for (auto& slot : slots_) {
      if (slot->busy) slot->last_used = turn;  // idle slots keep the turn their last request ended in
    }
    if (clearing) {
      clear_requested_ = false;
      cleared_.notify_all();
    }
  }
  // Shutting down: whatever runs or waits ends as cancelled, once the transfer thread is done with the sessions
  // (a transfer in progress completes; queued ones are dropped, and their slots' requests end with the others).
  std::deque<Pending> waiting = std::move(queue_);
  cleared_.notify_all();
  transfers_stop_ = true;
  transfer_work_.notify_all();
  lock.unlock();
  if (transfer_thread_.joinable()) transfer_thread_.join();
  for (auto& slot : slots_) {
    if (slot->stream) finish(*slot, FinishReason::kCancelled);
  }
  for (Pending& p : waiting) {
    GenerationSummary summary;
    summary.finish = FinishReason::kCancelled;
    summary.prompt_tokens = static_cast<int>(p.request.prompt.size());
    p.stream->finish(std::move(summary));
  }
}

bool Scheduler::has_work() const {
  if (stopping_ || !transfers_done_.empty() || (clear_requested_ && transfers_in_flight_ == 0)) return true;
  bool idle = false;
  for (const auto& slot : slots_) {
    if (slot->transfers > 0) continue;  // the transfer's end wakes the worker
    if (slot->busy && !stalled_) return true;  // a request to step
    idle = idle || !slot->busy;
  }
  return idle && !queue_.empty();       // a request to admit
}

size_t Scheduler::tokens_this_turn(const Slot& slot) const {
  if (slot.stream->cancelled()) return 0;
  if (slot.prefilled < slot.to_prefill.size()) {
    return std::min(slot.to_prefill.size() - slot.prefilled,
                    static_cast<size_t>(std::min(options_.prefill_chunk, kMaxBatch)));
  }
  return 1;
}

std::vector<Scheduler::Slot*> Scheduler::share_budget(std::vector<Slot*> active) {
  const size_t n = slots_.size();
  for (;;) {
    std::vector<kv::BudgetClaim> claims(n);  // [slots]
    bool any_frozen = false;
    for (size_t i = 0; i < n; ++i) {
      Slot& slot = *slots_[i];
      kv::BudgetClaim& c = claims[i];
      if (slot.transfers > 0) {
        // A transfer holds its session: counted at what it may hold meanwhile, never spilled or dropped (an active
        // claim with nothing to add; it is not stepped).
        c.resident_bytes = c.floor_bytes = slot.frozen_bytes;
        c.empty_bytes = std::min(slot.empty_bytes, slot.frozen_bytes);
        c.active = true;
        any_frozen = true;
        continue;
      }
      const KvUsage usage = slot.session.cache().usage();
      c.resident_bytes = usage.budgeted_bytes;
      c.floor_bytes = usage.floor_bytes;
      c.empty_bytes = usage.empty_bytes;
      c.active = std::find(active.begin(), active.end(), &slot) != active.end();
      c.last_used = slot.last_used;
      c.waited = slot.waited;
      if (c.active) c.need_bytes = slot.session.cache().budget_growth_bytes(static_cast<int>(tokens_this_turn(slot)));
    }
    const kv::BudgetPlan plan = arbiter_->plan(claims);
    const bool any_runs = std::any_of(active.begin(), active.end(), [&](Slot* s) { return plan.shares[s->index].runs; });
    if (!active.empty() && !any_runs && !any_frozen) {
      // Nothing can run, now or later (only a request ending frees room): the request whose cache needs the
      // most fails, never an allocation over the budget. (While a transfer holds a session, the requests wait for
      // its end instead: the source's pages may go to disk then.)
      size_t worst = n;
      for (size_t i = 0; i < n; ++i) {
        if (!claims[i].active) continue;
        if (worst == n || claims[i].floor_bytes + claims[i].need_bytes > claims[worst].floor_bytes + claims[worst].need_bytes) {
          worst = i;
        }
      }
      size_t others = 0;
      for (size_t i = 0; i < n; ++i) {
        if (i != worst) others += plan.shares[i].dropped ? claims[i].empty_bytes : claims[i].floor_bytes;
      }
      Slot& slot = *slots_[worst];
      finish(slot, FinishReason::kError,
             "the KV budget cannot hold this request: its cache needs " + std::to_string(claims[worst].floor_bytes) +
                 " bytes in RAM that cannot go to disk (hot rings, sinks, warm rungs, cold-tier buffers and index) and " +
                 std::to_string(claims[worst].need_bytes) + " more for its next step, beside " +
                 std::to_string(others) + " bytes the other slots cannot give back, within --kv-budget " +
                 std::to_string(arbiter_->budget_bytes()) +
                 "; raise --kv-budget, use fewer slots (-np) or a shorter context (-c), or shorten the ladder's warm rungs");
      std::erase(active, &slot);
      continue;
    }
    std::vector<Slot*> runnable;
    size_t budgeted = 0;
    for (size_t i = 0; i < n; ++i) {
      Slot& slot = *slots_[i];
      const kv::BudgetShare& share = plan.shares[i];
      if (slot.transfers > 0) {
        budgeted += slot.frozen_bytes;
        continue;
      }
      if (share.dropped) {
        std::lock_guard lock(mutex_);
        forget(slot);
        ++metrics_.kv_dropped_conversations;
      }
      Status set = slot.session.cache().set_budget(share.bytes);
      if (set.ok()) slot.share_bytes = share.bytes;
      if (!set.ok() && claims[i].active) {
        finish(slot, FinishReason::kError, "the KV cache could not keep its share of the budget: " + set.message());
      } else if (!set.ok()) {
        // An idle conversation that cannot spill down to its share (a failed disk write): dropped instead.
        std::lock_guard lock(mutex_);
        forget(slot);
        ++metrics_.kv_dropped_conversations;
      } else if (share.runs) {
        runnable.push_back(&slot);
        slot.waited = 0;
      } else if (claims[i].active) {
        ++slot.waited;
      }
      budgeted += slot.session.cache().usage().budgeted_bytes;
    }
    std::lock_guard lock(mutex_);
    metrics_.kv_budget_waits += active.size() - std::min(active.size(), runnable.size());
    metrics_.kv_budgeted_peak_bytes = std::max<uint64_t>(metrics_.kv_budgeted_peak_bytes, budgeted);
    return runnable;
  }
}

void Scheduler::record_kv_usage() {
  SchedulerMetrics m;
  std::vector<KvUsage> per_slot;  // [slots]
  for (size_t i = 0; i < slots_.size(); ++i) {
    Slot* slot = slots_[i].get();
    // A session a transfer holds is not read: its last numbers stand until the transfer is published. (Only this
    // thread writes slot_usage_; others read it under mutex_.)
    const bool held = slot->transfers > 0 && i < slot_usage_.size();
    const KvUsage& u = per_slot.emplace_back(held ? slot_usage_[i] : slot->session.cache().usage());
    m.kv_resident_bytes += u.ram_bytes;
    m.kv_budgeted_bytes += u.budgeted_bytes;
    m.kv_cold_pages += u.cold_pages;
    m.kv_cold_bytes += u.cold_bytes;
    if (held) {
      m.kv_spilled_pages += slot->pages_written;
    } else {
      slot->pages_written = slot->session.cache().io_stats().pages_written;
      m.kv_spilled_pages += slot->pages_written;
    }
    for (const KvUsage::Pages& p : u.ram_pages) {
      auto it = std::find_if(m.kv_ram_pages.begin(), m.kv_ram_pages.end(),
                             [&](const KvUsage::Pages& q) { return std::string_view(q.precision) == p.precision; });
      if (it == m.kv_ram_pages.end()) {
        m.kv_ram_pages.push_back(p);
      } else {
        it->pages += p.pages;
        it->bytes += p.bytes;
      }
    }
  }
  std::lock_guard lock(mutex_);
  record_prefix_disk_stats();
  metrics_.kv_resident_bytes = m.kv_resident_bytes;
  metrics_.kv_budgeted_bytes = m.kv_budgeted_bytes;
  metrics_.kv_budgeted_peak_bytes = std::max(metrics_.kv_budgeted_peak_bytes, m.kv_budgeted_bytes);
  metrics_.kv_cold_pages = m.kv_cold_pages;
  metrics_.kv_cold_bytes = m.kv_cold_bytes;
  metrics_.kv_spilled_pages = m.kv_spilled_pages;
  metrics_.kv_ram_pages = std::move(m.kv_ram_pages);
  slot_usage_ = std::move(per_slot);
}

void Scheduler::step(const std::vector<Slot*>& active, uint64_t turn) {
  // The work of this turn: every decode step (one token each), then prompt chunks while the batch has room.
  // Chunks are cut at fixed offsets of each prompt (multiples of the chunk size), whatever runs beside them,
  // so a request is evaluated in the same pieces alone or in company; a chunk that does not fit waits.
  const size_t chunk = static_cast<size_t>(std::min(options_.prefill_chunk, kMaxBatch));
  std::vector<Slot*> decoding, prefilling;
  for (Slot* slot : active) {
    if (slot->stream->cancelled()) {
      finish(*slot, FinishReason::kCancelled);
    } else if (slot->prefilled < slot->to_prefill.size()) {
      prefilling.push_back(slot);
    } else {
      decoding.push_back(slot);
    }
  }
  // Prefilling requests take turns at the room left: the first in line rotates with the turn.
  if (!prefilling.empty()) {
    std::rotate(prefilling.begin(), prefilling.begin() + static_cast<std::ptrdiff_t>(turn % prefilling.size()),
                prefilling.end());
  }
  std::vector<Slot*> batch;                   // [requests in this pass]
  std::vector<std::vector<int32_t>> pieces;   // [requests in this pass] the tokens each evaluates
  std::vector<Session*> sessions;             // [requests in this pass]
  int rows = 0, prompt_rows = 0;
  for (Slot* slot : decoding) {
    if (rows + 1 > kMaxBatch) break;
    batch.push_back(slot);
    pieces.push_back({slot->pending_token});  // the token sent last turn; its logits give the next one
    ++rows;
  }
  for (Slot* slot : prefilling) {
    const size_t n = std::min(slot->to_prefill.size() - slot->prefilled, chunk);
    if (rows + static_cast<int>(n) > kMaxBatch) continue;
    const auto first = slot->to_prefill.begin() + static_cast<std::ptrdiff_t>(slot->prefilled);
    batch.push_back(slot);
    pieces.emplace_back(first, first + static_cast<std::ptrdiff_t>(n));
    rows += static_cast<int>(n);
    prompt_rows += static_cast<int>(n);
  }
  if (batch.empty()) return;
  for (Slot* slot : batch) sessions.push_back(&slot->session);
  const auto start = std::chrono::steady_clock::now();
  const std::vector<Status> statuses = Session::append_together(sessions, pieces);
  const double seconds = seconds_since(start);
  // The pass's time, shared between prompt and decode work by their rows (/metrics' tokens per second).
  const double prompt_seconds = seconds * prompt_rows / rows;
  {
    std::lock_guard lock(mutex_);
    metrics_.prompt_seconds += prompt_seconds;
    metrics_.decode_seconds += seconds - prompt_seconds;
  }
  for (size_t i = 0; i < batch.size(); ++i) {
    Slot& slot = *batch[i];
    const bool prefill = slot.prefilled < slot.to_prefill.size();
    if (prefill) {
      slot.summary.prompt_seconds += seconds;
      std::lock_guard lock(mutex_);
      metrics_.prompt_tokens_evaluated += statuses[i].ok() ? pieces[i].size() : 0;
    }
    if (!statuses[i].ok()) {
      finish(slot, FinishReason::kError, statuses[i].message());
      continue;
    }
    if (prefill) {
      slot.prefilled += pieces[i].size();
      if (slot.prefilled < slot.to_prefill.size()) continue;
      slot.decode_start = std::chrono::steady_clock::now();
    }
    emit_token(slot);
  }
}

void Scheduler::emit_token(Slot& slot) {
  const int n_vocab = model_.config().n_vocab;
  const float* logits = slot.session.last_logits().data();  // [n_vocab]
  const int32_t token = slot.sampler->sample(logits, n_vocab);
  if (!slot.request.ignore_eos && tokenizer_.is_end_of_generation(token)) {
    finish(slot, FinishReason::kStop);
    return;
  }
  GeneratedToken out;
  out.token = token;
  out.text = slot.stops->push(slot.detok->push(token));
  if (slot.request.top_logprobs >= 0) {
    std::vector<double> log_probs;  // [n_vocab]
    engine_detail::log_softmax(logits, n_vocab, log_probs);
    out.chosen = {token, static_cast<float>(log_probs[token])};
    std::vector<int32_t> ids(static_cast<size_t>(n_vocab));
    std::iota(ids.begin(), ids.end(), 0);
    const int k = std::min(slot.request.top_logprobs, n_vocab);
    std::partial_sort(ids.begin(), ids.begin() + k, ids.end(), [&](int32_t a, int32_t b) {
      return log_probs[a] > log_probs[b] || (log_probs[a] == log_probs[b] && a < b);
    });
    for (int i = 0; i < k; ++i) out.top.push_back({ids[i], static_cast<float>(log_probs[ids[i]])});
  }
  ++slot.summary.completion_tokens;
  {
    std::lock_guard lock(mutex_);
    ++metrics_.generated_tokens;
  }
  slot.stream->push(std::move(out));
  if (slot.stops->stopped()) {
    finish(slot, FinishReason::kStop);
  } else if (slot.summary.completion_tokens >= slot.request.max_tokens ||
             slot.session.n_past() + 1 > options_.n_ctx) {  // the token would not fit the slot's context
    finish(slot, FinishReason::kLength);
  } else {
    slot.pending_token = token;
  }
}

void Scheduler::finish(Slot& slot, FinishReason reason, const std::string& error) {
  GenerationSummary summary = std::move(slot.summary);
  if (reason == FinishReason::kStop || reason == FinishReason::kLength) {
    // Held-back text that turned out to be no stop string (or completes one now: then the reason is a stop).
    summary.tail_text = slot.stops->push(slot.detok->flush());
    summary.tail_text += slot.stops->flush();
    if (slot.stops->stopped()) reason = FinishReason::kStop;
  }
  summary.finish = reason;
  summary.error = error;
  if (summary.completion_tokens > 0 && reason != FinishReason::kError) {
    summary.decode_seconds = seconds_since(slot.decode_start);
  }
  if (prefix_index_) prefix_index_->assign(static_cast<uint64_t>(slot.index), slot.session.tokens());
  if (prefix_disk_ && (reason == FinishReason::kStop || reason == FinishReason::kLength)) {
    if (Status s = prefix_disk_->store(slot.session); !s.ok() && options_.warn) {
      options_.warn("prefix cache: " + s.message());
    }
  }
  std::shared_ptr<RequestStream> stream = std::move(slot.stream);
  slot.stream.reset();
  slot.sampler.reset();
  slot.detok.reset();
  slot.stops.reset();
  slot.to_prefill.clear();
  {
    std::lock_guard lock(mutex_);
    slot.busy = false;
    slot.held_tokens = slot.session.tokens();
    record_prefix_disk_stats();  // before the stream ends: a client reading /metrics then sees its entry
    switch (reason) {
      case FinishReason::kCancelled: ++metrics_.requests_cancelled; break;
      case FinishReason::kError: ++metrics_.requests_failed; break;
      default: ++metrics_.requests_finished; break;
    }
  }
  stream->finish(std::move(summary));
}

}  // namespace kvtier
