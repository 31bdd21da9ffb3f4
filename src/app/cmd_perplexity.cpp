// kvtier perplexity: llama.cpp's perplexity protocol (see kvtier/session.h).
#include <chrono>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>

#include "app/commands.h"
#include "app/loading.h"
#include "app/progress.h"
#include "kvtier/session.h"

namespace kvtier::app {

namespace {
struct PerplexityOptions {
  std::string model_path;
  std::string text_path;
  int n_ctx = 512;
  int chunks = 0;
  int threads = 0;
};

int run(const PerplexityOptions& o) {
  std::ifstream in(o.text_path, std::ios::binary);
  if (!in) return fail("cannot read " + o.text_path);
  std::stringstream buffer;
  buffer << in.rdbuf();
  const std::string text = buffer.str();

  auto loaded = load_model_and_tokenizer(o.model_path);
  if (!loaded.ok()) return fail(loaded.error());
  Model& model = *loaded->model;
  const Tokenizer& tokenizer = *loaded->tokenizer;

  const auto start = std::chrono::steady_clock::now();
  const std::vector<int32_t> tokens = tokenizer.encode(text, tokenizer.add_bos_default(), false);
  std::fprintf(stderr, "tokenized %s: %zu tokens in %.2f s\n", o.text_path.c_str(), tokens.size(),
               std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  if (tokens.size() < 2 * static_cast<size_t>(o.n_ctx)) {
    return fail("need at least " + std::to_string(2 * o.n_ctx) + " tokens for -c " + std::to_string(o.n_ctx) +
                ", the text has " + std::to_string(tokens.size()));
  }
  ThreadPool pool(o.threads);
  ProgressBar bar("perplexity");
  const auto compute_start = std::chrono::steady_clock::now();
  auto result = compute_perplexity(
      model, tokens, o.n_ctx, o.chunks, tokenizer.bos_id(), pool,
      [&] { return make_contiguous_kv_cache(model.config(), o.n_ctx); },
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
  return 0;
}
}  // namespace

Command add_perplexity_command(CLI::App& app) {
  auto o = std::make_shared<PerplexityOptions>();
  app.add_option("-m,--model", o->model_path, "GGUF model file")->required()->check(CLI::ExistingFile);
  app.add_option("-f,--file", o->text_path, "text file to evaluate")->required()->check(CLI::ExistingFile);
  app.add_option("-c,--ctx-size", o->n_ctx, "tokens per chunk (default 512)")->check(CLI::Range(4, 1 << 20));
  app.add_option("--chunks", o->chunks, "evaluate only the first K chunks (default: all)")
      ->check(CLI::Range(0, 1 << 24));
  add_threads_option(app, o->threads);
  return [o] { return run(*o); };
}

}  // namespace kvtier::app
