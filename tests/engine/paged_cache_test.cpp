// The tiered paged cache behind the engine: f16 pages reproduce the contiguous
// cache, ladders produce text, and the quality harness measures what it should.
#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <sstream>

#include "common/loaded_model.h"
#include "common/shared_data.h"
#include "kvtier/kv_options.h"
#include "kvtier/model.h"
#include "kvtier/sampling.h"
#include "kvtier/session.h"
#include "kvtier/tokenizer.h"

namespace kvtier {
namespace {

using kvtier::testing::shared_path;

using Loaded = kvtier::testing::LoadedModel;
Loaded load(const std::string& file) { return kvtier::testing::load_shared_model(file); }

std::vector<int32_t> greedy_ids(Loaded& l, std::unique_ptr<KvCache> cache, const std::string& prompt, int n,
                                ThreadPool& pool) {
  Session session(*l.model, std::move(cache), pool);
  EXPECT_TRUE(session.append(l.tokenizer->encode(prompt, true, true)).ok());
  std::vector<int32_t> out;
  for (int i = 0; i < n; ++i) {
    out.push_back(argmax(session.last_logits().data(), l.model->config().n_vocab));
    EXPECT_TRUE(session.append({out.back()}).ok());
  }
  return out;
}

TEST(PagedCache, F16PagesGiveTheSameGreedyTokensAsTheContiguousCache) {
  KVTIER_REQUIRE_SHARED("models/tiny-llama-31m.f16.gguf");
  Loaded l = load("tiny-llama-31m.f16.gguf");
  ASSERT_TRUE(l.model && l.tokenizer);
  ThreadPool pool(2);
  // 150 tokens: crosses two page boundaries and the 128-token hot ring.
  for (const char* prompt : {"The Linux kernel", "And God said"}) {
    auto contiguous = greedy_ids(l, make_contiguous_kv_cache(l.model->config(), 256), prompt, 150, pool);
    KvCacheOptions paged;
    paged.ladder = "f16";
    auto cache = make_kv_cache(l.model->config(), 256, paged);
    ASSERT_TRUE(cache.ok()) << cache.error();
    EXPECT_EQ(greedy_ids(l, std::move(*cache), prompt, 150, pool), contiguous) << prompt;
  }
}

TEST(PagedCache, LaddersProduceTextAndMoveOldPagesDown) {
  KVTIER_REQUIRE_SHARED("models/tiny-llama-31m.Q4_K_M.gguf");
  Loaded l = load("tiny-llama-31m.Q4_K_M.gguf");
  ASSERT_TRUE(l.model && l.tokenizer);
  ThreadPool pool(2);
#if defined(__SANITIZE_ADDRESS__)
  const int generated = 200;  // past the ladder's last rung (192 tokens); 10 x 300 tokens took ~2 min under ASan
#else
  const int generated = 300;
#endif
  for (const char* ladder : {"f16:64,q8:64,q4:64,q2", "q8", "q4", "q3", "q2"}) {
    for (const char* keys : {"channel", "rotated"}) {
      KvCacheOptions o;
      o.ladder = ladder;
      o.key_mode = keys;
      auto cache = make_kv_cache(l.model->config(), 512, o);
      ASSERT_TRUE(cache.ok()) << cache.error();
      KvCache* raw = cache->get();
      auto ids = greedy_ids(l, std::move(*cache), "The Linux kernel", generated, pool);
      std::string text;
      for (int32_t id : ids) text += l.tokenizer->token_to_piece(id);
      EXPECT_GT(text.size(), static_cast<size_t>(generated)) << ladder << " " << keys;
      (void)raw;
    }
  }
}

TEST(PagedCache, BadOptionsAreRefusedWithTheirName) {
  KVTIER_REQUIRE_SHARED("models/tiny-llama-6m.f16.gguf");
  Loaded l = load("tiny-llama-6m.f16.gguf");
  ASSERT_TRUE(l.model);
  KvCacheOptions o;
  o.ladder = "q4:100,q8";  // precision rises with age
  auto bad = make_kv_cache(l.model->config(), 256, o);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.error().find("q4:100,q8"), std::string::npos) << bad.error();
  o.ladder = "q4";
  o.key_mode = "diagonal";
  auto bad_keys = make_kv_cache(l.model->config(), 256, o);
  ASSERT_FALSE(bad_keys.ok());
  EXPECT_NE(bad_keys.error().find("diagonal"), std::string::npos) << bad_keys.error();
}

TEST(PagedCache, QualityHarnessOrdersPrecisions) {
  KVTIER_REQUIRE_SHARED("models/tiny-llama-6m.Q4_K_M.gguf");
  KVTIER_REQUIRE_SHARED("eval/eval.txt");
  Loaded l = load("tiny-llama-6m.Q4_K_M.gguf");
  ASSERT_TRUE(l.model && l.tokenizer);
  std::ifstream in(shared_path("eval/eval.txt"), std::ios::binary);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const auto tokens = l.tokenizer->encode(text.substr(0, 60000), true, false);
  ThreadPool pool(2);
  auto quality = [&](const std::string& ladder) {
    KvCacheOptions o;
    o.ladder = ladder;
    auto r = compare_kv_caches(*l.model, tokens, 512, 3, l.tokenizer->bos_id(), pool,
                               [&] { return make_contiguous_kv_cache(l.model->config(), 512); },
                               [&] { return make_kv_cache(l.model->config(), 512, o).value(); });
    EXPECT_TRUE(r.ok()) << r.error();
    return r.ok() ? *r : KvQualityResult{};
  };
  // f16 pages hold the same values as the contiguous cache; only the order of
  // float operations differs. On these tiny models some K/V channels reach ~1000,
  // where an f16 step is 0.5, so rounding-order noise is amplified layer by layer
  // (f16 vs f32 contiguous caches differ by a KLD of ~3e-3 here): hence a
  // tolerance rather than zero.
  const KvQualityResult f16 = quality("f16");
  const KvQualityResult q8 = quality("q8");
  const KvQualityResult q4 = quality("q4");
  const KvQualityResult q2 = quality("q2");
  std::printf("KLD f16 %.6f q8 %.6f q4 %.6f q2 %.6f\n", f16.mean_kld, q8.mean_kld, q4.mean_kld, q2.mean_kld);
  EXPECT_LT(f16.mean_kld, 3e-3);
  EXPECT_GT(f16.same_top1, 0.97);
  EXPECT_LT(f16.mean_kld, q4.mean_kld);
  EXPECT_LT(q8.mean_kld, q2.mean_kld);
  EXPECT_LT(q4.mean_kld, q2.mean_kld);
  EXPECT_GT(q2.mean_kld, 1e-3) << "2-bit keys and values must be measurably worse";
  EXPECT_EQ(q8.scored_tokens, 3 * 255);
}

}  // namespace
}  // namespace kvtier

