// The tiered, paged, quantized KV store of one sequence: sinks + pool pages on a precision ladder + a hot
// f16 ring per layer. This is the storage behind the paged KvCache; attention runs over the PageRef list
// that gather_pages() returns (kernels/paged_attention.h).
//
// Positions of a layer:
//   [0, n_sinks)                      sink buffer, f16, never re-encoded
//   [n_sinks, n_sinks + ring_first*P) pool pages, block table order, each at its ladder rung's precision
//   the rest                          the hot ring: ring_pages pages, one contiguous buffer per layer, the
//                                     last one partial; sized to the ladder's f16 rung (+1 page for the
//                                     tail) so that the newest tokens are read from cache-resident memory.
// Ring pages are f16 when the ladder has an f16 rung. When it starts quantized the ring is the one tail
// page, in k16vY (with_hot_rung, kv/ladder.h): f16 keys, values quantized on arrival at the first rung's
// width Y; when it fills, its keys are encoded and its value rows copied as they are.
// Keys of a RotatedPerToken store are kept rotated everywhere (ring and sinks included); rotate queries
// with kv::rotate_heads (the attention entry does it when PagedKv::keys_rotated is set).
#pragma once

#include <array>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "kv/block_table.h"
#include "kv/cold_tier.h"
#include "kv/ladder.h"
#include "kv/page_format.h"
#include "kv/page_pool.h"
#include "kvtier/kv_cache.h"
#include "kvtier/status.h"
#include "kvtier/thread_pool.h"

namespace kvtier::kv {

struct TieredKvOptions {
  LadderSpec ladder;                       // from parse_ladder
  KeyMode key_mode = KeyMode::PerChannel;  // how quantized keys are grouped
  int group = 0;                           // per-token group size (0: default_group(head_dim))
  size_t max_pool_bytes = 0;               // cap on the page pool (0: none)
  // Cold tier: when budget_bytes > 0, the store keeps what it holds in RAM (budget_resident_bytes) within
  // it by writing its oldest last-rung pages to a page file in cold.spill_dir (kv/cold_tier.h).
  size_t budget_bytes = 0;
  ColdOptions cold;
  // Re-encode pages in the background (off the decode critical path). A page's new encoding is swapped
  // into the block table at the layer's next append() or rebalance(), waiting for it if need be, so the
  // pages attention sees do not depend on thread timing: results are deterministic.
  bool background_reencode = false;
  // Where background re-encodes run: posted to this pool (ThreadPool::post: in its workers' gaps between
  // jobs when it fills every core), which must outlive the store; nullptr: a thread of the store's own.
  ThreadPool* background_pool = nullptr;
};

// Every byte the store holds, by tier and precision.
struct KvMemoryReport {
  size_t sink_bytes = 0;                           // all layers
  size_t ring_bytes = 0;                           // all layers (the hot tier)
  size_t ring_bytes_per_layer = 0;
  std::array<size_t, kPrecisionCount> page_count{};  // live pool pages by precision
  std::array<size_t, kPrecisionCount> page_bytes{};  // their bytes
  size_t pool_resident_bytes = 0;                  // slabs, including free pages and slack
  size_t pool_free_bytes = 0;                      // free pages + slab slack
  size_t total_bytes = 0;                          // sinks + rings + pool slabs
  int64_t n_tokens = 0;
  // Bits per cached element of the data actually held (sinks + live pages + the ring rows in use),
  // counting scales, mins and padding; free pool space is excluded.
  double bits_per_element = 0;
  // Cold tier (zero without one).
  size_t cold_pages = 0;
  uint64_t cold_disk_bytes = 0;   // page file slots of the cold pages
  size_t cold_ram_bytes = 0;      // their index and summaries + staging and write buffers
  size_t budget_bytes = 0;        // the --kv-budget, 0 = none
  size_t budget_resident_bytes = 0;  // what the budget is checked against (see TieredKvStore)
  std::string describe() const;
};

class TieredKvStore {
 public:
  static Result<std::unique_ptr<TieredKvStore>> create(const KvGeometry& geometry, const TieredKvOptions& options);
  // Pages in a layer's hot ring for this ladder: the f16 rung's pages + 1 for the partial tail page (two
  // when the f16 rung is unbounded, as in the f16 preset).
  static int ring_pages_for(const LadderSpec& ladder);
  ~TieredKvStore();

  const KvGeometry& geometry() const { return geometry_; }
  const LadderSpec& ladder() const { return options_.ladder; }
  KeyMode key_mode() const { return options_.key_mode; }
  bool keys_rotated() const { return options_.key_mode == KeyMode::RotatedPerToken; }
  int n_tokens(int layer) const { return layers_[layer].n_tokens; }
  const PageFormat& format(Precision p) const { return formats_[static_cast<int>(p)]; }
  // The format of the hot ring's pages (f16, or k16vY when the ladder starts quantized).
  const PageFormat& ring_format() const { return format(rungs_.rungs.front().precision); }

