// The low-bit weight types (Q2_K, Q3_K_M mixes, IQ4_NL, IQ4_XS) against llama.cpp on the same files:
// tiny-llama-6m quantized by llama.cpp's llama-quantize (tests/data/quant/, a few MB each) and what
// llama.cpp's llama-perplexity and llama-completion said on them (tests/data/quant/references.json),
// both made by scripts/make_quant_references.sh.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "common/loaded_model.h"
#include "common/shared_data.h"
#include "kvtier/gguf.h"
#include "kvtier/kv_options.h"
#include "kvtier/model.h"
#include "kvtier/sampling.h"
#include "kvtier/session.h"
#include "kvtier/tokenizer.h"

namespace kvtier {
namespace {

const std::filesystem::path kDataDir = std::filesystem::path(KVTIER_SOURCE_DIR) / "tests" / "data" / "quant";

nlohmann::json references() {
  std::ifstream in(kDataDir / "references.json");
  return nlohmann::json::parse(in);
}

using Loaded = testing::LoadedModel;
Loaded load(const std::string& file) { return testing::load_model_file((kDataDir / file).string()); }

size_t common_prefix(const std::string& a, const std::string& b) {
  size_t n = 0;
  while (n < a.size() && n < b.size() && a[n] == b[n]) ++n;
  return n;
}

class QuantReference : public ::testing::TestWithParam<std::string> {};

// The file holds the weight type it is named for (llama-quantize's mix puts it in most matrices).
TEST_P(QuantReference, FileHoldsItsWeightType) {
  const std::string file = GetParam();
  const nlohmann::json ref = references()["files"][file];
  Loaded l = load(file);
  ASSERT_TRUE(l.model);
  const std::string type = ref["type"];
  const std::string main_type = type.substr(0, type.find("_M"));  // Q3_K_M is a Q3_K mix
  int tensors_of_type = 0;
  for (const gguf::TensorInfo& t : l.model->file().tensors()) {
    if (ggml_type_name(t.type) == main_type) ++tensors_of_type;
  }
  EXPECT_GE(tensors_of_type, 8) << file << " has " << tensors_of_type << " " << main_type << " tensors";
}

// Greedy text on quantized weights: llama.cpp and kvtier quantize activations alike (Q8_0 / Q8_K) but sum in
// different orders, so where two logits nearly tie (often, on a 6M-parameter model) the argmax may differ and
// the texts part, as they do on the shared Q4_0 / Q4_K_M files (reference/greedy_cases.json: "an exact match
// is not required there"). What is required: the texts agree for a good stretch before they part, over the
// four prompts together at least 100 characters (measured 168-256 on these files; kvtier's existing Q4_0 and
// Q4_K_M reach 303 and 248 on the shared 6m files; a wrong decoder parts within a token or two).
TEST_P(QuantReference, GreedyAgreesWithLlamaCppUntilANearTie) {
  const std::string file = GetParam();
  const nlohmann::json ref = references()["files"][file];
  Loaded l = load(file);
  ASSERT_TRUE(l.model && l.tokenizer);
  ThreadPool pool(2);
  size_t agreed = 0;
  std::string report;
  for (const auto& c : ref["greedy"]) {
    const std::string expected = c["greedy_continuation"];
    const std::string ours = testing::greedy_continuation(l, c["prompt"], 48, pool);
    const size_t common = common_prefix(ours, expected);
    agreed += common;
    report += "\n" + c["prompt"].get<std::string>() + ": " + std::to_string(common) + " chars\n  ours:      " + ours +
              "\n  llama.cpp: " + expected;
  }
  EXPECT_GE(agreed, 100u) << file << report;
}

TEST_P(QuantReference, PerplexityWithinOnePercentOfLlamaCpp) {
  KVTIER_REQUIRE_SHARED("eval/eval.txt");
  const std::string file = GetParam();
  const nlohmann::json ref = references()["files"][file];
  Loaded l = load(file);
  ASSERT_TRUE(l.model && l.tokenizer);
  std::ifstream in(kvtier::testing::shared_path("eval/eval.txt"), std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  const std::vector<int32_t> tokens = l.tokenizer->encode(text.str(), true, false);
  ThreadPool pool(2);
  auto result = compute_perplexity(*l.model, tokens, 512, 16, l.tokenizer->bos_id(), pool,
                                   [&] { return make_contiguous_kv_cache(l.model->config(), 512); });
  ASSERT_TRUE(result.ok()) << result.error();
  const double expected = ref["ppl"];
  EXPECT_NEAR(result->ppl / expected, 1.0, 0.01) << file << ": kvtier " << result->ppl << " llama.cpp " << expected;
  const double first = ref["running_ppl_after_each_chunk"][0];
  EXPECT_NEAR(result->running_ppl[0] / first, 1.0, 0.02);
}

INSTANTIATE_TEST_SUITE_P(LowBitTypes, QuantReference,
                         ::testing::Values("tiny-llama-6m.Q2_K.gguf", "tiny-llama-6m.Q3_K_M.gguf",
                                           "tiny-llama-6m.IQ4_NL.gguf", "tiny-llama-6m.IQ4_XS.gguf"),
                         [](const auto& info) {
                           std::string name = info.param;
                           std::replace_if(name.begin(), name.end(), [](char ch) { return !std::isalnum(ch); }, '_');
                           return name;
                         });

}  // namespace
}  // namespace kvtier
