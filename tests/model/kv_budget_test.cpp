// The paged cache's output does not depend on --kv-budget: attention reduces a layer's page list in segments
// fixed by the ladder (model/kv_paged.cpp), whether or not a cold tier exists and whether or not pages spilled,
// so greedy logits are bit-identical between no budget, a budget that never spills and one that spills with
// exact cold reads. (Sparse cold reads skip pages: approximate by design, not tested for equality here.)
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "../../tools/gemma_model.h"  // header-only; tools/ is not on the include path
#include "common/shared_data.h"
#include "common/test_util.h"
#include "kvtier/kv_options.h"
#include "kvtier/model.h"

namespace kvtier {
namespace {

using kvtier::testing::shared_path;

struct Greedy {
  std::vector<int32_t> tokens;  // generated ids
  std::vector<float> logits;    // [steps][n_vocab]: the logits each id was chosen from
  uint64_t spilled_pages = 0;
  std::string described;        // the cache's describe() at the end
};

// Prefills `prompt` (in 512-token batches, as `kvtier run` does, or smaller) and decodes `steps` greedy tokens.
Greedy run_greedy(Model& model, const KvCacheOptions& options, const std::vector<int32_t>& prompt, int steps,
                  ThreadPool& pool, int max_batch = 512) {
  Greedy g;
  const ModelConfig& c = model.config();
  auto cache = make_kv_cache(c, static_cast<int>(prompt.size()) + steps, options, &pool);
  EXPECT_TRUE(cache.ok()) << cache.error();
  if (!cache.ok()) return g;
  std::vector<float> logits(c.n_vocab);  // [n_vocab]
  const int n = static_cast<int>(prompt.size());
  for (int at = 0; at < n; at += max_batch) {
    const int batch = std::min(max_batch, n - at);
    Status s = model.forward(prompt.data() + at, batch, at, **cache, pool, batch - 1, logits.data());
    EXPECT_TRUE(s.ok()) << s.message();
    if (!s.ok()) return g;
  }
  for (int i = 0; i < steps; ++i) {
    g.logits.insert(g.logits.end(), logits.begin(), logits.end());
    const int32_t next = static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
    g.tokens.push_back(next);
    Status s = model.forward(&next, 1, n + i, **cache, pool, 0, logits.data());
    EXPECT_TRUE(s.ok()) << s.message();
    if (!s.ok()) return g;
  }
  g.spilled_pages = (*cache)->io_stats().pages_written;
  g.described = (*cache)->describe();
  return g;
}

TEST(KvBudget, GreedyLogitsAreBitIdenticalWithAndWithoutBudgetAndSpilling) {
  KVTIER_REQUIRE_SHARED("models/tiny-llama-6m.f16.gguf");
  auto model = Model::load(shared_path("models/tiny-llama-6m.f16.gguf").string());
  ASSERT_TRUE(model.ok()) << model.error();
  const ModelConfig& c = (*model)->config();
  // A prompt of in-vocabulary ids, long enough for several attention segments per layer (16 to 64 pages each).
  std::vector<int32_t> prompt(2100);
  uint32_t x = 12345;
  for (int32_t& t : prompt) {
    x = x * 1664525u + 1013904223u;
    t = static_cast<int32_t>(x % static_cast<uint32_t>(c.n_vocab - 3)) + 3;
  }
  const int steps = 4;
  ThreadPool pool(2);
  struct Case {
    std::string ladder;
    std::string spilling_budget;  // small enough to spill most of the cache
  };
  for (const Case& k : std::vector<Case>{{"f16", "4M"}, {"f16:64,q8:128,q4", "3M"}}) {
    SCOPED_TRACE(k.ladder);
    KvCacheOptions plain;
    plain.ladder = k.ladder;
    const Greedy unbounded = run_greedy(**model, plain, prompt, steps, pool);
    ASSERT_EQ(unbounded.tokens.size(), static_cast<size_t>(steps));
#if defined(__SANITIZE_ADDRESS__)
    // Six 2,100-token prefills took 150 s under the sanitizers; there the spilling budget alone (the case that
    // exercises the cold tier's memory), in Release both.
    const std::vector<std::pair<std::string, bool>> budgets = {{k.spilling_budget, true}};
#else
    const std::vector<std::pair<std::string, bool>> budgets = {{"1G", false}, {k.spilling_budget, true}};
#endif
    for (const auto& [budget, spills] : budgets) {
      SCOPED_TRACE("--kv-budget " + budget);
      ::kvtier::testing::TempDir dir("kvtier-budget", ::testing::TempDir());
      KvCacheOptions cold = plain;
      cold.budget_bytes = *parse_byte_size(budget);
      cold.spill_dir = dir.path();
      cold.cold_mode = "exact";
      const Greedy bounded = run_greedy(**model, cold, prompt, steps, pool);
      if (spills) {
        EXPECT_GT(bounded.spilled_pages, 20u);
      } else {
        EXPECT_EQ(bounded.spilled_pages, 0u);
      }
      EXPECT_EQ(bounded.tokens, unbounded.tokens);
      ASSERT_EQ(bounded.logits.size(), unbounded.logits.size());
      EXPECT_EQ(std::memcmp(bounded.logits.data(), unbounded.logits.data(), bounded.logits.size() * sizeof(float)), 0)
          << "logits differ in some bits";
    }
  }
}

// A Gemma-3-shaped model (tools/gemma_model.h from the trained tiny-llama-6m, window 256 on every other layer:
// longer than the hot ring, so windowed layers hold pool pages): windowed layers spill pages inside their window
// and drop them from the cold tier once they fall behind it; the logits stay bit-identical to the run without a
// budget.
TEST(KvBudget, SlidingWindowLayersWithSpillingGiveBitIdenticalLogits) {
  KVTIER_REQUIRE_SHARED("models/tiny-llama-6m.f16.gguf");
  auto source = gguf::File::open(shared_path("models/tiny-llama-6m.f16.gguf").string());
  ASSERT_TRUE(source.ok()) << source.error();
  gguf::GgufWriter writer;
  tools::GemmaModelOptions gemma;
  gemma.window = 256;
  ASSERT_TRUE(tools::make_gemma_model(**source, gemma, writer).ok());
  ::kvtier::testing::TempDir model_dir("kvtier-gemma", ::testing::TempDir());
  const std::string path = model_dir.path() + "/gemma3.gguf";
  ASSERT_TRUE(writer.write_file(path).ok());
  auto model = Model::load(path);
  ASSERT_TRUE(model.ok()) << model.error();
  const ModelConfig& c = (*model)->config();
  ASSERT_GT(c.sliding_window, 0);
  std::vector<int32_t> prompt(900);  // 14 pages: far past the window
  uint32_t x = 777;
  for (int32_t& t : prompt) {
    x = x * 1664525u + 1013904223u;
    t = static_cast<int32_t>(x % static_cast<uint32_t>(c.n_vocab - 3)) + 3;
  }
  const int steps = 6;
  ThreadPool pool(2);
  // Budgets: the fixed part (rings, sinks, staging buffers; and full warm rungs) + a few last-rung pages.
  for (const auto& [ladder, budget] : std::vector<std::pair<std::string, std::string>>{{"f16", "3400K"},
                                                                                       {"f16:64,q8:128,q4", "2600K"}}) {
    SCOPED_TRACE(ladder);
    KvCacheOptions plain;
    plain.ladder = ladder;
    // 64-token prefill batches: a 512-token batch's pages wait in f16 for their re-encoding, above any budget
    // small enough to spill here.
    const Greedy unbounded = run_greedy(**model, plain, prompt, steps, pool, 64);
    ASSERT_EQ(unbounded.tokens.size(), static_cast<size_t>(steps));
    ::kvtier::testing::TempDir dir("kvtier-budget", ::testing::TempDir());
    KvCacheOptions cold = plain;
    cold.budget_bytes = *parse_byte_size(budget);
    cold.spill_dir = dir.path();
    cold.cold_mode = "exact";
    const Greedy bounded = run_greedy(**model, cold, prompt, steps, pool, 64);
    EXPECT_GT(bounded.spilled_pages, 4u) << bounded.described;
    // f16: every pool page is at the last rung, so windowed layers spill and then drop. (The ladder's windowed
    // pages reach q4 only in their last 64 positions in the window; the global layers, holding the most, spill.)
    if (ladder == "f16") {
      EXPECT_NE(bounded.described.find("cold pages unread behind sliding windows"), std::string::npos) << bounded.described;
    }
    EXPECT_EQ(bounded.described.find("warning"), std::string::npos) << bounded.described;
    EXPECT_EQ(bounded.tokens, unbounded.tokens);
    ASSERT_EQ(bounded.logits.size(), unbounded.logits.size());
    EXPECT_EQ(std::memcmp(bounded.logits.data(), unbounded.logits.data(), bounded.logits.size() * sizeof(float)), 0)
        << "logits differ in some bits";
    // Sparse cold reads (approximate by design) run over the same cold tier: its choices of one step, kept as
    // page numbers, stay valid when a window drops the oldest cold pages before the next.
    cold.cold_mode = "sparse";
    const Greedy sparse = run_greedy(**model, cold, prompt, 40, pool, 64);
    EXPECT_EQ(sparse.tokens.size(), 40u);
    EXPECT_EQ(sparse.described.find("warning"), std::string::npos) << sparse.described;
  }
}

}  // namespace
}  // namespace kvtier
