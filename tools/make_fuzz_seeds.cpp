// make_fuzz_seeds: writes the seed corpus of fuzz/model_fuzz.cpp — tiny GGUF models (a few KiB: Q4_0 weights
// at width 32, a 32-token vocabulary) of every architecture tools/synthetic_model.h builds, the ones that share
// their tensor layout under another name (gemma2, smollm3, Mixtral-style llama MoE, YaRN qwen3), and the bad
// inputs of issue 17 (a window larger than the context, an unknown rope.scaling.type, an expert count that
// disagrees with the tensors, a missing tensor, a mis-shaped one).
//
//   build/tools/make_fuzz_seeds -o fuzz/corpus/model
//
// The files are deterministic (fixed seeds); rerun this when the synthetic builder or the loader's keys change.
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "../tests/common/gguf_copy.h"  // header-only GGUF copy-with-edit (also used by the tests)
#include "synthetic_model.h"

namespace {

using namespace kvtier;
namespace fs = std::filesystem;

// A 4-token byte-level BPE vocabulary source (build_synthetic_model pads it to the model's n_vocab).
std::vector<uint8_t> tiny_vocab() {
  gguf::GgufWriter w;
  w.set_string("tokenizer.ggml.model", "gpt2");
  w.set_array_str("tokenizer.ggml.tokens", {"a", "b", "<s>", "</s>"});
  const std::vector<int32_t> types = {1, 1, 3, 3};
  w.set_array_i32("tokenizer.ggml.token_type", types);
  w.set_array_str("tokenizer.ggml.merges", {"a b"});
  w.set_u32("tokenizer.ggml.bos_token_id", 2);
  w.set_u32("tokenizer.ggml.eos_token_id", 3);
  return w.to_bytes();
}

tools::SyntheticShape tiny_shape(const std::string& arch) {
  tools::SyntheticShape s = tools::synthetic_shape_for(arch);
  s.name = "fuzz-seed-" + arch;
  s.n_embd = 32;
  s.n_layer = 2;
  s.n_head = 2;
  s.n_head_kv = 1;
  s.head_dim = 16;
  s.n_ff = 32;
  s.n_vocab = 32;
  s.n_ctx = 64;
  s.rope_original_ctx = 16;
  if (s.n_expert > 0) {
    s.n_layer = 1;
    s.n_expert = 4;
    s.n_expert_used = 2;
    s.n_ff_expert = 32;
  }
  if (s.sliding_window > 0) {
    s.sliding_window = 8;
    s.sliding_window_pattern = 2;
  }
  return s;
}

// Renames an architecture: general.architecture and a copy of every "<from>." key under "<to>.".
testing::GgufEdit rename_arch(const gguf::File& f, const std::string& from, const std::string& to) {
  testing::GgufEdit e;
  e.metadata = [&f, from, to](gguf::GgufWriter& w) {
    w.set_string("general.architecture", to);
    for (const auto& [key, v] : f.metadata()) {
      if (key.rfind(from + ".", 0) != 0) continue;
      const std::string renamed = to + key.substr(from.size());
      using gguf::ValueType;
      switch (v.type) {
        case ValueType::UINT32: w.set_u32(renamed, static_cast<uint32_t>(v.u)); break;
        case ValueType::FLOAT32: w.set_f32(renamed, static_cast<float>(v.f)); break;
        case ValueType::STRING: w.set_string(renamed, v.str); break;
        case ValueType::BOOL: w.set_bool(renamed, v.b); break;
        default: break;  // the synthetic files hold no other architecture keys
      }
    }
  };
  return e;
}

}  // namespace

