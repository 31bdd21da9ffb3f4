// Precision ladders on the Vulkan KV cache (model/vulkan/device_kv_pages.h, kv_transcode.comp) against the same
// ladder on the CPU's tiered store, on the 6m f16 model of ../shared (f16 weights: the backends differ by
// rounding only, so what differs is the cache): KLD against the CPU's f16 cache within noise of the CPU ladder's
// own, perplexity within a small tolerance, greedy tokens equal; the page table's memory; the refusals.
// Skipped without ../shared or a Vulkan device; any validation-layer message fails the test.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "common/shared_data.h"
#include "kvtier/device.h"
#include "kvtier/kv_options.h"
#include "kvtier/tokenizer.h"
#include "kv/tiered_store.h"
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

  // The logits of the second half of one chunk of n_ctx tokens of the eval text (BOS first): the first half in
  // one forward call, the second one token at a time (the decode path: the ladder's moves happen between tokens
  // on both backends). [n_ctx / 2][n_vocab]
  std::vector<float> scored_logits(KvCache& cache, int n_ctx) {
    const int vocab = model_->config().n_vocab, first = n_ctx / 2;
    std::vector<int32_t> chunk(tokens_.begin(), tokens_.begin() + n_ctx);
    chunk[0] = tokenizer_->bos_id();
    std::vector<float> logits(static_cast<size_t>(n_ctx - first) * vocab);
    Status s = model_->forward(chunk.data(), first, 0, cache, pool_, first - 1, logits.data());
    EXPECT_TRUE(s.ok()) << s.message();
    for (int i = first; i + 1 < n_ctx && s.ok(); ++i) {
      s = model_->forward(&chunk[i], 1, i, cache, pool_, 0, logits.data() + static_cast<size_t>(i + 1 - first) * vocab);
      EXPECT_TRUE(s.ok()) << s.message();
    }
    return logits;
  }

  // The logits of every position of the first n tokens of the eval text (BOS first, n = the pieces' sum), fed in
  // forward calls of the pieces' sizes (1s: token by token). [n][n_vocab]
  std::vector<float> prompt_logits(KvCache& cache, const std::vector<int>& pieces) {
    const int vocab = model_->config().n_vocab;
    int n = 0;
    for (int p : pieces) n += p;
    std::vector<int32_t> text(tokens_.begin(), tokens_.begin() + n);
    text[0] = tokenizer_->bos_id();
    std::vector<float> logits(static_cast<size_t>(n) * vocab);
    int pos = 0;
    for (int p : pieces) {
      float* rows = logits.data() + static_cast<size_t>(pos) * vocab;
      Status s = model_->forward(text.data() + pos, p, pos, cache, pool_, 0, rows);
      EXPECT_TRUE(s.ok()) << s.message();
      pos += p;
    }
    return logits;
  }

  struct Kld {
    double mean = 0, error = 0;  // mean KL(p_base || p_test) over the rows and its standard error
    double same_top1 = 0;
  };
  Kld kld(const std::vector<float>& base, const std::vector<float>& test) const {
    const int vocab = model_->config().n_vocab;
    const size_t rows = base.size() / vocab;
    double sum = 0, sum2 = 0, same = 0;
    for (size_t r = 0; r < rows; ++r) {
      const float* b = base.data() + r * vocab;
      const float* t = test.data() + r * vocab;
      const double mb = *std::max_element(b, b + vocab), mt = *std::max_element(t, t + vocab);
      double zb = 0, zt = 0;
      for (int v = 0; v < vocab; ++v) zb += std::exp(b[v] - mb), zt += std::exp(t[v] - mt);
      double k = 0;
      for (int v = 0; v < vocab; ++v) {
        const double lb = b[v] - mb - std::log(zb), lt = t[v] - mt - std::log(zt);
        k += std::exp(lb) * (lb - lt);
      }
      sum += k, sum2 += k * k;
      same += std::max_element(b, b + vocab) - b == std::max_element(t, t + vocab) - t;
    }
    Kld out;
    out.mean = sum / rows;
    out.error = std::sqrt(std::max(0.0, sum2 / rows - out.mean * out.mean) / rows);
    out.same_top1 = same / rows;
    return out;
  }
  // Perplexity of the scored rows (row r: the logits after position first - 1 + r, predicting token first + r).
  double perplexity(const std::vector<float>& logits, int n_ctx) const {
    const int vocab = model_->config().n_vocab, first = n_ctx / 2;
    double nll = 0;
    for (int r = 0; r < n_ctx - first; ++r) {
      const float* row = logits.data() + static_cast<size_t>(r) * vocab;
      const double mx = *std::max_element(row, row + vocab);
      double z = 0;
      for (int v = 0; v < vocab; ++v) z += std::exp(row[v] - mx);
      nll -= row[tokens_[first + r]] - mx - std::log(z);
    }
    return std::exp(nll / (n_ctx - first));
  }

  // The same ladder on both backends against the CPU's f16 cache, and the two ladders against each other:
  // their distance at most pair_fraction of the CPU ladder's from f16, perplexities within ppl_tolerance, the
  // greedy (top-1) token of each scored row the CPU ladder's on at least min_top1 of the rows.
  void compare_ladder(const std::string& ladder, double pair_fraction, double ppl_tolerance, double min_top1) {
    SCOPED_TRACE(ladder);
    const int n_ctx = 160;
    auto f16 = cpu_cache(n_ctx, "f16"), cpu = cpu_cache(n_ctx, ladder), gpu = gpu_cache(n_ctx, ladder);
    ASSERT_TRUE(f16 && cpu && gpu);
    const std::vector<float> ref = scored_logits(*f16, n_ctx), on_cpu = scored_logits(*cpu, n_ctx),
                             on_gpu = scored_logits(*gpu, n_ctx);
    const Kld k_cpu = kld(ref, on_cpu), k_gpu = kld(ref, on_gpu), k_pair = kld(on_cpu, on_gpu);
    const double ppl_cpu = perplexity(on_cpu, n_ctx), ppl_gpu = perplexity(on_gpu, n_ctx);
    std::printf("%s: KLD vs CPU f16: CPU ladder %.6f +/- %.6f, Vulkan ladder %.6f +/- %.6f; Vulkan vs CPU ladder "
                "%.6f; PPL f16 %.4f, CPU ladder %.4f, Vulkan ladder %.4f (%+.3f%%); same top-1 as the CPU ladder %.3f\n",
                ladder.c_str(), k_cpu.mean, k_cpu.error, k_gpu.mean, k_gpu.error, k_pair.mean,
                perplexity(ref, n_ctx), ppl_cpu, ppl_gpu, 100 * (ppl_gpu / ppl_cpu - 1), k_pair.same_top1);
    // The ladder costs something measurable (else the comparisons below could not fail)...
    EXPECT_GT(k_cpu.mean, 2 * k_cpu.error);
    // ... the GPU's cost is the CPU's, within two standard errors of their difference, ...
    const double noise = 2 * std::sqrt(k_cpu.error * k_cpu.error + k_gpu.error * k_gpu.error);
    EXPECT_NEAR(k_gpu.mean, k_cpu.mean, noise);
    // ... and the two ladders are closer to each other than to f16 (a GPU that kept f16, or moved other pages,
    // would be as far from the CPU ladder as f16 is).
    EXPECT_LT(k_pair.mean, pair_fraction * k_cpu.mean);
    EXPECT_NEAR(ppl_gpu / ppl_cpu, 1.0, ppl_tolerance);
    EXPECT_GE(k_pair.same_top1, min_top1);
  }

  std::unique_ptr<Model> model_;
  std::unique_ptr<Tokenizer> tokenizer_;
  std::unique_ptr<DeviceModel> device_;
  std::vector<int32_t> tokens_;
  ThreadPool pool_{2};
};

