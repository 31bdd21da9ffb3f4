// The tiered paged KV cache behind the KvCache interface: storage and the precision ladder from
// kv/tiered_store.h, the cold tier from kv/cold_tier.h, attention from kernels/paged_attention.h.
//
// Attention of a layer runs over its page list (sinks, warm pages, hot ring, position order) in segments of
// store.segment_pages() entries (fixed by the ladder's last rung, kv::segment_pages), each reduced on its own and
// folded into the result in order with its log-sum-exp. The segments and their order are the same with or without
// a budget, a cold tier or cold pages: a layer without cold pages attends all its segments in one kernel call
// (kernels::PagedKv::segment_starts), a layer with cold pages in one call per segment (fold = true), which the
// kernel makes the same bits. So the output does not depend on --kv-budget, and exact cold reads are
// bit-identical to all-in-RAM (sparse reads skip pages: approximate by design):
//   exact  (and every prefill): a segment's cold pages are read into a staging buffer; while it is computed
//          the next segment's cold pages are in flight — of this layer, or of the next layer's first segment
//          (layer 0 of the next step after the last layer), so reads for layer l+1 overlap layer l's work.
//   sparse (decode): segments attend only their resident pages; then the cold pages whose Quest bound
//          (kv::ColdTier::score_pages) is highest, as many as the per-step byte budget allows, are merged in.
//          The next layer's choice of the previous step is prefetched (consecutive steps choose similar
//          pages); pages it missed are read at once (a stall, reported).
#include <algorithm>
#include <cstdio>
#include <numeric>
#include <string>
#include <vector>

#include "kernels/paged_attention.h"
#include "kv/codec.h"
#include "kv/tiered_store.h"
#include "kvtier/kv_options.h"
#include "kvtier/model.h"

namespace kvtier {

namespace {

class PagedKvCache final : public KvCache {
 public:
  explicit PagedKvCache(std::unique_ptr<kv::TieredKvStore> store)
      : store_(std::move(store)), last_selection_(store_->geometry().n_layers) {}

  const KvGeometry& geometry() const override { return store_->geometry(); }
  int n_tokens() const override { return store_->n_tokens(geometry().n_layers - 1); }
  void truncate(int n_tokens) override {
    store_->truncate(n_tokens);
    for (auto& s : last_selection_) s.clear();
  }
  size_t resident_bytes() const override {
    store_->settle();  // pending re-encodes would count both the old and the new page
    return store_->memory().total_bytes;
  }
  std::string describe() const override;
  std::string reencode_summary() const;
  std::string window_summary() const;
  std::string policy() const override { return store_->policy(); }
  Status save(ByteSink& out) override { return store_->save(out); }
  Status load(ByteSource& in) override {
    for (auto& s : last_selection_) s.clear();
    return store_->load(in);
  }
  int first_bad_position() const override {
    return store_->cold() != nullptr ? store_->cold()->first_bad_position() : -1;
  }

  std::string warning() const override { return store_->budget_warning(); }

  KvUsage usage() const override;
  Status set_budget(size_t bytes) override { return store_->set_budget(bytes); }
  size_t budget_growth_bytes(int n_tokens) const override { return store_->budget_growth_bytes(n_tokens); }

  KvIoStats io_stats() const override {
    KvIoStats io;
    if (const kv::ColdTier* cold = store_->cold()) {
      const kv::ColdStats& c = cold->stats();
      io.pages_read = c.read_pages;
      io.bytes_read = cold->file().stats().read_bytes;
      io.pages_written = c.spilled_pages;
      io.bytes_written = cold->file().stats().write_bytes;
      io.stall_seconds = c.stall_seconds;
    }
    return io;
  }

  Status store(int layer, int pos, int n, const float* k, const float* v) override {
    return store_->append(layer, pos, n, k, v);
  }

