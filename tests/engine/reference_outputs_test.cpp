// The engine against llama.cpp's reference outputs on real models
// (../shared/reference): greedy continuations and perplexity.
#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
#include <nlohmann/json.hpp>
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

nlohmann::json read_json(const std::string& relative) {
  std::ifstream in(shared_path(relative));
  return nlohmann::json::parse(in);
}

std::string read_text(const std::string& relative) {
  std::ifstream in(shared_path(relative), std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

using Loaded = kvtier::testing::LoadedModel;
Loaded load(const std::string& file) { return kvtier::testing::load_shared_model(file); }

// Greedy continuation of n tokens. cache: "contiguous" or a paged ladder ("f16", the default cache).
std::string greedy(Loaded& l, const std::string& prompt, int n, ThreadPool& pool, const std::string& cache) {
  KvCacheOptions options;
  options.ladder = cache;
  return kvtier::testing::greedy_continuation(l, prompt, n, pool, options);
}

TEST(ModelReference, GreedyMatchesLlamaCppOnF16Models) {
  KVTIER_REQUIRE_SHARED("reference/greedy_cases.json");
  const nlohmann::json cases = read_json("reference/greedy_cases.json");
  ThreadPool pool(2);
  int checked = 0;
  std::map<std::string, Loaded> models;
  for (const auto& c : cases["cases"]) {
    const std::string model_file = c["model"];
    if (model_file.find(".f16.") == std::string::npos) continue;
    if (!models.count(model_file)) models[model_file] = load(model_file);
    Loaded& l = models[model_file];
    ASSERT_TRUE(l.model && l.tokenizer);
    const std::string expected = c["greedy_continuation"];
    for (const char* cache : {"contiguous", "f16"}) {
      const std::string ours = greedy(l, c["prompt"], 48, pool, cache);
      // The shorter is a prefix of the other, over at least 60 characters.
      const size_t common = std::min(ours.size(), expected.size());
      EXPECT_GE(common, 60u) << model_file << " / " << c["prompt"];
      EXPECT_EQ(ours.substr(0, common), expected.substr(0, common))
          << cache << " cache, " << model_file << " prompt " << c["prompt"] << "\nours:     " << ours
          << "\nllama.cpp: " << expected;
    }
    ++checked;
  }
  EXPECT_GE(checked, 4);
}

class Perplexity : public ::testing::TestWithParam<std::string> {};

TEST_P(Perplexity, WithinToleranceOfLlamaCpp) {
  const std::string model_file = GetParam();
  KVTIER_REQUIRE_SHARED("models/" + model_file);
  KVTIER_REQUIRE_SHARED("reference/perplexity.json");
  const nlohmann::json ref = read_json("reference/perplexity.json")["f16_kv_c512_chunks16"][model_file];
  Loaded l = load(model_file);
  ASSERT_TRUE(l.model && l.tokenizer);
  const std::vector<int32_t> tokens = l.tokenizer->encode(read_text("eval/eval.txt"), true, false);
  ThreadPool pool(2);
  auto result = compute_perplexity(*l.model, tokens, 512, 16, l.tokenizer->bos_id(), pool,
                                   [&] { return make_contiguous_kv_cache(l.model->config(), 512); });
  ASSERT_TRUE(result.ok()) << result.error();
  const double expected = ref["ppl"];
  const double tolerance = model_file.find(".f16.") != std::string::npos ? 0.005 : 0.01;
  EXPECT_NEAR(result->ppl / expected, 1.0, tolerance) << "kvtier " << result->ppl << " llama.cpp " << expected;
  // The running value after the first chunk as well (a per-chunk check).
  const double first = ref["running_ppl_after_each_chunk"][0];
  EXPECT_NEAR(result->running_ppl[0] / first, 1.0, 2 * tolerance);
}

INSTANTIATE_TEST_SUITE_P(SharedModels, Perplexity,
                         ::testing::Values("tiny-llama-31m.f16.gguf", "tiny-llama-31m.Q8_0.gguf",
                                           "tiny-llama-31m.Q4_K_M.gguf", "tiny-llama-31m.Q4_0.gguf",
                                           "tiny-llama-6m.f16.gguf", "tiny-llama-6m.Q4_0.gguf",
                                           "tiny-llama-6m.Q4_K_M.gguf"),
                         [](const auto& info) {
                           std::string name = info.param;
                           std::replace_if(name.begin(), name.end(), [](char ch) { return !std::isalnum(ch); }, '_');
                           return name;
                         });

}  // namespace
}  // namespace kvtier
