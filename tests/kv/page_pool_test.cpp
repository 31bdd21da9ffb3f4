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
    EXPECT_EQ(reinterpret_cast<uintptr_t>(p - slot * bytes) % kSlabAlign, 0u) << "slab base not 64 KiB aligned";
    EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % kSectionAlign, 0u);
  }
  const SizeClassStats s = pool.stats(q2);
  EXPECT_EQ(s.slab_bytes % kSlabAlign, 0u);
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
  EXPECT_EQ(pool.stats(c).free_pages, pool.stats(c).pages_per_slab);
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