  Status attend(int layer, int pos, int n, int n_heads, const float* q, float* out, const AttentionParams& params,
                ThreadPool& pool) override {
    const float scale = params.scale;
    window_ = params.window;
    softcap_ = params.softcap;
    kv::ColdTier* cold = store_->cold();
    const int64_t n_cold = store_->n_cold(layer);
    const bool sparse = n_cold > 0 && cold->options().mode == kv::ColdReadMode::Sparse && n == 1;
    if (sparse) {  // the chosen pages' reads go out first, to overlap the resident segments
      if (Status s = issue_sparse(layer, n_heads, q, scale); !s.ok()) return s;
    }
    // A prefill batch reads the pages it pushed out of the ring at their rung (as synchronous re-encoding
    // would); a decode step reads them as they are and they settle at the layer's next step.
    if (n > 1) store_->settle_layer(layer);
    store_->gather_pages(layer, pages_);
    const int lead = store_->lead_entries(layer);
    const int64_t n_entries = static_cast<int64_t>(pages_.size());
    const int hd = geometry().head_dim;
    const size_t rows = static_cast<size_t>(n) * n_heads;
    lse_.resize(rows);
    part_.resize(rows * hd);
    part_lse_.resize(rows);
    const int64_t seg = store_->segment_pages();
    if (n_cold == 0 && n_entries > 0) {
      // All pages resident: one kernel call (one pool hand-off) over all segments.
      segment_starts_.clear();
      for (int64_t a = 0; a < n_entries; a += seg) segment_starts_.push_back(static_cast<int>(a));
      segment_starts_.push_back(static_cast<int>(n_entries));
      kernels::PagedKv view = make_view(pages_, false);
      view.segment_starts = segment_starts_;
      kernels::paged_attention(view, pos, n, n_heads, q, scale, out, pool, lse_.data());
    }
    bool have = false;  // out/lse_ hold a result
    // With cold pages, one call per segment (one staging buffer each), folded into out/lse_.
    for (int64_t a = 0; n_cold > 0 && a < n_entries; a += seg) {
      const int64_t b = std::min(a + seg, n_entries);
      // Cold pages [ca, cb) of this segment.
      const int64_t ca = std::clamp<int64_t>(a - lead, 0, n_cold), cb = std::clamp<int64_t>(b - lead, 0, n_cold);
      std::span<const kv::PageRef> segment(pages_.data() + a, static_cast<size_t>(b - a));
      int slot = -1;
      if (cb > ca && !sparse) {
        Result<int> staged = ensure_staged(layer, range(ca, cb), -1);
        if (!staged.ok()) return staged.status();
        slot = *staged;
        // The next cold pages go out while this segment is computed.
        const int64_t next_a = b - lead;
        if (next_a < n_cold) {
          (void)ensure_staged(layer, range(next_a, std::min<int64_t>(next_a + seg, n_cold)), slot);
        } else {
          prefetch_next(layer, false, slot);
        }
        Result<std::span<const kv::PageRef>> refs = cold->ready(slot);
        if (!refs.ok()) return refs.status();
        segment_.assign(segment.begin(), segment.end());
        for (int64_t i = ca; i < cb; ++i) segment_[i + lead - a] = (*refs)[i - ca];
        segment = segment_;
      } else if (cb > ca) {
        segment_.clear();
        for (const kv::PageRef& p : segment) {
          if (p.data != nullptr) segment_.push_back(p);
        }
        segment = segment_;
      }
      if (!segment.empty()) {
        kernels::PagedKv view = make_view(segment, b < n_entries);
        kernels::paged_attention(view, pos, n, n_heads, q, scale, out, pool, lse_.data(), have);
        have = true;
      }
      if (slot >= 0) cold->release(slot);
    }
    if (sparse) {
      if (Status s = finish_sparse(layer, pos, n_heads, q, scale, out, pool); !s.ok()) return s;
    }
    // Pages that have wholly left their rung move down the ladder now that this layer's attention no
    // longer needs them (between layers, not inside the kernel); past the budget the oldest go to disk.
    if (Status s = store_->rebalance(layer); !s.ok()) return s;
    // Exact reads of this layer already sent the next layer's first segment out (during the last cold one).
    const bool sparse_decode = cold != nullptr && cold->options().mode == kv::ColdReadMode::Sparse && n == 1;
    if (cold != nullptr && (sparse_decode || n_cold == 0)) prefetch_next(layer, sparse_decode, -1);
    return Status();
  }