  // Appends positions [pos, pos + n) of one layer; pos must equal n_tokens(layer).
  //   k, v: [n, n_kv_heads, head_dim] f32 (keys RoPE-rotated, not Hadamard-rotated: the store does that).
  // Ring pages pushed out by the append are encoded to their rung at once; everything else that has
  // aged waits for rebalance().
  Status append(int layer, int pos, int n, const float* k, const float* v);

  // Drops positions >= n_tokens in every layer. Cutting into a quantized page decodes its kept rows
  // back into the ring as f16 (they are as exact as the page was).
  void truncate(int n_tokens);

  // Page moves the ladder asks for in one layer (pool pages and full ring pages), and applying them.
  // Ring pages are listed with from_rung 0 (the hot rung). Applying re-encodes each page to its target
  // precision (decode to f32, encode), swaps it into the block table and frees the old one.
  std::vector<PageMove> plan(int layer) const;
  Status apply(int layer, const std::vector<PageMove>& moves);
  Status rebalance(int layer);

  // The layer's pages in position order (sinks, pool pages, ring pages; the last one partial). Cold pages
  // are listed with data == nullptr: cold page i is entry i + lead_entries(layer); the cache fills them in
  // from the cold tier's staging buffers.
  void gather_pages(int layer, std::vector<PageRef>& out) const;
  // Entries per attention segment (kv/cold_tier.h: segment_pages).
  int segment_pages() const { return segment_pages_; }
  // The sink entry leads the list until a sliding window releases pages (the sinks are behind it then).
  int lead_entries(int layer) const {
    return n_sinks_ > 0 && layers_[layer].n_tokens > 0 && layers_[layer].released == 0 ? 1 : 0;
  }

  KvMemoryReport memory() const;
  // Waits for background re-encodes and swaps them in, so that memory() reports settled pages; the calling
  // thread runs queued jobs itself instead of only waiting. settle_layer: one layer's (a prefill batch's
  // cache calls it before the batch's attention).
  void settle() { drain(); }
  void settle_layer(int layer) { complete(layer); }

  // The cold tier (nullptr without a budget). Cold pages are the oldest pages a layer holds: logical pages
  // [first_cold_page, first_cold_page + n_cold) (pages before first_cold_page were released behind a sliding
  // window, and cold ones that fall behind it are dropped from the cold tier: ColdTier::drop_oldest), cold
  // page i of the tier is logical page first_cold_page + i; gather_pages() lists them with data == nullptr
  // and the cache attends them from the cold tier.
  ColdTier* cold() { return cold_.get(); }
  const ColdTier* cold() const { return cold_.get(); }
  int64_t n_cold(int layer) const { return cold_ ? cold_->n_pages(layer) : 0; }
  int64_t first_cold_page(int layer) const { return layers_[layer].released; }
  // Bytes the budget is checked against: sinks + hot rings + live pool pages + the cold tier's RAM, less the
  // pool pages of sliding-window layers that the layer's next rebalance() releases (they are behind the window
  // of the next position, and only wait for the attention that still reads them: they are never spilled).
  // (Free pool pages and slab slack come on top: at most a few slabs per size class, as the rungs above
  // the last hold a bounded number of pages.)
  size_t budget_resident_bytes() const;
  // The smallest budget the store can keep: hot rings, sinks and cold-tier buffers.
  size_t fixed_bytes() const;
  // A budget shared with other stores (kvtier serve; kv/budget_arbiter.h) moves at run time. set_budget sets it
  // and spills the oldest last-rung pages down to it, then gives emptied slabs back; it needs the cold tier (a
  // store created with a budget) and errors, changing nothing, below budget_floor_bytes(). A larger budget
  // brings no page back: cold pages stay on disk until truncated.
  Status set_budget(size_t bytes);
  size_t budget_bytes() const { return options_.budget_bytes; }
  // At least budget_resident_bytes() once every page that may go to disk went there: hot rings, sinks, pages above
  // the last rung, and the cold tier's buffers and index (counted as the index may grow while spilling). Without
  // a cold tier, budget_resident_bytes().
  size_t budget_floor_bytes() const;
  // The most appending n_tokens positions to every layer, and the ladder moves that follow, can add to
  // budget_resident_bytes(): the pages pushed out of the rings (exactly), their re-encodes in flight, and pages
  // crossing rungs.
  size_t budget_growth_bytes(int n_tokens) const;
  // Set when the budget could not be kept (the warm rungs alone exceed it, or a spill write failed and the
  // cold tier stopped taking pages); the text says which. Cleared by nothing: the caller reports it once.
  const std::string& budget_warning() const { return budget_warning_; }

  // Sessions: every tier written in the page format (cold pages read back and checked first), and read
  // back into an empty store of the same geometry and policy. policy() names what must match.
  std::string policy() const;
  Status save(ByteSink& out);
  Status load(ByteSource& in);
  void clear();  // drops every position of every layer
  int64_t reencoded_pages() const { return reencoded_pages_; }
  // Pages freed because they fell behind their layer's sliding window (all layers, since creation), and the
  // positions a layer no longer holds for that reason (0 for global layers).
  int64_t released_pages() const { return released_pages_; }
  int64_t released_positions(int layer) const {
    return layers_[layer].released > 0 ? page_first_pos(layers_[layer].released) : 0;
  }
  // Time spent re-encoding (in the background when it is on), and the time the caller's thread
  // waited for background re-encodes to finish.
  double reencode_seconds() const;
  double reencode_wait_seconds() const { return reencode_wait_seconds_; }
  bool background_reencode() const { return background_ != nullptr; }
  // Background re-encodes run in the pool's workers' gaps between jobs (ThreadPool::post), not on a thread
  // of their own.
  bool background_shares_workers() const { return tasks_ != nullptr && tasks_->tasks_share_workers(); }
  const PagePool& pool() const { return pool_; }

