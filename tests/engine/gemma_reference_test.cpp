// Gemma 2 and Gemma 3 against llama.cpp on the same files: the trained tiny-llama-6m weights in Gemma's layout
// (tools/gemma_model.h, made here at run time), sliding window 32 on every other layer, and what llama.cpp's
// llama-completion and llama-perplexity said on them (tests/data/gemma/references.json, made by
// scripts/make_gemma_references.sh).
#include <gtest/gtest.h>

#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <functional>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "../../tools/gemma_model.h"  // header-only; tools/ is not on the include path
#include "common/loaded_model.h"
#include "common/shared_data.h"
#include "kvtier/kv_options.h"
#include "kvtier/model.h"
#include "kvtier/sampling.h"
#include "kvtier/session.h"
#include "kvtier/tokenizer.h"

namespace kvtier {
namespace {

const std::filesystem::path kDataDir = std::filesystem::path(KVTIER_SOURCE_DIR) / "tests" / "data" / "gemma";

nlohmann::json references() {
  std::ifstream in(kDataDir / "references.json");
  return nlohmann::json::parse(in);
}

using Loaded = testing::LoadedModel;

// Writes the test model of `arch` (tools/gemma_model.h defaults, as the script uses) and loads it.
Loaded load(const std::string& arch) {
  Loaded l;
  auto source = gguf::File::open(testing::shared_path("models/tiny-llama-6m.f16.gguf").string());
  EXPECT_TRUE(source.ok()) << source.error();
  if (!source.ok()) return l;
  tools::GemmaModelOptions options;
  options.architecture = arch;
  gguf::GgufWriter writer;
  EXPECT_TRUE(tools::make_gemma_model(**source, options, writer).ok());
  const std::filesystem::path path =
      std::filesystem::temp_directory_path() / ("kvtier-" + arch + "-" + std::to_string(getpid()) + ".gguf");
  EXPECT_TRUE(writer.write_file(path.string()).ok());
  l = testing::load_model_file(path.string());
  std::filesystem::remove(path);  // the mapping stays valid
  return l;
}

class GemmaReference : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override { KVTIER_REQUIRE_SHARED("models/tiny-llama-6m.f16.gguf"); }
};

TEST_P(GemmaReference, ConfigHasWindowsAndSoftCaps) {
  Loaded l = load(GetParam());
  ASSERT_TRUE(l.model);
  const ModelConfig& c = l.model->config();
  EXPECT_TRUE(c.gemma);
  EXPECT_EQ(c.sliding_window, 32);
  // Pattern 2: layers 0 and 2 windowed, 1 and 3 global.
  EXPECT_EQ(c.layer_window(0), 32);
  EXPECT_EQ(c.layer_window(1), 0);
  EXPECT_EQ(c.layer_window(2), 32);
  EXPECT_EQ(c.layer_window(3), 0);
  if (GetParam() == "gemma2") {
    EXPECT_FLOAT_EQ(c.attn_softcap, 20.0f);
    EXPECT_FLOAT_EQ(c.final_softcap, 15.0f);
  } else {
    EXPECT_TRUE(c.has_qk_norm);
    EXPECT_FLOAT_EQ(c.rope_freq_base, 20000.0f);
    EXPECT_FLOAT_EQ(c.rope_freq_base_swa, 10000.0f);
  }
}

// 48 greedy tokens identical to llama.cpp's (its 64-token text starts with ours), with the contiguous f16
// cache and the paged f16 cache. Prompt + 48 tokens reach well past the window of 32.
TEST_P(GemmaReference, GreedyTokensMatchLlamaCpp) {
  const nlohmann::json ref = references()["models"][GetParam()];
  Loaded l = load(GetParam());
  ASSERT_TRUE(l.model && l.tokenizer);
  ThreadPool pool(2);
  for (const char* cache : {"contiguous", "f16"}) {
    KvCacheOptions kv;
    kv.ladder = cache;
    for (const auto& c : ref["greedy"]) {
      const std::string expected = c["greedy_continuation"];
      const std::string ours = testing::greedy_continuation(l, c["prompt"], 48, pool, kv);
      EXPECT_EQ(expected.substr(0, ours.size()), ours) << cache << " cache, prompt: " << c["prompt"];
    }
  }
}

TEST_P(GemmaReference, PerplexityWithinHalfAPercentOfLlamaCpp) {
  KVTIER_REQUIRE_SHARED("eval/eval.txt");
  const nlohmann::json ref = references()["models"][GetParam()];
  Loaded l = load(GetParam());
  ASSERT_TRUE(l.model && l.tokenizer);
  std::ifstream in(testing::shared_path("eval/eval.txt"), std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  const std::vector<int32_t> tokens = l.tokenizer->encode(text.str(), true, false);
  ThreadPool pool(2);
  // The first 8 of the reference's 16 chunks (its running perplexity after chunk 8): half the time in CI.
  const double expected = ref["running_ppl_after_each_chunk"][7];
  KvCacheOptions paged;
  paged.ladder = "f16";
  for (const bool contiguous : {true, false}) {
    auto result = compute_perplexity(*l.model, tokens, 128, 8, l.tokenizer->bos_id(), pool, [&] {
      return contiguous ? make_contiguous_kv_cache(l.model->config(), 128)
                        : make_kv_cache(l.model->config(), 128, paged).value();
    });
    ASSERT_TRUE(result.ok()) << result.error();
    std::printf("%s %s cache: kvtier PPL %.4f, llama.cpp %.4f (%+.3f%%)\n", GetParam().c_str(),
                contiguous ? "contiguous" : "paged", result->ppl, expected, 100.0 * (result->ppl / expected - 1.0));
    EXPECT_NEAR(result->ppl / expected, 1.0, 0.005)
        << (contiguous ? "contiguous" : "paged") << ": kvtier " << result->ppl << " llama.cpp " << expected;
  }
}

// Context shift and prompt reuse cut the sequence back behind pages a windowed layer released: the session
// evaluates the kept tokens again, and what follows is what evaluating the shorter sequence from scratch gives.
TEST_P(GemmaReference, CutsBehindReleasedPagesReevaluate) {
  Loaded l = load(GetParam());
  ASSERT_TRUE(l.model && l.tokenizer);
  ThreadPool pool(2);
  std::vector<int32_t> tokens =
      l.tokenizer->encode("The Linux kernel is a free and open-source, monolithic, modular, multitasking, Unix-like "
                          "operating system kernel. It was originally written in 1991 by Linus Torvalds for his "
                          "i386-based PC, and it was soon adopted as the kernel for the GNU operating system, which "
                          "was written to be a free replacement for Unix. Since the late 1990s, it has been included "
                          "as part of a large number of operating system distributions.", true, true);
  tokens.insert(tokens.end(), tokens.begin() + 1, tokens.end());  // twice: 3 pages, one out of the hot ring
  // Past the sinks (4), the two-page hot ring of the f16 preset and the window (32): a pool page is released.
  ASSERT_GT(tokens.size(), 4u + 2 * 64 + 32);
  auto session_with = [&](int n_ctx) {
    return Session(*l.model, make_kv_cache(l.model->config(), n_ctx, {}).value(), pool);
  };
  Session session = session_with(256);
  ASSERT_TRUE(session.append(tokens).ok());
  const std::string described = session.cache().describe();
  EXPECT_NE(described.find("layers released"), std::string::npos) << described;
  EXPECT_EQ(described.find("released 0 pages"), std::string::npos) << described;
  // Shift: drop [10, 40); the cache is emptied and [0, 10) evaluated again, then the tail.
  ASSERT_TRUE(session.shift_context(10, 30).ok());
  std::vector<int32_t> shifted(tokens.begin(), tokens.begin() + 10);
  shifted.insert(shifted.end(), tokens.begin() + 40, tokens.end());
  EXPECT_EQ(session.tokens(), shifted);
  EXPECT_EQ(session.n_past(), static_cast<int>(shifted.size()));
  Session fresh = session_with(256);
  ASSERT_TRUE(fresh.append(shifted).ok());
  ASSERT_EQ(session.last_logits().size(), fresh.last_logits().size());
  for (size_t i = 0; i < fresh.last_logits().size(); ++i) {
    ASSERT_NEAR(session.last_logits()[i], fresh.last_logits()[i], 1e-3f) << i;
  }
}

// Bad metadata gives one error naming the key.
TEST_P(GemmaReference, BadWindowMetadataIsRefusedByName) {
  auto source = gguf::File::open(testing::shared_path("models/tiny-llama-6m.f16.gguf").string());
  ASSERT_TRUE(source.ok());
  const std::string arch = GetParam();
  struct BadKey {
    std::function<void(gguf::GgufWriter&)> edit;
    std::string key;
  };
  const BadKey cases[] = {
      {[&](gguf::GgufWriter& w) { w.set_u32(arch + ".attention.sliding_window", 1u << 20); }, "attention.sliding_window"},
      {[&](gguf::GgufWriter& w) { w.set_string(arch + ".attention.sliding_window_pattern", "6"); },
       "attention.sliding_window_pattern"},
      {[&](gguf::GgufWriter& w) { w.set_f32(arch + ".rope.freq_base_swa", -1.0f); }, "rope.freq_base_swa"},
  };
  for (const BadKey& c : cases) {
    tools::GemmaModelOptions options;
    options.architecture = arch;
    gguf::GgufWriter writer;
    ASSERT_TRUE(tools::make_gemma_model(**source, options, writer).ok());
    c.edit(writer);
    const std::vector<uint8_t> image = writer.to_bytes();
    auto file = gguf::File::from_bytes(image.data(), image.size());
    ASSERT_TRUE(file.ok()) << file.error();
    auto config = ModelConfig::from_gguf(**file);
    ASSERT_FALSE(config.ok()) << c.key;
    EXPECT_NE(config.error().find(c.key), std::string::npos) << config.error();
  }
}

INSTANTIATE_TEST_SUITE_P(Gemma, GemmaReference, ::testing::Values("gemma2", "gemma3"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace kvtier