// A ladder starting f16 with short rungs over 160 tokens (4 sinks, pages from position 4): the scored half sees
// page 0 go f16 -> q4 (at 84 tokens) -> q2 (at 132), page 1 fill and go to q4 (at 148).
TEST_F(VulkanLadderTest, F16Q4Q2LadderMatchesTheCpuLadder) { compare_ladder("f16:16,q4:48,q2", 0.2, 0.01, 0.95); }

// A ladder starting quantized, with split precisions: a full page goes from the k16v4 tail to k8v4, later
// k8v4 -> k2v4 (keys re-encoded, values copied). The tail page is k16v4 on both backends (values 4-bit as they
// arrive). The first half runs as one batch on the CPU and in chunks (4 sink steps, [4, 64), [64, 80)) on the
// device, both pushing page 0 to k8v4 at 68 before the batch's attention. The two ladders are further apart than
// above, with a looser perplexity and top-1 bound: a value code quantized per token as it arrives flips where the
// backends' rounding of the same row differs (`kvtier perplexity -c 128 --chunks 3 --decode --kl-divergence
// --kv-ladder k8v4:32,k2v4`, token by token on both: PPL ratios 1.0468 (CPU) vs 1.0277 (Vulkan) on one chunk).
TEST_F(VulkanLadderTest, QuantizedFirstSplitLadderMatchesTheCpuLadder) {
  compare_ladder("k8v4:32,k2v4", 0.3, 0.02, 0.9);
}

