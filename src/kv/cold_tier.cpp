// The cold tier (see kv/cold_tier.h).
#include "kv/cold_tier.h"

#include <xxhash.h>

#include <algorithm>
#include <cassert>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>

#include "kv/codec.h"
#include "kvtier/f16.h"

namespace kvtier::kv {

namespace {
constexpr size_t kSpillBatch = 8;  // pages per write batch (the write buffer holds this many slots)

uint8_t* aligned_buffer(size_t bytes) {
  return static_cast<uint8_t*>(std::aligned_alloc(kFileBlock, (bytes + kFileBlock - 1) / kFileBlock * kFileBlock));
}

// f16 bounds that still contain x after rounding: the largest half <= x, the smallest half >= x.
uint16_t f16_round_down(float x) {
  uint16_t h = f32_to_f16(x);
  if (f16_to_f32(h) > x) h = (h & 0x8000u) ? static_cast<uint16_t>(h + 1) : (h == 0 ? 0x8001u : static_cast<uint16_t>(h - 1));
  return h;
}
uint16_t f16_round_up(float x) {
  uint16_t h = f32_to_f16(x);
  if (f16_to_f32(h) < x) h = (h & 0x8000u) ? (h == 0x8000u ? 0x0001u : static_cast<uint16_t>(h - 1)) : static_cast<uint16_t>(h + 1);
  return h;
}
}  // namespace

int segment_pages(size_t last_rung_page_bytes) {
  return static_cast<int>(std::clamp<size_t>((512 << 10) / std::max<size_t>(last_rung_page_bytes, 1), 16, 64));
}

namespace {
// Pages per staging buffer: one attention segment, or the sparse mode's per-layer share of its step budget
// if that is larger.
int staging_pages(const KvGeometry& geometry, const ColdOptions& options, size_t page_bytes) {
  const size_t sparse_pages = options.sparse_step_bytes / std::max(geometry.n_layers, 1) / PageFile::slot_bytes(page_bytes);
  return static_cast<int>(std::max<size_t>(segment_pages(page_bytes), options.mode == ColdReadMode::Sparse ? sparse_pages : 0));
}
}  // namespace

size_t ColdTier::fixed_ram_bytes(const KvGeometry& geometry, const ColdOptions& options, size_t page_bytes) {
  const size_t slot = PageFile::slot_bytes(page_bytes);
  return 2 * staging_pages(geometry, options, page_bytes) * slot + kSpillBatch * slot;
}

size_t ColdTier::ram_bytes_per_page(const KvGeometry& geometry) {
  return sizeof(ColdPage) + static_cast<size_t>(geometry.n_kv_heads) * 2 * geometry.head_dim * sizeof(uint16_t);
}

Result<std::unique_ptr<ColdTier>> ColdTier::create(const KvGeometry& geometry, const ColdOptions& options,
                                                   size_t page_bytes) {
  auto file = PageFile::create(options.spill_dir);
  if (!file.ok()) return file.status();
  std::unique_ptr<ColdTier> t(new ColdTier());
  t->geometry_ = geometry;
  t->options_ = options;
  t->file_ = std::move(*file);
  t->index_.resize(geometry.n_layers);
  t->summaries_.resize(geometry.n_layers);
  t->summary_floats_ = static_cast<size_t>(geometry.n_kv_heads) * 2 * geometry.head_dim;
  const size_t slot = PageFile::slot_bytes(page_bytes);
  t->staging_pages_ = staging_pages(geometry, options, page_bytes);
  t->staging_bytes_ = t->staging_pages_ * slot;
  for (Slot& s : t->slots_) {
    s.buffer = aligned_buffer(t->staging_bytes_);
    if (s.buffer == nullptr) return Status::error("cold tier: out of memory for the staging buffers");
  }
  t->write_buffer_bytes_ = kSpillBatch * slot;
  t->write_buffer_ = aligned_buffer(t->write_buffer_bytes_);
  if (t->write_buffer_ == nullptr) return Status::error("cold tier: out of memory for the write buffer");
  return t;
}

ColdTier::~ColdTier() {
  if (file_) file_->drain();
  for (Slot& s : slots_) std::free(s.buffer);
  std::free(write_buffer_);
}

uint64_t ColdTier::total_pages() const {
  uint64_t n = 0;
  for (const auto& l : index_) n += l.size();
  return n;
}

uint64_t ColdTier::disk_bytes() const {
  uint64_t bytes = 0;
  for (const auto& l : index_) {
    for (const ColdPage& p : l) bytes += PageFile::slot_bytes(p.format->page_bytes);
  }
  return bytes;
}

size_t ColdTier::ram_bytes() const {
  size_t bytes = 2 * staging_bytes_ + write_buffer_bytes_;
  for (int l = 0; l < geometry_.n_layers; ++l) bytes += index_ram_bytes(l);
  return bytes;
}

size_t ColdTier::index_ram_bytes(int layer) const {
  return index_[layer].capacity() * sizeof(ColdPage) + summaries_[layer].capacity() * sizeof(uint16_t);
}

double ColdTier::write_seconds() const { return file_->stats().write_seconds; }

Status ColdTier::spill(std::span<const Spill> pages) {
  assert(pages.size() <= kSpillBatch);
  std::vector<PageFile::Write> writes;
  std::vector<uint64_t> offsets;
  const auto free_all = [&] {
    for (size_t i = 0; i < offsets.size(); ++i) {
      file_->free_slot(offsets[i], PageFile::slot_bytes(pages[i].format->page_bytes), pages[i].layer);
    }
  };
  size_t used = 0;
  for (const Spill& p : pages) {
    const size_t slot = PageFile::slot_bytes(p.format->page_bytes);
    Result<uint64_t> offset = file_->allocate_slot(slot, p.layer);
    if (!offset.ok()) {
      free_all();
      return offset.status();
    }
    offsets.push_back(*offset);
    uint8_t* dst = write_buffer_ + used;
    std::memcpy(dst, p.data, p.format->page_bytes);
    std::memset(dst + p.format->page_bytes, 0, slot - p.format->page_bytes);
    writes.push_back({*offset, dst, slot});
    used += slot;
  }
  if (Status s = file_->write_batch(writes); !s.ok()) {
    free_all();
    return s;
  }
  // Written: index the pages and summarise their keys.
  std::vector<float> k(static_cast<size_t>(kTokensPerPage) * geometry_.head_dim), v(k.size());
  const int hd = geometry_.head_dim;
  for (size_t i = 0; i < pages.size(); ++i) {
    const Spill& p = pages[i];
    assert(index_[p.layer].empty() || index_[p.layer].back().first_pos < p.first_pos);
    index_[p.layer].push_back({offsets[i], XXH3_64bits(p.data, p.format->page_bytes), p.first_pos,
                               static_cast<uint8_t>(p.rung), p.format});
    std::vector<uint16_t>& sums = summaries_[p.layer];
    const size_t base = sums.size();
    sums.resize(base + summary_floats_);
    for (int h = 0; h < geometry_.n_kv_heads; ++h) {
      decode_page_head(*p.format, p.data, h, kTokensPerPage, k.data(), v.data());
      uint16_t* mins = sums.data() + base + static_cast<size_t>(h) * 2 * hd;
      uint16_t* maxs = mins + hd;
      for (int d = 0; d < hd; ++d) {
        float lo = INFINITY, hi = -INFINITY;
        for (int t = 0; t < kTokensPerPage; ++t) {
          lo = std::min(lo, k[static_cast<size_t>(t) * hd + d]);
          hi = std::max(hi, k[static_cast<size_t>(t) * hd + d]);
        }
        mins[d] = f16_round_down(lo);
        maxs[d] = f16_round_up(hi);
      }
    }
    ++stats_.spilled_pages;
    stats_.spilled_bytes += p.format->page_bytes;
  }
  return Status();
}

void ColdTier::truncate(int layer, int64_t n_keep) {
  if (n_keep >= n_pages(layer)) return;
  file_->drain();
  release_all();
  for (int64_t i = n_keep; i < n_pages(layer); ++i) {
    file_->free_slot(index_[layer][i].offset, PageFile::slot_bytes(index_[layer][i].format->page_bytes), layer);
  }
  if (n_keep == 0) {  // an emptied layer gives its index memory back (ram_bytes() counts capacity)
    std::vector<ColdPage>().swap(index_[layer]);
    std::vector<uint16_t>().swap(summaries_[layer]);
    return;
  }
  index_[layer].resize(n_keep);
  summaries_[layer].resize(static_cast<size_t>(n_keep) * summary_floats_);
  if (n_keep == 0) {  // an emptied layer gives its index memory back (ram_bytes counts capacity)
    index_[layer].shrink_to_fit();
    summaries_[layer].shrink_to_fit();
  }
}

void ColdTier::drop_oldest(int layer, int64_t n) {
  n = std::min(n, n_pages(layer));
  if (n <= 0) return;
  for (int s = 0; s < 2; ++s) {
    if (slots_[s].layer == layer) release(s);
  }
  // Newest first, so that the next spills take the dropped slots oldest first (in file order, as they came).
  for (int64_t i = n; i-- > 0;) {
    file_->free_slot(index_[layer][i].offset, PageFile::slot_bytes(index_[layer][i].format->page_bytes), layer);
  }
  index_[layer].erase(index_[layer].begin(), index_[layer].begin() + n);
  summaries_[layer].erase(summaries_[layer].begin(), summaries_[layer].begin() + static_cast<ptrdiff_t>(n * summary_floats_));
  stats_.dropped_pages += static_cast<uint64_t>(n);
}

const uint16_t* ColdTier::summary(int layer, int64_t i, int head) const {
  return summaries_[layer].data() + static_cast<size_t>(i) * summary_floats_ + static_cast<size_t>(head) * 2 * geometry_.head_dim;
}

Status ColdTier::read_page(int layer, int64_t i, uint8_t* dst) {
  // Through a staging buffer: O_DIRECT needs an aligned destination.
  if (slot_busy(0)) release(0);
  if (Status s = stage(0, layer, {i}); !s.ok()) return s;
  Result<std::span<const PageRef>> refs = ready(0);
  if (!refs.ok()) {
    release(0);
    return refs.status();
  }
  std::memcpy(dst, (*refs)[0].data, page(layer, i).format->page_bytes);
  release(0);
  return Status();
}

void ColdTier::score_pages(int layer, const float* q, int n_heads, float scale, std::vector<float>& out) const {
  const int64_t n = n_pages(layer);
  const int hd = geometry_.head_dim;
  const int group = n_heads / geometry_.n_kv_heads;
  out.assign(static_cast<size_t>(n), -INFINITY);
  std::vector<float> bounds(static_cast<size_t>(n));  // [n] one head's bound on each page
  std::vector<float> lo(hd), hi(hd);
  for (int h = 0; h < n_heads; ++h) {
    const int kvh = h / group;
    const float* qh = q + static_cast<size_t>(h) * hd;
    float best = -INFINITY;
    for (int64_t i = 0; i < n; ++i) {
      const uint16_t* s = summary(layer, i, kvh);
      float bound = 0;
      for (int d = 0; d < hd; ++d) bound += std::max(qh[d] * f16_to_f32(s[d]), qh[d] * f16_to_f32(s[hd + d]));
      bounds[i] = bound * scale;
      best = std::max(best, bounds[i]);
    }
    for (int64_t i = 0; i < n; ++i) out[i] = std::max(out[i], bounds[i] - best);
  }
}

Status ColdTier::stage(int slot, int layer, std::vector<int64_t> indices) {
  Slot& s = slots_[slot];
  assert(s.layer < 0);
  size_t used = 0;
  for (int64_t i : indices) used += PageFile::slot_bytes(page(layer, i).format->page_bytes);
  if (used > staging_bytes_) return Status::error("cold tier: staging request larger than a staging buffer");
  s.layer = layer;
  s.indices = std::move(indices);
  s.ticket = next_ticket_++;
  s.waited = false;
  s.refs.clear();
  // Pages in consecutive slots (a layer's pages usually are) are read with one request of up to 1 MiB.
  size_t offset = 0;
  uint64_t run_file = 0;
  size_t run_bytes = 0, run_buffer = 0;
  auto flush = [&]() -> Status {
    if (run_bytes == 0) return Status();
    Status st = file_->submit_read(s.ticket, run_file, run_bytes, s.buffer + run_buffer);
    run_bytes = 0;
    return st;
  };
  for (int64_t i : s.indices) {
    const ColdPage& p = page(layer, i);
    const size_t bytes = PageFile::slot_bytes(p.format->page_bytes);
    if (run_bytes == 0 || p.offset != run_file + run_bytes || run_bytes + bytes > kFileExtentTarget) {
      if (Status st = flush(); !st.ok()) return st;
      run_file = p.offset;
      run_buffer = offset;
    }
    run_bytes += bytes;
    offset += bytes;
    ++stats_.read_pages;
    stats_.read_bytes += bytes;
  }
  return flush();
}

bool ColdTier::staged(int slot, int layer, std::span<const int64_t> indices) const {
  const Slot& s = slots_[slot];
  return s.layer == layer && std::equal(s.indices.begin(), s.indices.end(), indices.begin(), indices.end());
}

Result<std::span<const PageRef>> ColdTier::ready(int slot) {
  Slot& s = slots_[slot];
  assert(s.layer >= 0);
  if (!s.waited) {
    const auto start = std::chrono::steady_clock::now();
    Status st = file_->wait(s.ticket);
    stats_.stall_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    s.waited = true;
    size_t offset = 0;
    for (int64_t i : s.indices) {
      const ColdPage& p = page(s.layer, i);
      const uint8_t* data = s.buffer + offset;
      offset += PageFile::slot_bytes(p.format->page_bytes);
      if (st.ok() && XXH3_64bits(data, p.format->page_bytes) != p.checksum) {
        st = Status::error("cold page of layer " + std::to_string(s.layer) + " holding positions [" +
                           std::to_string(p.first_pos) + ", " + std::to_string(p.first_pos + kTokensPerPage) +
                           ") failed its checksum (the page file in " + file_->dir() + " was damaged)");
      }
      if (!st.ok()) {
        first_bad_position_ = first_bad_position_ < 0 ? p.first_pos : std::min(first_bad_position_, p.first_pos);
        s.refs.clear();
        return st;
      }
      s.refs.push_back({data, p.format, p.first_pos, kTokensPerPage});
    }
  }
  return std::span<const PageRef>(s.refs);
}

void ColdTier::release(int slot) {
  Slot& s = slots_[slot];
  if (s.layer < 0) return;
  if (!s.waited) {
    (void)file_->wait(s.ticket);  // the buffer is about to be reused; the data is not wanted
  }
  file_->forget(s.ticket);
  s.layer = -1;
  s.indices.clear();
  s.refs.clear();
}

void ColdTier::release_all() {
  release(0);
  release(1);
}

}  // namespace kvtier::kv
