// The tiered store: pages follow the ladder, data survives re-encoding within codec error, sinks and
// ring stay f16 (a quantized ladder's tail page: f16 keys, quantized values), truncation, byte accounting.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "kv/codec.h"
#include "kv/tiered_store.h"
#include "common/test_util.h"
#include "kvtier/f16.h"

namespace kvtier::kv {
namespace {

using ::kvtier::testing::random_rows;

std::unique_ptr<TieredKvStore> make_store(const KvGeometry& g, const char* ladder, int sinks,
                                          KeyMode mode = KeyMode::PerChannel) {
  Result<LadderSpec> l = parse_ladder(ladder, sinks);
  EXPECT_TRUE(l.ok()) << l.error();
  TieredKvOptions options;
  options.ladder = *l;
  options.key_mode = mode;
  Result<std::unique_ptr<TieredKvStore>> s = TieredKvStore::create(g, options);
  EXPECT_TRUE(s.ok()) << s.error();
  return std::move(s).value();
}

// Decodes the gathered pages of a layer back to [n, kv_dim] rows.
void read_back(const TieredKvStore& store, int layer, std::vector<float>& k, std::vector<float>& v,
               std::vector<PageRef>& pages) {
  store.gather_pages(layer, pages);
  const int kv_dim = store.geometry().kv_dim();
  k.assign(static_cast<size_t>(store.n_tokens(layer)) * kv_dim, NAN);
  v.assign(k.size(), NAN);
  int expected_pos = 0;
  for (const PageRef& p : pages) {
    EXPECT_EQ(p.first_pos, expected_pos);
    decode_page(*p.format, p.data, p.n_tokens, k.data() + static_cast<size_t>(p.first_pos) * kv_dim,
                v.data() + static_cast<size_t>(p.first_pos) * kv_dim);
    expected_pos += p.n_tokens;
  }
  EXPECT_EQ(expected_pos, store.n_tokens(layer));
}

// Largest absolute error allowed for N(0,1) data at a precision (the codec's half step over ~±5 sigma).
float tolerance(Precision p) {
  switch (p) {
    case Precision::F16: return 5e-3f;
    case Precision::Q8: return 0.03f;
    case Precision::Q4: return 0.5f;
    case Precision::Q3: return 1.0f;
    case Precision::Q2: return 2.5f;
    default: break;  // split widths: not used here
  }
  return 0;
}

TEST(TieredStore, PagesFollowTheLadder) {
  const KvGeometry g{2, 3, 40, 4096};  // odd head count, head_dim not a multiple of 16
  auto store = make_store(g, "f16:100,q8:200,q4:300,q2", 4);
  const int total = 1500;
  const auto k = random_rows(total, g.kv_dim(), 1), v = random_rows(total, g.kv_dim(), 2);
  std::mt19937 rng(3);
  int pos = 0;
  std::vector<PageRef> pages;
  std::vector<float> k2, v2;
  while (pos < total) {
    const int n = std::min<int>(total - pos, std::vector<int>{1, 3, 64, 77, 200}[rng() % 5]);
    for (int layer = 0; layer < g.n_layers; ++layer) {
      ASSERT_TRUE(store->append(layer, pos, n, k.data() + static_cast<size_t>(pos) * g.kv_dim(),
                                v.data() + static_cast<size_t>(pos) * g.kv_dim())
                      .ok());
      ASSERT_TRUE(store->rebalance(layer).ok());
    }
    pos += n;
    EXPECT_TRUE(store->plan(0).empty()) << "rebalance leaves nothing to move";
    // Every page is at the precision the ladder gives its newest token; sinks and the tail are f16.
    store->gather_pages(1, pages);
    for (const PageRef& p : pages) {
      const int last = p.first_pos + p.n_tokens - 1;
      const int64_t age = pos - 1 - last;
      Precision expected = store->ladder().rungs[store->ladder().rung_for_age(age)].precision;
      if (p.first_pos < 4 || p.n_tokens < kTokensPerPage) expected = Precision::F16;
      EXPECT_EQ(p.format->precision, expected) << "page at " << p.first_pos << " with " << pos << " tokens";
    }
  }
  for (int layer = 0; layer < g.n_layers; ++layer) {
    read_back(*store, layer, k2, v2, pages);
    for (const PageRef& p : pages) {
      for (int t = p.first_pos; t < p.first_pos + p.n_tokens; ++t)
        for (int d = 0; d < g.kv_dim(); ++d) {
          const size_t i = static_cast<size_t>(t) * g.kv_dim() + d;
          ASSERT_NEAR(k2[i], k[i], tolerance(p.format->precision)) << "t=" << t;
          ASSERT_NEAR(v2[i], v[i], tolerance(p.format->precision)) << "t=" << t;
        }
    }
  }
  EXPECT_GT(store->reencoded_pages(), 0);
  // 1500 = 4 sinks + 23 full pages + 24-token tail: the oldest pages went all the way to q2.
  const KvMemoryReport m = store->memory();
  EXPECT_GT(m.page_count[static_cast<int>(Precision::Q2)], 0u);
  EXPECT_GT(m.page_count[static_cast<int>(Precision::Q8)], 0u);
  EXPECT_EQ(m.n_tokens, total);
}

TEST(TieredStore, QuantizedLadderQuantizesValuesOnceOnArrival) {
  // A ladder that starts quantized keeps no f16 values: the tail page holds them at the first rung's width
  // as they arrive, and a page leaving the ring keeps those bytes (the values are quantized once, from the
  // originals), while its keys, f16 in the ring, are encoded when the page is full.
  const KvGeometry g{1, 2, 64, 1024};
  auto store = make_store(g, "q4:128,q2", 1);
  EXPECT_EQ(store->ring_format().precision, Precision::K16V4);
  const int n = 1 + 64 * 3 + 20;
  const auto k = random_rows(n, g.kv_dim(), 41), v = random_rows(n, g.kv_dim(), 42);
  for (int pos = 0; pos < n; ++pos) {  // one token at a time, as decoding appends
    ASSERT_TRUE(store->append(0, pos, 1, k.data() + static_cast<size_t>(pos) * g.kv_dim(),
                              v.data() + static_cast<size_t>(pos) * g.kv_dim()).ok());
    ASSERT_TRUE(store->rebalance(0).ok());
  }
  std::vector<PageRef> pages;
  store->gather_pages(0, pages);
  ASSERT_EQ(pages.size(), 5u);  // sink, 3 pool pages, the tail
  EXPECT_EQ(pages[0].format->precision, Precision::F16);
  EXPECT_EQ(pages[1].format->precision, Precision::Q2);  // 213 tokens: its newest token is 148 old
  EXPECT_EQ(pages[2].format->precision, Precision::Q4);
  EXPECT_EQ(pages[3].format->precision, Precision::Q4);
  EXPECT_EQ(pages[4].format->precision, Precision::K16V4);
  EXPECT_EQ(pages[4].n_tokens, 20);
  for (int i : {2, 3, 4}) {
    const PageRef& p = pages[i];
    const PageFormat& q4 = store->format(Precision::Q4);
    std::vector<uint8_t> expected(q4.page_bytes);  // the page's rows encoded at q4 from the originals
    encode_page(q4, k.data() + static_cast<size_t>(p.first_pos) * g.kv_dim(),
                v.data() + static_cast<size_t>(p.first_pos) * g.kv_dim(), p.n_tokens, expected.data());
    for (int h = 0; h < g.n_kv_heads; ++h) {
      EXPECT_EQ(0, std::memcmp(p.data + p.format->value_section(h), expected.data() + q4.value_section(h),
                               q4.value_section_bytes)) << "page " << i << " head " << h;
    }
  }
  std::vector<float> k2, v2;
  read_back(*store, 0, k2, v2, pages);
  for (int t = n - 20; t < n; ++t)  // the tail's keys are f16
    for (int d = 0; d < g.kv_dim(); ++d) ASSERT_NEAR(k2[t * g.kv_dim() + d], k[t * g.kv_dim() + d], tolerance(Precision::F16));
  // 213 tokens: 1 sink row (f16), 3 pool pages (q2, q4, q4), the tail page (k16v4) counted whole.
  const KvMemoryReport m = store->memory();
  const double held = store->format(Precision::Q2).page_bytes + 2.0 * store->format(Precision::Q4).page_bytes +
                      store->format(Precision::K16V4).page_bytes + 1 * 2 * 64 * 2 * 2;  // sink page: 1 row
  EXPECT_NEAR(m.bits_per_element, 8.0 * held / (n * g.kv_dim() * 2.0), 1e-9);
}

TEST(TieredStore, RotatedKeysAreStoredRotated) {
  const KvGeometry g{1, 2, 64, 512};
  auto store = make_store(g, "f16:64,q4", 2, KeyMode::RotatedPerToken);
  const int n = 300;
  const auto k = random_rows(n, g.kv_dim(), 4), v = random_rows(n, g.kv_dim(), 5);
  ASSERT_TRUE(store->append(0, 0, n, k.data(), v.data()).ok());
  ASSERT_TRUE(store->rebalance(0).ok());
  std::vector<float> k2, v2, rotated = k;
  std::vector<PageRef> pages;
  rotate_heads(rotated.data(), static_cast<int64_t>(n) * g.n_kv_heads, g.head_dim);
  read_back(*store, 0, k2, v2, pages);
  for (const PageRef& p : pages) {
    for (int t = p.first_pos; t < p.first_pos + p.n_tokens; ++t)
      for (int d = 0; d < g.kv_dim(); ++d) {
        const size_t i = static_cast<size_t>(t) * g.kv_dim() + d;
        ASSERT_NEAR(k2[i], rotated[i], tolerance(p.format->precision)) << p.format->describe();
        ASSERT_NEAR(v2[i], v[i], tolerance(p.format->precision));
      }
  }
}

TEST(TieredStore, TruncateAndAppendAgain) {
  const KvGeometry g{2, 2, 32, 2048};
  auto store = make_store(g, "q8:64,q4", 4);  // starts quantized: the ring holds only the tail page
  const int n = 700;
  const auto k = random_rows(n, g.kv_dim(), 6), v = random_rows(n, g.kv_dim(), 7);
  for (int layer = 0; layer < 2; ++layer) {
    ASSERT_TRUE(store->append(layer, 0, 600, k.data(), v.data()).ok());
    ASSERT_TRUE(store->rebalance(layer).ok());
  }
  const size_t row = g.kv_dim();
  EXPECT_FALSE(store->append(0, 5, 1, k.data(), v.data()).ok()) << "appends must be contiguous";
  for (int cut : {450, 451, 3, 0}) {
    store->truncate(cut);
    EXPECT_EQ(store->n_tokens(0), cut);
    std::vector<float> k2, v2;
    std::vector<PageRef> pages;
    read_back(*store, 1, k2, v2, pages);
    for (size_t i = 0; i < k2.size(); ++i) ASSERT_NEAR(k2[i], k[i], tolerance(Precision::Q4));
    for (int layer = 0; layer < 2; ++layer) {
      ASSERT_TRUE(store->append(layer, cut, n - cut, k.data() + cut * row, v.data() + cut * row).ok());
      ASSERT_TRUE(store->rebalance(layer).ok());
    }
    read_back(*store, 1, k2, v2, pages);
    ASSERT_EQ(k2.size(), static_cast<size_t>(n) * row);
    for (size_t i = 0; i < k2.size(); ++i) ASSERT_NEAR(v2[i], v[i], tolerance(Precision::Q4)) << i / row;
    store->truncate(600);
  }
}

TEST(TieredStore, EveryByteAccounted) {
  const KvGeometry g{8, 2, 64, 1 << 16};  // tiny-llama-31m
  auto store = make_store(g, "q4", 4);
  const int n = 4 + 64 * 40 + 10;
  const auto k = random_rows(n, g.kv_dim(), 8), v = random_rows(n, g.kv_dim(), 9);
  for (int layer = 0; layer < g.n_layers; ++layer) {
    ASSERT_TRUE(store->append(layer, 0, n, k.data(), v.data()).ok());
    ASSERT_TRUE(store->rebalance(layer).ok());
  }
  const KvMemoryReport m = store->memory();
  EXPECT_EQ(m.page_count[static_cast<int>(Precision::Q4)], 8u * 40);
  EXPECT_EQ(m.page_bytes[static_cast<int>(Precision::Q4)], 8u * 40 * store->format(Precision::Q4).page_bytes);
  EXPECT_EQ(m.total_bytes, m.sink_bytes + m.ring_bytes + m.pool_resident_bytes);
  size_t live = 0;
  for (size_t b : m.page_bytes) live += b;
  EXPECT_EQ(m.pool_resident_bytes, live + m.pool_free_bytes);
  EXPECT_EQ(m.pool_resident_bytes, store->pool().resident_bytes());
  // Bits per element: 40 q4 pages (4.5 bits) + 4 sink rows and one 10-row tail page (whole page counted), which
  // holds f16 keys and values already at 4 bits: a quantized ladder keeps no f16 copy of its newest values.
  EXPECT_EQ(store->ring_format().precision, Precision::K16V4);
  EXPECT_EQ(m.ring_bytes_per_layer, store->format(Precision::K16V4).page_bytes);
  EXPECT_EQ(store->format(Precision::K16V4).page_bytes,
            store->format(Precision::F16).page_bytes / 2 + store->format(Precision::Q4).page_bytes / 2);
  const double elements = 8.0 * n * g.kv_dim() * 2;
  const double held_bits = 8.0 * 8 * (40 * store->format(Precision::Q4).page_bytes + 4 * 64 * 2 * 2 * 2 +
                                      store->format(Precision::K16V4).page_bytes);
  EXPECT_NEAR(m.bits_per_element, held_bits / elements, 1e-9);
  EXPECT_LT(m.bits_per_element, 6.0);
  EXPECT_NE(m.describe().find("q4 320 pages"), std::string::npos) << m.describe();
}

TEST(TieredStore, RejectsBadInput) {
  TieredKvOptions options;
  options.ladder = *parse_ladder("q4");
  EXPECT_FALSE(TieredKvStore::create(KvGeometry{1, 2, 12, 64}, options).ok());
  EXPECT_FALSE(TieredKvStore::create(KvGeometry{0, 2, 64, 64}, options).ok());
  auto store = std::move(TieredKvStore::create(KvGeometry{1, 1, 64, 64}, options)).value();
  std::vector<float> rows(65 * 64);
  Status s = store->append(0, 0, 65, rows.data(), rows.data());
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("capacity"), std::string::npos) << s.message();
}

}  // namespace
}  // namespace kvtier::kv
