// The whole forward pass on the Vulkan backend (kvtier/device.h) against the CPU backend with its default f16
// paged cache, on the tiny test models of ../shared: the logits of a prompt, a greedy continuation, and
// perplexity on a slice of the eval text. Skipped without ../shared or a Vulkan device; the validation layer is
// on (KVTIER_VK_VALIDATE=0 turns it off) and any message it reports fails the test.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <ostream>
#include <sstream>

#include "common/shared_data.h"
#include "kvtier/device.h"
#include "kvtier/kv_options.h"
#include "kvtier/tokenizer.h"
#include "vulkan_test_util.h"

namespace kvtier {
namespace {

std::string read_text(const std::string& path, size_t max_bytes) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  std::string text = s.str();
  if (text.size() > max_bytes) text.resize(max_bytes);
  return text;
}

int argmax(const float* row, int n) { return static_cast<int>(std::max_element(row, row + n) - row); }

// A test model and how close the GPU must come to the CPU on it. The backends do not round alike: for quantized
// weights the CPU multiplies 8-bit-quantized activations (Q8_0 for Q4_0, Q8_K per 256 for the K-quants, as
// llama.cpp does), the GPU f32 ones, so the quantized files differ by that quantization; f16 weights differ only
// by rounding. Tolerances are fractions of the largest |logit| of the prompt (about 20 on these models).
struct ModelCase {
  const char* file;
  double max_diff;         // largest |logit difference|
  double mean_diff;        // mean |logit difference|
  double ppl_tolerance;    // |PPL ratio - 1|
};

void PrintTo(const ModelCase& c, std::ostream* os) { *os << c.file; }

class VulkanModelTest : public ::testing::TestWithParam<ModelCase> {
 protected:
  void SetUp() override {
    KVTIER_REQUIRE_SHARED("models/" + std::string(GetParam().file));
    KVTIER_REQUIRE_SHARED("eval/eval.txt");
    auto model = Model::load(testing::shared_path("models/" + std::string(GetParam().file)).string());
    ASSERT_TRUE(model.ok()) << model.error();
    model_ = std::move(*model);
    auto tokenizer = Tokenizer::from_gguf(model_->file());
    ASSERT_TRUE(tokenizer.ok()) << tokenizer.error();
    tokenizer_ = std::move(*tokenizer);
    auto device = open_device(DeviceOptions{}.prefill_chunk);
    if (!device.ok() && device.error().find("no Vulkan") != std::string::npos) GTEST_SKIP() << device.error();
    ASSERT_TRUE(device.ok()) << device.error();
    vulkan::testing::g_vulkan_device_created = true;
    device_ = std::move(*device);
    tokens_ = tokenizer_->encode(read_text(testing::shared_path("eval/eval.txt").string(), 64 * 1024), true, false);
    ASSERT_GT(tokens_.size(), 600u);
  }

  void TearDown() override {
    if (device_ == nullptr) return;
    for (const std::string& m : device_->take_validation_messages()) ADD_FAILURE() << "validation: " << m;
  }

  // The model on the test device, a prompt running prefill_chunk tokens per command batch.
  Result<std::unique_ptr<DeviceModel>> open_device(int prefill_chunk) {
    DeviceOptions options;
    options.kind = DeviceKind::kVulkan;
    options.index = 0;  // lavapipe in CI, where it is the only device
    if (const char* index = std::getenv("KVTIER_VK_DEVICE")) options.index = std::atoi(index);
    options.validation = vulkan::testing::test_options().validation;
    options.prefill_chunk = prefill_chunk;
    return open_device_model(*model_, options);
  }

  std::unique_ptr<KvCache> cpu_cache(int n_ctx) {
    auto cache = make_kv_cache(model_->config(), n_ctx, KvCacheOptions{});  // the default: paged f16
    EXPECT_TRUE(cache.ok()) << cache.error();
    return cache.ok() ? std::move(*cache) : nullptr;
  }
  std::unique_ptr<KvCache> gpu_cache(int n_ctx) {
    auto cache = device_->make_cache(n_ctx);
    EXPECT_TRUE(cache.ok()) << cache.error();
    return cache.ok() ? std::move(*cache) : nullptr;
  }

