// kvtier recall: long-range retrieval under a quantized KV cache (see kvtier/recall.h).
#include <cstdio>
#include <string>

#include "app/commands.h"
#include "app/loading.h"
#include "app/options.h"
#include "kvtier/file_io.h"
#include "kvtier/recall.h"

namespace kvtier::app {

namespace {
struct RecallCommandOptions {
  std::string model_path;
  ModelLoadOptions load;  // --mlock, --no-mmap
  std::string text_path;
  int n_ctx = 2048;
  int span = 128;
  int filler = -1;  // -1: fill the context, n_ctx - 1 - 2*span
  int trials = 8;
  int threads = 0;
  bool decode = false;
  KvCacheOptions kv;
};

int run(const RecallCommandOptions& o) {
  if (o.filler < 0 && 1 + 2 * o.span > o.n_ctx) {  // the default filler fills what the two copies leave
    return fail("-c " + std::to_string(o.n_ctx) + " is too small for --span " + std::to_string(o.span) +
                ": the two copies and BOS need " + std::to_string(1 + 2 * o.span) + " positions");
  }
  const int filler = o.filler >= 0 ? o.filler : o.n_ctx - 1 - 2 * o.span;
  if (1 + 2 * o.span + filler > o.n_ctx) {
    return fail("--span " + std::to_string(o.span) + " with --filler " + std::to_string(filler) +
                " needs 1 + 2*span + filler = " + std::to_string(1 + 2 * o.span + filler) +
                " positions, more than -c " + std::to_string(o.n_ctx));
  }
  auto text = read_bounded_file(o.text_path, kMaxTextFileBytes, "text file");
  if (!text.ok()) return fail(text.error());

  auto loaded = load_model_and_tokenizer(o.model_path, o.load);
  if (!loaded.ok()) return fail(loaded.error());
  Model& model = *loaded->model;
  const Tokenizer& tokenizer = *loaded->tokenizer;
  if (Status s = check_run_memory(model.config(), o.kv,
                                  RunMemoryRequest{.n_ctx = o.n_ctx, .logits_rows = o.n_ctx, .n_caches = 2,
                                                   .input_tokens = static_cast<int64_t>(text->size())});
      !s.ok()) {
    return fail(s.message());
  }
  const std::vector<int32_t> tokens = tokenizer.encode(*text, tokenizer.add_bos_default(), false);

  ThreadPool pool(o.threads);
  auto probe = make_kv_cache(model.config(), o.n_ctx, o.kv);  // fail on a bad cache option before any work
  if (!probe.ok()) return fail(probe.error());
  const std::string cache_description = (*probe)->describe();
  probe->reset();

  RecallOptions options;
  options.span = o.span;
  options.filler = filler;
  options.trials = o.trials;
  options.decode = o.decode;
  std::printf("recall: span %d, filler %d, %d trials, context %d; test cache: %s\n", o.span, filler, o.trials,
              o.n_ctx, cache_description.c_str());
  std::fflush(stdout);
  auto result = compute_recall(
      model, tokens, tokenizer.bos_id(), options, pool,
      [&] { return make_contiguous_kv_cache(model.config(), o.n_ctx); },
      [&]() -> std::unique_ptr<KvCache> {
        auto cache = make_kv_cache(model.config(), o.n_ctx, o.kv, &pool);
        return cache.ok() ? std::move(*cache) : nullptr;
      },
      [&](int trial, int n_trials, const RecallTrial& t) {
        std::printf("[%d/%d] span at token %lld: first copy %.4f, second copy f16 %.4f test %.4f\n", trial + 1,
                    n_trials, static_cast<long long>(t.span_start), t.first_nll_base, t.second_nll_base,
                    t.second_nll_test);
        std::fflush(stdout);
      });
  if (!result.ok()) return fail(result.error());
  const RecallResult& r = *result;
  std::printf("First copy NLL (no repeat to copy from): f16 KV = %.4f  test KV = %.4f\n", r.first_nll_base,
              r.first_nll_test);
  std::printf("Second copy NLL: f16 KV = %.4f  test KV = %.4f  ratio = %.4f  difference = %+.4f\n",
              r.second_nll_base, r.second_nll_test, r.second_nll_ratio, r.second_nll_difference);
  std::printf("Second copy top-1 = copied token: f16 KV = %.2f%%  test KV = %.2f%%\n", 100 * r.copy_accuracy_base,
              100 * r.copy_accuracy_test);
  std::printf("Second copy mean KLD (f16 || test): %.6f over %lld tokens\n", r.second_kld,
              static_cast<long long>(r.scored_per_copy));
  return 0;
}
}  // namespace

Command add_recall_command(CLI::App& app) {
  auto o = std::make_shared<RecallCommandOptions>();
  app.add_option("-m,--model", o->model_path, "GGUF model file")->required()->check(CLI::ExistingFile);
  app.add_option("-f,--file", o->text_path, "text file to take spans and filler from")
      ->required()
      ->check(CLI::ExistingFile);
  app.add_option("-c,--ctx-size", o->n_ctx, "context (cache capacity) per trial (default 2048)")
      ->check(CLI::Range(8, 1 << 20));
  app.add_option("--span", o->span, "tokens of the repeated span (default 128)")->check(CLI::Range(2, 1 << 19));
  app.add_option("--filler", o->filler, "tokens between the copies (default: fill the context, c - 1 - 2*span)")
      ->check(CLI::Range(0, 1 << 20));
  app.add_option("--trials", o->trials, "different spans, spread over the text (default 8)")
      ->check(CLI::Range(1, 1 << 16));
  app.add_flag("--decode", o->decode, "feed the second copy one token at a time, as generation does");
  add_threads_option(app, o->threads);
  add_weight_options(app, o->load);
  add_kv_options(app, o->kv);
  return [o] { return run(*o); };
}

}  // namespace kvtier::app