int main(int argc, char** argv) {
  std::string out_dir;
  CLI::App app{"Write the tiny GGUF seed corpus of the model loader's fuzz target"};
  app.add_option("-o,--output", out_dir, "directory to write the seeds into (created)")->required();
  CLI11_PARSE(app, argc, argv);
  std::error_code ec;
  fs::create_directories(out_dir, ec);
  const std::vector<uint8_t> vocab_bytes = tiny_vocab();
  auto vocab = gguf::File::from_bytes(vocab_bytes.data(), vocab_bytes.size());
  if (!vocab.ok()) {
    std::fprintf(stderr, "error: %s\n", vocab.error().c_str());
    return 1;
  }
  auto fail = [](const std::string& what, const Status& s) {
    std::fprintf(stderr, "error: %s: %s\n", what.c_str(), s.message().c_str());
    return 1;
  };
  const fs::path dir(out_dir);
  for (const std::string& arch : tools::synthetic_architectures()) {
    tools::SyntheticOptions o;
    o.shape = tiny_shape(arch);
    o.mix = tools::WeightMix::Q4_0;
    gguf::GgufWriter w;
    if (Status s = tools::build_synthetic_model(o, **vocab, w); !s.ok()) return fail(arch, s);
    if (Status s = w.write_file((dir / (arch + ".gguf")).string()); !s.ok()) return fail(arch, s);
  }
  struct Variant {
    std::string name, base;
    std::function<testing::GgufEdit(const gguf::File&)> edit;
  };
  auto set = [](std::function<void(gguf::GgufWriter&)> f) {
    return [f](const gguf::File&) {
      testing::GgufEdit e;
      e.metadata = f;
      return e;
    };
  };
  const std::vector<Variant> variants = {
      {"gemma2", "gemma3", [](const gguf::File& f) { return rename_arch(f, "gemma3", "gemma2"); }},
      {"smollm3", "llama", [](const gguf::File& f) { return rename_arch(f, "llama", "smollm3"); }},
      {"llama-moe", "qwen3moe", [](const gguf::File& f) { return rename_arch(f, "qwen3moe", "llama"); }},
      {"qwen3-yarn", "qwen3", set([](gguf::GgufWriter& w) {
         w.set_string("qwen3.rope.scaling.type", "yarn");
         w.set_f32("qwen3.rope.scaling.factor", 4.0f);
         w.set_u32("qwen3.rope.scaling.original_context_length", 16);
       })},
      {"bad-window-larger-than-context", "gemma3",
       set([](gguf::GgufWriter& w) { w.set_u32("gemma3.attention.sliding_window", 1u << 20); })},
      {"bad-unknown-rope-scaling", "qwen3",
       set([](gguf::GgufWriter& w) { w.set_string("qwen3.rope.scaling.type", "wobble"); })},
      {"bad-expert-count", "qwen3moe", set([](gguf::GgufWriter& w) { w.set_u32("qwen3moe.expert_count", 3); })},
      {"bad-missing-tensor", "llama",
       [](const gguf::File&) {
         testing::GgufEdit e;
         e.keep = [](const gguf::TensorInfo& t) { return t.name != "blk.1.ffn_down.weight"; };
         return e;
       }},
      {"bad-misshapen-tensor", "gemma3",
       [](const gguf::File&) {
         testing::GgufEdit e;
         e.tensor = [](const gguf::TensorInfo& t, std::vector<int64_t>& dims, uint64_t& n_bytes) {
           if (t.name != "blk.0.attn_k_norm.weight") return;
           dims = {8};
           n_bytes = 8 * sizeof(float);
         };
         return e;
       }},
  };
  for (const Variant& v : variants) {
    const std::string base = (dir / (v.base + ".gguf")).string();
    auto file = gguf::File::open(base);
    if (!file.ok()) return fail(v.name, file.status());
    if (Status s = testing::copy_gguf(base, (dir / (v.name + ".gguf")).string(), v.edit(**file)); !s.ok()) {
      return fail(v.name, s);
    }
  }
  std::printf("wrote %zu seeds to %s\n", tools::synthetic_architectures().size() + variants.size(), out_dir.c_str());
  return 0;
}