// A ladder's prompt in chunks (attention_prefill_pages.comp over each format, merged) against the CPU ladder fed
// the same pieces, so that both apply the batch rule at the same cuts (DeviceKvPages::plan_chunk), and against the
// GPU ladder token by token. The pieces 64, 10, 64, ... put a chunk start 6 tokens after page 0 fills: the chunk
// [74, 138) pushes page 0 out of the full ring straight to q2 before its own attention, on both backends.
// Scored: every position (the logits of each prompt row). Tolerances: the GPU's KLD vs the CPU's f16 cache within
// two standard errors of the CPU ladder's; the two chunked ladders closer to each other than 0.2 of the ladder's
// cost, top-1 equal on 90% of rows; token by token vs chunked (pages move at other times by design: this short
// ladder moves a page 16 tokens after it fills token by token, up to a chunk later chunked) within the ladder's
// own cost, top-1 equal on 80%.
TEST_F(VulkanLadderTest, ChunkedPromptMatchesTheCpuLadderAndTokenByToken) {
  const std::string ladder = "f16:16,q4:48,q2";
  const std::vector<int> pieces = {64, 10, 64};
  int n_ctx = 0;
  for (int p : pieces) n_ctx += p;
  auto f16 = cpu_cache(n_ctx, "f16"), cpu = cpu_cache(n_ctx, ladder), gpu = gpu_cache(n_ctx, ladder),
       gpu_steps = gpu_cache(n_ctx, ladder);
  ASSERT_TRUE(f16 && cpu && gpu && gpu_steps);
  const std::vector<float> ref = prompt_logits(*f16, pieces), on_cpu = prompt_logits(*cpu, pieces),
                           on_gpu = prompt_logits(*gpu, pieces),
                           on_gpu_steps = prompt_logits(*gpu_steps, std::vector<int>(n_ctx, 1));
  const Kld k_cpu = kld(ref, on_cpu), k_gpu = kld(ref, on_gpu), k_pair = kld(on_cpu, on_gpu),
            k_steps = kld(on_gpu_steps, on_gpu);
  std::printf("%s prompt of %d in pieces of 64 (+10): KLD vs CPU f16: CPU ladder %.6f +/- %.6f, Vulkan ladder %.6f "
              "+/- %.6f; Vulkan vs CPU ladder %.6f (same top-1 %.3f); Vulkan chunked vs token by token %.6f (same "
              "top-1 %.3f)\n",
              ladder.c_str(), n_ctx, k_cpu.mean, k_cpu.error, k_gpu.mean, k_gpu.error, k_pair.mean, k_pair.same_top1,
              k_steps.mean, k_steps.same_top1);
  EXPECT_GT(k_cpu.mean, 2 * k_cpu.error);
  EXPECT_NEAR(k_gpu.mean, k_cpu.mean, 2 * std::sqrt(k_cpu.error * k_cpu.error + k_gpu.error * k_gpu.error));
  EXPECT_LT(k_pair.mean, 0.2 * k_cpu.mean);
  EXPECT_GE(k_pair.same_top1, 0.9);  // f16 weights: near-ties apart
  EXPECT_LT(k_steps.mean, k_cpu.mean);
  EXPECT_GE(k_steps.same_top1, 0.8);
}

