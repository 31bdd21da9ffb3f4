// make_arch_model: writes a test model of a non-llama architecture (qwen3, qwen3moe, Mixtral-style llama MoE,
// smollm3, phi3, qwen3 with YaRN) made from a trained llama F16 GGUF's weights; see tools/arch_model.h.
//
//   build/tools/make_arch_model --arch qwen3 -o /tmp/tiny-qwen3-6m.f16.gguf
//
// scripts/make_arch_references.sh runs llama.cpp on these files; tests/model/arch_reference_test.cpp makes
// the same files through the same header and compares kvtier with what llama.cpp said.
#include <cstdio>
#include <string>

#include <CLI/CLI.hpp>

#include "arch_model.h"

int main(int argc, char** argv) {
  std::string arch, output_path, source = "../shared/models/tiny-llama-6m.f16.gguf";
  CLI::App app{"Write a test model of another architecture from a trained llama F16 GGUF"};
  app.add_option("--arch", arch, "variant to write")
      ->required()
      ->check(CLI::IsMember(kvtier::tools::arch_model_variants()));
  app.add_option("-o,--output", output_path, "output .gguf path (written atomically)")->required();
  app.add_option("--from", source, "source llama F16 GGUF")->check(CLI::ExistingFile)->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  if (kvtier::Status s = kvtier::tools::make_arch_model(source, arch, output_path); !s.ok()) {
    std::fprintf(stderr, "make_arch_model: %s\n", s.message().c_str());
    return 1;
  }
  return 0;
}