 private:
  kernels::PagedKv make_view(std::span<const kv::PageRef> pages, bool partial) const {
    kernels::PagedKv view;
    view.pages = pages;
    view.n_kv_heads = geometry().n_kv_heads;
    view.head_dim = geometry().head_dim;
    view.keys_rotated = store_->keys_rotated();
    view.pages_are_prefix = partial;
    view.window = window_;
    view.softcap = softcap_;
    return view;
  }

  static std::vector<int64_t> range(int64_t first, int64_t end) {
    std::vector<int64_t> idx(static_cast<size_t>(end - first));
    std::iota(idx.begin(), idx.end(), first);
    return idx;
  }

  // The slot holding exactly these pages, or -1.
  int find_slot(int layer, const std::vector<int64_t>& idx) const {
    for (int s = 0; s < 2; ++s) {
      if (store_->cold()->staged(s, layer, idx)) return s;
    }
    return -1;
  }

  // Puts pages in flight (unless they already are) and returns their slot; `keep` is a slot not to evict.
  Result<int> ensure_staged(int layer, const std::vector<int64_t>& idx, int keep) {
    kv::ColdTier& cold = *store_->cold();
    if (int s = find_slot(layer, idx); s >= 0) return s;
    int slot = -1;
    for (int s = 0; s < 2 && slot < 0; ++s) {
      if (s != keep && !cold.slot_busy(s)) slot = s;
    }
    if (slot < 0) slot = keep == 0 ? 1 : 0;
    cold.release(slot);
    if (Status st = cold.stage(slot, layer, idx); !st.ok()) return st;
    return slot;
  }

  // Attends the staged pages of a slot (those in `use`, when given) and merges them into out/lse_.
  Status attend_slot(int slot, const std::vector<int64_t>* use, int pos, int n, int n_heads, const float* q,
                     float scale, float* out, ThreadPool& pool) {
    kv::ColdTier& cold = *store_->cold();
    Result<std::span<const kv::PageRef>> refs = cold.ready(slot);
    if (!refs.ok()) return refs.status();
    std::span<const kv::PageRef> pages = *refs;
    if (use != nullptr) {
      segment_.clear();
      const std::vector<int64_t>& have = cold.staged_indices(slot);
      for (size_t i = 0; i < have.size(); ++i) {
        if (std::binary_search(use->begin(), use->end(), have[i])) segment_.push_back(pages[i]);
      }
      pages = segment_;
    }
    if (pages.empty()) return Status();
    const int hd = geometry().head_dim;
    const size_t rows = static_cast<size_t>(n) * n_heads;
    kernels::paged_attention(make_view(pages, true), pos, n, n_heads, q, scale, part_.data(), pool, part_lse_.data());
    kernels::merge_attention(out, lse_.data(), part_.data(), part_lse_.data(), static_cast<int64_t>(rows), hd);
    return Status();
  }