// A ladder that starts quantized in chunks (k16v4 tail pages written by kv_write_rows_tail.comp; every full page
// pushed out of the one-page ring to k8v4 as the next enters, before the chunk's attention) against the CPU
// ladder fed the same pieces. The batch rule leaves this prompt little quantization (KLD ~0.005 vs f16), and
// the backends' per-token value codes differ by rounding flips (see QuantizedFirstSplitLadderMatchesTheCpuLadder),
// so the bound on the two ladders' distance is the ladder's own cost rather than a fraction of it.
TEST_F(VulkanLadderTest, QuantizedFirstLadderChunkedMatchesTheCpuLadder) {
  const std::string ladder = "k8v4:32,k2v4";
  const std::vector<int> pieces = {64, 10, 64};
  int n_ctx = 0;
  for (int p : pieces) n_ctx += p;
  auto f16 = cpu_cache(n_ctx, "f16"), cpu = cpu_cache(n_ctx, ladder), gpu = gpu_cache(n_ctx, ladder);
  ASSERT_TRUE(f16 && cpu && gpu);
  const std::vector<float> ref = prompt_logits(*f16, pieces), on_cpu = prompt_logits(*cpu, pieces),
                           on_gpu = prompt_logits(*gpu, pieces);
  const Kld k_cpu = kld(ref, on_cpu), k_gpu = kld(ref, on_gpu), k_pair = kld(on_cpu, on_gpu);
  std::printf("%s prompt of %d in pieces of 64 (+10): KLD vs CPU f16: CPU ladder %.6f +/- %.6f, Vulkan ladder %.6f "
              "+/- %.6f; Vulkan vs CPU ladder %.6f (same top-1 %.3f)\n",
              ladder.c_str(), n_ctx, k_cpu.mean, k_cpu.error, k_gpu.mean, k_gpu.error, k_pair.mean, k_pair.same_top1);
  EXPECT_GT(k_cpu.mean, 2 * k_cpu.error);
  EXPECT_NEAR(k_gpu.mean, k_cpu.mean, 2 * std::sqrt(k_cpu.error * k_cpu.error + k_gpu.error * k_gpu.error));
  EXPECT_LT(k_pair.mean, k_cpu.mean);
  EXPECT_GE(k_pair.same_top1, 0.95);
}