 private:
  struct Layer {
    uint8_t* sinks = nullptr;  // [1 page of sink_format_]
    uint8_t* ring = nullptr;   // [ring_pages_][ring page bytes], 64-byte aligned
    int64_t ring_first = 0;    // logical page number of the oldest ring page
    int64_t ring_count = 0;    // pages in the ring (the last may be partial)
    int n_tokens = 0;
    int64_t released = 0;      // leading pool pages dropped as behind a sliding window (entries invalid)
  };
  // Sliding-window layers (KvGeometry::layer_windows): frees the pool pages no later query can see (all their
  // positions are behind the window of the next position), without spilling or re-encoding them.
  void release_behind_window(int layer);
  TieredKvStore(const KvGeometry& geometry, const TieredKvOptions& options);
  uint8_t* ring_slot(int layer, int64_t page) const;
  int64_t page_first_pos(int64_t page) const { return n_sinks_ + page * kTokensPerPage; }
  Status evict_ring_front(int layer, bool background);
  Status reencode(int layer, const uint8_t* source, const PageFormat& source_format, int to_rung, PageId* out);
  // Background re-encoding: a job encodes logical page `index` of a layer from `source` into a new page of
  // its target rung; complete() swaps finished jobs into the table (waiting for them), drain() all layers.
  struct Job {
    int layer = 0;
    int64_t index = 0;
    int to_rung = 0;
    PageId source, target;
    const uint8_t* source_data = nullptr;  // raw pointers: the worker never touches the pool's tables
    uint8_t* target_data = nullptr;
    const PageFormat* from = nullptr;
    const PageFormat* to = nullptr;
    bool done = false;  // guarded by mu_
  };
  // Queued jobs, shared with the tasks posted for them: a task may run (and find the queue empty) after the
  // store is gone, so it holds this and never the store.
  struct Background {
    std::mutex mu;  // guards queue, Job::done, seconds
    std::condition_variable job_done;
    std::deque<Job*> queue;
    double seconds = 0;         // re-encoding time of posted tasks
    size_t scratch_floats = 0;  // [P, n_kv_heads, head_dim]: each of a task's k and v buffers
  };
  Status enqueue(int layer, int64_t index, PageId source, const PageFormat& from, int to_rung);
  bool pending(int layer, int64_t index) const;
  void complete(int layer);
  static void run_job(Background& background, Job& job, float* k, float* v);
  void drain();
  void compact_pool();
  // Spills the oldest last-rung pages until budget_resident_bytes() + incoming fits in the budget.
  Status make_room(size_t incoming);
  size_t ring_and_sink_bytes() const;
  // Logical pages of a layer wholly behind the window of its next position (0 for global layers): the next
  // rebalance() releases those it still holds.
  int64_t pages_behind_window(int layer) const { return pages_behind_window(layer, layers_[layer].n_tokens); }
  int64_t pages_behind_window(int layer, int64_t n_tokens) const;  // ... once it holds n_tokens positions
  size_t bytes_behind_window() const;  // the resident pool pages among them, all layers
  int64_t cold_end(int layer) const { return layers_[layer].released + n_cold(layer); }

  KvGeometry geometry_;
  TieredKvOptions options_;
  LadderSpec rungs_;  // with_hot_rung(ladder): rung 0 is the ring's (f16, or k16vY:0 when the spec starts quantized)
  int n_sinks_ = 0;
  int ring_pages_ = 0;
  int segment_pages_ = 16;
  std::array<PageFormat, kPrecisionCount> formats_{};
  std::array<int, kPrecisionCount> size_class_{};
  PageFormat sink_format_;
  PagePool pool_;
  BlockTable table_;
  std::vector<Layer> layers_;
  std::vector<float> scratch_k_, scratch_v_;  // [P, n_kv_heads, head_dim] re-encode / rotation buffers
  int64_t reencoded_pages_ = 0;
  int64_t released_pages_ = 0;
  double reencode_seconds_ = 0;
  std::unique_ptr<ColdTier> cold_;
  std::vector<std::vector<std::unique_ptr<Job>>> pending_;  // [n_layers] jobs not yet swapped in
  bool compaction_due_ = false;
  double reencode_wait_seconds_ = 0;
  std::shared_ptr<Background> background_;  // null without background re-encoding
  ThreadPool* tasks_ = nullptr;              // runs the posted re-encodes
  std::unique_ptr<ThreadPool> own_tasks_;    // options named no pool: a 1-thread pool (a thread of its own)
  bool spill_disabled_ = false;  // a spill write failed: keep everything in RAM from now on
  std::string budget_warning_;
};

}  // namespace kvtier::kv
