// Files of the newer architectures (qwen3, qwen3moe, Mixtral-style llama MoE, phi3, YaRN) with one thing
// wrong: each is refused at load with one error naming the key or tensor. The files are made from the shared
// tiny-llama-6m by tools/arch_model.h, then edited through the GGUF writer (common/gguf_copy.h).
#include <gtest/gtest.h>

#include <unistd.h>

#include <filesystem>
#include <functional>
#include <string>

#include "common/gguf_copy.h"
#include "common/shared_data.h"
#include "kvtier/model.h"
#include "../../tools/arch_model.h"  // header-only; tools/ is not on the include path

namespace kvtier {
namespace {

namespace fs = std::filesystem;

class ArchValidation : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!fs::exists(testing::shared_path("models/tiny-llama-6m.f16.gguf"))) {
      GTEST_SKIP() << "needs ../shared/models/tiny-llama-6m.f16.gguf (absent in a fresh clone)";
    }
    dir_ = fs::temp_directory_path() / ("kvtier_arch_validation_" + std::to_string(getpid()));
    fs::create_directories(dir_);
  }
  void TearDown() override {
    if (!dir_.empty()) fs::remove_all(dir_);
  }

  // The error of loading `variant` after `edit`; empty when it loads.
  std::string load_error(const std::string& variant, const testing::GgufEdit& edit) {
    const std::string good = (dir_ / (variant + ".gguf")).string();
    const std::string bad = (dir_ / (variant + ".bad.gguf")).string();
    if (!fs::exists(good)) {
      const Status made =
          tools::make_arch_model(testing::shared_path("models/tiny-llama-6m.f16.gguf").string(), variant, good);
      EXPECT_TRUE(made.ok()) << made.message();
      auto model = Model::load(good);
      EXPECT_TRUE(model.ok()) << "the unedited " << variant << " must load: " << model.error();
    }
    const Status copied = testing::copy_gguf(good, bad, edit);
    EXPECT_TRUE(copied.ok()) << copied.message();
    auto model = Model::load(bad);
    return model.ok() ? std::string() : model.error();
  }

  static testing::GgufEdit metadata(std::function<void(gguf::GgufWriter&)> edit) {
    testing::GgufEdit e;
    e.metadata = std::move(edit);
    return e;
  }
  static testing::GgufEdit set_u32(const std::string& key, uint32_t value) {
    return metadata([=](gguf::GgufWriter& w) { w.set_u32(key, value); });
  }
  static testing::GgufEdit without_tensor(const std::string& name) {
    testing::GgufEdit e;
    e.keep = [=](const gguf::TensorInfo& t) { return t.name != name; };
    return e;
  }

  fs::path dir_;
};

#define EXPECT_MENTIONS(error, text) \
  EXPECT_NE((error).find(text), std::string::npos) << "error: '" << (error) << "' should name " << (text)

TEST_F(ArchValidation, ExpertCountThatDisagreesWithTheTensors) {
  const std::string e = load_error("qwen3moe", set_u32("qwen3moe.expert_count", 3));
  EXPECT_MENTIONS(e, "blk.0.ffn_gate_inp.weight");
  EXPECT_MENTIONS(e, "expert_count");
  const std::string llama = load_error("llama-moe", set_u32("llama.expert_count", 8));
  EXPECT_MENTIONS(llama, "blk.0.ffn_gate_inp.weight");
}

TEST_F(ArchValidation, ExpertUsedCountAboveExpertCount) {
  EXPECT_MENTIONS(load_error("qwen3moe", set_u32("qwen3moe.expert_used_count", 5)), "qwen3moe.expert_used_count");
}

TEST_F(ArchValidation, MoeArchitectureWithoutExpertCount) {
  const std::string e = load_error("qwen3moe", metadata([](gguf::GgufWriter& w) { w.remove("qwen3moe.expert_count"); }));
  EXPECT_MENTIONS(e, "qwen3moe.expert_count");
}

TEST_F(ArchValidation, ExpertHiddenSizeThatDisagreesWithTheTensors) {
  const std::string e = load_error("qwen3moe", set_u32("qwen3moe.expert_feed_forward_length", 512));
  EXPECT_MENTIONS(e, "blk.0.ffn_gate_exps.weight");
}

TEST_F(ArchValidation, MissingExpertOrNormTensors) {
  EXPECT_MENTIONS(load_error("llama-moe", without_tensor("blk.2.ffn_down_exps.weight")), "blk.2.ffn_down_exps.weight");
  EXPECT_MENTIONS(load_error("qwen3moe", without_tensor("blk.1.ffn_gate_inp.weight")), "blk.1.ffn_gate_inp.weight");
  EXPECT_MENTIONS(load_error("qwen3", without_tensor("blk.3.attn_k_norm.weight")), "blk.3.attn_k_norm.weight");
}

TEST_F(ArchValidation, MisshapenFusedTensors) {
  // ffn_up of phi3 must hold gate and up rows (2 n_ff); here it holds n_ff.
  testing::GgufEdit halve_ffn_up;
  halve_ffn_up.tensor = [](const gguf::TensorInfo& t, std::vector<int64_t>& dims, uint64_t& n_bytes) {
    if (t.name != "blk.1.ffn_up.weight") return;
    dims[1] /= 2;
    n_bytes /= 2;
  };
  const std::string e = load_error("phi3", halve_ffn_up);
  EXPECT_MENTIONS(e, "blk.1.ffn_up.weight");
  EXPECT_MENTIONS(e, "shape");
  const std::string qkv = load_error("phi3", set_u32("phi3.attention.head_count_kv", 4));
  EXPECT_MENTIONS(qkv, "blk.0.attn_qkv.weight");
}

TEST_F(ArchValidation, UnknownOrIncompleteRopeScaling) {
  const std::string unknown = load_error("qwen3", metadata([](gguf::GgufWriter& w) {
    w.set_string("qwen3.rope.scaling.type", "dynamic");
  }));
  EXPECT_MENTIONS(unknown, "qwen3.rope.scaling.type");
  EXPECT_MENTIONS(unknown, "dynamic");
  const std::string no_factor = load_error("qwen3-yarn", metadata([](gguf::GgufWriter& w) {
    w.remove("qwen3.rope.scaling.factor");
  }));
  EXPECT_MENTIONS(no_factor, "qwen3.rope.scaling.factor");
  const std::string bad_orig = load_error("qwen3-yarn", set_u32("qwen3.rope.scaling.original_context_length", 0));
  EXPECT_MENTIONS(bad_orig, "qwen3.rope.scaling.original_context_length");
}

TEST_F(ArchValidation, LongRopeFactorsMissingOrMisshapen) {
  EXPECT_MENTIONS(load_error("phi3-longrope", without_tensor("rope_factors_short.weight")), "rope_factors_short.weight");
  const std::string e = load_error("phi3", metadata([](gguf::GgufWriter& w) {
    const std::vector<float> factors(16, 1.0f);  // rope.dimension_count 16 takes 8
    (void)w.add_tensor_f32("rope_factors_long.weight", {16}, factors);
    (void)w.add_tensor_f32("rope_factors_short.weight", {16}, factors);
  }));
  EXPECT_MENTIONS(e, "rope_factors_short.weight");
}

}  // namespace
}  // namespace kvtier
