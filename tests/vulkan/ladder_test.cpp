// Precision ladders on the Vulkan KV cache (model/vulkan/device_kv_pages.h, kv_transcode.comp) against the same
// ladder on the CPU's tiered store, on the 6m f16 model of ../shared (f16 weights: the backends differ by
// rounding only, so what differs is the cache): KLD against the CPU's f16 cache within noise of the CPU ladder's
// own, perplexity within a small tolerance, greedy tokens equal; the page table's memory; the refusals.
// Skipped without ../shared or a Vulkan device; any validation-layer message fails the test.
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "common/shared_data.h"
#include "kvtier/device.h"
#include "kvtier/kv_options.h"
#include "kvtier/session.h"
#include "kvtier/tokenizer.h"
#include "model/vulkan/device_kv_pages.h"
#include "vulkan_test_util.h"

namespace kvtier {
namespace {

constexpr const char* kModel = "models/tiny-llama-6m.f16.gguf";

KvCacheOptions ladder_options(const std::string& ladder) {
  KvCacheOptions o;
  o.ladder = ladder;
  return o;
}

class VulkanLadderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    KVTIER_REQUIRE_SHARED(kModel);
    KVTIER_REQUIRE_SHARED("eval/eval.txt");
    auto model = Model::load(testing::shared_path(kModel).string());
    ASSERT_TRUE(model.ok()) << model.error();
    model_ = std::move(*model);
    auto tokenizer = Tokenizer::from_gguf(model_->file());
    ASSERT_TRUE(tokenizer.ok()) << tokenizer.error();
    tokenizer_ = std::move(*tokenizer);
    DeviceOptions options;
    options.kind = DeviceKind::kVulkan;
    options.index = 0;  // lavapipe in CI, where it is the only device
    if (const char* index = std::getenv("KVTIER_VK_DEVICE")) options.index = std::atoi(index);
    options.validation = vulkan::testing::test_options().validation;
    auto device = open_device_model(*model_, options);
    if (!device.ok() && device.error().find("no Vulkan") != std::string::npos) GTEST_SKIP() << device.error();
    ASSERT_TRUE(device.ok()) << device.error();
    vulkan::testing::g_vulkan_device_created = true;
    device_ = std::move(*device);
    std::ifstream in(testing::shared_path("eval/eval.txt"), std::ios::binary);
    std::ostringstream text;
    text << in.rdbuf();
    tokens_ = tokenizer_->encode(text.str().substr(0, 16 * 1024), true, false);
    ASSERT_GT(tokens_.size(), 600u);
  }

  void TearDown() override {
    if (device_ == nullptr) return;
    for (const std::string& m : device_->take_validation_messages()) ADD_FAILURE() << "validation: " << m;
  }

  std::unique_ptr<KvCache> cpu_cache(int n_ctx, const std::string& ladder) {
    auto cache = make_kv_cache(model_->config(), n_ctx, ladder_options(ladder), &pool_);
    EXPECT_TRUE(cache.ok()) << cache.error();
    return cache.ok() ? std::move(*cache) : nullptr;
  }
  std::unique_ptr<KvCache> gpu_cache(int n_ctx, const std::string& ladder) {
    auto cache = device_->make_cache(n_ctx, ladder_options(ladder));
    EXPECT_TRUE(cache.ok()) << cache.error();
    return cache.ok() ? std::move(*cache) : nullptr;
  }

  // One chunk of n_ctx tokens, its second half scored one token at a time (the decode path, where the ladder's
  // moves happen between tokens on both backends), against the CPU's f16 cache.
  KvQualityResult quality(int n_ctx, const std::function<std::unique_ptr<KvCache>()>& make_test) {
    auto r = compare_kv_caches(*model_, tokens_, n_ctx, 1, tokenizer_->bos_id(), pool_,
                               [&] { return cpu_cache(n_ctx, "f16"); }, make_test, {}, true);
    EXPECT_TRUE(r.ok()) << r.error();
    return r.ok() ? *r : KvQualityResult{};
  }