// A truncated ladder cache: the partial page left quantized goes back to f16 and takes the new rows.
TEST_F(VulkanLadderTest, TruncateIntoAQuantizedPageThenContinue) {
  const std::string ladder = "f16:16,q4";
  const int n = 90, keep = 40, more = 12, vocab = model_->config().n_vocab;  // at 90 tokens page 0 (4..67) is q4
  auto gpu = gpu_cache(n, ladder), f16 = cpu_cache(n, "f16");
  ASSERT_TRUE(gpu && f16);
  std::vector<float> got(static_cast<size_t>(more) * vocab), want(got.size());
  ASSERT_TRUE(model_->forward(tokens_.data(), n, 0, *gpu, pool_, n, nullptr).ok());
  gpu->truncate(keep);
  EXPECT_EQ(gpu->n_tokens(), keep);
  ASSERT_TRUE(model_->forward(tokens_.data(), keep, 0, *f16, pool_, keep, nullptr).ok());
  for (int i = 0; i < more; ++i) {
    const size_t row = static_cast<size_t>(i) * vocab;
    ASSERT_TRUE(model_->forward(&tokens_[keep + i], 1, keep + i, *gpu, pool_, 0, got.data() + row).ok());
    ASSERT_TRUE(model_->forward(&tokens_[keep + i], 1, keep + i, *f16, pool_, 0, want.data() + row).ok());
  }
  const Kld k = kld(want, got);
  std::printf("after truncating f16:16,q4 into its q4 page: KLD vs f16 %.6f over %d tokens\n", k.mean, more);
  EXPECT_TRUE(std::isfinite(k.mean));
  EXPECT_LT(k.mean, 0.05);  // q4 keys and values of 36 rows: small; stale or unreadable rows give far more
}

// The device memory of a ladder's cache: its formats' pages, not max_tokens f16 pages.
TEST_F(VulkanLadderTest, ALadderCacheTakesLessDeviceMemory) {
  const int n_ctx = 8192;
  auto f16 = gpu_cache(n_ctx, "f16"), ladder = gpu_cache(n_ctx, "f16:128,q4:1024,q2");
  ASSERT_TRUE(f16 && ladder);
  const double ratio = static_cast<double>(ladder->resident_bytes()) / f16->resident_bytes();
  std::printf("device bytes at %d tokens: f16 %zu, f16:128,q4:1024,q2 %zu (%.3f)\n", n_ctx, f16->resident_bytes(),
              ladder->resident_bytes(), ratio);
  EXPECT_LT(ratio, 0.3);  // q2 pages are 0.16 of f16's at head_dim 64 (codes, f16 scale and min per 64 values),
  // plus the bounded rungs' f16 and q4 regions
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
  for (const char* spec : {"f16:100,q8:70,q4:300,q2", "q8:64,k4v2", "q4"}) {
  SCOPED_TRACE(spec);
  auto ladder = kv::parse_ladder(spec, 4);
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
  std::printf("%s: %s\n", spec, pages->describe_usage().c_str());
  }
}

// The page table under chunks of the largest size and ragged ones, over a long sequence: the regions (sized for
// the chunk at create) never run out, and every row is listed once.
TEST(DeviceKvPages, RegionsHoldEveryPageUnderChunks) {
  for (const char* spec :
       {"f16:16,q4:48,q2", "f16:100,q8:70,q4:300,q2", "f16:600,q4", "f16:64,k8v4:64,q4:64,k4v2", "q8:64,k4v2"}) {
    for (int chunk : {64, kMaxDeviceChunk}) {
      SCOPED_TRACE(std::string(spec) + ", chunks of " + std::to_string(chunk));
      auto ladder = kv::parse_ladder(spec, 4);
      ASSERT_TRUE(ladder.ok());
      const int total = 6000;
      auto pages = DeviceKvPages::create(*ladder, kv::KeyMode::PerChannel, 2, 64, 0, total, chunk);
      ASSERT_TRUE(pages.ok()) << pages.error();
      const int sizes[] = {chunk, chunk - 13, 1, 7, chunk, 1};
      int pos = 0;
      for (int i = 0; pos < total; ++i) {
        const int n = pos < 4 ? 1 : std::min(sizes[i % 6], total - pos);
        if (n == 1) {
          ASSERT_TRUE(pages->plan_step(pos).ok()) << "step at " << pos;
        } else {
          auto plan = pages->plan_chunk(pos, n);
          ASSERT_TRUE(plan.ok()) << "chunk at " << pos << ": " << plan.error();
          size_t listed = 0;
          for (const auto& list : plan->lists) {
            for (const DeviceKvPages::ChunkEntry& e : list) listed += e[1];
          }
          ASSERT_EQ(listed, static_cast<size_t>(pos + n)) << "rows listed after the chunk at " << pos;
        }
        pos += n;
      }
    }
  }
}

