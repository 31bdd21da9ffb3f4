// The cold tier: the oldest pages of each layer, moved out of RAM into the page file (kv/page_file.h).
//
// What stays in RAM per cold page: its index entry (file offset, rung, xxHash of the page bytes) and a
// summary per KV head — the per-channel minimum and maximum of its keys, as f16 rounded outward so that they
// still bound every key — from which a query's largest possible score on the page is bounded (Quest):
//     max_t q.k_t  <=  sum_d max(q_d * kmin_d, q_d * kmax_d).
// Cold pages are a prefix of each layer's block table: pages leave RAM oldest first.
//
// Reading: two staging buffers (each `staging_bytes`, 4 KiB aligned). The cache asks for a set of cold pages
// of one layer in a buffer (stage), computes on the other buffer while the reads are in flight, and gets
// the pages back as PageRefs once they are in and their checksums match (ready). A checksum mismatch or
// read error is reported with the position range it affects (first_bad_position) — never used silently.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "kv/page_file.h"
#include "kv/page_format.h"
#include "kvtier/kv_cache.h"
#include "kvtier/status.h"

namespace kvtier::kv {

enum class ColdReadMode : uint8_t {
  Exact = 0,   // every cold page is read for every layer at every step; output identical to all-in-RAM
  Sparse = 1,  // decode reads only the cold pages whose score bound is highest, within a byte budget
};

// Attention runs over a layer's page list in segments, merged in order (model/kv_paged.cpp) — the same
// segments with or without a cold tier, so that exact cold reads give bit-identical results. A segment is
// about 512 KiB of pages at the ladder's last rung, 16 to 64 entries; a staging buffer holds one segment.
int segment_pages(size_t last_rung_page_bytes);

struct ColdOptions {
  std::string spill_dir;
  ColdReadMode mode = ColdReadMode::Sparse;
  size_t sparse_step_bytes = 2 << 20;   // sparse: cold bytes read per decode step, all layers together
};

struct ColdPage {
  uint64_t offset = 0;     // in the page file
  uint64_t checksum = 0;   // XXH3-64 of the page_bytes bytes
  int first_pos = 0;
  uint8_t rung = 0;
  const PageFormat* format = nullptr;
};

struct ColdStats {
  uint64_t spilled_pages = 0, spilled_bytes = 0;
  uint64_t dropped_pages = 0;                       // dropped unread: behind a sliding window (drop_oldest)
  uint64_t read_pages = 0, read_bytes = 0;
  uint64_t prefetch_hits = 0, prefetch_misses = 0;  // sparse: pages found in / missing from the prefetch
  double stall_seconds = 0;                         // blocked waiting for reads
  double write_seconds = 0;
};

class ColdTier {
 public:
  // page_bytes: the size of a cold page (the last rung's format).
  static Result<std::unique_ptr<ColdTier>> create(const KvGeometry& geometry, const ColdOptions& options,
                                                  size_t page_bytes);
  ~ColdTier();

  // RAM the tier needs before any page is cold (staging and write buffers), and per cold page (index entry
  // and key summary), for a cold page of page_bytes: what `kvtier plan` and the budget count.
  static size_t fixed_ram_bytes(const KvGeometry& geometry, const ColdOptions& options, size_t page_bytes);
  static size_t ram_bytes_per_page(const KvGeometry& geometry);

  const ColdOptions& options() const { return options_; }
  int64_t n_pages(int layer) const { return static_cast<int64_t>(index_[layer].size()); }
  const ColdPage& page(int layer, int64_t i) const { return index_[layer][i]; }
  uint64_t total_pages() const;
  uint64_t disk_bytes() const;   // page bytes held in the file (slots, live pages only)
  size_t ram_bytes() const;      // index + summaries + staging buffers: what counts against the budget
  // One layer's index and summaries (their vectors' capacity: they at most double as they grow, so a layer
  // that comes to hold n cold pages holds at most max(index_ram_bytes, 2 * n * ram_bytes_per_page) for them).
  size_t index_ram_bytes(int layer) const;
  size_t summary_bytes_per_page() const { return summary_floats_ * sizeof(uint16_t); }
  // Pages one staging buffer holds (every cold page has the format of the ladder's last rung).
  int staging_capacity() const { return staging_pages_; }
  const PageFile& file() const { return *file_; }
  PageFile& file() { return *file_; }
  const ColdStats& stats() const { return stats_; }
  void note_prefetch(uint64_t hits, uint64_t misses) {
    stats_.prefetch_hits += hits;
    stats_.prefetch_misses += misses;
  }
  double write_seconds() const;

