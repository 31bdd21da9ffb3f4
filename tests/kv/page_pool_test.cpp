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
    EXPECT_EQ(reinterpret_cast<uintptr_t>(p - slot * bytes) % PagePool::kSlabBaseAlign, 0u) << "slab base not 16 KiB aligned";
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
  struct Case {
    size_t page_bytes, slab_bytes, pages;
  };
  const Case cases[] = {
      {5120, 20 * 1024, 4},   // q2 at head_dim 64, 2 heads: 4 pages are exactly 5 x 4 KiB
      {7168, 28 * 1024, 4},   // q3
      {32768, 128 * 1024, 4},  // f16
      {5632, 44 * 1024, 8},   // 4 pages leave 2 KiB of a 24 KiB slab, 5 leave 512 B of 28 KiB, 8 fill 44 KiB
  };
  for (const Case& c : cases) {
    const int id = pool.add_size_class(c.page_bytes, "c");
    EXPECT_EQ(pool.stats(id).slab_bytes, c.slab_bytes) << c.page_bytes;
    EXPECT_EQ(pool.stats(id).pages_per_slab, c.pages) << c.page_bytes;
  }
}

TEST(PagePool, CompactMovesPagesOfSparseSlabsAndReturnsThem) {
  PagePool pool;
  const int c = pool.add_size_class(4096, "q8");  // 4 pages per 16 KiB slab
  // 6 layers' worth of a burst: 24 pages in 6 slabs, then all but every fourth one freed (a page per
  // slab survives), as after a prefill micro-batch moves down the ladder.
  std::vector<PageId> ids;
  for (int i = 0; i < 24; ++i) {
    ids.push_back(*pool.allocate(c));
    pool.data(ids.back())[0] = static_cast<uint8_t>(i);
    pool.data(ids.back())[4095] = static_cast<uint8_t>(100 + i);
  }
  std::vector<PageId> live;
  for (int i = 0; i < 24; ++i) {
    if (i % 4 == 3) {
      live.push_back(ids[i]);
    } else {
      pool.release(ids[i]);
    }
  }
  pool.retain(live[2]);  // a shared page: its slab cannot be emptied
  EXPECT_EQ(pool.stats(c).slabs, 6u);
  std::vector<std::pair<PageId, PageId>> moves;
  const size_t moved = pool.compact(c, [&](PageId from, PageId to) { moves.emplace_back(from, to); });
  EXPECT_EQ(moved, moves.size());
  const SizeClassStats s = pool.stats(c);
  EXPECT_EQ(s.live_pages, 6u);
  EXPECT_EQ(s.slabs, 2u);  // 6 pages: slab 2 (pinned by the shared page) and one more
  EXPECT_LT(s.free_pages, s.pages_per_slab);
  EXPECT_EQ(pool.resident_bytes(), 2u * s.slab_bytes);
  // Every moved page kept its bytes and its count; the shared one did not move.
  for (PageId& id : live) {
    for (const auto& [from, to] : moves) {
      EXPECT_NE(from, live[2]);
      if (id == from) {
        id = to;
        break;
      }
    }
  }
  for (int j = 0; j < 6; ++j) {
    const int i = 4 * j + 3;
    EXPECT_EQ(pool.data(live[j])[0], i);
    EXPECT_EQ(pool.data(live[j])[4095], 100 + i);
    EXPECT_EQ(pool.ref_count(live[j]), j == 2 ? 2u : 1u);
  }
  // Nothing more to do: less than a slab free.
  EXPECT_EQ(pool.compact(c, [](PageId, PageId) { FAIL(); }), 0u);
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
  PagePool pool(kSlabAlign);  // 64 KiB: four 16 KiB slabs of 4 pages at most
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