  void compare_ladder(const std::string& ladder) {
    SCOPED_TRACE(ladder);
    const int n_ctx = 384;
    const KvQualityResult cpu = quality(n_ctx, [&] { return cpu_cache(n_ctx, ladder); });
    const KvQualityResult gpu = quality(n_ctx, [&] { return gpu_cache(n_ctx, ladder); });
    std::printf("%s: KLD vs CPU f16: CPU %.6f +/- %.6f, Vulkan %.6f +/- %.6f; PPL CPU %.4f, Vulkan %.4f (%+.3f%%); "
                "same top-1 as f16: CPU %.3f, Vulkan %.3f\n",
                ladder.c_str(), cpu.mean_kld, cpu.kld_error, gpu.mean_kld, gpu.kld_error, cpu.ppl_test, gpu.ppl_test,
                100 * (gpu.ppl_test / cpu.ppl_test - 1), cpu.same_top1, gpu.same_top1);
    // The ladder costs something measurable (else the comparison below could not fail)...
    EXPECT_GT(cpu.mean_kld, 4 * cpu.kld_error);
    // ... and the GPU's cost is the CPU's, within two standard errors of their difference.
    const double noise = 2 * std::sqrt(cpu.kld_error * cpu.kld_error + gpu.kld_error * gpu.kld_error);
    EXPECT_NEAR(gpu.mean_kld, cpu.mean_kld, noise);
    EXPECT_NEAR(gpu.ppl_test / cpu.ppl_test, 1.0, 5e-3);
  }

  std::unique_ptr<Model> model_;
  std::unique_ptr<Tokenizer> tokenizer_;
  std::unique_ptr<DeviceModel> device_;
  std::vector<int32_t> tokens_;
  ThreadPool pool_{2};
};

// A ladder starting f16 with short rungs: by the scored half most pages are on q4 and q2, and every move
// (f16 -> q8 -> q4 -> q2) has happened on the GPU many times; 4 sink tokens stay f16.
TEST_F(VulkanLadderTest, F16Q8Q4Q2LadderMatchesTheCpuLadder) { compare_ladder("f16:64,q8:64,q4:128,q2"); }

// A ladder starting quantized, with split precisions: a full page goes from the f16 tail straight to k8v4,
// later k8v4 -> k2v4 (keys re-encoded, values copied).
TEST_F(VulkanLadderTest, QuantizedFirstSplitLadderMatchesTheCpuLadder) { compare_ladder("k8v4:128,k2v4"); }

// 200 prompt tokens and 32 greedy ones, each fed one at a time on both backends: the same tokens.
TEST_F(VulkanLadderTest, GreedyContinuationIsTheCpuLaddersTokens) {
  const std::string ladder = "f16:32,q4:64,q2";
  const int prompt = 200, generate = 32, vocab = model_->config().n_vocab;
  std::vector<int32_t> seq[2];
  for (int backend = 0; backend < 2; ++backend) {
    auto cache = backend == 0 ? cpu_cache(prompt + generate, ladder) : gpu_cache(prompt + generate, ladder);
    ASSERT_TRUE(cache);
    std::vector<int32_t>& out = seq[backend];
    out.assign(tokens_.begin(), tokens_.begin() + prompt);
    std::vector<float> logits(vocab);
    for (int i = 0; i < prompt + generate - 1; ++i) {
      Status s = model_->forward(&out[i], 1, i, *cache, pool_, 0, logits.data());
      ASSERT_TRUE(s.ok()) << s.message();
      if (i + 1 >= prompt) out.push_back(static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin()));
    }
  }
  EXPECT_EQ(seq[0], seq[1]) << "CPU: " << tokenizer_->decode(seq[0]) << "\nGPU: " << tokenizer_->decode(seq[1]);
}

// A truncated ladder cache: the partial page left quantized goes back to f16 and takes the new rows; the
// continuation matches the CPU ladder's within the same tolerance as a run without truncation.
TEST_F(VulkanLadderTest, TruncateIntoAQuantizedPageThenContinue) {
  const std::string ladder = "f16:32,q4";
  const int n = 200, keep = 110, vocab = model_->config().n_vocab;  // at 200 tokens, page 1 (68..131) is q4
  auto gpu = gpu_cache(n, ladder);
  ASSERT_TRUE(gpu);
  std::vector<float> logits(vocab);
  for (int i = 0; i < n; ++i) ASSERT_TRUE(model_->forward(&tokens_[i], 1, i, *gpu, pool_, 0, logits.data()).ok());
  gpu->truncate(keep);
  EXPECT_EQ(gpu->n_tokens(), keep);
  auto f16 = cpu_cache(n, "f16");
  ASSERT_TRUE(model_->forward(tokens_.data(), keep, 0, *f16, pool_, keep, nullptr).ok());
  std::vector<float> want(vocab);
  double kld = 0;
  const int more = 40;
  for (int i = keep; i < keep + more; ++i) {
    ASSERT_TRUE(model_->forward(&tokens_[i], 1, i, *gpu, pool_, 0, logits.data()).ok());
    ASSERT_TRUE(model_->forward(&tokens_[i], 1, i, *f16, pool_, 0, want.data()).ok());
    double mw = *std::max_element(want.begin(), want.end()), mg = *std::max_element(logits.begin(), logits.end());
    double zw = 0, zg = 0;
    for (int v = 0; v < vocab; ++v) zw += std::exp(want[v] - mw), zg += std::exp(logits[v] - mg);
    for (int v = 0; v < vocab; ++v) {
      const double lw = want[v] - mw - std::log(zw), lg = logits[v] - mg - std::log(zg);
      kld += std::exp(lw) * (lw - lg);
    }
  }
  kld /= more;
  std::printf("after truncating a q4 ladder into a quantized page: KLD vs f16 %.6f over %d tokens\n", kld, more);
  EXPECT_TRUE(std::isfinite(kld));
  EXPECT_LT(kld, 0.05);  // a q4 ladder's KLD on this model is ~0.005; stale or unreadable rows give far more
}

