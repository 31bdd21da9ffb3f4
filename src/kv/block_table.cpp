#include "kv/block_table.h"

#include <cassert>

namespace kvtier::kv {

void BlockTable::append(int layer, PageId page, int rung) {
  assert(page.valid() && rung >= 0 && rung < 256);
  pages_[layer].push_back(page);
  rungs_[layer].push_back(static_cast<uint8_t>(rung));
}

void BlockTable::append_released(int layer, int rung) {
  assert(rung >= 0 && rung < 256);
  pages_[layer].push_back(PageId{});
  rungs_[layer].push_back(static_cast<uint8_t>(rung));
}

PageId BlockTable::replace(int layer, int64_t i, PageId page, int rung) {
  assert(i >= 0 && i < n_pages(layer));
  const PageId old = pages_[layer][i];
  pages_[layer][i] = page;
  rungs_[layer][i] = static_cast<uint8_t>(rung);
  return old;
}

bool BlockTable::relocate(PageId from, PageId to) {
  for (std::vector<PageId>& layer : pages_) {
    for (PageId& id : layer) {
      if (id == from) {
        id = to;
        return true;
      }
    }
  }
  return false;
}

std::vector<PageId> BlockTable::truncate(int layer, int64_t n) {
  std::vector<PageId> removed;
  if (n >= n_pages(layer)) return removed;
  removed.assign(pages_[layer].begin() + n, pages_[layer].end());
  pages_[layer].resize(n);
  rungs_[layer].resize(n);
  return removed;
}

}  // namespace kvtier::kv
