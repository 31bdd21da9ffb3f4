// The page pool: fixed-size pages carved out of 64 KiB-aligned slabs, one size class per page format.
//
// Pages are addressed by PageId (size class + index), never by pointer, so the block tables stay valid
// when a page is written out to disk and read back. Pages carry reference counts so that later a prefix
// can be shared between sequences; a page returns to its class's free list when its count drops to zero.
// Slabs are never returned to the system while the pool lives (pages are recycled instead); every byte
// the pool holds is reported by stats(): resident = in-use pages + free pages + slab slack.
#pragma once

#include <cstddef>
#include <cstdint>
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
  size_t slabs = 0;
  size_t live_pages = 0;      // reference count > 0
  size_t free_pages = 0;      // carved, on the free list
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

  // Adds a size class for pages of page_bytes (a multiple of 32). Its slabs are the smallest multiple of
  // 64 KiB that holds at least kMinPagesPerSlab pages, so slack stays under 1/kMinPagesPerSlab of a slab.
  static constexpr size_t kMinPagesPerSlab = 16;
  int add_size_class(size_t page_bytes, std::string name);
  int size_classes() const { return static_cast<int>(classes_.size()); }

  // A page with reference count 1 (contents undefined), or an error naming the class and the cap.
  Result<PageId> allocate(int size_class);
  void retain(PageId id);
  void release(PageId id);  // frees the page at count zero
  uint32_t ref_count(PageId id) const;

  uint8_t* data(PageId id);
  const uint8_t* data(PageId id) const;
  size_t page_bytes(int size_class) const;

  SizeClassStats stats(int size_class) const;
  size_t resident_bytes() const;  // all slabs of all classes
  size_t live_bytes() const;

 private:
  struct SlabDeleter {
    void operator()(uint8_t* p) const;
  };
  struct SizeClass {
    std::string name;
    size_t page_bytes = 0;
    size_t slab_bytes = 0;
    size_t pages_per_slab = 0;
    std::vector<std::unique_ptr<uint8_t, SlabDeleter>> slabs;  // each [slab_bytes], 64 KiB aligned
    std::vector<uint32_t> free_list;                          // page indices, LIFO (warm pages first)
    std::vector<uint32_t> ref_counts;                         // [slabs * pages_per_slab]
    size_t live = 0;
  };
  const SizeClass& cls(PageId id) const;

  std::vector<SizeClass> classes_;
  size_t max_bytes_ = 0;
  size_t resident_ = 0;
};

}  // namespace kvtier::kv
