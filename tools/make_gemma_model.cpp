// make_gemma_model: writes a Gemma 2 or Gemma 3 test GGUF from the trained tiny-llama weights (tools/gemma_model.h
// says how), deterministically, for comparisons with llama.cpp (scripts/make_gemma_references.sh).
//
//   build/tools/make_gemma_model --arch gemma3 -o /tmp/gemma3.gguf
#include <cstdio>
#include <string>

#include <CLI/CLI.hpp>

#include "gemma_model.h"

int main(int argc, char** argv) {
  using namespace kvtier;
  tools::GemmaModelOptions o;
  std::string source = "../shared/models/tiny-llama-6m.f16.gguf";
  std::string output_path;
  CLI::App app{"Write a Gemma 2/3 test GGUF made from a trained Llama GGUF's weights"};
  app.add_option("--arch", o.architecture, "gemma2 or gemma3")->check(CLI::IsMember({"gemma2", "gemma3"}))->capture_default_str();
  app.add_option("--from", source, "source llama-architecture F16 GGUF")->check(CLI::ExistingFile)->capture_default_str();
  app.add_option("-o,--output", output_path, "output .gguf path (written atomically)")->required();
  app.add_option("--window", o.window, "attention.sliding_window")->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--pattern", o.pattern, "attention.sliding_window_pattern")->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--post-scale", o.post_scale, "scale of attn_output and ffn_down (post-norms undo it)")->capture_default_str();
  app.add_option("--k-norm", o.k_norm, "gemma3 attn_k_norm weight")->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  auto src = gguf::File::open(source);
  if (!src.ok()) {
    std::fprintf(stderr, "error: %s\n", src.error().c_str());
    return 1;
  }
  gguf::GgufWriter writer;
  Status s = tools::make_gemma_model(**src, o, writer);
  if (s.ok()) s = writer.write_file(output_path);
  if (!s.ok()) {
    std::fprintf(stderr, "error: %s\n", s.message().c_str());
    return 1;
  }
  std::fprintf(stderr, "wrote %s (%s, window %d, pattern %d)\n", output_path.c_str(), o.architecture.c_str(), o.window,
               o.pattern);
  return 0;
}