// A chunk's page table against the CPU store's (kv::TieredKvStore, one layer): the pieces a prompt and decode
// come in (steps for the sinks, chunks of assorted lengths, single steps), and after each chunk the precision of
// every page its attention reads is the one the CPU store's batch attention reads (append, settle_layer,
// gather_pages; rebalance after it). Covers pages pushed out of a full ring during a chunk.
TEST(DeviceKvPages, ChunksReadPagesAtTheCpuStoresRungs) {
  const std::vector<int> pieces = {1, 1, 1, 1, 60, 10, 64, 64, 1, 1, 37, 64, 64, 5, 64, 100, 3, 64, 64, 64, 1, 50, 64};
  int total = 0;
  for (int p : pieces) total += p;
  for (const char* spec :
       {"f16:16,q4:48,q2", "f16:100,q8:70,q4:300,q2", "f16:64,q4", "f16:16,k8v4:64,k4v2", "k8v4:32,k2v4", "q4:64,q2"}) {
    SCOPED_TRACE(spec);
    auto ladder = kv::parse_ladder(spec, 4);
    ASSERT_TRUE(ladder.ok());
    auto pages = DeviceKvPages::create(*ladder, kv::KeyMode::PerChannel, 1, 64, 0, total, 128);
    ASSERT_TRUE(pages.ok()) << pages.error();
    kv::TieredKvOptions options;
    options.ladder = *ladder;
    auto store = kv::TieredKvStore::create(KvGeometry{1, 1, 64, total}, options);
    ASSERT_TRUE(store.ok()) << store.error();
    const std::vector<float> rows(static_cast<size_t>(total) * 64, 0.5f);
    int pos = 0, pushed = 0;
    for (int n : pieces) {
      ASSERT_TRUE((*store)->append(0, pos, n, rows.data(), rows.data()).ok());
      if (n == 1) {
        ASSERT_TRUE(pages->plan_step(pos).ok());
      } else {
        (*store)->settle_layer(0);
        std::vector<kv::PageRef> cpu;
        (*store)->gather_pages(0, cpu);
        auto plan = pages->plan_chunk(pos, n);
        ASSERT_TRUE(plan.ok()) << plan.error();
        pushed += static_cast<int>(plan->after_write.size());
        std::vector<std::pair<uint32_t, kv::Precision>> gpu;  // (first position, precision) of each listed page
        for (size_t r = 0; r < plan->lists.size(); ++r) {
          for (const DeviceKvPages::ChunkEntry& e : plan->lists[r]) {
            gpu.emplace_back(e[2], pages->regions()[r].format.precision);
          }
        }
        std::sort(gpu.begin(), gpu.end());
        ASSERT_EQ(gpu.size(), cpu.size()) << "chunk at " << pos;
        for (size_t i = 0; i < cpu.size(); ++i) {
          EXPECT_EQ(gpu[i].first, static_cast<uint32_t>(cpu[i].first_pos)) << "chunk at " << pos;
          EXPECT_EQ(kv::precision_name(gpu[i].second), kv::precision_name(cpu[i].format->precision))
              << "chunk at " << pos << ", page at " << cpu[i].first_pos;
        }
      }
      ASSERT_TRUE((*store)->rebalance(0).ok());
      pos += n;
    }
    std::printf("%s: %d pages pushed out of the ring during chunks\n", spec, pushed);
    if (std::string(spec) == "f16:16,q4:48,q2") EXPECT_GT(pushed, 0);  // the pieces above make some
  }
}

}  // namespace
}  // namespace kvtier
