// Sliding-window layers with a cold tier (--kv-budget): pages behind a layer's window are released, never
// spilled; cold pages that fall behind it are dropped from the cold tier unread and their file slots reused;
// the budget counts what stays; the pages attention sees are byte-identical to a store without a budget; and
// clearing returns the pool and the page file to their empty state. Sessions: a store whose windowed layers
// released pages saves and loads (into stores with and without a budget), and a store of another window
// refuses the stream. `kvtier plan` counts windowed layers at their bound, with and without a budget.
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "common/test_util.h"
#include "kv/capacity_plan.h"
#include "kv/page_file.h"
#include "kv/tiered_store.h"

namespace kvtier::kv {
namespace {

using ::kvtier::testing::MemoryStream;
using ::kvtier::testing::random_rows;

// Layers 0 and 2 windowed, layer 1 global. The window (200: it cuts pages in the middle) reaches past the
// f16 preset's two-page hot ring, so windowed layers hold pool pages that can spill.
const KvGeometry kMixed{3, 2, 32, 8192, {200, 0, 200}};
// Every layer windowed: what the store holds is bounded, so must the page file be.
const KvGeometry kAllWindowed{2, 2, 32, 8192, {300, 300}};

std::unique_ptr<TieredKvStore> make_store(const KvGeometry& g, const char* ladder, size_t budget, const std::string& dir) {
  TieredKvOptions options;
  options.ladder = *parse_ladder(ladder, 4);
  options.budget_bytes = budget;
  options.cold.spill_dir = dir;
  options.cold.mode = ColdReadMode::Exact;
  Result<std::unique_ptr<TieredKvStore>> s = TieredKvStore::create(g, options);
  EXPECT_TRUE(s.ok()) << s.error();
  return s.ok() ? std::move(s).value() : nullptr;
}

// A store whose budget is the plan's smallest (rings, sinks, cold-tier buffers, full warm rungs) plus `extra`
// bytes for last-rung pages.
std::unique_ptr<TieredKvStore> make_budgeted(const KvGeometry& g, const char* ladder, size_t extra, const std::string& dir) {
  TieredKvOptions options;
  options.ladder = *parse_ladder(ladder, 4);
  options.budget_bytes = size_t{1} << 40;
  options.cold.mode = ColdReadMode::Exact;
  Result<CapacityPlan> plan = plan_capacity(g, options, 1);
  EXPECT_TRUE(plan.ok()) << plan.error();
  return plan.ok() ? make_store(g, ladder, plan->min_budget + extra, dir) : nullptr;
}

// No cold page of a windowed layer lies wholly behind the window of its next position, and the cold pages
// follow the released ones directly.
void expect_nothing_cold_behind_window(const TieredKvStore& store, int layer) {
  const int window = store.geometry().window(layer);
  if (window <= 0 || store.cold() == nullptr) return;
  const int first_needed = store.n_tokens(layer) - window + 1;
  for (int64_t i = 0; i < store.n_cold(layer); ++i) {
    const ColdPage& p = store.cold()->page(layer, i);
    EXPECT_GT(p.first_pos + kTokensPerPage, first_needed) << "layer " << layer << " cold page " << i;
    EXPECT_EQ(p.first_pos, 4 + (store.first_cold_page(layer) + i) * kTokensPerPage) << "layer " << layer;
  }
}

// Appends n tokens to every layer as the model does (layer by layer, rebalancing after each), checking the
// invariants after every rebalance.
void fill(TieredKvStore& store, int first, int n, uint32_t seed) {
  const KvGeometry& g = store.geometry();
  for (int layer = 0; layer < g.n_layers; ++layer) {
    const auto k = random_rows(n, g.kv_dim(), seed + layer), v = random_rows(n, g.kv_dim(), seed + 100 + layer);
    ASSERT_TRUE(store.append(layer, first, n, k.data(), v.data()).ok());
    ASSERT_TRUE(store.rebalance(layer).ok());
    expect_nothing_cold_behind_window(store, layer);
    if (store.cold() != nullptr) {
      EXPECT_LE(store.budget_resident_bytes(), store.memory().budget_bytes) << "layer " << layer;
      EXPECT_EQ(store.budget_warning(), "");
    }
  }
}

// The layer's page list as attention sees it, cold pages read back: [entries][bytes].
std::vector<std::vector<uint8_t>> attended_pages(TieredKvStore& store, int layer) {
  std::vector<PageRef> pages;
  store.gather_pages(layer, pages);
  std::vector<std::vector<uint8_t>> out;
  const int lead = store.lead_entries(layer);
  for (size_t e = 0; e < pages.size(); ++e) {
    const PageRef& ref = pages[e];
    std::vector<uint8_t> bytes(ref.format->page_bytes);
    if (ref.data == nullptr) {
      EXPECT_TRUE(store.cold()->read_page(layer, static_cast<int64_t>(e) - lead, bytes.data()).ok());
    } else {
      std::memcpy(bytes.data(), ref.data, bytes.size());
    }
    out.push_back(std::move(bytes));
  }
  return out;
}

void expect_same_pages(TieredKvStore& a, TieredKvStore& b, const std::string& where) {
  for (int layer = 0; layer < a.geometry().n_layers; ++layer) {
    EXPECT_EQ(a.lead_entries(layer), b.lead_entries(layer));
    EXPECT_TRUE(attended_pages(a, layer) == attended_pages(b, layer)) << where << ", layer " << layer;
  }
}

TEST(WindowColdTier, SpillsOnlyInsideTheWindowAndMatchesTheStoreWithoutBudget) {
  ::kvtier::testing::TempDir dir("kvtier-window-cold");
  for (const std::string ladder : {"f16", "f16:64,q4:128,q2"}) {
    SCOPED_TRACE(ladder);
    const bool f16 = ladder == "f16";
    auto reference = make_store(kMixed, ladder.c_str(), 0, "");
    auto store = make_budgeted(kMixed, ladder.c_str(), f16 ? 48 << 10 : 24 << 10, dir.path());
    ASSERT_TRUE(reference && store);
    for (int step = 0; step < 24; ++step) {  // 24 x 70 = 1680 tokens: prefill-sized appends
      fill(*reference, step * 70, 70, step);
      fill(*store, step * 70, 70, step);
    }
    for (int pos = 1680; pos < 1780; ++pos) {  // decode steps
      fill(*reference, pos, 1, pos);
      fill(*store, pos, 1, pos);
    }
    expect_same_pages(*reference, *store, "after 1780 tokens");
    const ColdStats& stats = store->cold()->stats();
    EXPECT_GT(store->n_cold(1), 10);                // the global layer spilled
    // f16: windowed layers spilled pages that then fell behind. (The ladder's windowed pages reach its last rung
    // only in their last 8 positions in the window, and the global layer, holding the most, spills first.)
    if (f16) EXPECT_GT(stats.dropped_pages, 0u);
    EXPECT_EQ(store->released_pages(), reference->released_pages());
    EXPECT_EQ(store->cold()->file().stats().live_slots, store->cold()->total_pages());
    // Truncating into the window's held pages keeps the cache; both stores agree after more tokens.
    store->truncate(1750);
    reference->truncate(1750);
    ASSERT_EQ(store->n_tokens(0), 1750);
    for (int pos = 1750; pos < 1800; pos += 10) {
      fill(*reference, pos, 10, pos);
      fill(*store, pos, 10, pos);
    }
    expect_same_pages(*reference, *store, "after truncating to 1750 and refilling to 1800");
  }
}

TEST(WindowColdTier, FileSpaceOfDroppedPagesIsReused) {
  ::kvtier::testing::TempDir dir("kvtier-window-cold");
  auto store = make_budgeted(kAllWindowed, "f16", 48 << 10, dir.path());  // 3 of the ~8 pool pages stay
  ASSERT_TRUE(store);
  for (int pos = 0; pos < 1000; pos += 50) fill(*store, pos, 50, pos);
  const uint64_t file_bytes = store->cold()->file().stats().file_bytes;
  const uint64_t dropped = store->cold()->stats().dropped_pages;
  EXPECT_GT(store->cold()->stats().spilled_pages, 0u);
  for (int pos = 1000; pos < 4000; pos += 50) fill(*store, pos, 50, pos);
  EXPECT_GT(store->cold()->stats().dropped_pages, dropped + 40);  // 3000 more tokens: 94 pages, most spilled first
  EXPECT_EQ(store->cold()->file().stats().file_bytes, file_bytes) << "dropped slots were not reused";
  EXPECT_EQ(store->cold()->file().stats().live_slots, store->cold()->total_pages());
  // Each layer holds its window (300) + a page, at most, in all tiers: at most 6 pages besides the ring.
  for (int layer = 0; layer < 2; ++layer) {
    std::vector<PageRef> pages;
    store->gather_pages(layer, pages);
    EXPECT_LE(static_cast<int>(pages.size()), 6 + TieredKvStore::ring_pages_for(store->ladder())) << layer;
  }
}

TEST(WindowColdTier, AccountingReturnsToBaseline) {
  ::kvtier::testing::TempDir dir("kvtier-window-cold");
  auto store = make_budgeted(kMixed, "f16", 32 << 10, dir.path());
  ASSERT_TRUE(store);
  const size_t baseline = store->budget_resident_bytes();
  EXPECT_EQ(baseline, store->fixed_bytes());
  for (int round = 0; round < 2; ++round) {
    for (int pos = 0; pos < 1200; pos += 100) fill(*store, pos, 100, pos + round);
    EXPECT_GT(store->cold()->total_pages(), 0u);
    EXPECT_GT(store->released_pages(), 0);
    store->clear();
    EXPECT_EQ(store->pool().live_bytes(), 0u);
    EXPECT_EQ(store->cold()->total_pages(), 0u);
    EXPECT_EQ(store->cold()->file().stats().live_slots, 0u);
    EXPECT_EQ(store->budget_resident_bytes(), baseline);
    for (int layer = 0; layer < kMixed.n_layers; ++layer) {
      EXPECT_EQ(store->first_cold_page(layer), 0);
      EXPECT_EQ(store->released_positions(layer), 0);
    }
  }
}

TEST(WindowColdTier, ReleasedPagesSaveAndLoad) {
  ::kvtier::testing::TempDir dir("kvtier-window-cold");
  auto reference = make_store(kMixed, "f16", 0, "");
  auto store = make_budgeted(kMixed, "f16", 24 << 10, dir.path());
  ASSERT_TRUE(reference && store);
  for (int pos = 0; pos < 900; pos += 90) {
    fill(*reference, pos, 90, pos);
    fill(*store, pos, 90, pos);
  }
  ASSERT_GT(store->released_pages(), 0);
  ASSERT_GT(store->n_cold(0) + store->n_cold(1), 0);
  MemoryStream saved;
  ASSERT_TRUE(store->save(saved).ok());
  MemoryStream saved_reference;
  ASSERT_TRUE(reference->save(saved_reference).ok());
  EXPECT_EQ(saved.bytes, saved_reference.bytes) << "the stream does not depend on where pages were";
  // Into a store without a budget and into a budgeted one (which spills again as it loads); both continue
  // like the store that never stopped.
  auto plain = make_store(kMixed, "f16", 0, "");
  auto budgeted = make_budgeted(kMixed, "f16", 24 << 10, dir.path());
  for (TieredKvStore* copy : {plain.get(), budgeted.get()}) {
    saved.read_at = 0;
    Status s = copy->load(saved);
    ASSERT_TRUE(s.ok()) << s.message();
    EXPECT_EQ(copy->first_cold_page(0), reference->first_cold_page(0));
    expect_same_pages(*reference, *copy, "loaded");
  }
  for (int pos = 900; pos < 960; ++pos) {
    for (TieredKvStore* s : {reference.get(), plain.get(), budgeted.get()}) fill(*s, pos, 1, pos);
  }
  expect_same_pages(*reference, *plain, "60 steps after loading");
  expect_same_pages(*reference, *budgeted, "60 steps after loading, budgeted");
  // A store whose layers have no window, or a larger one, would need positions the stream does not hold.
  for (const KvGeometry& other : {KvGeometry{3, 2, 32, 8192, {}}, KvGeometry{3, 2, 32, 8192, {400, 0, 400}}}) {
    auto wrong = make_store(other, "f16", 0, "");
    saved.read_at = 0;
    Status s = wrong->load(saved);
    ASSERT_FALSE(s.ok());
    EXPECT_NE(s.message().find("released behind a sliding window"), std::string::npos) << s.message();
    EXPECT_EQ(wrong->n_tokens(0), 0);
    EXPECT_EQ(wrong->pool().live_bytes(), 0u);
  }
  // Truncated streams are refused and leave the store empty.
  MemoryStream cut;
  cut.bytes.assign(saved.bytes.begin(), saved.bytes.begin() + static_cast<ptrdiff_t>(saved.bytes.size() / 2));
  EXPECT_FALSE(plain->load(cut).ok());
  EXPECT_EQ(plain->n_tokens(0), 0);
  EXPECT_EQ(plain->released_positions(0), 0);
}

// The plan's per-layer counts against a store filled to the planned context.
TEST(WindowColdTier, PlanCountsEachLayerWithABudget) {
  ::kvtier::testing::TempDir dir("kvtier-window-cold");
  const int context = 3000;
  auto store = make_budgeted(kMixed, "f16", 200 << 10, dir.path());
  ASSERT_TRUE(store);
  TieredKvOptions options;
  options.ladder = *parse_ladder("f16", 4);
  options.budget_bytes = store->memory().budget_bytes;
  options.cold.mode = ColdReadMode::Exact;
  Result<CapacityPlan> plan = plan_capacity(kMixed, options, context);
  ASSERT_TRUE(plan.ok()) << plan.error();
  ASSERT_EQ(plan->layers.size(), 3u);
  EXPECT_EQ(plan->windowed_layers, 2);
  EXPECT_TRUE(plan->fits);
  for (int pos = 0; pos < context; pos += 100) fill(*store, pos, 100, pos);
  for (int layer = 0; layer < 3; ++layer) {
    SCOPED_TRACE(layer);
    const LayerPlan& lp = plan->layers[layer];
    EXPECT_EQ(lp.window, kMixed.window(layer));
    const int64_t held = store->n_tokens(layer) - store->released_positions(layer);
    EXPECT_NEAR(static_cast<double>(lp.positions), static_cast<double>(held), kTokensPerPage);
    EXPECT_NEAR(static_cast<double>(lp.cold_tokens), static_cast<double>(store->n_cold(layer) * kTokensPerPage),
                2.0 * kTokensPerPage);
  }
  // The global layer holds every position, most of them cold; the windowed ones a few pages.
  EXPECT_EQ(plan->layers[1].positions, context);
  EXPECT_GT(plan->layers[1].cold_tokens, 2000);
  EXPECT_LE(plan->layers[0].positions, 200 + 2 * kTokensPerPage + 4);
  const std::string described = plan->describe();
  EXPECT_NE(described.find("window 200 layers (2)"), std::string::npos) << described;
  EXPECT_NE(described.find("global layers (1)"), std::string::npos) << described;
  // Without a budget, everything of what stays is in RAM and nothing is cold.
  options.budget_bytes = 0;
  Result<CapacityPlan> unbudgeted = plan_capacity(kMixed, options, context);
  ASSERT_TRUE(unbudgeted.ok());
  EXPECT_EQ(unbudgeted->layers[1].cold_tokens, 0);
  EXPECT_GT(unbudgeted->window_released_bytes, 0u);
  EXPECT_EQ(unbudgeted->window_released_bytes, plan->window_released_bytes);
}

}  // namespace
}  // namespace kvtier::kv
