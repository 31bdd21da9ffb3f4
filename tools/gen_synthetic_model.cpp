// gen_synthetic_model: writes a Llama-architecture GGUF with random weights at
// Llama-3.2-1B's shapes (by default), in llama-quantize's Q4_0 or Q4_K_M tensor
// mix, for speed benchmarks against llama.cpp (bench/compare_llamacpp.sh).
// The tokenizer is the test models' byte-level BPE vocabulary padded with
// reserved control tokens to the model's vocabulary size.
//
//   build/tools/gen_synthetic_model --mix q4_k_m -o peer/models/synthetic-llama-3.2-1b.Q4_K_M.gguf
//
// The weights carry no information: use these files for speed and memory,
// never for quality. See tools/synthetic_model.h for the tensor types chosen.
#include <cstdio>
#include <map>
#include <string>

#include <CLI/CLI.hpp>

#include "synthetic_model.h"

int main(int argc, char** argv) {
  using namespace kvtier;
  tools::SyntheticOptions o;
  o.shape = tools::llama_3_2_1b_shape();
  std::string output_path;
  std::string vocab_path = "../shared/models/tiny-llama-6m.f16.gguf";

  CLI::App app{"Write a random-weight Llama GGUF model for speed benchmarks (Llama-3.2-1B shapes by default)"};
  const std::map<std::string, tools::WeightMix> mixes{{"q4_0", tools::WeightMix::Q4_0},
                                                       {"q4_k_m", tools::WeightMix::Q4_K_M}};
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
  app.add_option("-c,--ctx", o.shape.n_ctx, "llama.context_length to record")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  // Smaller shapes, for tests and quick experiments.
  app.add_option("--n-layer", o.shape.n_layer, "layers")->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--n-embd", o.shape.n_embd, "embedding width")->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--n-ff", o.shape.n_ff, "feed-forward width")->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--n-head", o.shape.n_head, "query heads")->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--n-head-kv", o.shape.n_head_kv, "key/value heads")->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--head-dim", o.shape.head_dim, "head dimension")->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--n-vocab", o.shape.n_vocab, "vocabulary size (the tokenizer is padded to it)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);

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
