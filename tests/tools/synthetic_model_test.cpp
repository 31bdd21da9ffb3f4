// The synthetic benchmark models (tools/synthetic_model.h): their tensor types
// must be the ones llama-quantize picks (checked against the real quantized
// test models), their tokenizer a padded copy of the source vocabulary, and
// kvtier must load and run them with finite logits, for every --arch.
#include <gtest/gtest.h>

#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <filesystem>
#include <map>
#include <set>

#include "common/shared_data.h"
#include "kvtier/f16.h"
#include "kvtier/gguf.h"
#include "kvtier/gguf_writer.h"
#include "kvtier/model.h"
#include "kvtier/thread_pool.h"
#include "../../tools/synthetic_model.h"  // header-only; tools/ is not on the include path

namespace kvtier::tools {
namespace {

using kvtier::testing::shared_path;

std::unique_ptr<gguf::File> open_shared(const std::string& relative) {
  auto file = gguf::File::open(shared_path(relative).string());
  EXPECT_TRUE(file.ok()) << file.error();
  return file.ok() ? std::move(*file) : nullptr;
}

std::unique_ptr<gguf::File> build_to_file(const SyntheticOptions& o, const gguf::File& vocab) {
  gguf::GgufWriter w;
  Status s = build_synthetic_model(o, vocab, w);
  EXPECT_TRUE(s.ok()) << s.message();
  const std::vector<uint8_t> image = w.to_bytes();
  auto file = gguf::File::from_bytes(image.data(), image.size());
  EXPECT_TRUE(file.ok()) << file.error();
  return file.ok() ? std::move(*file) : nullptr;
}

// The shape of a real model file, so that the generator can be compared with llama-quantize on it.
SyntheticShape shape_of(const gguf::File& f) {
  auto u = [&](const char* key) { return static_cast<int64_t>(*f.get_u32(key)); };
  SyntheticShape s;
  s.name = "test";
  s.n_embd = u("llama.embedding_length");
  s.n_layer = u("llama.block_count");
  s.n_head = u("llama.attention.head_count");
  s.n_head_kv = u("llama.attention.head_count_kv");
  s.head_dim = s.n_embd / s.n_head;
  s.n_ff = u("llama.feed_forward_length");
  s.n_vocab = u("llama.vocab_size");
  s.n_ctx = u("llama.context_length");
  s.rope_base = *f.get_f32("llama.rope.freq_base");
  s.tied_embeddings = f.find_tensor("output.weight") == nullptr;
  s.rope_scaling_factor = 0;  // these models have no rope_freqs.weight
  return s;
}

struct QuantizedFileCase {
  const char* file;
  WeightMix mix;
};

class MatchesLlamaQuantize : public ::testing::TestWithParam<QuantizedFileCase> {};

// tiny-llama-6m is tied (token_embd as the output tensor); tiny-llama-31m is not,
// and its ffn rows of 1408 force the K-quant fallbacks (Q5_0 / Q8_0).
TEST_P(MatchesLlamaQuantize, EveryTensorHasTheSameTypeAndShape) {
  const std::string relative = std::string("models/") + GetParam().file;
  KVTIER_REQUIRE_SHARED(relative);
  auto real = open_shared(relative);
  ASSERT_TRUE(real);
  SyntheticOptions o;
  o.shape = shape_of(*real);
  o.mix = GetParam().mix;
  auto synthetic = build_to_file(o, *real);
  ASSERT_TRUE(synthetic);

  EXPECT_EQ(*synthetic->get_u32("general.file_type"), *real->get_u32("general.file_type"));
  ASSERT_EQ(synthetic->tensors().size(), real->tensors().size());
  for (const gguf::TensorInfo& want : real->tensors()) {
    const gguf::TensorInfo* got = synthetic->find_tensor(want.name);
    ASSERT_NE(got, nullptr) << want.name;
    EXPECT_EQ(ggml_type_name(got->type), std::string(ggml_type_name(want.type))) << want.name;
    EXPECT_EQ(got->n_dims, want.n_dims) << want.name;
    for (int d = 0; d < 4; ++d) EXPECT_EQ(got->ne[d], want.ne[d]) << want.name << " ne[" << d << "]";
  }
}

INSTANTIATE_TEST_SUITE_P(RealFiles, MatchesLlamaQuantize,
                         ::testing::Values(QuantizedFileCase{"tiny-llama-6m.Q4_0.gguf", WeightMix::Q4_0},
                                           QuantizedFileCase{"tiny-llama-6m.Q4_K_M.gguf", WeightMix::Q4_K_M},
                                           QuantizedFileCase{"tiny-llama-31m.Q4_0.gguf", WeightMix::Q4_0},
                                           QuantizedFileCase{"tiny-llama-31m.Q4_K_M.gguf", WeightMix::Q4_K_M}),
                         [](const ::testing::TestParamInfo<QuantizedFileCase>& info) {
                           std::string name = info.param.file;
                           name = name.substr(0, name.size() - 5);  // without ".gguf"
                           for (char& ch : name) if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
                           return name;
                         });

TEST(SyntheticModel, Llama32OneBillionMixPutsSixBitsWhereLlamaQuantizeDoes) {
  const SyntheticShape s = llama_3_2_1b_shape();
  std::set<int64_t> six_bit_layers;
  for (int64_t i = 0; i < s.n_layer; ++i) {
    const GgmlType v = quantized_type_for(WeightMix::Q4_K_M, TensorRole::AttnV, i, s.n_layer, true, s.n_embd);
    const GgmlType down = quantized_type_for(WeightMix::Q4_K_M, TensorRole::FfnDown, i, s.n_layer, true, s.n_ff);
    EXPECT_EQ(v, down) << "layer " << i;
    if (v == GgmlType::Q6_K) six_bit_layers.insert(i);
    EXPECT_EQ(quantized_type_for(WeightMix::Q4_0, TensorRole::AttnV, i, s.n_layer, true, s.n_embd), GgmlType::Q4_0);
  }
  EXPECT_EQ(six_bit_layers, (std::set<int64_t>{0, 1, 4, 7, 10, 13, 14, 15}));
  for (WeightMix mix : {WeightMix::Q4_0, WeightMix::Q4_K_M}) {
    EXPECT_EQ(quantized_type_for(mix, TensorRole::TokenEmbd, -1, s.n_layer, true, s.n_embd), GgmlType::Q6_K);
  }
}

TEST(SyntheticModel, RopeFactorsFollowLlama3Scaling) {
  const std::vector<float> f = llama3_rope_freq_factors(llama_3_2_1b_shape());
  ASSERT_EQ(f.size(), 32u);
  EXPECT_FLOAT_EQ(f.front(), 1.0f);   // highest frequency: untouched
  EXPECT_FLOAT_EQ(f.back(), 32.0f);   // lowest frequency: divided by the scaling factor
  for (size_t i = 1; i < f.size(); ++i) EXPECT_GE(f[i], f[i - 1]) << i;
  EXPECT_GT(std::count_if(f.begin(), f.end(), [](float x) { return x > 1 && x < 32; }), 0);  // a blend band
}

TEST(SyntheticModel, RandomBlocksHaveTheRequestedSpread) {
  // Dequantize Q4_0 by its definition (w = d * (q - 8)) and check the standard deviation.
  FastRng rng(7);
  std::vector<uint8_t> bytes;
  ASSERT_TRUE(fill_random_weights(GgmlType::Q4_0, 32 * 4096, 0.02f, rng, bytes).ok());
  double sum_sq = 0;
  for (size_t b = 0; b < 4096; ++b) {
    const uint8_t* block = bytes.data() + b * 18;
    const float d = f16_to_f32(static_cast<uint16_t>(block[0] | block[1] << 8));
    for (int j = 0; j < 16; ++j) {
      for (int q : {block[2 + j] & 15, block[2 + j] >> 4}) sum_sq += std::pow(d * (q - 8), 2);
    }
  }
  EXPECT_NEAR(std::sqrt(sum_sq / (32 * 4096)), 0.02, 0.004);
  EXPECT_FALSE(fill_random_weights(GgmlType::Q4_K, 100, 0.02f, rng, bytes).ok());  // not whole blocks
}

SyntheticOptions small_llama3_like() {
  SyntheticOptions o;
  o.shape.n_embd = 256;
  o.shape.n_layer = 2;
  o.shape.n_head = 4;
  o.shape.n_head_kv = 2;
  o.shape.head_dim = 64;
  o.shape.n_ff = 512;
  o.shape.n_vocab = 8192 + 300;  // 300 padding tokens
  o.shape.n_ctx = 4096;
  o.mix = WeightMix::Q4_K_M;
  return o;
}

TEST(SyntheticModel, TokenizerIsThePaddedSourceVocabulary) {
  KVTIER_REQUIRE_SHARED("models/tiny-llama-6m.f16.gguf");
  auto vocab = open_shared("models/tiny-llama-6m.f16.gguf");
  ASSERT_TRUE(vocab);
  auto f = build_to_file(small_llama3_like(), *vocab);
  ASSERT_TRUE(f);
  auto tokens = f->get_string_array("tokenizer.ggml.tokens", 8192 + 300);
  ASSERT_TRUE(tokens.ok()) << tokens.error();
  auto types = f->get_i32_array("tokenizer.ggml.token_type", 8192 + 300);
  ASSERT_TRUE(types.ok()) << types.error();
  auto source_tokens = vocab->get_string_array("tokenizer.ggml.tokens");
  for (size_t i = 0; i < source_tokens->size(); ++i) ASSERT_EQ((*tokens)[i], (*source_tokens)[i]) << i;
  EXPECT_EQ((*tokens)[8192], "<|reserved_special_token_0|>");
  EXPECT_EQ((*tokens)[8192 + 299], "<|reserved_special_token_299|>");
  for (size_t i = 8192; i < types->size(); ++i) ASSERT_EQ((*types)[i], 3) << i;  // control
  EXPECT_EQ(*f->get_string("tokenizer.ggml.pre"), "llama-bpe");
  EXPECT_EQ(*f->get_u32("tokenizer.ggml.bos_token_id"), *vocab->get_u32("tokenizer.ggml.bos_token_id"));
  EXPECT_EQ(*f->get_u32("tokenizer.ggml.eos_token_id"), *vocab->get_u32("tokenizer.ggml.eos_token_id"));
  EXPECT_EQ(f->get_string_array("tokenizer.ggml.merges")->size(),
            vocab->get_string_array("tokenizer.ggml.merges")->size());

  SyntheticOptions too_small = small_llama3_like();
  too_small.shape.n_vocab = 100;
  gguf::GgufWriter w;
  EXPECT_FALSE(build_synthetic_model(too_small, *vocab, w).ok());
}

TEST(SyntheticModel, SameSeedSameBytesOtherSeedOtherWeights) {
  KVTIER_REQUIRE_SHARED("models/tiny-llama-6m.f16.gguf");
  auto vocab = open_shared("models/tiny-llama-6m.f16.gguf");
  ASSERT_TRUE(vocab);
  auto image = [&](uint64_t seed) {
    SyntheticOptions o = small_llama3_like();
    o.seed = seed;
    gguf::GgufWriter w;
    EXPECT_TRUE(build_synthetic_model(o, *vocab, w).ok());
    return w.to_bytes();
  };
  const std::vector<uint8_t> a = image(1), b = image(1), c = image(2);
  EXPECT_EQ(a, b);
  ASSERT_EQ(a.size(), c.size());
  EXPECT_NE(a, c);
}

TEST(SyntheticModel, KvtierLoadsItAndLogitsStayFinite) {
  KVTIER_REQUIRE_SHARED("models/tiny-llama-6m.f16.gguf");
  auto vocab = open_shared("models/tiny-llama-6m.f16.gguf");
  ASSERT_TRUE(vocab);
  for (WeightMix mix : {WeightMix::Q4_0, WeightMix::Q4_K_M}) {
    SyntheticOptions o = small_llama3_like();
    o.mix = mix;
    gguf::GgufWriter w;
    ASSERT_TRUE(build_synthetic_model(o, *vocab, w).ok());
    const auto path = std::filesystem::temp_directory_path() /
                      ("kvtier_synthetic_" + std::to_string(::getpid()) + weight_mix_name(mix) + ".gguf");
    ASSERT_TRUE(w.write_file(path.string()).ok());
    auto model = Model::load(path.string());
    std::filesystem::remove(path);
    ASSERT_TRUE(model.ok()) << model.error();
    const ModelConfig& c = (*model)->config();
    EXPECT_TRUE(c.has_rope_freq_factors);
    EXPECT_TRUE(c.tied_embeddings);
    EXPECT_EQ(c.n_vocab, o.shape.n_vocab);

    const std::vector<int32_t> tokens = {8190, 39, 7428, 2604, 469, 1515, 706, 514, 8400};
    const int n = static_cast<int>(tokens.size());
    std::vector<float> logits(static_cast<size_t>(n) * c.n_vocab);  // [n, n_vocab]
    ThreadPool pool(2);
    auto cache = make_contiguous_kv_cache(c, 64);
    ASSERT_TRUE((*model)->forward(tokens.data(), n, 0, *cache, pool, 0, logits.data()).ok());
    double sum_sq = 0;
    for (float x : logits) {
      ASSERT_TRUE(std::isfinite(x)) << weight_mix_name(mix);
      sum_sq += double(x) * x;
    }
    const double rms = std::sqrt(sum_sq / logits.size());
    // Random weights of std 0.02 give logits of order one: neither collapsed nor exploding.
    EXPECT_GT(rms, 0.05) << weight_mix_name(mix);
    EXPECT_LT(rms, 50.0) << weight_mix_name(mix);
  }
}

// Small versions of each non-llama architecture's benchmark shape: the real head_dim / n_head / n_head_kv
// ratios (qwen3's head_dim is not n_embd / n_head) with narrow layers, so that the test stays fast under ASan.
SyntheticOptions small_shape_of(const std::string& architecture) {
  SyntheticOptions o;
  o.shape = synthetic_shape_for(architecture);
  SyntheticShape& s = o.shape;
  s.n_embd = 256;
  s.n_ff = 512;
  s.head_dim = 64;
  s.n_head = std::min<int64_t>(s.n_head, 8);
  s.n_head_kv = std::max<int64_t>(1, s.n_head_kv / 4);
  s.n_vocab = 8192 + 300;
  s.n_ctx = 4096;
  s.n_layer = 2;
  if (architecture == "gemma3") {
    s.n_layer = 6;  // one run of the pattern: five windowed layers, then a global one
    s.sliding_window = 4;
  }
  if (architecture == "qwen3moe") {
    s.n_expert = 8;
    s.n_expert_used = 2;
    s.n_ff_expert = 256;
  }
  return o;
}

class SyntheticArchitecture : public ::testing::TestWithParam<std::string> {};

TEST_P(SyntheticArchitecture, HasTheArchitecturesTensorsInLlamaQuantizesTypes) {
  KVTIER_REQUIRE_SHARED("models/tiny-llama-6m.f16.gguf");
  auto vocab = open_shared("models/tiny-llama-6m.f16.gguf");
  ASSERT_TRUE(vocab);
  const SyntheticOptions o = small_shape_of(GetParam());
  const SyntheticShape& s = o.shape;
  auto f = build_to_file(o, *vocab);
  ASSERT_TRUE(f);
  EXPECT_EQ(*f->get_string("general.architecture"), GetParam());
  EXPECT_EQ(*f->get_u32(GetParam() + ".attention.key_length"), static_cast<uint32_t>(s.head_dim));
  auto type_of = [&](const std::string& name) {
    const gguf::TensorInfo* t = f->find_tensor(name);
    return t ? std::string(ggml_type_name(t->type)) : "missing";
  };
  EXPECT_EQ(f->find_tensor("rope_freqs.weight"), nullptr);  // Llama-3 RoPE scaling only
  EXPECT_EQ(f->find_tensor("output.weight") == nullptr, s.tied_embeddings);
  for (int64_t i = 0; i < s.n_layer; ++i) {
    const std::string p = "blk." + std::to_string(i) + ".";
    const std::string more_bits = quantize_uses_more_bits(i, s.n_layer) ? "Q6_K" : "Q4_K";
    EXPECT_EQ(type_of(p + "attn_q_norm.weight"), "F32");
    EXPECT_EQ(type_of(p + "attn_k_norm.weight"), "F32");
    EXPECT_EQ(f->find_tensor(p + "attn_q_norm.weight")->ne[0], s.head_dim);
    EXPECT_EQ(type_of(p + "attn_v.weight"), more_bits) << p;
    const bool gemma = GetParam() == "gemma3";
    EXPECT_EQ(type_of(p + "post_attention_norm.weight"), gemma ? "F32" : "missing");
    EXPECT_EQ(type_of(p + "post_ffw_norm.weight"), gemma ? "F32" : "missing");
    if (GetParam() == "qwen3moe") {
      EXPECT_EQ(type_of(p + "ffn_gate_inp.weight"), "F32");  // the router is never quantized
      EXPECT_EQ(type_of(p + "ffn_gate_exps.weight"), "Q4_K");
      EXPECT_EQ(type_of(p + "ffn_up_exps.weight"), "Q4_K");
      EXPECT_EQ(type_of(p + "ffn_down_exps.weight"), more_bits) << p;
      const gguf::TensorInfo* down = f->find_tensor(p + "ffn_down_exps.weight");
      ASSERT_NE(down, nullptr);
      EXPECT_EQ(down->n_dims, 3);
      EXPECT_EQ(down->ne[0], s.n_ff_expert);
      EXPECT_EQ(down->ne[1], s.n_embd);
      EXPECT_EQ(down->ne[2], s.n_expert);
      EXPECT_EQ(type_of(p + "ffn_down.weight"), "missing");
    } else {
      EXPECT_EQ(type_of(p + "ffn_down.weight"), more_bits) << p;
    }
  }
}

TEST_P(SyntheticArchitecture, KvtierLoadsItAsThatArchitectureAndLogitsStayFinite) {
  KVTIER_REQUIRE_SHARED("models/tiny-llama-6m.f16.gguf");
  auto vocab = open_shared("models/tiny-llama-6m.f16.gguf");
  ASSERT_TRUE(vocab);
  const SyntheticOptions o = small_shape_of(GetParam());
  gguf::GgufWriter w;
  ASSERT_TRUE(build_synthetic_model(o, *vocab, w).ok());
  const auto path = std::filesystem::temp_directory_path() /
                    ("kvtier_synthetic_" + std::to_string(::getpid()) + GetParam() + ".gguf");
  ASSERT_TRUE(w.write_file(path.string()).ok());
  auto model = Model::load(path.string());
  std::filesystem::remove(path);
  ASSERT_TRUE(model.ok()) << model.error();
  const ModelConfig& c = (*model)->config();
  EXPECT_EQ(c.architecture, GetParam());
  EXPECT_EQ(c.head_dim, o.shape.head_dim);
  EXPECT_EQ(c.n_kv_heads, o.shape.n_head_kv);
  EXPECT_TRUE(c.has_qk_norm);
  EXPECT_EQ(c.rope_mode, RopeMode::kNeox);
  EXPECT_EQ(c.n_expert, o.shape.n_expert);
  EXPECT_EQ(c.n_expert_used, o.shape.n_expert_used);
  if (o.shape.n_expert > 0) EXPECT_EQ(c.n_ff_expert, o.shape.n_ff_expert);
  EXPECT_EQ(c.sliding_window, o.shape.sliding_window);
  if (GetParam() == "gemma3") {
    EXPECT_TRUE(c.layer_is_windowed(0));
    EXPECT_FALSE(c.layer_is_windowed(5));
  }

  const std::vector<int32_t> tokens = {8190, 39, 7428, 2604, 469, 1515, 706, 514, 8400};  // more than the window
  const int n = static_cast<int>(tokens.size());
  std::vector<float> logits(static_cast<size_t>(n) * c.n_vocab);  // [n, n_vocab]
  ThreadPool pool(2);
  auto cache = make_contiguous_kv_cache(c, 64);
  ASSERT_TRUE((*model)->forward(tokens.data(), n, 0, *cache, pool, 0, logits.data()).ok());
  double sum_sq = 0;
  for (float x : logits) {
    ASSERT_TRUE(std::isfinite(x));
    sum_sq += double(x) * x;
  }
  const double rms = std::sqrt(sum_sq / logits.size());
  EXPECT_GT(rms, 0.05);  // neither collapsed nor exploding
  EXPECT_LT(rms, 50.0);
}

INSTANTIATE_TEST_SUITE_P(Architectures, SyntheticArchitecture, ::testing::Values("qwen3", "gemma3", "qwen3moe"),
                         [](const ::testing::TestParamInfo<std::string>& info) { return info.param; });

TEST(SyntheticModel, FullShapesGetLlamaQuantizesFallbacksAndExpertTypes) {
  // Gemma-3-1B's rows of 1152 hold no whole 256-element super-block: Q5_0 / Q8_0 as in published files.
  const SyntheticShape g = gemma3_1b_shape();
  EXPECT_EQ(quantized_type_for(WeightMix::Q4_K_M, TensorRole::AttnQ, 3, g.n_layer, true, g.n_embd), GgmlType::Q5_0);
  EXPECT_EQ(quantized_type_for(WeightMix::Q4_K_M, TensorRole::AttnV, 0, g.n_layer, true, g.n_embd), GgmlType::Q8_0);
  EXPECT_EQ(quantized_type_for(WeightMix::Q4_K_M, TensorRole::TokenEmbd, -1, g.n_layer, true, g.n_embd),
            GgmlType::Q8_0);
  EXPECT_EQ(quantized_type_for(WeightMix::Q4_K_M, TensorRole::FfnDown, 3, g.n_layer, true, g.n_ff), GgmlType::Q4_K);
  // Qwen3-30B-A3B cut to 6 layers: ffn_down_exps (rows of 768) take six bits in layers 2 and 5.
  const SyntheticShape m = qwen3_30b_a3b_shape(6);
  std::set<int64_t> six_bit_layers;
  for (int64_t i = 0; i < m.n_layer; ++i) {
    if (quantized_type_for(WeightMix::Q4_K_M, TensorRole::FfnDown, i, m.n_layer, false, m.n_ff_expert) ==
        GgmlType::Q6_K) {
      six_bit_layers.insert(i);
    }
  }
  EXPECT_EQ(six_bit_layers, (std::set<int64_t>{2, 5}));
  EXPECT_EQ(quantized_type_for(WeightMix::Q4_K_M, TensorRole::TokenEmbd, -1, m.n_layer, false, m.n_embd),
            GgmlType::Q4_K);
  EXPECT_EQ(quantized_type_for(WeightMix::Q4_K_M, TensorRole::Output, -1, m.n_layer, false, m.n_embd),
            GgmlType::Q6_K);
}

TEST(SyntheticModel, RejectsExpertsOutsideQwen3Moe) {
  KVTIER_REQUIRE_SHARED("models/tiny-llama-6m.f16.gguf");
  auto vocab = open_shared("models/tiny-llama-6m.f16.gguf");
  ASSERT_TRUE(vocab);
  SyntheticOptions o = small_shape_of("qwen3");
  o.shape.n_expert = 8;
  o.shape.n_expert_used = 2;
  o.shape.n_ff_expert = 256;
  gguf::GgufWriter w;
  EXPECT_FALSE(build_synthetic_model(o, *vocab, w).ok());
  SyntheticOptions unknown = small_shape_of("qwen3");
  unknown.shape.architecture = "mamba";
  EXPECT_FALSE(build_synthetic_model(unknown, *vocab, w).ok());
}

}  // namespace
}  // namespace kvtier::tools
