// A tiered store's budget changed at run time (TieredKvStore::set_budget, for kvtier serve's shared budget): it
// spills down to the new budget, oldest pages first, pages read back byte-exact; it refuses a budget below its
// floor; budget_growth_bytes bounds what an append adds; an emptied store is back to its fixed part.
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "kv/tiered_store.h"
#include "common/test_util.h"
#include "common/tiered_store_util.h"

namespace kvtier::kv {
namespace {

using ::kvtier::testing::random_rows;

const KvGeometry kGeometry = ::kvtier::testing::kStoreGeometry;
constexpr size_t kLargeBudget = size_t{1} << 40;

std::unique_ptr<TieredKvStore> make_store(const char* ladder, size_t budget, const std::string& dir,
                                          bool background = false) {
  return ::kvtier::testing::make_test_store(ladder, budget, dir, {.background_reencode = background});
}

void fill(TieredKvStore& store, int first, int n, uint32_t seed) { ::kvtier::testing::fill_test_store(store, first, n, seed); }
std::vector<uint8_t> page_bytes(TieredKvStore& store, int layer, int64_t i) {
  return ::kvtier::testing::store_page_bytes(store, layer, i);
}

void expect_same_pages(TieredKvStore& reference, TieredKvStore& store, const std::string& what) {
  for (int layer = 0; layer < kGeometry.n_layers; ++layer) {
    std::vector<PageRef> a, b;
    reference.gather_pages(layer, a);
    store.gather_pages(layer, b);
    ASSERT_EQ(a.size(), b.size()) << what;
    // The pool pages (the ring's last pages are compared through the pool once they leave it).
    for (int64_t i = 0; i + store.lead_entries(layer) < static_cast<int64_t>(b.size()) - 3; ++i) {
      EXPECT_EQ(page_bytes(reference, layer, i), page_bytes(store, layer, i)) << what << " layer " << layer << " page " << i;
    }
  }
}

TEST(StoreBudget, LoweringTheBudgetSpillsTheOldestPagesDownToItExactly) {
  ::kvtier::testing::TempDir dir("kvtier-budget");
  for (const char* ladder : {"f16", "f16:64,q4:128,q2"}) {
    auto reference = make_store(ladder, 0, "");
    auto store = make_store(ladder, kLargeBudget, dir.path());
    ASSERT_TRUE(reference && store);
    fill(*reference, 0, 700, 1);
    fill(*store, 0, 700, 1);
    ASSERT_EQ(store->n_cold(0), 0) << ladder;
    const size_t held = store->budget_resident_bytes();
    const size_t pool_held = store->memory().pool_resident_bytes;
    const size_t floor = store->budget_floor_bytes();
    const size_t fixed = store->fixed_bytes();
    ASSERT_LT(floor - fixed, (held - fixed) / 2) << ladder;  // most of the pages may go to disk

    // Halfway down: some pages go, the oldest of each layer.
    const size_t half = (held + floor) / 2;
    ASSERT_TRUE(store->set_budget(half).ok()) << ladder;
    EXPECT_LE(store->budget_resident_bytes(), half) << ladder;
    EXPECT_EQ(store->budget_bytes(), half);
    const int64_t cold_half = store->n_cold(0);
    EXPECT_GT(cold_half, 0) << ladder;
    expect_same_pages(*reference, *store, std::string(ladder) + " at half");

    // Down to the floor: every page that may go is on disk, the emptied slabs went back.
    ASSERT_TRUE(store->set_budget(floor).ok()) << ladder;
    EXPECT_LE(store->budget_resident_bytes(), floor) << ladder;
    EXPECT_GT(store->n_cold(0), cold_half) << ladder;
    EXPECT_LT(store->memory().pool_resident_bytes, pool_held) << ladder;  // emptied slabs went back
    expect_same_pages(*reference, *store, std::string(ladder) + " at the floor");
    EXPECT_EQ(store->budget_warning(), "");

    // Below the floor: refused, nothing changed.
    const uint64_t cold_pages = store->cold()->total_pages();
    const size_t resident = store->budget_resident_bytes();
    const Status below = store->set_budget(store->fixed_bytes());
    if (resident > store->fixed_bytes()) {  // the f16 ladder may hold nothing but its fixed part by now
      EXPECT_FALSE(below.ok()) << ladder;
      EXPECT_NE(below.message().find("cannot write to disk"), std::string::npos) << below.message();
      EXPECT_EQ(store->budget_bytes(), floor);
    }
    EXPECT_EQ(store->cold()->total_pages(), cold_pages);

    // A larger budget brings nothing back, and appending goes on under it without spilling.
    ASSERT_TRUE(store->set_budget(kLargeBudget).ok());
    fill(*reference, 700, 200, 2);
    fill(*store, 700, 200, 2);
    EXPECT_EQ(store->cold()->total_pages(), cold_pages) << ladder;
    expect_same_pages(*reference, *store, std::string(ladder) + " after raising the budget");
  }
}

TEST(StoreBudget, GrowthBoundCoversEveryAppend) {
  // With the budget set to what the store holds plus budget_growth_bytes(n), an append of n tokens never has to
  // spill: the bound covers the pages pushed out of the ring, their background copies and the rung moves.
  ::kvtier::testing::TempDir dir("kvtier-budget");
  for (const char* ladder : {"f16", "f16:64,q8:128,q4:256,q2"}) {
    for (bool background : {false, true}) {
      auto store = make_store(ladder, kLargeBudget, dir.path(), background);
      ASSERT_TRUE(store);
      int pos = 0;
      int round = 0;
      for (int n : {300, 1, 64, 63, 65, 1, 129, 1, 7, 1, 200}) {
        ASSERT_TRUE(store->set_budget(store->budget_resident_bytes() + store->budget_growth_bytes(n)).ok());
        const uint64_t cold = store->cold()->total_pages();
        fill(*store, pos, n, ++round);
        pos += n;
        EXPECT_EQ(store->cold()->total_pages(), cold) << ladder << (background ? " background" : "") << " append of " << n << " at " << pos - n;
      }
      EXPECT_EQ(store->budget_warning(), "");
    }
  }
}

TEST(StoreBudget, TheSmallestBudgetKeepsTheStoreRunning) {
  // Appending under a budget moved to the floor before each step (an active slot squeezed by the arbiter) spills
  // as it goes and never holds more than floor + growth.
  ::kvtier::testing::TempDir dir("kvtier-budget");
  auto reference = make_store("f16:64,q4:128,q2", 0, "");
  auto store = make_store("f16:64,q4:128,q2", kLargeBudget, dir.path());
  ASSERT_TRUE(reference && store);
  int pos = 0;
  for (int step = 0; step < 25; ++step) {
    const int n = step % 5 == 0 ? 90 : 1;
    const size_t budget = store->budget_floor_bytes() + store->budget_growth_bytes(n);
    ASSERT_TRUE(store->set_budget(budget).ok()) << "step " << step;
    fill(*reference, pos, n, step);
    fill(*store, pos, n, step);
    pos += n;
    EXPECT_LE(store->budget_resident_bytes(), budget) << "step " << step;
  }
  EXPECT_GT(store->n_cold(0), 0);
  EXPECT_EQ(store->budget_warning(), "");
  expect_same_pages(*reference, *store, "squeezed");
}

TEST(StoreBudget, AnEmptiedStoreIsBackToItsFixedPart) {
  ::kvtier::testing::TempDir dir("kvtier-budget");
  auto store = make_store("f16:64,q4:128,q2", kLargeBudget, dir.path());
  ASSERT_TRUE(store);
  const size_t empty = store->budget_resident_bytes();
  EXPECT_EQ(empty, store->fixed_bytes());
  fill(*store, 0, 1000, 3);
  ASSERT_TRUE(store->set_budget(store->budget_floor_bytes()).ok());
  ASSERT_GT(store->cold()->total_pages(), 20u);
  store->truncate(0);
  EXPECT_EQ(store->budget_resident_bytes(), empty);  // the cold index gave its memory back too
  EXPECT_EQ(store->memory().pool_resident_bytes, 0u);
  EXPECT_EQ(store->cold()->total_pages(), 0u);
  EXPECT_EQ(store->budget_floor_bytes(), empty);
}

TEST(StoreBudget, NeedsAColdTier) {
  auto store = make_store("f16", 0, "");
  ASSERT_TRUE(store);
  EXPECT_FALSE(store->set_budget(1 << 20).ok());
  EXPECT_EQ(store->budget_floor_bytes(), store->budget_resident_bytes());
}

}  // namespace
}  // namespace kvtier::kv