  std::unique_ptr<Model> model_;
  std::unique_ptr<Tokenizer> tokenizer_;
  std::unique_ptr<DeviceModel> device_;
  std::vector<int32_t> tokens_;
  ThreadPool pool_{2};
};

// The files each property is checked on (the instantiations at the end): lavapipe runs a few hundred token
// steps a second at best, so the slower properties run on fewer files.
class VulkanModelLogits : public VulkanModelTest {};     // all three files: every weight shader
class VulkanModelSequence : public VulkanModelTest {};   // Q4_0 and f16: greedy decoding and perplexity
class VulkanModelCache : public VulkanModelTest {};      // f16: cache state (truncate)
class VulkanModelPrefill : public VulkanModelTest {};    // f16: chunked prefill vs token by token

// Every row's logits of a 70-token prompt (two pages: the second partial), against ModelCase's tolerances;
// the top-1 token equal on all but 2 rows.
TEST_P(VulkanModelLogits, PromptLogitsAreCloseToTheCpus) {
  const int n = 70, vocab = model_->config().n_vocab;
  auto cpu = cpu_cache(n), gpu = gpu_cache(n);
  ASSERT_TRUE(cpu && gpu);
  std::vector<float> want(static_cast<size_t>(n) * vocab), got(want.size(), NAN);
  ASSERT_TRUE(model_->forward(tokens_.data(), n, 0, *cpu, pool_, 0, want.data()).ok());
  Status s = model_->forward(tokens_.data(), n, 0, *gpu, pool_, 0, got.data());
  ASSERT_TRUE(s.ok()) << s.message();
  EXPECT_EQ(gpu->n_tokens(), n);
  double max_abs = 0, max_diff = 0, sum_diff = 0;
  int same_top1 = 0;
  for (int t = 0; t < n; ++t) {
    const float* w = want.data() + static_cast<size_t>(t) * vocab;
    const float* g = got.data() + static_cast<size_t>(t) * vocab;
    same_top1 += argmax(w, vocab) == argmax(g, vocab);
    for (int i = 0; i < vocab; ++i) {
      ASSERT_TRUE(std::isfinite(g[i])) << "row " << t << " logit " << i;
      max_abs = std::max(max_abs, std::fabs(static_cast<double>(w[i])));
      const double d = std::fabs(static_cast<double>(w[i]) - g[i]);
      max_diff = std::max(max_diff, d);
      sum_diff += d;
    }
  }
  const double mean_diff = sum_diff / (static_cast<double>(n) * vocab);
  std::printf("%s: max |logit| %.3f, max diff %.4f, mean diff %.5f, same top-1 %d/%d\n", GetParam().file, max_abs,
              max_diff, mean_diff, same_top1, n);
  EXPECT_LE(max_diff, GetParam().max_diff * max_abs);
  EXPECT_LE(mean_diff, GetParam().mean_diff * max_abs);
  EXPECT_GE(same_top1, n - 2);
}

// A 70-token prompt in chunks of 24 (boundaries inside pages, a chunk across the page boundary, a partial last
// chunk), logits from row 3 (inside the first chunk), against the same prompt token by token on the device (the
// decode step) and on the CPU: the chunked logits as close to the token-by-token ones as rounding allows (the
// products sum in another order), and as close to the CPU's as ModelCase says.
TEST_P(VulkanModelPrefill, ChunkedPrefillMatchesTokenByToken) {
  const int n = 70, from = 3, vocab = model_->config().n_vocab;
  auto chunked_device = open_device(24), stepped_device = open_device(1);
  ASSERT_TRUE(chunked_device.ok() && stepped_device.ok());
  auto cpu = cpu_cache(n);
  auto chunked = (*chunked_device)->make_cache(n), stepped = (*stepped_device)->make_cache(n);
  ASSERT_TRUE(cpu && chunked.ok() && stepped.ok());
  const size_t rows = static_cast<size_t>(n - from) * vocab;
  std::vector<float> want(rows), got(rows, NAN), by_step(rows, NAN);
  ASSERT_TRUE(model_->forward(tokens_.data(), n, 0, *cpu, pool_, from, want.data()).ok());
  Status s = model_->forward(tokens_.data(), n, 0, **chunked, pool_, from, got.data());
  ASSERT_TRUE(s.ok()) << s.message();
  s = model_->forward(tokens_.data(), n, 0, **stepped, pool_, from, by_step.data());
  ASSERT_TRUE(s.ok()) << s.message();
  EXPECT_EQ((*chunked)->n_tokens(), n);
  double max_abs = 0, max_step_diff = 0, max_cpu_diff = 0;
  for (size_t i = 0; i < rows; ++i) {
    ASSERT_TRUE(std::isfinite(got[i])) << "row " << from + static_cast<int>(i / vocab) << " logit " << i % vocab;
    max_abs = std::max(max_abs, std::fabs(static_cast<double>(want[i])));
    max_step_diff = std::max(max_step_diff, std::fabs(static_cast<double>(got[i]) - by_step[i]));
    max_cpu_diff = std::max(max_cpu_diff, std::fabs(static_cast<double>(got[i]) - want[i]));
  }
  std::printf("%s: max |logit| %.3f, chunked vs token by token %.6f, vs CPU %.4f\n", GetParam().file, max_abs,
              max_step_diff, max_cpu_diff);
  // Measured 2e-4: K/V are rounded to f16, so the last bit of a differently summed product can move a key by an
  // f16 unit; the CPU's tolerance is 10 x that.
  EXPECT_LE(max_step_diff, 1e-3 * max_abs);
  EXPECT_LE(max_cpu_diff, GetParam().max_diff * max_abs);
  for (auto* device : {&*chunked_device, &*stepped_device}) {
    for (const std::string& m : (*device)->take_validation_messages()) ADD_FAILURE() << "validation: " << m;
  }
}

// 40 greedy tokens after a prose prompt, each fed back one at a time (the decode path): the same tokens.
TEST_P(VulkanModelSequence, GreedyContinuationIsTheCpus) {
  const std::vector<int32_t> prompt_tokens = tokenizer_->encode("In the beginning God created", true, false);
  const int prompt = static_cast<int>(prompt_tokens.size()), generate = 40, vocab = model_->config().n_vocab;
  std::vector<int32_t> seq[2];
  for (int backend = 0; backend < 2; ++backend) {
    auto cache = backend == 0 ? cpu_cache(prompt + generate) : gpu_cache(prompt + generate);
    ASSERT_TRUE(cache);
    std::vector<float> logits(vocab);
    std::vector<int32_t>& out = seq[backend];
    out = prompt_tokens;
    ASSERT_TRUE(model_->forward(out.data(), prompt, 0, *cache, pool_, prompt - 1, logits.data()).ok());
    for (int i = 0; i < generate; ++i) {
      out.push_back(argmax(logits.data(), vocab));
      if (i + 1 < generate) {
        Status s = model_->forward(&out.back(), 1, static_cast<int>(out.size()) - 1, *cache, pool_, 0, logits.data());
        ASSERT_TRUE(s.ok()) << s.message();
      }
    }
  }
  EXPECT_EQ(seq[0], seq[1]) << "CPU: " << tokenizer_->decode(seq[0]) << "\nGPU: " << tokenizer_->decode(seq[1]);
}

// Perplexity as llama.cpp computes it (each chunk of n_ctx tokens starts with BOS; its second half is scored),
// over `chunks` chunks with caches from make_cache.
double perplexity(Model& model, const std::vector<int32_t>& tokens, int32_t bos, int n_ctx, int chunks,
                  ThreadPool& pool, const std::function<std::unique_ptr<KvCache>()>& make_cache) {
  const int vocab = model.config().n_vocab, first = n_ctx / 2;
  double nll = 0;
  int scored = 0;
  for (int c = 0; c < chunks; ++c) {
    std::vector<int32_t> chunk(tokens.begin() + c * n_ctx, tokens.begin() + (c + 1) * n_ctx);
    chunk[0] = bos;
    auto cache = make_cache();
    std::vector<float> logits(static_cast<size_t>(n_ctx - first) * vocab);
    Status s = model.forward(chunk.data(), n_ctx, 0, *cache, pool, first, logits.data());
    EXPECT_TRUE(s.ok()) << s.message();
    if (!s.ok()) return NAN;
    for (int i = first; i + 1 < n_ctx; ++i) {
      const float* row = logits.data() + static_cast<size_t>(i - first) * vocab;
      const float mx = *std::max_element(row, row + vocab);
      double sum = 0;
      for (int v = 0; v < vocab; ++v) sum += std::exp(static_cast<double>(row[v]) - mx);
      nll -= static_cast<double>(row[chunk[i + 1]]) - mx - std::log(sum);
      ++scored;
    }
  }
  return std::exp(nll / scored);
}

// Perplexity over 2 chunks of 96 tokens of the eval text (the CPU with its f16 cache): within 0.1% of the CPU's
// for f16 weights, 0.5% for the quantized files (ModelCase::ppl_tolerance).
TEST_P(VulkanModelSequence, PerplexityIsCloseToTheCpus) {
  const int n_ctx = 96, chunks = 2;
  const int32_t bos = tokenizer_->bos_id();
  const double cpu = perplexity(*model_, tokens_, bos, n_ctx, chunks, pool_, [&] { return cpu_cache(n_ctx); });
  const double gpu = perplexity(*model_, tokens_, bos, n_ctx, chunks, pool_, [&] { return gpu_cache(n_ctx); });
  std::printf("%s: PPL CPU %.5f, Vulkan %.5f (%+.4f%%)\n", GetParam().file, cpu, gpu, 100 * (gpu / cpu - 1));
  EXPECT_NEAR(gpu / cpu, 1.0, GetParam().ppl_tolerance);
}

// A truncated cache takes new tokens from the truncation point: the rows past it still hold the keys of the
// dropped tokens, which the attention must not read.
TEST_P(VulkanModelCache, TruncateThenContinueMatchesAFreshRun) {
  const int n = 40, keep = 20, vocab = model_->config().n_vocab;
  auto fresh = gpu_cache(n), reused = gpu_cache(n);
  ASSERT_TRUE(fresh && reused);
  std::vector<float> want(vocab), got(vocab);
  ASSERT_TRUE(model_->forward(tokens_.data(), n, 0, *fresh, pool_, n - 1, want.data()).ok());
  std::vector<int32_t> other(tokens_.begin(), tokens_.begin() + keep);  // the same start, then other text
  other.insert(other.end(), tokens_.begin() + 300, tokens_.begin() + 300 + (n - keep));
  ASSERT_TRUE(model_->forward(other.data(), n, 0, *reused, pool_, n, nullptr).ok());
  reused->truncate(keep);
  EXPECT_EQ(reused->n_tokens(), keep);
  ASSERT_TRUE(model_->forward(tokens_.data() + keep, n - keep, keep, *reused, pool_, n - keep - 1, got.data()).ok());
  EXPECT_EQ(want, got);
}

// A weight type without a shader is refused before anything is uploaded, naming the tensor and its type
// (tiny-llama-31m.Q4_K_M keeps some ffn_down matrices in Q5_0: 1408 columns are not K-quant blocks).
// The decode step's command stream (VulkanModel::step): per layer of an f16 cache 10 dispatches and 7 barriers (the
// unfused step recorded 17 and 13), plus the logits' product and its barrier and the barrier after begin_step's
// page-list upload. Counted on the third token, after the first page exists.
TEST_P(VulkanModelCache, DecodeStepRecordsTenDispatchesAndSevenBarriersPerLayer) {
  EXPECT_EQ(device_->last_step_counts().dispatches, 0);
  auto gpu = gpu_cache(8);
  ASSERT_TRUE(gpu);
  std::vector<float> logits(model_->config().n_vocab);
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(model_->forward(&tokens_[i], 1, i, *gpu, pool_, 0, logits.data()).ok());
  const DeviceStepCounts counts = device_->last_step_counts();
  const int layers = model_->config().n_layers;
  EXPECT_EQ(counts.dispatches, 10 * layers + 1);
  EXPECT_EQ(counts.barriers, 7 * layers + 2);
}

TEST(VulkanModelOpen, RefusesATensorTypeWithoutAShaderNamingIt) {
  KVTIER_REQUIRE_SHARED("models/tiny-llama-31m.Q4_K_M.gguf");
  auto model = Model::load(testing::shared_path("models/tiny-llama-31m.Q4_K_M.gguf").string());
  ASSERT_TRUE(model.ok()) << model.error();
  DeviceOptions options;
  options.kind = DeviceKind::kVulkan;
  options.index = 0;
  if (const char* index = std::getenv("KVTIER_VK_DEVICE")) options.index = std::atoi(index);
  uint64_t uploaded = 0;
  auto device = open_device_model(**model, options, [&](uint64_t done, uint64_t) { uploaded = done; });
  ASSERT_FALSE(device.ok());
  if (device.error().find("no Vulkan") != std::string::npos) GTEST_SKIP() << device.error();
  vulkan::testing::g_vulkan_device_created = true;
  EXPECT_NE(device.error().find("ffn_down.weight is Q5_0"), std::string::npos) << device.error();
  EXPECT_EQ(uploaded, 0u);
}

TEST(DeviceOption, ParsesCpuVulkanAndAnIndexAndRejectsTheRest) {
  auto cpu = parse_device("cpu");
  ASSERT_TRUE(cpu.ok());
  EXPECT_EQ(cpu->kind, DeviceKind::kCpu);
  auto vk = parse_device("vulkan");
  ASSERT_TRUE(vk.ok());
  EXPECT_EQ(vk->kind, DeviceKind::kVulkan);
  EXPECT_EQ(vk->index, -1);
  auto second = parse_device("vulkan:1");
  ASSERT_TRUE(second.ok());
  EXPECT_EQ(second->index, 1);
  EXPECT_EQ(device_name(*second), "vulkan:1");
  for (const char* bad : {"", "gpu", "vulkan:", "vulkan:-1", "vulkan:1x", "vulkan:99999", "Vulkan", "cuda"}) {
    auto r = parse_device(bad);
    EXPECT_FALSE(r.ok()) << bad;
    if (!r.ok()) {
      EXPECT_NE(r.error().find("expected cpu, vulkan or vulkan:N"), std::string::npos) << r.error();
    }
  }
}

// Measured on lavapipe (max and mean logit difference as fractions of the largest |logit|; PPL ratio - 1 over
// 2 x 96 tokens): Q4_0 1.5%, 0.19%, -0.22%; Q4_K_M 2.7%, 0.30%, +0.30%; f16 0.07%, 0.008%, +0.002%. The CPU
// rounds activations to 8 bits per block of 32 (Q4_0) or 256 (Q4_K_M) and to f16 for f16 weights; over so few
// tokens that rounding moves the quantized files' perplexity by a few tenths of a percent either way, so the
// 0.1% bound applies to the f16 file, whose difference is rounding only. Q4_K_M's greedy continuation of the
// prompt flips at a near-tie, so the sequence properties run on Q4_0 and f16 (identical continuations).
const ModelCase kQ4_0{"tiny-llama-6m.Q4_0.gguf", 0.03, 0.003, 5e-3};
const ModelCase kQ4_K_M{"tiny-llama-6m.Q4_K_M.gguf", 0.04, 0.004, 5e-3};
const ModelCase kF16{"tiny-llama-6m.f16.gguf", 0.002, 0.0002, 1e-3};

std::string case_name(const ::testing::TestParamInfo<ModelCase>& info) {
  std::string name = info.param.file;
  name = name.substr(std::strlen("tiny-llama-6m."));
  return name.substr(0, name.find('.'));
}

INSTANTIATE_TEST_SUITE_P(TinyLlama, VulkanModelLogits, ::testing::Values(kQ4_0, kQ4_K_M, kF16), case_name);
INSTANTIATE_TEST_SUITE_P(TinyLlama, VulkanModelSequence, ::testing::Values(kQ4_0, kF16), case_name);
INSTANTIATE_TEST_SUITE_P(TinyLlama, VulkanModelCache, ::testing::Values(kF16), case_name);
INSTANTIATE_TEST_SUITE_P(TinyLlama, VulkanModelPrefill, ::testing::Values(kF16), case_name);

}  // namespace
}  // namespace kvtier
