// Block table of one sequence: for each layer, the pool pages that hold its older positions, in order.
//
// Logical page i of a layer holds positions [first_pos + i * P, first_pos + (i + 1) * P) (first_pos is the
// number of sink tokens, which live in their own f16 buffer). The table stores pool page ids and the rung
// each page is at; the newest pages are in the layer's hot ring, not here. The kernels never see this
// table: the cache resolves it into a flat, position-ordered list of PageRef (data pointer, format,
// first position, valid rows) whose last entry carries the tail length.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "kv/page_pool.h"

namespace kvtier::kv {

class BlockTable {
 public:
  explicit BlockTable(int n_layers) : pages_(n_layers), rungs_(n_layers) {}

  int n_layers() const { return static_cast<int>(pages_.size()); }
  int64_t n_pages(int layer) const { return static_cast<int64_t>(pages_[layer].size()); }

  void append(int layer, PageId page, int rung);
  // Appends an entry whose page was released (a sliding window left it behind): no page, only its rung, as
  // TieredKvStore's release leaves an entry it empties (replace with PageId{}).
  void append_released(int layer, int rung);
  // Points logical page i at another page (after re-encoding); returns the page it held.
  PageId replace(int layer, int64_t i, PageId page, int rung);
  // Points the entry that holds `from` at `to` (the pool moved the page: PagePool::compact); false if no
  // entry holds it. Scans every layer: compaction moves few pages, and only after bursts of re-encoding.
  bool relocate(PageId from, PageId to);
  // Removes pages [n, n_pages) of a layer and returns them (for the caller to release).
  std::vector<PageId> truncate(int layer, int64_t n);

  PageId page(int layer, int64_t i) const { return pages_[layer][i]; }
  int rung(int layer, int64_t i) const { return rungs_[layer][i]; }
  std::span<const PageId> pages(int layer) const { return pages_[layer]; }
  const std::vector<uint8_t>& rungs(int layer) const { return rungs_[layer]; }

 private:
  std::vector<std::vector<PageId>> pages_;  // [n_layers][n_pages]
  std::vector<std::vector<uint8_t>> rungs_;  // [n_layers][n_pages]
};

}  // namespace kvtier::kv
