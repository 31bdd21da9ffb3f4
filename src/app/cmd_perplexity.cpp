// kvtier perplexity: llama.cpp's perplexity protocol (see kvtier/session.h).
#include <chrono>
#include <cstdio>
#include <string>

#include "app/commands.h"
#include "app/loading.h"
#include "app/options.h"
#include "app/progress.h"
#include "kvtier/file_io.h"
#include "kvtier/session.h"

namespace kvtier::app {

namespace {
struct PerplexityOptions {
  std::string model_path;
  ModelLoadOptions load;  // --mlock, --no-mmap
  std::string text_path;
  int n_ctx = 512;
  int chunks = 0;
  int threads = 0;
  KvCacheOptions kv;
  DeviceOptions device;  // --device: where the cache under test and its forward pass run
  bool kl_divergence = false;
  bool decode = false;
};

// --kl-divergence: every chunk with the f16 contiguous cache and with the cache
// under test, in the same run; prints llama.cpp-style statistics.
int run_kl_divergence(const PerplexityOptions& o, Model& model, const Tokenizer& tokenizer,
                      const std::vector<int32_t>& tokens, ThreadPool& pool,
                      const std::function<std::unique_ptr<KvCache>()>& make_test_cache) {
  ProgressBar bar("kl-divergence");
  auto result = compare_kv_caches(
      model, tokens, o.n_ctx, o.chunks, tokenizer.bos_id(), pool,
      [&] { return make_contiguous_kv_cache(model.config(), o.n_ctx); }, make_test_cache,
      [&](int chunk, int n_chunks, const KvQualityResult& r) {
        bar.finish();
        std::printf("[%d] ppl_ratio %.4f kld %.5f top1 %.2f%%\n", chunk + 1, r.ppl_ratio, r.mean_kld,
                    100 * r.same_top1);
        std::fflush(stdout);
        bar.update(chunk + 1, n_chunks);
      },
      o.decode);
  bar.finish();
  if (!result.ok()) return fail(result.error());
  // Bits per element of the whole cache at full context: fill one cache to n_ctx and ask it.
  auto full = make_test_cache();
  std::vector<int32_t> chunk(tokens.begin(), tokens.begin() + o.n_ctx);
  chunk[0] = tokenizer.bos_id() >= 0 ? tokenizer.bos_id() : chunk[0];
  if (Status s = model.forward(chunk.data(), o.n_ctx, 0, *full, pool, o.n_ctx, nullptr); !s.ok()) {
    return fail(s.message());
  }
  const ModelConfig& c = model.config();
  const double elements = 2.0 * c.n_layers * c.n_kv_heads * c.head_dim * o.n_ctx;
  const double bits = 8.0 * full->resident_bytes() / elements;
  std::printf("cache: %s\n", full->describe().c_str());
  std::printf("PPL(f16 KV) = %.4f  PPL(test KV) = %.4f  PPL ratio = %.6f\n", result->ppl_base, result->ppl_test,
              result->ppl_ratio);
  std::printf("Mean KLD: %.6f +/- %.6f\n", result->mean_kld, result->kld_error);
  std::printf("Same top-1: %.3f%%\n", 100 * result->same_top1);
  std::printf("Bits per element (whole cache at %d tokens, all tiers, scales and sinks): %.3f\n", o.n_ctx, bits);
  return 0;
}

int run(const PerplexityOptions& o) {
  auto read = read_bounded_file(o.text_path, kMaxTextFileBytes, "text file");
  if (!read.ok()) return fail(read.error());
  const std::string text = std::move(*read);

  auto loaded = load_model_and_tokenizer(o.model_path, o.load);
  if (!loaded.ok()) return fail(loaded.error());
  Model& model = *loaded->model;
  const Tokenizer& tokenizer = *loaded->tokenizer;

  // A chunk's scored half of logits (both caches' with --kl-divergence), its caches, and the text's tokens
  // (at most one per byte).
  const int n_caches = o.kl_divergence ? 2 : 1;
  if (Status s = check_run_memory(model.config(), o.kv,
                                  RunMemoryRequest{.n_ctx = o.n_ctx, .logits_rows = o.n_ctx - o.n_ctx / 2,
                                                   .n_caches = n_caches,
                                                   .input_tokens = static_cast<int64_t>(text.size())});
      !s.ok()) {
    return fail(s.message());
  }
  const auto start = std::chrono::steady_clock::now();
  const std::vector<int32_t> tokens = tokenizer.encode(text, tokenizer.add_bos_default(), false);
  std::fprintf(stderr, "tokenized %s: %zu tokens in %.2f s\n", o.text_path.c_str(), tokens.size(),
               std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  if (tokens.size() < 2 * static_cast<size_t>(o.n_ctx)) {
    return fail("need at least " + std::to_string(2 * o.n_ctx) + " tokens for -c " + std::to_string(o.n_ctx) +
                ", the text has " + std::to_string(tokens.size()));
  }
  ThreadPool pool(o.threads);
  // Fail on a bad cache option before any work.
  auto probe = make_kv_cache(model.config(), o.n_ctx, o.kv);
  if (!probe.ok()) return fail(probe.error());
  const size_t kv_bytes_per_chunk = (*probe)->resident_bytes();
  probe->reset();
  auto device_model = open_device(model, o.device, o.kv);  // null on the CPU
  if (!device_model.ok()) return fail(device_model.error());
  auto make_test_cache = [&]() -> std::unique_ptr<KvCache> {
    return make_run_cache(device_model->get(), model.config(), o.n_ctx, o.kv, &pool).value();
  };
  if (o.kl_divergence) return run_kl_divergence(o, model, tokenizer, tokens, pool, make_test_cache);
  ProgressBar bar("perplexity");
  const auto compute_start = std::chrono::steady_clock::now();
  auto result = compute_perplexity(
      model, tokens, o.n_ctx, o.chunks, tokenizer.bos_id(), pool,
      make_test_cache,
      [&](int chunk, int n_chunks, double running) {
        bar.finish();
        std::printf("[%d]%.4f,", chunk + 1, running);
        std::fflush(stdout);
        bar.update(chunk + 1, n_chunks);
      });
  bar.finish();
  std::printf("\n");
  if (!result.ok()) return fail(result.error());
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - compute_start).count();
  const size_t n_chunks = result->running_ppl.size();
  std::fprintf(stderr, "%zu chunks of %d tokens in %.2f s (%.1f tok/s)\n", n_chunks, o.n_ctx, seconds,
               n_chunks * o.n_ctx / seconds);
  std::printf("Final estimate: PPL = %.4f +/- %.5f\n", result->ppl, result->ppl_error);
  (void)kv_bytes_per_chunk;
  return 0;
}
}  // namespace

Command add_perplexity_command(CLI::App& app) {
  auto o = std::make_shared<PerplexityOptions>();
  app.add_option("-m,--model", o->model_path, "GGUF model file")->required()->check(CLI::ExistingFile);
  app.add_option("-f,--file", o->text_path, "text file to evaluate ('-': standard input)")->required();
  app.add_option("-c,--ctx-size", o->n_ctx, "tokens per chunk (default 512)")->check(CLI::Range(4, 1 << 20));
  app.add_option("--chunks", o->chunks, "evaluate only the first K chunks (default: all)")
      ->check(CLI::Range(0, 1 << 24));
  add_threads_option(app, o->threads);
  add_weight_options(app, o->load);
  add_kv_options(app, o->kv);
  add_device_option(app, o->device);
  app.add_flag("--kl-divergence", o->kl_divergence,
               "compare the cache given by --kv/--kv-ladder with the f16 cache on every chunk (KLD, top-1, PPL ratio)");
  app.add_flag("--decode", o->decode,
               "with --kl-divergence: feed each chunk's scored half one token at a time, as generation does (sparse "
               "cold reads act only on single-token steps)");
  return [o] { return run(*o); };
}

}  // namespace kvtier::app
