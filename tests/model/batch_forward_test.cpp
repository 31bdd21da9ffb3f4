// Continuous batching at the model level (Model::forward_segments): several sequences, each with its own cache
// and history, evaluated in one pass give every segment the logits its own one-segment forward gives, bit for
// bit, for the weight formats of the test models (F16, Q4_0, Q4_K_M with its Q5_0/Q8_0 fallbacks).
#include <gtest/gtest.h>

#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "common/shared_data.h"
#include "kvtier/kv_options.h"
#include "kvtier/model.h"

namespace kvtier {
namespace {

using kvtier::testing::shared_path;

// One sequence of the batch: `history` tokens already in its cache, then `piece` evaluated in the batch.
struct SequenceCase {
  std::vector<int32_t> history;
  std::vector<int32_t> piece;
};

// Deterministic, varied token ids in [0, n_vocab).
std::vector<int32_t> some_tokens(int n, int seed, int n_vocab) {
  std::vector<int32_t> t(static_cast<size_t>(n));
  uint32_t x = 2654435761u * static_cast<uint32_t>(seed + 1);
  for (int32_t& v : t) {
    x = x * 1664525u + 1013904223u;
    v = static_cast<int32_t>((x >> 8) % static_cast<uint32_t>(n_vocab));
  }
  return t;
}

std::unique_ptr<KvCache> new_cache(const ModelConfig& c, bool paged) {
  if (!paged) return make_contiguous_kv_cache(c, 512);
  auto cache = make_kv_cache(c, 512, KvCacheOptions{}, nullptr);
  EXPECT_TRUE(cache.ok()) << cache.error();
  return cache.ok() ? std::move(*cache) : nullptr;
}

// Decode steps (one token after a history), a first prompt chunk, a later prompt chunk, and rows enough that
// the matmuls take the prefill tile shapes where each sequence alone takes the decode ones.
std::vector<SequenceCase> mixed_cases(int n_vocab) {
  std::vector<SequenceCase> cases;
  for (int i = 0; i < 5; ++i) cases.push_back({some_tokens(3 + 7 * i, i, n_vocab), some_tokens(1, 100 + i, n_vocab)});
  cases.push_back({{}, some_tokens(37, 200, n_vocab)});
  cases.push_back({some_tokens(20, 300, n_vocab), some_tokens(40, 301, n_vocab)});
  cases.push_back({some_tokens(2, 400, n_vocab), some_tokens(2, 401, n_vocab)});
  return cases;
}

void expect_batch_equals_alone(const std::string& file, bool paged) {
  auto loaded = Model::load(shared_path("models/" + file).string());
  ASSERT_TRUE(loaded.ok()) << loaded.error();
  Model& model = **loaded;
  const ModelConfig& c = model.config();
  const size_t vocab = static_cast<size_t>(c.n_vocab);
  ThreadPool pool(2);
  const std::vector<SequenceCase> cases = mixed_cases(c.n_vocab);

  // Each sequence alone: history, then the piece as its own forward (logits of every row of the piece).
  std::vector<std::vector<float>> alone(cases.size());  // [cases][piece, n_vocab]
  for (size_t i = 0; i < cases.size(); ++i) {
    auto cache = new_cache(c, paged);
    ASSERT_TRUE(cache);
    const SequenceCase& sc = cases[i];
    const int h = static_cast<int>(sc.history.size()), n = static_cast<int>(sc.piece.size());
    if (h > 0) ASSERT_TRUE(model.forward(sc.history.data(), h, 0, *cache, pool, h, nullptr).ok());
    alone[i].resize(static_cast<size_t>(n) * vocab);
    ASSERT_TRUE(model.forward(sc.piece.data(), n, h, *cache, pool, 0, alone[i].data()).ok());
  }

  // All together: the same histories, then every piece in one batched pass.
  std::vector<std::unique_ptr<KvCache>> caches;
  std::vector<std::vector<float>> together(cases.size());  // [cases][piece, n_vocab]
  std::vector<ForwardSegment> segments;
  for (size_t i = 0; i < cases.size(); ++i) {
    caches.push_back(new_cache(c, paged));
    ASSERT_TRUE(caches.back());
    const SequenceCase& sc = cases[i];
    const int h = static_cast<int>(sc.history.size()), n = static_cast<int>(sc.piece.size());
    if (h > 0) ASSERT_TRUE(model.forward(sc.history.data(), h, 0, *caches.back(), pool, h, nullptr).ok());
    together[i].assign(static_cast<size_t>(n) * vocab, -1.0f);
    segments.push_back({sc.piece.data(), n, h, caches.back().get(), 0, together[i].data()});
  }
  ASSERT_TRUE(model.forward_segments(segments, pool).ok());
  for (size_t i = 0; i < cases.size(); ++i) {
    EXPECT_EQ(caches[i]->n_tokens(), static_cast<int>(cases[i].history.size() + cases[i].piece.size()));
    ASSERT_EQ(alone[i].size(), together[i].size());
    size_t first_diff = 0;
    while (first_diff < alone[i].size() && std::memcmp(&alone[i][first_diff], &together[i][first_diff], 4) == 0) {
      ++first_diff;
    }
    EXPECT_EQ(first_diff, alone[i].size())
        << file << ": segment " << i << " row " << first_diff / vocab << " token " << first_diff % vocab << ": alone "
        << alone[i][first_diff] << ", batched " << together[i][first_diff];
  }
}

struct ModelCase {
  const char* file;
  bool paged;  // the server's default cache (kvtier/kv_options.h) rather than the plain contiguous one
};

class BatchForwardTest : public ::testing::TestWithParam<ModelCase> {};

TEST_P(BatchForwardTest, EachSegmentEqualsItsOwnForwardBitForBit) {
  KVTIER_REQUIRE_SHARED(std::string("models/") + GetParam().file);
  expect_batch_equals_alone(GetParam().file, GetParam().paged);
}

INSTANTIATE_TEST_SUITE_P(SharedModels, BatchForwardTest,
                         ::testing::Values(ModelCase{"tiny-llama-6m.f16.gguf", false},
                                           ModelCase{"tiny-llama-6m.Q4_0.gguf", false},
                                           ModelCase{"tiny-llama-6m.Q4_K_M.gguf", true},
                                           ModelCase{"tiny-llama-31m.Q4_K_M.gguf", true}),
                         [](const auto& info) {
                           std::string name = info.param.file;
                           name = name.substr(std::string("tiny-llama-").size());
                           name = name.substr(0, name.size() - std::string(".gguf").size());
                           for (char& ch : name) {
                             if (ch == '.' || ch == '-') ch = '_';
                           }
                           return name;
                         });

TEST(BatchForward, RefusesSharedCachesAndOversizedBatches) {
  KVTIER_REQUIRE_SHARED("models/tiny-llama-6m.f16.gguf");
  auto loaded = Model::load(shared_path("models/tiny-llama-6m.f16.gguf").string());
  ASSERT_TRUE(loaded.ok()) << loaded.error();
  Model& model = **loaded;
  ThreadPool pool(1);
  auto a = make_contiguous_kv_cache(model.config(), 1024);
  auto b = make_contiguous_kv_cache(model.config(), 1024);
  const std::vector<int32_t> tokens(kMaxBatch, 5);
  const ForwardSegment same[] = {{tokens.data(), 1, 0, a.get(), 1, nullptr}, {tokens.data(), 1, 0, a.get(), 1, nullptr}};
  EXPECT_FALSE(model.forward_segments(same, pool).ok());
  const ForwardSegment too_many[] = {{tokens.data(), kMaxBatch, 0, a.get(), kMaxBatch, nullptr},
                                     {tokens.data(), 1, 0, b.get(), 1, nullptr}};
  EXPECT_FALSE(model.forward_segments(too_many, pool).ok());
  const ForwardSegment wrong_pos[] = {{tokens.data(), 1, 3, a.get(), 1, nullptr}};
  EXPECT_FALSE(model.forward_segments(wrong_pos, pool).ok());
  EXPECT_EQ(a->n_tokens(), 0);
  EXPECT_EQ(b->n_tokens(), 0);
}

}  // namespace
}  // namespace kvtier