// The device memory of a ladder's cache: its formats' pages, not max_tokens f16 pages.
TEST_F(VulkanLadderTest, ALadderCacheTakesLessDeviceMemory) {
  const int n_ctx = 8192;
  auto f16 = gpu_cache(n_ctx, "f16"), ladder = gpu_cache(n_ctx, "f16:128,q4:1024,q2");
  ASSERT_TRUE(f16 && ladder);
  const double ratio = static_cast<double>(ladder->resident_bytes()) / f16->resident_bytes();
  std::printf("device bytes at %d tokens: f16 %zu, f16:128,q4:1024,q2 %zu (%.3f)\n", n_ctx, f16->resident_bytes(),
              ladder->resident_bytes(), ratio);
  EXPECT_LT(ratio, 0.25);  // 2-bit codes + f16 scale and min per 64 ~ 0.16 of f16, plus the bounded rungs
}

// What the device does not run is refused at make_cache, naming it.
TEST_F(VulkanLadderTest, RefusesWhatTheDeviceDoesNotRunNamingIt) {
  const struct {
    const char* ladder;
    const char* key_mode;
    const char* names;
  } cases[] = {{"q3", "channel", "q3"},
               {"f16:64,k4v3", "channel", "k4v3"},
               {"q4", "rotated", "rotated"},
               {"q5", "channel", "q5"}};
  for (const auto& c : cases) {
    KvCacheOptions o = ladder_options(c.ladder);
    o.key_mode = c.key_mode;
    auto cache = device_->make_cache(64, o);
    ASSERT_FALSE(cache.ok()) << c.ladder;
    EXPECT_NE(cache.error().find(c.names), std::string::npos) << cache.error();
    EXPECT_NE(cache.error().find("--device vulkan"), std::string::npos) << cache.error();
  }
}

// The page table alone: a bounded rung's region never runs out over a long sequence, and every page is on the
// rung of its newest token (kv::target_rung) after each step.
TEST(DeviceKvPages, RegionsHoldEveryPageOfALongSequence) {
  auto ladder = kv::parse_ladder("f16:100,q8:70,q4:300,q2", 4);
  ASSERT_TRUE(ladder.ok());
  auto pages = DeviceKvPages::create(*ladder, kv::KeyMode::PerChannel, 2, 64, 0, 3000);
  ASSERT_TRUE(pages.ok()) << pages.error();
  std::vector<std::vector<uint32_t>> lists;
  for (int pos = 0; pos < 3000; ++pos) {
    auto plan = pages->plan_step(pos);
    ASSERT_TRUE(plan.ok()) << "position " << pos << ": " << plan.error();
    pages->page_lists(pos, &lists);
    size_t listed = 0;
    for (size_t r = 0; r < lists.size(); ++r) {
      for (size_t e = 0; e < lists[r].size(); e += 2) {
        listed += lists[r][e + 1];
        ASSERT_LT(lists[r][e] - pages->regions()[r].offset,
                  pages->regions()[r].capacity * pages->regions()[r].format.page_bytes);
      }
    }
    ASSERT_EQ(listed, static_cast<size_t>(pos) + 1) << "rows listed after position " << pos;
  }
  // At 3000 tokens the pages of the q2 rung dominate: the live bytes are near 2-bit's share of f16.
  EXPECT_LT(pages->live_bytes(), pages->layer_bytes());
  std::printf("%s\n", pages->describe_usage().c_str());
}

}  // namespace
}  // namespace kvtier
