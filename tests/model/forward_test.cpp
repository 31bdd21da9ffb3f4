// Forward-pass invariants on a real model: batching must not change results,
// the cache interface contract is enforced, and bad input is refused.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "common/shared_data.h"
#include "kvtier/model.h"

namespace kvtier {
namespace {

using kvtier::testing::shared_path;

int argmax(const float* v, int n) { return static_cast<int>(std::max_element(v, v + n) - v); }

std::unique_ptr<Model> load_6m() {
  auto model = Model::load(shared_path("models/tiny-llama-6m.f16.gguf").string());
  EXPECT_TRUE(model.ok()) << model.error();
  return model.ok() ? std::move(*model) : nullptr;
}

TEST(Forward, BatchedPrefillEqualsTokenByTokenDecode) {
  KVTIER_REQUIRE_SHARED("models/tiny-llama-6m.f16.gguf");
  auto model = load_6m();
  ASSERT_TRUE(model);
  const ModelConfig& c = model->config();
  const std::vector<int32_t> tokens = {8190, 39, 7428, 2604, 469, 1515, 706, 514, 1006, 3609, 3005, 13};
  const int n = static_cast<int>(tokens.size());
  ThreadPool pool(2);

  std::vector<float> batched(static_cast<size_t>(n) * c.n_vocab);  // [n, n_vocab]
  auto cache_a = make_contiguous_kv_cache(c, 64);
  ASSERT_TRUE(model->forward(tokens.data(), n, 0, *cache_a, pool, 0, batched.data()).ok());

  auto cache_b = make_contiguous_kv_cache(c, 64);
  std::vector<float> single(c.n_vocab);  // [n_vocab]
  for (int i = 0; i < n; ++i) {
    ASSERT_TRUE(model->forward(&tokens[i], 1, i, *cache_b, pool, 0, single.data()).ok());
    double max_diff = 0, max_abs = 0;
    for (int v = 0; v < c.n_vocab; ++v) {
      max_diff = std::max(max_diff, std::fabs(double(single[v]) - batched[static_cast<size_t>(i) * c.n_vocab + v]));
      max_abs = std::max(max_abs, std::fabs(double(single[v])));
    }
    EXPECT_LT(max_diff, 1e-3 * std::max(1.0, max_abs)) << "position " << i;
    EXPECT_EQ(argmax(single.data(), c.n_vocab), argmax(batched.data() + static_cast<size_t>(i) * c.n_vocab, c.n_vocab));
  }
  EXPECT_EQ(cache_b->n_tokens(), n);
}

TEST(Forward, ThreadCountDoesNotChangeGreedyChoice) {
  KVTIER_REQUIRE_SHARED("models/tiny-llama-6m.f16.gguf");
  auto model = load_6m();
  ASSERT_TRUE(model);
  const ModelConfig& c = model->config();
  const std::vector<int32_t> tokens = {8190, 469, 1515, 706, 514};
  std::vector<int32_t> winners;
  for (int threads : {1, 2, 3}) {
    ThreadPool pool(threads);
    auto cache = make_contiguous_kv_cache(c, 16);
    std::vector<float> logits(c.n_vocab);
    ASSERT_TRUE(model->forward(tokens.data(), 5, 0, *cache, pool, 4, logits.data()).ok());
    winners.push_back(argmax(logits.data(), c.n_vocab));
  }
  EXPECT_EQ(winners[0], winners[1]);
  EXPECT_EQ(winners[0], winners[2]);
}

TEST(Forward, RefusesBadPositionsTokensAndFullContext) {
  KVTIER_REQUIRE_SHARED("models/tiny-llama-6m.f16.gguf");
  auto model = load_6m();
  ASSERT_TRUE(model);
  ThreadPool pool(1);
  auto cache = make_contiguous_kv_cache(model->config(), 4);
  std::vector<float> logits(model->config().n_vocab);
  const int32_t bad_token = model->config().n_vocab;
  EXPECT_FALSE(model->forward(&bad_token, 1, 0, *cache, pool, 0, logits.data()).ok());
  const int32_t t[5] = {1, 2, 3, 4, 5};
  EXPECT_FALSE(model->forward(t, 1, 3, *cache, pool, 0, logits.data()).ok()) << "gap in positions";
  Status full = model->forward(t, 5, 0, *cache, pool, 0, logits.data());
  EXPECT_FALSE(full.ok());
  EXPECT_NE(full.message().find("context"), std::string::npos) << full.message();
}

TEST(Forward, LoadRejectsNonModelFile) {
  KVTIER_REQUIRE_SHARED("vocab/ggml-vocab-gpt-2.gguf");
  auto model = Model::load(shared_path("vocab/ggml-vocab-gpt-2.gguf").string());
  ASSERT_FALSE(model.ok());
  EXPECT_NE(model.error().find("architecture"), std::string::npos) << model.error();
}

}  // namespace
}  // namespace kvtier
