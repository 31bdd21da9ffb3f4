// gen_synthetic_model: writes a GGUF with random weights at a real model's
// shapes, in llama-quantize's Q4_0 or Q4_K_M tensor mix, for speed benchmarks
// against llama.cpp (bench/compare_llamacpp.sh). --arch picks the shape:
//   llama     Llama-3.2-1B (the default)        qwen3     Qwen3-0.6B
//   gemma3    Gemma-3-1B                        qwen3moe  Qwen3-30B-A3B, 6 of its 48 layers
// and the --n-* options change single dimensions of it (smaller test models).
// The tokenizer is the test models' byte-level BPE vocabulary padded with
// reserved control tokens to the model's vocabulary size.
//
//   build/tools/gen_synthetic_model --mix q4_k_m -o peer/models/synthetic-llama-3.2-1b.Q4_K_M.gguf
//   build/tools/gen_synthetic_model --arch gemma3 --mix q4_k_m -o peer/models/synthetic-gemma-3-1b.Q4_K_M.gguf
//
// The weights carry no information: use these files for speed and memory,
// never for quality. See tools/synthetic_model.h for the tensor types chosen.
#include <algorithm>
#include <cstdio>
#include <map>
#include <optional>
#include <string>

#include <CLI/CLI.hpp>

#include "synthetic_model.h"

int main(int argc, char** argv) {
  using namespace kvtier;
  tools::SyntheticOptions o;
  std::string architecture = "llama";
  std::string output_path;
  std::string vocab_path = "../shared/models/tiny-llama-6m.f16.gguf";
  // Shape overrides, applied to the --arch shape after parsing.
  std::optional<int64_t> n_ctx, n_layer, n_embd, n_ff, n_head, n_head_kv, head_dim, n_vocab, n_expert, n_ff_expert;

  CLI::App app{"Write a random-weight GGUF model at a real model's shapes, for speed benchmarks"};
  const std::map<std::string, tools::WeightMix> mixes{{"q4_0", tools::WeightMix::Q4_0},
                                                       {"q4_k_m", tools::WeightMix::Q4_K_M}};
  app.add_option("--arch", architecture,
                 "llama (Llama-3.2-1B), qwen3 (Qwen3-0.6B), gemma3 (Gemma-3-1B) or qwen3moe (Qwen3-30B-A3B, 6 layers)")
      ->check(CLI::IsMember(tools::synthetic_architectures()))
      ->capture_default_str();
  app.add_option("--mix", o.mix, "tensor type mix, as llama-quantize makes it: q4_0 or q4_k_m")
      ->required()
      ->transform(CLI::CheckedTransformer(mixes, CLI::ignore_case));
  app.add_option("-o,--output", output_path, "output .gguf path (written atomically)")->required();
  app.add_option("--vocab-from", vocab_path, "GGUF whose BPE tokenizer is copied and padded")
      ->check(CLI::ExistingFile)
      ->capture_default_str();
  app.add_option("--seed", o.seed, "random seed")->capture_default_str();
  app.add_option("--weight-std", o.weight_std, "standard deviation of the random weights")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("-c,--ctx", n_ctx, "context_length to record")->check(CLI::PositiveNumber);
  // Other shapes, for tests and quick experiments (defaults: the --arch model's).
  app.add_option("--n-layer", n_layer, "layers")->check(CLI::PositiveNumber);
  app.add_option("--n-embd", n_embd, "embedding width")->check(CLI::PositiveNumber);
  app.add_option("--n-ff", n_ff, "feed-forward width")->check(CLI::PositiveNumber);
  app.add_option("--n-head", n_head, "query heads")->check(CLI::PositiveNumber);
  app.add_option("--n-head-kv", n_head_kv, "key/value heads")->check(CLI::PositiveNumber);
  app.add_option("--head-dim", head_dim, "head dimension")->check(CLI::PositiveNumber);
  app.add_option("--n-vocab", n_vocab, "vocabulary size (the tokenizer is padded to it)")->check(CLI::PositiveNumber);
  app.add_option("--n-expert", n_expert, "experts per layer (qwen3moe)")->check(CLI::PositiveNumber);
  app.add_option("--n-ff-expert", n_ff_expert, "expert feed-forward width (qwen3moe)")->check(CLI::PositiveNumber);
  CLI11_PARSE(app, argc, argv);

  o.shape = tools::synthetic_shape_for(architecture);
  tools::SyntheticShape& s = o.shape;
  for (auto [value, field] : {std::pair{&n_ctx, &s.n_ctx}, {&n_layer, &s.n_layer}, {&n_embd, &s.n_embd},
                              {&n_ff, &s.n_ff}, {&n_head, &s.n_head}, {&n_head_kv, &s.n_head_kv},
                              {&head_dim, &s.head_dim}, {&n_vocab, &s.n_vocab}, {&n_expert, &s.n_expert},
                              {&n_ff_expert, &s.n_ff_expert}}) {
    if (*value) *field = **value;
  }
  if (n_layer && architecture == "qwen3moe") s.name = "synthetic-qwen3-30b-a3b-" + std::to_string(s.n_layer) + "l";
  s.n_expert_used = std::min(s.n_expert_used, s.n_expert);

  auto vocab = gguf::File::open(vocab_path);
  if (!vocab.ok()) {
    std::fprintf(stderr, "error: %s\n", vocab.error().c_str());
    return 1;
  }
  gguf::GgufWriter writer;
  auto progress = [](size_t i, size_t n, const std::string& name, GgmlType type) {
    std::fprintf(stderr, "\rgenerating tensor %zu/%zu %-28s %-5s", i + 1, n, name.c_str(), ggml_type_name(type));
  };
  if (Status s = tools::build_synthetic_model(o, **vocab, writer, progress); !s.ok()) {
    std::fprintf(stderr, "\nerror: %s\n", s.message().c_str());
    return 1;
  }
  std::fprintf(stderr, "\nwriting %s (%s, %zu tensors)\n", output_path.c_str(), tools::weight_mix_name(o.mix),
               writer.n_tensors());
  if (Status s = writer.write_file(output_path); !s.ok()) {
    std::fprintf(stderr, "error: %s\n", s.message().c_str());
    return 1;
  }
  return 0;
}