  // Writes pages to the file and appends them to their layers' cold prefixes (in the order given; each
  // layer's pages must come oldest first and follow its current cold prefix). On error nothing is added
  // and the slots are freed: the caller keeps the pages in RAM.
  struct Spill {
    int layer;
    const uint8_t* data;
    const PageFormat* format;
    int rung;
    int first_pos;
  };
  Status spill(std::span<const Spill> pages);

  // Drops cold pages [n_keep, n_pages) of a layer (waits for reads in flight first).
  void truncate(int layer, int64_t n_keep);
  // Drops a layer's n oldest cold pages (a sliding-window layer's pages that fell behind its window): their
  // slots go back to the layer's free list for its next spills, their index entries and summaries go, and the
  // layer's remaining pages are renumbered from 0. Reads staged for the layer are released (their indices
  // would name other pages now).
  void drop_oldest(int layer, int64_t n);

  // Reads one cold page into dst (page_bytes), verifying its checksum; synchronous (truncate, save).
  Status read_page(int layer, int64_t i, uint8_t* dst);

  // Summary of cold page i, KV head h: [2][head_dim] f16, key minimum then maximum per channel.
  const uint16_t* summary(int layer, int64_t i, int head) const;

  // Upper bounds of the attention logits of each query head on each cold page of a layer, normalised per
  // head (0 for the page with the head's largest bound), then the best over the heads:
  //   q: [n_heads, head_dim] (rotated when the keys are); out: [n_pages(layer)].
  void score_pages(int layer, const float* q, int n_heads, float scale, std::vector<float>& out) const;

  // Staging: slot 0 or 1.
  Status stage(int slot, int layer, std::vector<int64_t> indices);
  bool staged(int slot, int layer, std::span<const int64_t> indices) const;
  const std::vector<int64_t>& staged_indices(int slot) const { return slots_[slot].indices; }
  int staged_layer(int slot) const { return slots_[slot].layer; }
  bool slot_busy(int slot) const { return slots_[slot].layer >= 0; }
  // Waits for the slot's reads, checks every checksum, and returns the pages (position order of indices).
  Result<std::span<const PageRef>> ready(int slot);
  void release(int slot);
  void release_all();

  // First position of a page that failed its checksum or could not be read (-1: none so far).
  int first_bad_position() const { return first_bad_position_; }
  void clear_bad_position() { first_bad_position_ = -1; }

 private:
  ColdTier() = default;
  struct Slot {
    int layer = -1;
    std::vector<int64_t> indices;
    std::vector<PageRef> refs;
    uint8_t* buffer = nullptr;  // [staging_bytes], kFileBlock aligned
    uint64_t ticket = 0;
    bool waited = false;
  };

  KvGeometry geometry_;
  ColdOptions options_;
  std::unique_ptr<PageFile> file_;
  std::vector<std::vector<ColdPage>> index_;       // [n_layers][cold pages]
  std::vector<std::vector<uint16_t>> summaries_;   // [n_layers][cold pages][n_kv_heads][2][head_dim] f16
  size_t summary_floats_ = 0;                      // per page
  int staging_pages_ = 0;
  size_t staging_bytes_ = 0;                       // each staging buffer
  std::array<Slot, 2> slots_;
  uint8_t* write_buffer_ = nullptr;                // [write_buffer_bytes_], kFileBlock aligned
  size_t write_buffer_bytes_ = 0;
  uint64_t next_ticket_ = 1;
  int first_bad_position_ = -1;
  ColdStats stats_;
};

}  // namespace kvtier::kv