  // Sparse decode: choose this layer's pages, read what the prefetch missed.
  Status issue_sparse(int layer, int n_heads, const float* q, float scale) {
    kv::ColdTier& cold = *store_->cold();
    const int64_t n_cold = store_->n_cold(layer);
    const kv::PageFormat& format = *cold.page(layer, 0).format;
    const size_t slot_bytes = kv::PageFile::slot_bytes(format.page_bytes);
    const int64_t want = std::clamp<int64_t>(
        static_cast<int64_t>(cold.options().sparse_step_bytes / geometry().n_layers / slot_bytes), 1,
        std::min<int64_t>(n_cold, cold.staging_capacity()));
    const float* query = q;
    if (store_->keys_rotated()) {
      rotated_q_.assign(q, q + static_cast<size_t>(n_heads) * geometry().head_dim);
      kv::rotate_heads(rotated_q_.data(), n_heads, geometry().head_dim);
      query = rotated_q_.data();
    }
    cold.score_pages(layer, query, n_heads, scale, scores_);
    selection_.resize(static_cast<size_t>(n_cold));
    std::iota(selection_.begin(), selection_.end(), 0);
    std::partial_sort(selection_.begin(), selection_.begin() + want, selection_.end(),
                      [&](int64_t a, int64_t b) { return scores_[a] > scores_[b] || (scores_[a] == scores_[b] && a > b); });
    selection_.resize(static_cast<size_t>(want));
    std::sort(selection_.begin(), selection_.end());
    // What the prefetch brought (a slot holding this layer), and what it missed.
    prefetch_slot_ = -1;
    for (int s = 0; s < 2; ++s) {
      if (cold.slot_busy(s) && cold.staged_layer(s) == layer) prefetch_slot_ = s;
    }
    misses_.clear();
    uint64_t hits = 0;
    for (int64_t i : selection_) {
      const bool have = prefetch_slot_ >= 0 && std::binary_search(cold.staged_indices(prefetch_slot_).begin(),
                                                                   cold.staged_indices(prefetch_slot_).end(), i);
      if (have) {
        ++hits;
      } else {
        misses_.push_back(i);
      }
    }
    cold.note_prefetch(hits, misses_.size());
    miss_slot_ = -1;
    if (!misses_.empty()) {
      Result<int> slot = ensure_staged(layer, misses_, prefetch_slot_);
      if (!slot.ok()) return slot.status();
      miss_slot_ = *slot;
    }
    // Kept as logical page numbers: a sliding window may drop the layer's oldest cold pages before its next
    // step, which renumbers the rest (kv::ColdTier::drop_oldest).
    last_selection_[layer] = selection_;
    for (int64_t& i : last_selection_[layer]) i += store_->first_cold_page(layer);
    return Status();
  }

  Status finish_sparse(int layer, int pos, int n_heads, const float* q, float scale, float* out, ThreadPool& pool) {
    kv::ColdTier& cold = *store_->cold();
    if (prefetch_slot_ >= 0) {
      if (Status s = attend_slot(prefetch_slot_, &selection_, pos, 1, n_heads, q, scale, out, pool); !s.ok()) return s;
      cold.release(prefetch_slot_);
    }
    if (miss_slot_ >= 0) {
      if (Status s = attend_slot(miss_slot_, nullptr, pos, 1, n_heads, q, scale, out, pool); !s.ok()) return s;
      cold.release(miss_slot_);
    }
    return Status();
  }

  // After layer l (or during its last segment): put the next layer's first cold pages in flight (exact: its
  // first segment's; sparse: what it chose last step), so the reads overlap the rest of this layer and the
  // next layer's projections. `keep`: a slot still in use.
  void prefetch_next(int layer, bool sparse, int keep) {
    const int next = (layer + 1) % geometry().n_layers;
    const int64_t n_cold = store_->n_cold(next);
    if (n_cold == 0) return;
    std::vector<int64_t> idx;
    if (sparse) {
      idx = last_selection_[next];
      for (int64_t& i : idx) i -= store_->first_cold_page(next);
      std::erase_if(idx, [&](int64_t i) { return i < 0 || i >= n_cold; });
      if (idx.empty()) return;
    } else {
      idx = range(0, std::min<int64_t>(store_->segment_pages() - store_->lead_entries(next), n_cold));
    }
    // A failed submission is not an error here: the layer reads its pages itself when it runs.
    (void)ensure_staged(next, idx, keep);
  }

