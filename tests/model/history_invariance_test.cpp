// A sequence's logits do not depend on how its history was cut into forward calls (one prompt batch, several,
// or decode steps) with the default f16 paged cache: what `kvtier serve` and `kvtier run --session` rely on when
// a returning conversation evaluates only its new tokens after a cached prefix. (Ladders are not invariant in
// this sense yet: docs/server.md, "Batch invariance", says why.)
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "common/shared_data.h"
#include "kvtier/kv_options.h"
#include "kvtier/model.h"

namespace kvtier {
namespace {

using kvtier::testing::shared_path;

// Evaluates `tokens` in forward calls that end at each of `cuts` (and at most 512 tokens each) and returns the
// logits of the last token.  logits: [n_vocab]
std::vector<float> last_logits(Model& model, const std::vector<int32_t>& tokens, const std::vector<int>& cuts,
                               ThreadPool& pool) {
  const ModelConfig& c = model.config();
  auto cache = make_kv_cache(c, 1024, KvCacheOptions{}, &pool);
  EXPECT_TRUE(cache.ok()) << cache.error();
  std::vector<float> logits(c.n_vocab);
  if (!cache.ok()) return logits;
  int at = 0;
  for (size_t i = 0; i <= cuts.size(); ++i) {
    const int end = i < cuts.size() ? cuts[i] : static_cast<int>(tokens.size());
    while (at < end) {
      const int n = std::min(512, end - at);
      Status s = model.forward(tokens.data() + at, n, at, **cache, pool, n - 1, logits.data());
      EXPECT_TRUE(s.ok()) << s.message();
      at += n;
    }
  }
  return logits;
}

TEST(HistoryInvariance, F16CacheLogitsDoNotDependOnHowTheSequenceWasCut) {
#if defined(__SANITIZE_ADDRESS__)
  const std::vector<const char*> files = {"models/tiny-llama-6m.Q4_K_M.gguf"};  // ~5x slower under the sanitizers
#else
  const std::vector<const char*> files = {"models/tiny-llama-6m.f16.gguf", "models/tiny-llama-6m.Q4_K_M.gguf"};
#endif
  for (const char* file : files) {
    KVTIER_REQUIRE_SHARED(file);
    SCOPED_TRACE(file);
    auto model = Model::load(shared_path(file).string());
    ASSERT_TRUE(model.ok()) << model.error();
    const int n_vocab = (*model)->config().n_vocab;
    std::vector<int32_t> tokens(700);  // in-vocabulary ids past the special ones
    uint32_t x = 777;
    for (int32_t& t : tokens) {
      x = x * 1664525u + 1013904223u;
      t = static_cast<int32_t>((x >> 8) % static_cast<uint32_t>(n_vocab - 3)) + 3;
    }
    ThreadPool pool(2);
    const std::vector<float> cold = last_logits(**model, tokens, {}, pool);  // 512 + 188
    std::vector<int> decode_steps;  // a conversation: 500 prompt tokens, then one token per call
    for (int p = 500; p < 700; ++p) decode_steps.push_back(p);
    const std::vector<std::vector<int>> histories = {{100}, {256}, {300, 301, 302, 303, 400}, {600, 650, 699},
                                                     decode_steps};
    for (size_t h = 0; h < histories.size(); ++h) {
      const std::vector<float> other = last_logits(**model, tokens, histories[h], pool);
      ASSERT_EQ(other.size(), cold.size());
      EXPECT_EQ(std::memcmp(other.data(), cold.data(), cold.size() * sizeof(float)), 0)
          << "history " << h << ": logits differ in some bits";
    }
  }
}

}  // namespace
}  // namespace kvtier
