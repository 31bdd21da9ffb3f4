// Page pool: slabs, free lists, reference counts, byte accounting.
#include "kv/page_pool.h"

#include <cassert>
#include <cstdlib>
#include <cstring>

#include <sys/mman.h>

#include "kv/page_format.h"

namespace kvtier::kv {

namespace {

// Slabs come straight from mmap and go back with munmap instead of the heap: as pages move down the
// ladder the pool creates and returns slabs of several sizes, and heap slabs left holes that the process
// kept (measured: a 16K-token prefill of tiny-llama-31m held ~7 MiB more than its live pages).
// Returns a kSlabBaseAlign-aligned mapping of `bytes` (a multiple of the 4 KiB page), or null.
uint8_t* map_slab(size_t bytes, size_t align) {
  constexpr size_t kPage = 4096;
  const size_t span = bytes + align - kPage;
  void* p = ::mmap(nullptr, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return nullptr;
  const uintptr_t base = reinterpret_cast<uintptr_t>(p);
  const uintptr_t aligned = (base + align - 1) & ~(uintptr_t{align} - 1);
  if (aligned > base) ::munmap(p, aligned - base);
  if (base + span > aligned + bytes) ::munmap(reinterpret_cast<void*>(aligned + bytes), base + span - (aligned + bytes));
  return reinterpret_cast<uint8_t*>(aligned);
}

}  // namespace

void PagePool::SlabDeleter::operator()(uint8_t* p) const { ::munmap(p, bytes); }

// Unmaps a slab with no live page and drops its free entries; its index range stays for reuse.
void PagePool::return_slab(SizeClass& c, Slab& slab) {
  c.free -= slab.free.size();
  slab.free.clear();
  slab.free.shrink_to_fit();
  slab.data.reset();
  resident_ -= c.slab_bytes;
  --c.held_slabs;
}

PagePool::PagePool(size_t max_bytes) : max_bytes_(max_bytes) {}
PagePool::~PagePool() = default;

int PagePool::add_size_class(size_t page_bytes, std::string name) {
  assert(page_bytes > 0 && page_bytes % kSectionAlign == 0);
  assert(classes_.size() < (1u << PageId::kClassBits));
  SizeClass c;
  c.name = std::move(name);
  c.page_bytes = page_bytes;
  auto slab_for = [&](size_t pages) { return (page_bytes * pages + kSlabGranule - 1) / kSlabGranule * kSlabGranule; };
  c.slab_bytes = slab_for(kMinPagesPerSlab);
  for (size_t pages = kMinPagesPerSlab + 1; pages <= 2 * kMinPagesPerSlab; ++pages) {
    const size_t bytes = slab_for(pages);
    // slack(bytes) / bytes < slack(best) / best, in integers.
    if ((bytes % page_bytes) * c.slab_bytes < (c.slab_bytes % page_bytes) * bytes) c.slab_bytes = bytes;
  }
  c.pages_per_slab = c.slab_bytes / page_bytes;
  classes_.push_back(std::move(c));
  return static_cast<int>(classes_.size()) - 1;
}

Result<PageId> PagePool::allocate(int size_class) {
  assert(size_class >= 0 && size_class < size_classes());
  SizeClass& c = classes_[size_class];
  size_t s = 0;  // the lowest held slab with a free page, else the lowest returned slot, else a new one
  if (c.free > 0) {
    while (c.slabs[s].free.empty()) ++s;
  } else {
    while (s < c.slabs.size() && c.slabs[s].data) ++s;
    if (max_bytes_ != 0 && resident_ + c.slab_bytes > max_bytes_) {
      return Status::error("KV page pool: class " + c.name + " needs a new " + std::to_string(c.slab_bytes) +
                           "-byte slab but the pool holds " + std::to_string(resident_) + " of its " +
                           std::to_string(max_bytes_) + "-byte cap");
    }
    const size_t first_index = s * c.pages_per_slab;
    if (first_index + c.pages_per_slab > (size_t{1} << PageId::kIndexBits)) {
      return Status::error("KV page pool: class " + c.name + " ran out of page indices");
    }
    uint8_t* memory = map_slab(c.slab_bytes, kSlabBaseAlign);
    if (memory == nullptr) {
      return Status::error("KV page pool: out of memory allocating a " + std::to_string(c.slab_bytes) +
                           "-byte slab for class " + c.name);
    }
    if (s == c.slabs.size()) {
      c.slabs.emplace_back();
      c.ref_counts.resize(first_index + c.pages_per_slab, 0);
    }
    Slab& slab = c.slabs[s];
    slab.data = std::unique_ptr<uint8_t, SlabDeleter>(memory, SlabDeleter{c.slab_bytes});
    // Push in reverse so that pages are handed out in address order.
    for (size_t i = c.pages_per_slab; i-- > 0;) slab.free.push_back(static_cast<uint32_t>(first_index + i));
    resident_ += c.slab_bytes;
    ++c.held_slabs;
    c.free += c.pages_per_slab;
  }
  Slab& slab = c.slabs[s];
  const uint32_t index = slab.free.back();
  slab.free.pop_back();
  --c.free;
  ++slab.live;
  c.ref_counts[index] = 1;
  ++c.live;
  return PageId::make(size_class, index);
}

const PagePool::SizeClass& PagePool::cls(PageId id) const {
  assert(id.valid() && id.size_class() < size_classes());
  return classes_[id.size_class()];
}

void PagePool::retain(PageId id) {
  SizeClass& c = classes_[id.size_class()];
  assert(c.ref_counts[id.index()] > 0);
  ++c.ref_counts[id.index()];
}

void PagePool::release(PageId id) {
  SizeClass& c = classes_[id.size_class()];
  assert(c.ref_counts[id.index()] > 0);
  if (--c.ref_counts[id.index()] != 0) return;
  --c.live;
  Slab& slab = c.slabs[id.index() / c.pages_per_slab];
  --slab.live;
  if (slab.live > 0) {
    slab.free.push_back(id.index());
    ++c.free;
    return;
  }
  return_slab(c, slab);  // the slab's last page: give the slab back
}

size_t PagePool::compact(int size_class, const std::function<void(PageId from, PageId to)>& relocated) {
  assert(size_class >= 0 && size_class < size_classes());
  SizeClass& c = classes_[size_class];
  size_t moved = 0;
  while (c.free >= c.pages_per_slab && c.held_slabs > 1) {
    // The sparsest held slab whose pages can all move (none shared); the highest on ties.
    size_t victim = c.slabs.size();
    for (size_t s = 0; s < c.slabs.size(); ++s) {
      const Slab& slab = c.slabs[s];
      if (!slab.data || slab.live == 0) continue;
      bool movable = true;
      for (size_t i = s * c.pages_per_slab; i < (s + 1) * c.pages_per_slab && movable; ++i) movable = c.ref_counts[i] <= 1;
      if (movable && (victim == c.slabs.size() || slab.live <= c.slabs[victim].live)) victim = s;
    }
    // Its pages fit in the other slabs' free slots only if those hold at least its live count.
    if (victim == c.slabs.size() || c.free - c.slabs[victim].free.size() < c.slabs[victim].live) break;
    Slab& from_slab = c.slabs[victim];
    for (size_t i = victim * c.pages_per_slab; i < (victim + 1) * c.pages_per_slab; ++i) {
      if (c.ref_counts[i] == 0) continue;
      size_t s = 0;  // the lowest other slab with a free slot
      while (s == victim || c.slabs[s].free.empty()) ++s;
      Slab& to_slab = c.slabs[s];
      const uint32_t to = to_slab.free.back();
      to_slab.free.pop_back();
      ++to_slab.live;
      --c.free;
      std::memcpy(to_slab.data.get() + (to % c.pages_per_slab) * c.page_bytes,
                  from_slab.data.get() + (i % c.pages_per_slab) * c.page_bytes, c.page_bytes);
      c.ref_counts[to] = 1;
      c.ref_counts[i] = 0;
      --from_slab.live;
      relocated(PageId::make(size_class, static_cast<uint32_t>(i)), PageId::make(size_class, to));
      ++moved;
    }
    assert(from_slab.live == 0);
    return_slab(c, from_slab);
  }
  return moved;
}

uint32_t PagePool::ref_count(PageId id) const { return cls(id).ref_counts[id.index()]; }

uint8_t* PagePool::data(PageId id) { return const_cast<uint8_t*>(static_cast<const PagePool*>(this)->data(id)); }

const uint8_t* PagePool::data(PageId id) const {
  const SizeClass& c = cls(id);
  const size_t slab = id.index() / c.pages_per_slab;
  const size_t slot = id.index() % c.pages_per_slab;
  assert(slab < c.slabs.size() && c.slabs[slab].data);
  return c.slabs[slab].data.get() + slot * c.page_bytes;
}

size_t PagePool::page_bytes(int size_class) const { return classes_[size_class].page_bytes; }

SizeClassStats PagePool::stats(int size_class) const {
  const SizeClass& c = classes_[size_class];
  SizeClassStats s;
  s.name = c.name;
  s.page_bytes = c.page_bytes;
  s.slab_bytes = c.slab_bytes;
  s.pages_per_slab = c.pages_per_slab;
  s.slabs = c.held_slabs;
  s.live_pages = c.live;
  s.free_pages = c.free;
  s.resident_bytes = s.slabs * c.slab_bytes;
  s.live_bytes = c.live * c.page_bytes;
  s.slack_bytes = s.slabs * (c.slab_bytes - c.pages_per_slab * c.page_bytes);
  return s;
}

size_t PagePool::resident_bytes() const { return resident_; }

size_t PagePool::live_bytes() const {
  size_t total = 0;
  for (const SizeClass& c : classes_) total += c.live * c.page_bytes;
  return total;
}

}  // namespace kvtier::kv
