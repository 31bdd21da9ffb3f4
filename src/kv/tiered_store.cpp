// The tiered KV store: sinks, ladder pages in the pool, the hot f16 ring.
#include "kv/tiered_store.h"

#include <algorithm>
#include <cassert>
#include <mutex>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "kv/codec.h"

namespace kvtier::kv {

namespace {
constexpr size_t kRingAlign = 64;
size_t align_up(size_t n, size_t a) { return (n + a - 1) / a * a; }
}  // namespace

TieredKvStore::TieredKvStore(const KvGeometry& geometry, const TieredKvOptions& options)
    : geometry_(geometry), options_(options), pool_(options.max_pool_bytes), table_(geometry.n_layers) {}

TieredKvStore::~TieredKvStore() {
  // Every job done and swapped in: tasks that run later find an empty queue. (own_tasks_, if any, joins
  // its thread as it is destroyed.)
  if (background_) drain();
  for (Layer& l : layers_) {
    std::free(l.sinks);
    std::free(l.ring);
  }
}

Result<std::unique_ptr<TieredKvStore>> TieredKvStore::create(const KvGeometry& g, const TieredKvOptions& options) {
  if (g.n_layers <= 0 || g.n_kv_heads <= 0 || g.head_dim <= 0) {
    return Status::error("KV store: bad geometry (" + std::to_string(g.n_layers) + " layers, " +
                         std::to_string(g.n_kv_heads) + " KV heads, head_dim " + std::to_string(g.head_dim) + ")");
  }
  if (options.ladder.rungs.empty()) return Status::error("KV store: the ladder has no rungs (use parse_ladder)");
  std::unique_ptr<TieredKvStore> store(new TieredKvStore(g, options));
  TieredKvStore& s = *store;
  s.n_sinks_ = options.ladder.n_sinks;
  s.rungs_ = with_hot_rung(options.ladder);
  std::string error;
  for (int p = 0; p < kPrecisionCount; ++p) {
    if (!make_page_format(static_cast<Precision>(p), options.key_mode, kTokensPerPage, g.n_kv_heads, g.head_dim,
                          options.group, &s.formats_[p], &error)) {
      return Status::error("KV store: " + error);
    }
    s.size_class_[p] = s.pool_.add_size_class(s.formats_[p].page_bytes, precision_name(static_cast<Precision>(p)));
  }
  if (s.n_sinks_ > 0 && !make_page_format(Precision::F16, options.key_mode, s.n_sinks_, g.n_kv_heads, g.head_dim,
                                          options.group, &s.sink_format_, &error)) {
    return Status::error("KV store: sinks: " + error);
  }
  s.ring_pages_ = ring_pages_for(options.ladder);
  s.segment_pages_ = kv::segment_pages(s.format(s.rungs_.rungs.back().precision).page_bytes);
  const size_t ring_bytes = align_up(s.ring_pages_ * s.ring_format().page_bytes, kRingAlign);
  s.layers_.resize(g.n_layers);
  for (Layer& l : s.layers_) {
    l.ring = static_cast<uint8_t*>(std::aligned_alloc(kRingAlign, ring_bytes));
    if (s.n_sinks_ > 0) l.sinks = static_cast<uint8_t*>(std::aligned_alloc(kRingAlign, align_up(s.sink_format_.page_bytes, kRingAlign)));
    if (l.ring == nullptr || (s.n_sinks_ > 0 && l.sinks == nullptr)) return Status::error("KV store: out of memory for the hot ring");
    std::memset(l.ring, 0, ring_bytes);
    if (l.sinks) std::memset(l.sinks, 0, s.sink_format_.page_bytes);
  }
  const size_t page_elems = static_cast<size_t>(kTokensPerPage) * g.kv_dim();
  s.scratch_k_.resize(page_elems);
  s.scratch_v_.resize(page_elems);
  s.pending_.resize(g.n_layers);
  if (options.background_reencode) {
    s.background_ = std::make_shared<Background>();
    s.background_->scratch_floats = page_elems;
    s.tasks_ = options.background_pool;
    if (s.tasks_ == nullptr) {
      s.own_tasks_ = std::make_unique<ThreadPool>(1);
      s.tasks_ = s.own_tasks_.get();
    }
  }
  if (options.budget_bytes > 0) {
    ColdOptions cold = options.cold;
    // Staging buffers scale with the budget (1/16 each, at most the configured size, at least one page).
    auto tier = ColdTier::create(g, cold, s.format(s.rungs_.rungs.back().precision).page_bytes);
    if (!tier.ok()) return tier.status();
    s.cold_ = std::move(*tier);
    if (s.fixed_bytes() > options.budget_bytes) {
      return Status::error("--kv-budget " + std::to_string(options.budget_bytes) + " bytes is below the fixed part of the cache, " +
                           std::to_string(s.fixed_bytes()) + " bytes (hot f16 rings " + std::to_string(s.ring_and_sink_bytes()) +
                           " incl. sinks, cold-tier buffers " + std::to_string(s.cold_->ram_bytes()) +
                           "); raise the budget or shorten the ladder's f16 rung");
    }
  }
  return store;
}

int TieredKvStore::ring_pages_for(const LadderSpec& ladder) {
  // The ring holds every page whose newest token is in the f16 rung, plus the partial tail page. An
  // unbounded f16 rung (the f16 preset) keeps two pages hot and spills older f16 pages to the pool.
  const int64_t hot = ladder.rungs.front().precision == Precision::F16 ? ladder.rungs.front().tokens : 0;
  return hot < 0 ? 2 : static_cast<int>((hot + kTokensPerPage - 1) / kTokensPerPage) + 1;
}

size_t TieredKvStore::ring_and_sink_bytes() const {
  const size_t ring = align_up(ring_pages_ * ring_format().page_bytes, kRingAlign);
  const size_t sinks = n_sinks_ > 0 ? align_up(sink_format_.page_bytes, kRingAlign) : 0;
  return (ring + sinks) * layers_.size();
}

size_t TieredKvStore::fixed_bytes() const { return ring_and_sink_bytes() + (cold_ ? cold_->ram_bytes() : 0); }

size_t TieredKvStore::budget_resident_bytes() const {
  return ring_and_sink_bytes() + pool_.live_bytes() - bytes_behind_window() + (cold_ ? cold_->ram_bytes() : 0);
}

int64_t TieredKvStore::pages_behind_window(int layer, int64_t n_tokens) const {
  const int window = geometry_.window(layer);
  if (window <= 0) return 0;
  // Page i is wholly behind when n_sinks + (i + 1) * P <= the next position's window start.
  const int64_t first_needed = n_tokens - window + 1;
  return first_needed > n_sinks_ ? (first_needed - n_sinks_) / kTokensPerPage : 0;
}

size_t TieredKvStore::bytes_behind_window() const {
  size_t bytes = 0;
  for (int layer = 0; layer < geometry_.n_layers; ++layer) {
    const int64_t behind = std::min(pages_behind_window(layer), table_.n_pages(layer));
    for (int64_t i = cold_end(layer); i < behind; ++i) {
      if (table_.page(layer, i).valid()) bytes += format(rungs_.rungs[table_.rung(layer, i)].precision).page_bytes;
    }
  }
  return bytes;
}

size_t TieredKvStore::budget_floor_bytes() const {
  if (!cold_) return budget_resident_bytes();
  // The pages make_room() may spill: per layer, the last-rung pages right after the cold prefix. Spilling them
  // frees their bytes and grows the layer's cold index (at most to twice its entries, ColdTier::index_ram_bytes):
  // a bound that never rises as pages are spilled.
  const int last = static_cast<int>(rungs_.rungs.size()) - 1;
  const size_t page_bytes = format(rungs_.rungs[last].precision).page_bytes;
  const size_t per_cold_page = ColdTier::ram_bytes_per_page(geometry_);
  size_t floor = budget_resident_bytes();
  for (int l = 0; l < geometry_.n_layers; ++l) {
    int64_t end = n_cold(l);
    while (end < table_.n_pages(l) && table_.rung(l, end) == last) ++end;
    const size_t index_now = cold_->index_ram_bytes(l);
    const size_t index_after = std::max(index_now, 2 * static_cast<size_t>(end) * per_cold_page);
    floor = floor - static_cast<size_t>(end - n_cold(l)) * page_bytes - index_now + index_after;
  }
  return floor;
}

size_t TieredKvStore::budget_growth_bytes(int n_tokens) const {
  if (n_tokens <= 0) return 0;
  // Pages pushed out of each layer's ring (exactly: the pages entering it past its capacity), each held as a
  // copy in the ring's format while its encoding is made (background re-encoding; just the copy when the page
  // keeps its format); and, with more than one rung, at most ceil(n / P) pages per layer crossing each rung
  // boundary, each holding a page of its new rung until its old one goes.
  const PageFormat& hot = ring_format();
  const bool one_format = rungs_.rungs.size() == 1;
  const size_t per_push = hot.page_bytes * (one_format ? 1 : 2);
  size_t per_crossing = 0;
  for (size_t r = 1; r < rungs_.rungs.size(); ++r) per_crossing += format(rungs_.rungs[r].precision).page_bytes;
  const size_t crossings = static_cast<size_t>((n_tokens + kTokensPerPage - 1) / kTokensPerPage);
  size_t bytes = 0;
  for (const Layer& l : layers_) {
    const int64_t end = static_cast<int64_t>(l.n_tokens) + n_tokens;
    if (end <= n_sinks_) continue;
    const int64_t last_page = (end - n_sinks_ - 1) / kTokensPerPage;
    const int64_t first = l.ring_count > 0 ? l.ring_first : (std::max<int64_t>(l.n_tokens, n_sinks_) - n_sinks_) / kTokensPerPage;
    const int64_t pushed = std::max<int64_t>(0, last_page + 1 - ring_pages_ - first);
    bytes += static_cast<size_t>(pushed) * per_push + crossings * per_crossing;
  }
  return bytes;
}

Status TieredKvStore::set_budget(size_t bytes) {
  if (!cold_) return Status::error("KV store: no cold tier, so no budget to change (create the store with one)");
  if (budget_resident_bytes() > bytes) {
    drain();  // settled, a re-encoded page no longer counts twice, and compaction may move any page
    if (bytes < budget_floor_bytes()) {
      return Status::error("KV store: a budget of " + std::to_string(bytes) + " bytes is below the " +
                           std::to_string(budget_floor_bytes()) + " bytes this store cannot write to disk");
    }
    options_.budget_bytes = bytes;
    const uint64_t cold_before = cold_->total_pages();
    if (Status s = make_room(0); !s.ok()) return s;
    if (cold_->total_pages() != cold_before) compact_pool();
    if (budget_resident_bytes() > bytes) {
      return Status::error("KV store: could not spill down to " + std::to_string(bytes) + " bytes" +
                           (budget_warning_.empty() ? std::string() : ": " + budget_warning_));
    }
  }
  options_.budget_bytes = bytes;
  return Status();
}

Status TieredKvStore::make_room(size_t incoming) {
  if (!cold_ || spill_disabled_) return Status();
  const size_t budget = options_.budget_bytes;
  const int last = static_cast<int>(rungs_.rungs.size()) - 1;
  const PageFormat& cold_format = format(rungs_.rungs[last].precision);
  const int n_layers = geometry_.n_layers;
  while (budget_resident_bytes() + incoming > budget) {
    const size_t excess = budget_resident_bytes() + incoming - budget;
    // Oldest first, from the layer with the most spillable (last-rung, resident) pages, so that the
    // layers' cold prefixes stay even. One batch (one io_uring submission) writes up to 8 pages. A sliding-
    // window layer whose oldest resident page is behind its window spills nothing until that page is released
    // (after the attention that still reads it): spilling it would only write what is about to be dropped.
    std::vector<int64_t> next(n_layers), end(n_layers);
    for (int l = 0; l < n_layers; ++l) {
      next[l] = cold_end(l);
      end[l] = next[l];
      if (next[l] < pages_behind_window(l)) continue;
      while (end[l] < table_.n_pages(l) && table_.rung(l, end[l]) == last) ++end[l];
    }
    std::vector<ColdTier::Spill> batch;
    std::vector<std::pair<int, int64_t>> where;
    size_t freed = 0;
    while (batch.size() < 8 && freed < excess) {
      int best = -1;
      for (int l = 0; l < n_layers; ++l) {
        if (end[l] > next[l] && (best < 0 || end[l] - next[l] > end[best] - next[best])) best = l;
      }
      if (best < 0) break;
      const int64_t i = next[best]++;
      batch.push_back({best, pool_.data(table_.page(best, i)), &cold_format, last, static_cast<int>(page_first_pos(i))});
      where.emplace_back(best, i);
      freed += cold_format.page_bytes;
    }
    if (batch.empty()) {
      if (budget_warning_.empty()) {
        budget_warning_ = "the KV budget (" + std::to_string(budget) + " bytes) is smaller than the ladder's warm rungs need; "
                          "holding " + std::to_string(budget_resident_bytes() + incoming) +
                          " bytes (only pages at the last rung go to disk; `kvtier plan` shows the minimum)";
      }
      return Status();
    }
    if (Status st = cold_->spill(batch); !st.ok()) {
      spill_disabled_ = true;
      budget_warning_ = "spilling to disk stopped (" + st.message() + "); the KV cache stays in RAM from here on";
      return Status();
    }
    for (const auto& [layer, i] : where) pool_.release(table_.replace(layer, i, PageId{}, last));
  }
  return Status();
}

uint8_t* TieredKvStore::ring_slot(int layer, int64_t page) const {
  return layers_[layer].ring + static_cast<size_t>(page % ring_pages_) * ring_format().page_bytes;
}

Status TieredKvStore::reencode(int layer, const uint8_t* source, const PageFormat& source_format, int to_rung,
                               PageId* out) {
  const auto start = std::chrono::steady_clock::now();
  const Precision target = rungs_.rungs[to_rung].precision;
  if (Status s = make_room(format(target).page_bytes); !s.ok()) return s;
  Result<PageId> page = pool_.allocate(size_class_[static_cast<int>(target)]);
  if (!page.ok()) return page.status();
  uint8_t* dst = pool_.data(*page);
  if (source_format.precision == target) {
    std::memcpy(dst, source, source_format.page_bytes);
  } else {
    transcode_page(source_format, source, format(target), dst, scratch_k_.data(), scratch_v_.data());
  }
  *out = *page;
  ++reencoded_pages_;
  reencode_seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return Status();
}

Status TieredKvStore::evict_ring_front(int layer, bool background) {
  Layer& l = layers_[layer];
  assert(l.ring_count > 0);
  const int64_t page = l.ring_first;
  const int64_t last_pos = page_first_pos(page) + kTokensPerPage - 1;
  assert(last_pos < l.n_tokens);
  const int to_rung = target_rung(rungs_, last_pos, l.n_tokens);
  const PageFormat& hot = ring_format();
  if (background && background_reencode() && rungs_.rungs[to_rung].precision != hot.precision) {
    // The ring slot is about to be reused: copy the page into a pool page of the ring's format (rung 0) and
    // encode that in the background; it is swapped for its encoding at this layer's next append() or
    // rebalance().
    if (Status s = make_room(hot.page_bytes); !s.ok()) return s;
    Result<PageId> copy = pool_.allocate(size_class_[static_cast<int>(hot.precision)]);
    if (!copy.ok()) return copy.status();
    std::memcpy(pool_.data(*copy), ring_slot(layer, page), hot.page_bytes);
    table_.append(layer, *copy, 0);
    ++l.ring_first;
    --l.ring_count;
    return enqueue(layer, table_.n_pages(layer) - 1, *copy, hot, to_rung);
  }
  PageId id;
  if (Status s = reencode(layer, ring_slot(layer, page), hot, to_rung, &id); !s.ok()) return s;
  table_.append(layer, id, to_rung);
  ++l.ring_first;
  --l.ring_count;
  return Status();
}

Status TieredKvStore::append(int layer, int pos, int n, const float* k, const float* v) {
  if (layer < 0 || layer >= geometry_.n_layers) return Status::error("KV store: layer " + std::to_string(layer) + " out of range");
  Layer& l = layers_[layer];
  if (pos != l.n_tokens || n < 0) {
    return Status::error("KV store: layer " + std::to_string(layer) + " holds " + std::to_string(l.n_tokens) +
                         " positions; cannot append " + std::to_string(n) + " at position " + std::to_string(pos) +
                         " (appends must be contiguous; truncate first)");
  }
  complete(layer);  // encodings started at this layer's last step go into the table before it grows
  if (geometry_.max_tokens > 0 && pos + n > geometry_.max_tokens) {
    return Status::error("KV store: appending up to position " + std::to_string(pos + n) + " exceeds the capacity of " +
                         std::to_string(geometry_.max_tokens));
  }
  const size_t row = static_cast<size_t>(geometry_.kv_dim());
  std::vector<float> rotated;  // [n, n_kv_heads, head_dim] when keys are rotated
  if (keys_rotated()) {
    rotated.assign(k, k + static_cast<size_t>(n) * row);
    rotate_heads(rotated.data(), static_cast<int64_t>(n) * geometry_.n_kv_heads, geometry_.head_dim);
    k = rotated.data();
  }
  int done = 0;
  while (done < n) {
    const int p = pos + done;
    int count;
    if (p < n_sinks_) {
      count = std::min(n - done, n_sinks_ - p);
      write_rows(sink_format_, l.sinks, p, count, k + done * row, v + done * row);
    } else {
      const int64_t page = (p - n_sinks_) / kTokensPerPage;
      const int offset = static_cast<int>((p - n_sinks_) % kTokensPerPage);
      if (offset == 0) {  // a new page enters the ring
        if (l.ring_count == 0) l.ring_first = page;
        assert(page == l.ring_first + l.ring_count);
        if (l.ring_count == ring_pages_) {
          // Pages pushed out go to the background; a prefill batch's cache settles them before its
          // own attention (complete_layer, helping with the work), so that attention reads them at their rung.
          if (Status s = evict_ring_front(layer, true); !s.ok()) return s;
        }
        ++l.ring_count;
        std::memset(ring_slot(layer, page), 0, ring_format().page_bytes);
      }
      count = std::min(n - done, kTokensPerPage - offset);
      write_rows(ring_format(), ring_slot(layer, page), offset, count, k + done * row, v + done * row);
    }
    done += count;
    l.n_tokens += count;
  }
  return Status();
}

std::vector<PageMove> TieredKvStore::plan(int layer) const {
  const Layer& l = layers_[layer];
  std::vector<PageMove> moves = plan_moves(rungs_, table_.rungs(layer), n_sinks_, kTokensPerPage, l.n_tokens);
  std::erase_if(moves, [&](const PageMove& m) { return m.page < l.released; });  // nothing left to move
  for (int64_t page = l.ring_first; page < l.ring_first + l.ring_count; ++page) {
    const int64_t last_pos = page_first_pos(page) + kTokensPerPage - 1;
    if (last_pos >= l.n_tokens) break;
    const int target = target_rung(rungs_, last_pos, l.n_tokens);
    if (target == 0) break;  // younger pages are younger still
    moves.push_back({page, 0, target});
  }
  return moves;
}

Status TieredKvStore::apply(int layer, const std::vector<PageMove>& moves) {
  Layer& l = layers_[layer];
  for (const PageMove& m : moves) {
    if (m.page < table_.n_pages(layer)) {
      if (table_.rung(layer, m.page) != m.from_rung) continue;  // already moved
      const PageId old = table_.page(layer, m.page);
      PageId id;
      const PageFormat& from = format(rungs_.rungs[m.from_rung].precision);
      if (background_reencode() && from.precision != rungs_.rungs[m.to_rung].precision) {
        if (pending(layer, m.page)) continue;  // already on its way
        if (Status s = enqueue(layer, m.page, old, from, m.to_rung); !s.ok()) return s;
        continue;
      }
      if (Status s = reencode(layer, pool_.data(old), from, m.to_rung, &id); !s.ok()) return s;
      table_.replace(layer, m.page, id, m.to_rung);
      pool_.release(old);
    } else if (m.page == l.ring_first && l.ring_count > 0 &&
               page_first_pos(m.page) + kTokensPerPage <= l.n_tokens) {
      if (Status s = evict_ring_front(layer, true); !s.ok()) return s;
    } else {
      return Status::error("KV store: stale page move for page " + std::to_string(m.page) + " of layer " +
                           std::to_string(layer) + " (plan again)");
    }
  }
  if (!moves.empty()) {
    compaction_due_ = true;
    if (!background_reencode()) compact_pool();  // else once no job holds pointers into the pool (complete)
  }
  return Status();
}

// Re-encoding frees pages all over a class's slabs: move the pages of sparse slabs so those go back.
void TieredKvStore::compact_pool() {
  for (int p = 0; p < kPrecisionCount; ++p) {
    pool_.compact(size_class_[p], [&](PageId from, PageId to) { [[maybe_unused]] const bool found = table_.relocate(from, to); assert(found); });
  }
  compaction_due_ = false;
}

Status TieredKvStore::rebalance(int layer) {
  complete(layer);
  release_behind_window(layer);
  return apply(layer, plan(layer));
}

void TieredKvStore::release_behind_window(int layer) {
  Layer& l = layers_[layer];
  const int64_t behind = std::min(pages_behind_window(layer), table_.n_pages(layer));
  const int64_t first = l.released, first_resident = cold_end(layer);
  while (l.released < behind && !pending(layer, l.released)) {
    // A cold page holds no pool page; it leaves the cold tier below, unread.
    const PageId old = table_.replace(layer, l.released, PageId{}, table_.rung(layer, l.released));
    if (old.valid()) pool_.release(old);
    ++l.released;
    ++released_pages_;
    compaction_due_ = true;
  }
  if (cold_) cold_->drop_oldest(layer, std::min(l.released, first_resident) - first);
}

double TieredKvStore::reencode_seconds() const {
  if (!background_) return reencode_seconds_;
  std::lock_guard<std::mutex> lock(background_->mu);
  return reencode_seconds_ + background_->seconds;
}

Status TieredKvStore::enqueue(int layer, int64_t index, PageId source, const PageFormat& from, int to_rung) {
  const PageFormat& to = format(rungs_.rungs[to_rung].precision);
  if (Status s = make_room(to.page_bytes); !s.ok()) return s;
  Result<PageId> target = pool_.allocate(size_class_[static_cast<int>(to.precision)]);
  if (!target.ok()) return target.status();
  auto job = std::make_unique<Job>();
  job->layer = layer;
  job->index = index;
  job->to_rung = to_rung;
  job->source = source;
  job->target = *target;
  job->source_data = pool_.data(source);
  job->target_data = pool_.data(*target);
  job->from = &from;
  job->to = &to;
  {
    std::lock_guard<std::mutex> lock(background_->mu);
    background_->queue.push_back(job.get());
  }
  // One task per job; it takes whichever job is first in the queue then (complete() may have run this one).
  tasks_->post([background = background_] {
    Job* next = nullptr;
    {
      std::lock_guard<std::mutex> lock(background->mu);
      if (background->queue.empty()) return;
      next = background->queue.front();
      background->queue.pop_front();
    }
    thread_local std::vector<float> k, v;  // [P, n_kv_heads, head_dim] each
    k.resize(background->scratch_floats);
    v.resize(background->scratch_floats);
    run_job(*background, *next, k.data(), v.data());
  });
  pending_[layer].push_back(std::move(job));
  ++reencoded_pages_;
  return Status();
}

bool TieredKvStore::pending(int layer, int64_t index) const {
  for (const auto& job : pending_[layer]) {
    if (job->index == index) return true;
  }
  return false;
}

void TieredKvStore::complete(int layer) {
  std::vector<std::unique_ptr<Job>>& jobs = pending_[layer];
  if (jobs.empty()) return;
  const auto start = std::chrono::steady_clock::now();
  // Help rather than wait: run this layer's jobs the worker has not taken yet on this thread.
  for (;;) {
    Job* job = nullptr;
    {
      std::lock_guard<std::mutex> lock(background_->mu);
      std::deque<Job*>& queue = background_->queue;
      auto it = std::find_if(queue.begin(), queue.end(), [&](const Job* j) { return j->layer == layer; });
      if (it == queue.end()) break;
      job = *it;
      queue.erase(it);
    }
    run_job(*background_, *job, scratch_k_.data(), scratch_v_.data());
  }
  {
    std::unique_lock<std::mutex> lock(background_->mu);
    for (const auto& job : jobs) background_->job_done.wait(lock, [&] { return job->done; });
  }
  reencode_wait_seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  for (const auto& job : jobs) {
    const PageId old = table_.replace(layer, job->index, job->target, job->to_rung);
    assert(old == job->source);
    pool_.release(old);
  }
  jobs.clear();
  if (compaction_due_ && std::all_of(pending_.begin(), pending_.end(), [](const auto& p) { return p.empty(); })) {
    compact_pool();
  }
}

void TieredKvStore::drain() {
  for (int layer = 0; layer < static_cast<int>(pending_.size()); ++layer) complete(layer);
}

// Decodes a job's source and encodes its target (in a posted task or on a helping caller), then marks it done.
//   k, v: [P, n_kv_heads, head_dim] scratch of the running thread.
void TieredKvStore::run_job(Background& background, Job& job, float* k, float* v) {
  const auto start = std::chrono::steady_clock::now();
  transcode_page(*job.from, job.source_data, *job.to, job.target_data, k, v);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  {
    std::lock_guard<std::mutex> lock(background.mu);
    job.done = true;
    background.seconds += seconds;
  }
  background.job_done.notify_all();
}

void TieredKvStore::truncate(int n_tokens) {
  drain();
  // A sliding-window layer whose released pages the next position would need again cannot be cut there: the
  // whole cache goes (the caller evaluates the tokens again; Session does).
  // (A window of 1 needs no earlier position, but the kept rows of the cut page must still be held.)
  for (int layer = 0; layer < geometry_.n_layers; ++layer) {
    const int window = geometry_.window(layer);
    if (layers_[layer].released > 0 && n_tokens < layers_[layer].n_tokens &&
        std::max(0, std::min(n_tokens - window + 1, n_tokens - 1)) < released_positions(layer)) {
      n_tokens = 0;
    }
  }
  const PageFormat& hot = ring_format();
  for (int layer = 0; layer < geometry_.n_layers; ++layer) {
    Layer& l = layers_[layer];
    if (n_tokens >= l.n_tokens) continue;
    n_tokens = std::max(n_tokens, 0);
    if (n_tokens <= n_sinks_) {
      if (cold_) cold_->truncate(layer, 0);
      for (PageId id : table_.truncate(layer, 0)) {
        if (id.valid()) pool_.release(id);
      }
      l.ring_first = 0;
      l.ring_count = 0;
      l.n_tokens = n_tokens;
      l.released = 0;
      continue;
    }
    const int64_t last_page = (n_tokens - n_sinks_ - 1) / kTokensPerPage;  // holds the last kept position
    const int keep_rows = static_cast<int>(n_tokens - page_first_pos(last_page));
    if (last_page < table_.n_pages(layer)) {
      // The cut falls in a pool or cold page: its kept rows come back into the ring (keys as f16; values
      // copied as they are when the page and the ring store value rows alike, else decoded and rewritten).
      const PageFormat& from = format(rungs_.rungs[table_.rung(layer, last_page)].precision);
      int kept = keep_rows;
      std::vector<uint8_t> cold_page;  // [page_bytes] a cold page read back
      const uint8_t* source = nullptr;
      if (last_page < cold_end(layer)) {
        cold_page.resize(from.page_bytes);
        if (cold_->read_page(layer, last_page - l.released, cold_page.data()).ok()) {
          source = cold_page.data();
        } else {
          kept = 0;  // unreadable: the page is dropped; first_bad_position() tells the caller to cut here
        }
      } else {
        source = pool_.data(table_.page(layer, last_page));
      }
      // Every ring page is past the cut, so the slot is free; fill it before the source page is released.
      uint8_t* slot = ring_slot(layer, last_page);
      std::memset(slot, 0, hot.page_bytes);
      if (kept > 0) {
        decode_page(from, source, keep_rows, scratch_k_.data(), scratch_v_.data());
        write_rows(hot, slot, 0, kept, scratch_k_.data(), scratch_v_.data());
        if (same_value_layout(from, hot)) copy_value_rows(from, source, hot, slot, 0, kept);
      }
      if (cold_) cold_->truncate(layer, std::clamp<int64_t>(last_page - l.released, 0, n_cold(layer)));
      for (PageId old : table_.truncate(layer, last_page)) {
        if (old.valid()) pool_.release(old);
      }
      l.ring_first = last_page;
      l.ring_count = kept > 0 ? 1 : 0;
    } else {
      l.ring_count = last_page - l.ring_first + 1;
    }
    l.n_tokens = n_tokens;
  }
  if (cold_ && cold_->first_bad_position() >= 0) {
    // A cold page that had to be read back failed: cut every layer before it (positions only go down, so
    // this ends), and forget the damage once it is out of the cache.
    if (cold_->first_bad_position() < n_tokens) {
      truncate(cold_->first_bad_position());
    } else {
      cold_->clear_bad_position();
    }
  }
}

void TieredKvStore::gather_pages(int layer, std::vector<PageRef>& out) const {
  const Layer& l = layers_[layer];
  out.clear();
  if (l.n_tokens == 0) return;
  // Sinks lie behind a sliding window once pages after them are released (attention would skip them).
  if (n_sinks_ > 0 && l.released == 0) out.push_back({l.sinks, &sink_format_, 0, std::min(l.n_tokens, n_sinks_)});
  const std::span<const PageId> pages = table_.pages(layer);
  const size_t n_cold_pages = static_cast<size_t>(cold_end(layer));  // released + cold pages
  for (size_t i = static_cast<size_t>(l.released); i < pages.size(); ++i) {
    const Precision p = rungs_.rungs[table_.rung(layer, static_cast<int64_t>(i))].precision;
    const uint8_t* data = i < n_cold_pages ? nullptr : pool_.data(pages[i]);
    out.push_back({data, &format(p), static_cast<int>(page_first_pos(i)), kTokensPerPage});
  }
  for (int64_t page = l.ring_first; page < l.ring_first + l.ring_count; ++page) {
    const int first = static_cast<int>(page_first_pos(page));
    out.push_back({ring_slot(layer, page), &ring_format(), first, std::min(kTokensPerPage, l.n_tokens - first)});
  }
}

KvMemoryReport TieredKvStore::memory() const {
  KvMemoryReport r;
  const size_t ring_page = ring_format().page_bytes;
  r.ring_bytes_per_layer = align_up(ring_pages_ * ring_page, kRingAlign);
  r.ring_bytes = r.ring_bytes_per_layer * layers_.size();
  r.sink_bytes = n_sinks_ > 0 ? align_up(sink_format_.page_bytes, kRingAlign) * layers_.size() : 0;
  size_t held = 0;
  for (int p = 0; p < kPrecisionCount; ++p) {
    const SizeClassStats s = pool_.stats(size_class_[p]);
    r.page_count[p] = s.live_pages;
    r.page_bytes[p] = s.live_bytes;
    held += s.live_bytes;
  }
  r.pool_resident_bytes = pool_.resident_bytes();
  r.pool_free_bytes = r.pool_resident_bytes - pool_.live_bytes();
  r.total_bytes = r.sink_bytes + r.ring_bytes + r.pool_resident_bytes;
  int64_t elements = 0;
  for (const Layer& l : layers_) {
    r.n_tokens = std::max<int64_t>(r.n_tokens, l.n_tokens);
    if (l.n_tokens > 0 && n_sinks_ > 0) held += sink_format_.page_bytes;
    held += static_cast<size_t>(l.ring_count) * ring_page;
    const int64_t released = l.released > 0 ? page_first_pos(l.released) : 0;  // positions no longer held
    elements += (static_cast<int64_t>(l.n_tokens) - released) * geometry_.kv_dim() * 2;
  }
  if (cold_) {
    r.cold_pages = cold_->total_pages();
    r.cold_disk_bytes = cold_->disk_bytes();
    r.cold_ram_bytes = cold_->ram_bytes();
    r.total_bytes += r.cold_ram_bytes;
    const PageFormat& cold_format = format(rungs_.rungs.back().precision);
    held += r.cold_pages * cold_format.page_bytes;  // bits/element counts the cold pages' format too
  }
  r.budget_bytes = options_.budget_bytes;
  r.budget_resident_bytes = budget_resident_bytes();
  r.bits_per_element = elements > 0 ? 8.0 * static_cast<double>(held) / static_cast<double>(elements) : 0.0;
  return r;
}

std::string KvMemoryReport::describe() const {
  char buf[256];
  std::string s;
  std::snprintf(buf, sizeof buf, "KV %lld tokens, %.2f MiB resident (ring %.2f MiB = %.1f KiB/layer, sinks %.1f KiB",
                static_cast<long long>(n_tokens), total_bytes / 1048576.0, ring_bytes / 1048576.0,
                ring_bytes_per_layer / 1024.0, sink_bytes / 1024.0);
  s += buf;
  for (int p = 0; p < kPrecisionCount; ++p) {
    if (page_count[p] == 0) continue;
    std::snprintf(buf, sizeof buf, ", %s %zu pages %.2f MiB", precision_name(static_cast<Precision>(p)), page_count[p],
                  page_bytes[p] / 1048576.0);
    s += buf;
  }
  std::snprintf(buf, sizeof buf, ", pool free+slack %.2f MiB), %.3f bits/element", pool_free_bytes / 1048576.0,
                bits_per_element);
  s += buf;
  if (budget_bytes > 0) {
    std::snprintf(buf, sizeof buf, "\nbudget %.2f MiB, in RAM %.2f MiB (cold-tier index+summaries+buffers %.2f MiB); cold on disk: %zu pages, %.2f MiB",
                  budget_bytes / 1048576.0, budget_resident_bytes / 1048576.0, cold_ram_bytes / 1048576.0, cold_pages,
                  cold_disk_bytes / 1048576.0);
    s += buf;
  }
  return s;
}

}  // namespace kvtier::kv
