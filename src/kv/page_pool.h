// The page pool: fixed-size pages carved out of 16 KiB-aligned slabs of a few pages, one size class per
// page format.
//
// Pages are addressed by PageId (size class + index), never by pointer, so the block tables stay valid
// when a page is written out to disk and read back. Pages carry reference counts so that later a prefix
// can be shared between sequences; a page returns to its slab's free list when its count drops to zero.
// Pages are handed out from the lowest-numbered slab that has a free one, so that live pages pack into
// the first slabs and the last ones drain; a slab whose last page is freed goes back to the system at
// once (its index range is reused by the next new slab). Moving pages down the ladder frees pages all
// over a class's slabs (a prefill burst encodes many pages at the first rung, then all but the newest of
// each layer move on); compact() then relocates the pages of sparse slabs into the free slots of the
// others, for the owner to re-point its references, so that a class holds its live pages plus less than
// one slab of free slots. Every byte the pool holds is reported by stats():
// resident = in-use pages + free pages + slab slack.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "kvtier/status.h"

namespace kvtier::kv {

struct PageId {
  static constexpr uint32_t kClassBits = 6;
  static constexpr uint32_t kIndexBits = 32 - kClassBits;
  static constexpr uint32_t kInvalid = 0xFFFFFFFFu;
  uint32_t raw = kInvalid;

  static PageId make(int size_class, uint32_t index) {
    return PageId{static_cast<uint32_t>(size_class) << kIndexBits | index};
  }
  int size_class() const { return static_cast<int>(raw >> kIndexBits); }
  uint32_t index() const { return raw & ((1u << kIndexBits) - 1); }
  bool valid() const { return raw != kInvalid; }
  bool operator==(const PageId&) const = default;
};

struct SizeClassStats {
  std::string name;
  size_t page_bytes = 0;
  size_t slab_bytes = 0;
  size_t pages_per_slab = 0;
  size_t slabs = 0;           // slabs held now
  size_t live_pages = 0;      // reference count > 0
  size_t free_pages = 0;      // free slots of held slabs
  size_t resident_bytes = 0;  // slabs * slab_bytes
  size_t live_bytes = 0;      // live_pages * page_bytes
  size_t slack_bytes = 0;     // slab tails too small for one more page
};

class PagePool {
 public:
  // max_bytes: a cap on resident bytes (0 = none); allocate() fails past it.
  explicit PagePool(size_t max_bytes = 0);
  ~PagePool();
  PagePool(const PagePool&) = delete;
  PagePool& operator=(const PagePool&) = delete;

  // Adds a size class for pages of page_bytes (a multiple of 32). Its slabs hold kMinPagesPerSlab to
  // 2 * kMinPagesPerSlab pages, rounded up to kSlabGranule bytes: the count whose slab has the least slack
  // (the tail too small for a page) per byte, the smaller on ties; slabs start kSlabBaseAlign-aligned.
  // Small slabs keep a class's unused slots (less than one slab after compact()) to a few pages.
  static constexpr size_t kMinPagesPerSlab = 4;
  static constexpr size_t kSlabGranule = 4 * 1024;
  static constexpr size_t kSlabBaseAlign = 16 * 1024;
  int add_size_class(size_t page_bytes, std::string name);
  int size_classes() const { return static_cast<int>(classes_.size()); }

  // A page with reference count 1 (contents undefined), or an error naming the class and the cap.
  Result<PageId> allocate(int size_class);
  void retain(PageId id);
  void release(PageId id);  // frees the page at count zero
  uint32_t ref_count(PageId id) const;

  // Empties the sparsest slabs of a class while its free slots add up to a whole slab: each live page of
  // such a slab is copied into a free slot of a fuller one, relocated(from, to) is called (the owner
  // re-points its reference; `from` is invalid afterwards) and the emptied slab goes back. Pages with more
  // than one reference stay where they are. Invalidates data() pointers of the moved pages only.
  // Returns the number of pages moved.
  size_t compact(int size_class, const std::function<void(PageId from, PageId to)>& relocated);

  uint8_t* data(PageId id);
  const uint8_t* data(PageId id) const;
  size_t page_bytes(int size_class) const;

  SizeClassStats stats(int size_class) const;
  size_t resident_bytes() const;  // all slabs of all classes
  size_t live_bytes() const;

 private:
  struct SlabDeleter {
    size_t bytes;  // the mapping's length (munmap); set whenever a slab is held
    void operator()(uint8_t* p) const;
  };
  struct Slab {
    std::unique_ptr<uint8_t, SlabDeleter> data;  // [slab_bytes], kSlabGranule aligned; null: returned
    std::vector<uint32_t> free;                  // free page indices of this slab, LIFO (warm pages first)
    size_t live = 0;
  };
  struct SizeClass {
    std::string name;
    size_t page_bytes = 0;
    size_t slab_bytes = 0;
    size_t pages_per_slab = 0;
    std::vector<Slab> slabs;           // slab s holds page indices [s * pages_per_slab, (s + 1) * pages_per_slab)
    std::vector<uint32_t> ref_counts;  // [slabs.size() * pages_per_slab]
    size_t held_slabs = 0;             // slabs with data
    size_t free = 0;                   // free slots of held slabs
    size_t live = 0;
  };
  void return_slab(SizeClass& c, Slab& slab);

  const SizeClass& cls(PageId id) const;

  std::vector<SizeClass> classes_;
  size_t max_bytes_ = 0;
  size_t resident_ = 0;
};

}  // namespace kvtier::kv