  std::unique_ptr<kv::TieredKvStore> store_;
  std::vector<kv::PageRef> pages_;    // scratch: the layer's pages in position order (cold ones: data null)
  std::vector<kv::PageRef> segment_;  // scratch: one segment with its cold pages filled in, or a subset
  std::vector<int> segment_starts_;   // [segments + 1] scratch: the layer's segments as page-list offsets
  std::vector<float> lse_;            // [n, n_heads] log-sum-exp of the attention so far
  std::vector<float> part_, part_lse_;  // [n, n_heads, head_dim], [n, n_heads]: one segment's attention
  std::vector<float> rotated_q_, scores_;
  std::vector<int64_t> selection_, misses_;
  std::vector<std::vector<int64_t>> last_selection_;  // [n_layers] sparse choice of the previous step (logical pages)
  int prefetch_slot_ = -1, miss_slot_ = -1;
  int window_ = 0;        // the AttentionParams of the layer being attended (make_view passes them on)
  float softcap_ = 0;
};

// "re-encoded N pages: X ms of work in the background (where), the decode thread waited Y ms".
std::string PagedKvCache::reencode_summary() const {
  char buf[256];
  std::snprintf(buf, sizeof buf, "re-encoded %lld pages: %.1f ms of work",
                static_cast<long long>(store_->reencoded_pages()), store_->reencode_seconds() * 1e3);
  std::string s = buf;
  if (!store_->background_reencode()) return s + " on the decode thread";
  const char* where =
      store_->background_shares_workers() ? "in the thread pool's gaps between jobs" : "on a thread of its own";
  std::snprintf(buf, sizeof buf, " in the background (%s), the decode thread waited %.1f ms", where,
                store_->reencode_wait_seconds() * 1e3);
  return s + buf;
}

// Per layer: positions held and released behind sliding windows (empty without windowed layers).
std::string PagedKvCache::window_summary() const {
  const KvGeometry& g = geometry();
  if (g.layer_windows.empty()) return {};
  std::string s = "\nsliding-window layers released " + std::to_string(store_->released_pages()) +
                  " pages; positions held per layer:";
  for (int l = 0; l < g.n_layers; ++l) {
    const int64_t held = store_->n_tokens(l) - store_->released_positions(l);
    s += " " + std::to_string(held) + (g.window(l) > 0 ? "w" : "");
  }
  return s + " (w: window " + std::to_string(*std::max_element(g.layer_windows.begin(), g.layer_windows.end())) + ")";
}

KvUsage PagedKvCache::usage() const {
  store_->settle();  // pending re-encodes would count both the old and the new page
  const kv::KvMemoryReport m = store_->memory();
  KvUsage u;
  u.ram_bytes = m.total_bytes;
  u.budget_bytes = m.budget_bytes;
  u.budgeted_bytes = store_->budget_resident_bytes();
  u.floor_bytes = store_->budget_floor_bytes();
  // Emptied: the hot rings, sinks and cold-tier buffers stay; each layer's cold index gives its memory back
  // (kv::ColdTier::truncate).
  u.empty_bytes = store_->fixed_bytes();
  if (const kv::ColdTier* cold = store_->cold()) {
    for (int l = 0; l < geometry().n_layers; ++l) u.empty_bytes -= cold->index_ram_bytes(l);
  }
  u.cold_pages = m.cold_pages;
  u.cold_bytes = m.cold_disk_bytes;
  for (int p = 0; p < kv::kPrecisionCount; ++p) {
    if (m.page_count[p] == 0) continue;
    u.ram_pages.push_back({kv::precision_name(static_cast<kv::Precision>(p)), m.page_count[p], m.page_bytes[p]});
  }
  return u;
}

std::string PagedKvCache::describe() const {
  store_->settle();
  std::string s = "paged KV cache, ladder " + store_->ladder().describe() + ", keys " +
                  (store_->keys_rotated() ? "rotated per-token" : "per-channel") + "\n" + store_->memory().describe() +
                  "\n" + reencode_summary();
  s += window_summary();
  if (const kv::ColdTier* cold = store_->cold()) {
    const kv::ColdStats& c = cold->stats();
    const kv::PageFileStats& f = cold->file().stats();
    char buf[512];
    std::snprintf(buf, sizeof buf,
                  "\ncold tier (%s reads, page file in %s, %s, %s): spilled %llu pages (%.2f MiB) in %.1f ms; read %llu "
                  "pages (%.2f MiB), stalled %.1f ms",
                  cold->options().mode == kv::ColdReadMode::Exact ? "exact" : "sparse", cold->file().dir().c_str(),
                  cold->file().direct() ? "O_DIRECT" : "buffered", cold->file().uring() ? "io_uring" : "pread/pwrite",
                  static_cast<unsigned long long>(c.spilled_pages), c.spilled_bytes / 1048576.0, f.write_seconds * 1e3,
                  static_cast<unsigned long long>(c.read_pages), c.read_bytes / 1048576.0, c.stall_seconds * 1e3);
    std::string line = buf;
    if (c.dropped_pages > 0) {
      std::snprintf(buf, sizeof buf, "; dropped %llu cold pages unread behind sliding windows (%llu cold now)",
                    static_cast<unsigned long long>(c.dropped_pages), static_cast<unsigned long long>(cold->total_pages()));
      line += buf;
    }
    if (c.prefetch_hits + c.prefetch_misses > 0) {
      std::snprintf(buf, sizeof buf, "; sparse prefetch hit %.1f%% of %llu chosen pages",
                    100.0 * c.prefetch_hits / static_cast<double>(c.prefetch_hits + c.prefetch_misses),
                    static_cast<unsigned long long>(c.prefetch_hits + c.prefetch_misses));
      line += buf;
    }
    s += line;
  }
  if (!store_->budget_warning().empty()) s += "\nwarning: " + store_->budget_warning();
  return s;
}

}  // namespace

Result<kv::TieredKvOptions> resolve_tiered_kv_options(const KvCacheOptions& options) {
  if (options.sinks < 0 || options.sinks > kv::kTokensPerPage) {
    return Status::error("--kv-sinks must be between 0 and " + std::to_string(kv::kTokensPerPage));
  }
  auto ladder = kv::parse_ladder(options.ladder, options.sinks);
  if (!ladder.ok()) return Status::error(ladder.error());
  kv::TieredKvOptions tiered;
  tiered.ladder = *ladder;
  if (options.key_mode == "channel") {
    tiered.key_mode = kv::KeyMode::PerChannel;
  } else if (options.key_mode == "rotated") {
    tiered.key_mode = kv::KeyMode::RotatedPerToken;
  } else {
    return Status::error("unknown key mode '" + options.key_mode + "' (--kv-keys: channel or rotated)");
  }
  if (options.budget_bytes > 0 && options.spill_dir.empty()) {
    return Status::error("--kv-budget needs --kv-spill DIR (where the pages that do not fit go)");
  }
  if (options.budget_bytes == 0 && !options.spill_dir.empty()) {
    return Status::error("--kv-spill needs --kv-budget BYTES (how much of the cache stays in RAM)");
  }
  tiered.budget_bytes = options.budget_bytes;
  tiered.cold.spill_dir = options.spill_dir;
  if (options.cold_mode == "exact") {
    tiered.cold.mode = kv::ColdReadMode::Exact;
  } else if (options.cold_mode == "sparse") {
    tiered.cold.mode = kv::ColdReadMode::Sparse;
  } else {
    return Status::error("unknown cold read mode '" + options.cold_mode + "' (--kv-cold: exact or sparse)");
  }
  if (options.cold_read_bytes > 0) tiered.cold.sparse_step_bytes = options.cold_read_bytes;
  return tiered;
}

Result<std::unique_ptr<KvCache>> make_kv_cache(const ModelConfig& config, int max_tokens,
                                               const KvCacheOptions& options, ThreadPool* pool) {
  if (options.ladder == "contiguous") {
    if (options.budget_bytes > 0) return Status::error("--kv-budget needs the paged cache (not --kv contiguous)");
    return make_contiguous_kv_cache(config, max_tokens);
  }
  auto tiered = resolve_tiered_kv_options(options);
  if (!tiered.ok()) return tiered.status();
  tiered->background_reencode = true;
  tiered->background_pool = pool;
  auto store = kv::TieredKvStore::create(config.kv_geometry(max_tokens), *tiered);
  if (!store.ok()) return Status::error(store.error());
  return std::unique_ptr<KvCache>(new PagedKvCache(std::move(*store)));
}

}  // namespace kvtier
