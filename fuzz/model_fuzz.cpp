// libFuzzer target for the model loader's validation: arbitrary bytes -> gguf::File -> Model::from_file (config
// from metadata for every architecture, tensor binding with its type and shape checks: missing or mis-shaped
// tensors, expert counts, windows, RoPE scaling). A refused file must come with a one-line message; an accepted
// one must have a consistent config, make both caches and run two tokens through the forward pass without a
// crash. Seeds: fuzz/corpus/model/ (tools/make_fuzz_seeds). Build and run: scripts/fuzz_smoke.sh [seconds].
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "kvtier/gguf.h"
#include "kvtier/kv_options.h"
#include "kvtier/model.h"
#include "kvtier/thread_pool.h"

namespace {

using kvtier::Model;
using kvtier::ModelConfig;

// An invariant the loader promises; violating it is a bug the fuzzer must report.
void require(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "model_fuzz: invariant violated: %s\n", what);
    std::abort();
  }
}

// The forward pass runs only on models this small (inputs are at most -max_len bytes, but a config may
// still ask for large scratch buffers, e.g. a wide feed-forward over a tensor of few rows).
bool small_enough(const ModelConfig& c) {
  const int64_t q_dim = static_cast<int64_t>(c.n_heads) * c.head_dim;
  return c.n_vocab <= 4096 && c.n_embd <= 1024 && q_dim <= 4096 && c.n_ff <= 8192 && c.n_layers <= 64 &&
         c.n_expert <= 64 && c.n_ff_expert <= 8192;
}

void run_two_tokens(Model& model) {
  static kvtier::ThreadPool pool(1);
  const ModelConfig& c = model.config();
  const int32_t tokens[2] = {0, c.n_vocab - 1};
  std::vector<float> logits(static_cast<size_t>(c.n_vocab));  // [n_vocab]
  auto contiguous = kvtier::make_contiguous_kv_cache(c, 4);
  require(contiguous != nullptr, "a contiguous cache for an accepted model");
  (void)model.forward(tokens, 2, 0, *contiguous, pool, 1, logits.data());
  auto paged = kvtier::make_kv_cache(c, 4, {});
  if (!paged.ok()) {
    require(!paged.error().empty(), "errors carry a message");
    return;
  }
  (void)model.forward(tokens, 2, 0, **paged, pool, 1, logits.data());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto file = kvtier::gguf::File::from_bytes(data, size);
  if (!file.ok()) return 0;
  auto model = Model::from_file(std::move(*file));
  if (!model.ok()) {
    require(!model.error().empty(), "errors carry a message");
    require(model.error().find('\n') == std::string::npos, "one line per error");
    return 0;
  }
  const ModelConfig& c = (*model)->config();
  require(c.n_vocab > 0 && c.n_embd > 0 && c.n_layers > 0 && c.n_heads > 0 && c.n_kv_heads > 0 && c.head_dim > 0,
          "positive dimensions");
  require(c.n_heads % c.n_kv_heads == 0, "query heads a multiple of the KV heads");
  require(c.rope_dims >= 0 && c.rope_dims <= c.head_dim && c.rope_dims % 2 == 0, "rotary dims within the head");
  require(c.n_expert_used <= c.n_expert, "experts used at most the experts");
  // (A window the file sets must fit the context; gemma2's default of 4096 applies whatever the context.)
  require(c.sliding_window >= 0, "a window of no positions or more");
  if (small_enough(c)) run_two_tokens(**model);
  return 0;
}
