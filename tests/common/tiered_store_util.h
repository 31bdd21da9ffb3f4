// A small TieredKvStore for the store's tests (cold tier, budget): its making, filling as the model fills it,
// and the bytes of a page wherever it lives.
#pragma once

#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "common/test_util.h"
#include "kv/tiered_store.h"

namespace kvtier::testing {

// 3 layers, 2 KV heads of 32 channels, up to 4096 tokens.
inline const KvGeometry kStoreGeometry{3, 2, 32, 4096};

struct TestStoreOptions {
  kv::ColdReadMode mode = kv::ColdReadMode::Exact;
  bool background_reencode = false;
};

// A store of kStoreGeometry with a ladder, a RAM budget (0: none) and a spill directory ("": none).
inline std::unique_ptr<kv::TieredKvStore> make_test_store(const char* ladder, size_t budget, const std::string& dir,
                                                          TestStoreOptions extra = {}) {
  kv::TieredKvOptions options;
  options.ladder = *kv::parse_ladder(ladder, 4);
  options.budget_bytes = budget;
  options.cold.spill_dir = dir;
  options.cold.mode = extra.mode;
  options.background_reencode = extra.background_reencode;
  Result<std::unique_ptr<kv::TieredKvStore>> s = kv::TieredKvStore::create(kStoreGeometry, options);
  EXPECT_TRUE(s.ok()) << s.error();
  return s.ok() ? std::move(s).value() : nullptr;
}

// Appends n random tokens to every layer, as the model does: layer by layer, rebalancing after each.
inline void fill_test_store(kv::TieredKvStore& store, int first, int n, uint32_t seed) {
  const int kv_dim = kStoreGeometry.kv_dim();
  for (int layer = 0; layer < kStoreGeometry.n_layers; ++layer) {
    const auto k = random_rows(n, kv_dim, seed + layer), v = random_rows(n, kv_dim, seed + 100 + layer);
    ASSERT_TRUE(store.append(layer, first, n, k.data(), v.data()).ok());
    ASSERT_TRUE(store.rebalance(layer).ok());
  }
}

// Bytes of logical page i of a layer, wherever it is (pool or cold).
inline std::vector<uint8_t> store_page_bytes(kv::TieredKvStore& store, int layer, int64_t i) {
  std::vector<kv::PageRef> pages;
  store.gather_pages(layer, pages);
  const kv::PageRef& ref = pages[static_cast<size_t>(i + store.lead_entries(layer))];
  std::vector<uint8_t> out(ref.format->page_bytes);
  if (ref.data == nullptr) {
    EXPECT_TRUE(store.cold()->read_page(layer, i, out.data()).ok());
  } else {
    std::memcpy(out.data(), ref.data, out.size());
  }
  return out;
}

}  // namespace kvtier::testing
