// The model fuzzer's seed corpus (fuzz/corpus/model/, written by tools/make_fuzz_seeds) is what its names say:
// every architecture's seed loads through Model::from_file and runs a step, every bad-input seed is refused with
// one error naming the key or tensor. (The fuzzer mutates these; seeds that stopped loading would leave the
// loader's accepting paths unfuzzed.)
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "kvtier/gguf.h"
#include "kvtier/kv_options.h"
#include "kvtier/model.h"

namespace kvtier {
namespace {

namespace fs = std::filesystem;

const fs::path kSeeds = fs::path(KVTIER_SOURCE_DIR) / "fuzz" / "corpus" / "model";

Result<std::unique_ptr<Model>> load_seed(const std::string& name) {
  std::ifstream in(kSeeds / (name + ".gguf"), std::ios::binary);
  const std::vector<uint8_t> bytes(std::istreambuf_iterator<char>(in), {});
  auto file = gguf::File::from_bytes(bytes.data(), bytes.size());
  if (!file.ok()) return file.status();
  return Model::from_file(std::move(*file));
}

TEST(ModelFuzzSeeds, EveryArchitectureSeedLoadsAndRuns) {
  ThreadPool pool(1);
  for (const char* name : {"llama", "qwen3", "qwen3-yarn", "qwen3moe", "llama-moe", "gemma2", "gemma3", "smollm3"}) {
    SCOPED_TRACE(name);
    auto model = load_seed(name);
    ASSERT_TRUE(model.ok()) << model.error();
    const ModelConfig& c = (*model)->config();
    EXPECT_EQ(c.n_embd, 32);
    const int32_t tokens[2] = {1, 2};
    std::vector<float> logits(static_cast<size_t>(c.n_vocab));  // [n_vocab]
    auto cache = make_kv_cache(c, 8, {});
    ASSERT_TRUE(cache.ok()) << cache.error();
    Status s = (*model)->forward(tokens, 2, 0, **cache, pool, 1, logits.data());
    EXPECT_TRUE(s.ok()) << s.message();
  }
}

TEST(ModelFuzzSeeds, EveryBadSeedIsRefusedByName) {
  const std::pair<const char*, const char*> cases[] = {
      {"bad-window-larger-than-context", "attention.sliding_window"},
      {"bad-unknown-rope-scaling", "rope.scaling.type"},
      {"bad-expert-count", "expert_count"},
      {"bad-missing-tensor", "blk.1.ffn_down.weight"},
      {"bad-misshapen-tensor", "blk.0.attn_k_norm.weight"},
  };
  for (const auto& [name, named] : cases) {
    auto model = load_seed(name);
    ASSERT_FALSE(model.ok()) << name;
    EXPECT_NE(model.error().find(named), std::string::npos) << name << ": " << model.error();
  }
}

}  // namespace
}  // namespace kvtier