namespace kvtier {
namespace {

// A context shift re-evaluates the kept tail at its new positions: the logits afterwards are exactly those of
// the shorter sequence evaluated from scratch, on every ladder and both caches, when the kept head is within
// the f16 sinks (4 positions: BOS and 3). A longer head keeps the precision its pages had reached.
TEST(ContextShift, TheShiftedSequenceEqualsTheSameTokensEvaluatedFresh) {
  KVTIER_REQUIRE_SHARED("models/tiny-llama-31m.Q4_K_M.gguf");
  KVTIER_REQUIRE_SHARED("eval/eval.txt");
  kvtier::testing::LoadedModel l = kvtier::testing::load_shared_model("tiny-llama-31m.Q4_K_M.gguf");
  ASSERT_TRUE(l.model && l.tokenizer);
  std::ifstream in(kvtier::testing::shared_path("eval/eval.txt"));
  std::string text(3000, '\0');
  in.read(text.data(), 3000);
  const std::vector<int32_t> tokens = l.tokenizer->encode(text, true, false);
  ASSERT_GT(tokens.size(), 400u);
  ThreadPool pool(2);
  for (const char* ladder : {"f16", "f16:64,q4:64,q2", "contiguous"}) {
    SCOPED_TRACE(ladder);
    KvCacheOptions o;
    o.ladder = ladder;
    Session shifted(*l.model, make_kv_cache(l.model->config(), 512, o).value(), pool);
    ASSERT_TRUE(shifted.append({tokens.begin(), tokens.begin() + 4}).ok());
    ASSERT_TRUE(shifted.append({tokens.begin() + 4, tokens.begin() + 400}).ok());
    auto redone = shifted.shift_context(4, 150);  // keep BOS + 3, drop 150, re-evaluate 246
    ASSERT_TRUE(redone.ok()) << redone.error();
    EXPECT_EQ(*redone, 246);
    ASSERT_EQ(shifted.n_past(), 250);
    ASSERT_TRUE(shifted.append({tokens[400]}).ok());

    std::vector<int32_t> kept(tokens.begin(), tokens.begin() + 4);
    kept.insert(kept.end(), tokens.begin() + 154, tokens.begin() + 401);
    // The same micro-batches as the shifted session ran: the kept head, the tail, the new token.
    Session fresh(*l.model, make_kv_cache(l.model->config(), 512, o).value(), pool);
    ASSERT_TRUE(fresh.append({kept.begin(), kept.begin() + 4}).ok());
    ASSERT_TRUE(fresh.append({kept.begin() + 4, kept.end() - 1}).ok());
    ASSERT_TRUE(fresh.append({kept.back()}).ok());
    EXPECT_EQ(shifted.tokens(), fresh.tokens());
    EXPECT_EQ(shifted.last_logits(), fresh.last_logits()) << "bit-identical: the kept tail was evaluated again";
  }
  Session s(*l.model, make_contiguous_kv_cache(l.model->config(), 64), pool);
  ASSERT_TRUE(s.append({tokens.begin(), tokens.begin() + 10}).ok());
  EXPECT_FALSE(s.shift_context(5, 6).ok());
  EXPECT_FALSE(s.shift_context(-1, 2).ok());
  EXPECT_FALSE(s.shift_context(2, 0).ok());
}

}  // namespace
}  // namespace kvtier
