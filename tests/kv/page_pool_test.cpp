// Page pool and block table: alignment, free lists, reference counts, byte accounting.
#include <gtest/gtest.h>

#include <cstdint>
#include <set>

#include "kv/block_table.h"
#include "kv/page_format.h"
#include "kv/page_pool.h"

namespace kvtier::kv {
namespace {

TEST(PagePool, SlabsAreAlignedAndPagesDistinct) {
  PagePool pool;
  const int q2 = pool.add_size_class(5632, "q2");  // tiny-llama q2 page
  const int f16 = pool.add_size_class(32768, "f16");
  std::set<const uint8_t*> seen;
  for (int i = 0; i < 100; ++i) {
    Result<PageId> id = pool.allocate(i % 3 == 0 ? f16 : q2);
    ASSERT_TRUE(id.ok()) << id.error();
    const uint8_t* p = pool.data(*id);
    EXPECT_TRUE(seen.insert(p).second);
    const size_t bytes = pool.page_bytes(id->size_class());
    const SizeClassStats s = pool.stats(id->size_class());
    const size_t slot = id->index() % s.pages_per_slab;
    EXPECT_EQ(reinterpret_cast<uintptr_t>(p - slot * bytes) % PagePool::kSlabGranule, 0u) << "slab base not 16 KiB aligned";
    EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % kSectionAlign, 0u);
  }
  const SizeClassStats s = pool.stats(q2);
  EXPECT_EQ(s.slab_bytes % PagePool::kSlabGranule, 0u);
  EXPECT_LT(s.slab_bytes - s.pages_per_slab * s.page_bytes, s.page_bytes);
  EXPECT_GE(s.pages_per_slab, PagePool::kMinPagesPerSlab);
  EXPECT_EQ(s.live_pages, 66u);
  EXPECT_EQ(s.live_pages + s.free_pages, s.slabs * s.pages_per_slab);
  EXPECT_EQ(s.resident_bytes, s.live_bytes + s.free_pages * s.page_bytes + s.slack_bytes);
  EXPECT_EQ(pool.resident_bytes(), pool.stats(q2).resident_bytes + pool.stats(f16).resident_bytes);
  EXPECT_EQ(pool.live_bytes(), 66u * 5632 + 34u * 32768);
}

TEST(PagePool, ReferenceCountsAndReuse) {
  PagePool pool;
  const int c = pool.add_size_class(1024, "q4");
  PageId a = *pool.allocate(c);
  PageId b = *pool.allocate(c);
  EXPECT_NE(a, b);
  EXPECT_EQ(pool.ref_count(a), 1u);
  pool.retain(a);
  EXPECT_EQ(pool.ref_count(a), 2u);
  pool.release(a);
  EXPECT_EQ(pool.stats(c).live_pages, 2u);
  pool.release(a);
  EXPECT_EQ(pool.stats(c).live_pages, 1u);
  const size_t resident = pool.resident_bytes();
  PageId again = *pool.allocate(c);
  EXPECT_EQ(again, a);  // LIFO free list hands back the warm page
  EXPECT_EQ(pool.resident_bytes(), resident);
  pool.release(b);
  pool.release(again);
  EXPECT_EQ(pool.live_bytes(), 0u);
  // The slab's last page went: the slab went back with it.
  EXPECT_EQ(pool.stats(c).slabs, 0u);
  EXPECT_EQ(pool.stats(c).free_pages, 0u);
  EXPECT_EQ(pool.resident_bytes(), 0u);
  PageId fresh = *pool.allocate(c);  // a new slab in the returned slot
  EXPECT_EQ(fresh.index(), 0u);
  EXPECT_EQ(pool.resident_bytes(), pool.stats(c).slab_bytes);
}

TEST(PagePool, SlabSizeMinimisesSlack) {
  PagePool pool;
  // 5120-byte pages (q2 at head_dim 64, 2 heads): 32 KiB holds 6 with 2 KiB over; 48 and 64 KiB waste the same
  // fraction, so the smallest wins.
  const int q2 = pool.add_size_class(5120, "q2");
  EXPECT_EQ(pool.stats(q2).slab_bytes, 32u * 1024);
  EXPECT_EQ(pool.stats(q2).pages_per_slab, 6u);
  // 7168-byte pages: 32 KiB holds 4 (4 KiB over, 1/8), 48 KiB holds 6 (6 KiB over), 64 KiB holds 9 (1 KiB over).
  const int q3 = pool.add_size_class(7168, "q3");
  EXPECT_EQ(pool.stats(q3).slab_bytes, 64u * 1024);
  EXPECT_EQ(pool.stats(q3).pages_per_slab, 9u);
  const int f16 = pool.add_size_class(32768, "f16");
  EXPECT_EQ(pool.stats(f16).slab_bytes, 128u * 1024);
}

TEST(PagePool, LivePagesPackIntoLowSlabsAndEmptySlabsGoBack) {
  // Pages move down a ladder: a class fills to a peak, then most pages leave in no particular order.
  PagePool pool;
  const int c = pool.add_size_class(4096, "q8");  // 4 pages per 16 KiB slab
  std::vector<PageId> ids;
  for (int i = 0; i < 40; ++i) ids.push_back(*pool.allocate(c));
  EXPECT_EQ(pool.stats(c).slabs, 10u);
  // Free every page but one in slabs 0 and 5 and all of the others.
  for (int i = 0; i < 40; ++i) {
    if (i != 1 && i != 22) pool.release(ids[i]);
  }
  SizeClassStats s = pool.stats(c);
  EXPECT_EQ(s.live_pages, 2u);
  EXPECT_EQ(s.slabs, 2u);
  EXPECT_EQ(s.free_pages, 6u);
  EXPECT_EQ(pool.resident_bytes(), 2u * s.slab_bytes);
  EXPECT_EQ(s.resident_bytes, s.live_bytes + s.free_pages * s.page_bytes + s.slack_bytes);
  // New pages fill slab 0 first, then slab 5, then a new slab in the lowest returned slot (1).
  std::set<uint32_t> slabs;
  for (int i = 0; i < 7; ++i) slabs.insert(pool.allocate(c)->index() / 4);
  EXPECT_EQ(slabs, (std::set<uint32_t>{0, 1, 5}));
  EXPECT_EQ(pool.stats(c).slabs, 3u);
  EXPECT_EQ(pool.ref_count(ids[22]), 1u);
}

TEST(PagePool, CapIsAClearError) {
  PagePool pool(kSlabAlign);  // one 64 KiB slab at most
  const int c = pool.add_size_class(4096, "q8");
  for (int i = 0; i < 16; ++i) ASSERT_TRUE(pool.allocate(c).ok());
  Result<PageId> over = pool.allocate(c);
  ASSERT_FALSE(over.ok());
  EXPECT_NE(over.error().find("q8"), std::string::npos) << over.error();
  EXPECT_NE(over.error().find("cap"), std::string::npos) << over.error();
}

TEST(BlockTable, AppendReplaceTruncate) {
  BlockTable t(3);
  for (uint32_t i = 0; i < 5; ++i) t.append(1, PageId::make(0, i), 0);
  EXPECT_EQ(t.n_pages(1), 5);
  EXPECT_EQ(t.n_pages(0), 0);
  const PageId old = t.replace(1, 2, PageId::make(2, 9), 2);
  EXPECT_EQ(old, PageId::make(0, 2));
  EXPECT_EQ(t.rung(1, 2), 2);
  EXPECT_EQ(t.page(1, 2).size_class(), 2);
  EXPECT_EQ(t.page(1, 2).index(), 9u);
  const std::vector<PageId> removed = t.truncate(1, 3);
  ASSERT_EQ(removed.size(), 2u);
  EXPECT_EQ(removed[0], PageId::make(0, 3));
  EXPECT_EQ(t.n_pages(1), 3);
}

}  // namespace
}  // namespace kvtier::kv
