// make_fuzz_seeds: writes the seed corpus of fuzz/model_fuzz.cpp — tiny GGUF models (a few KiB: Q4_0 weights
// at width 32, a 32-token vocabulary) of every architecture tools/synthetic_model.h builds, the ones that share
// their tensor layout under another name (gemma2, smollm3, Mixtral-style llama MoE, YaRN qwen3), phi3 and
// phi3 with LongRoPE (tools/arch_model.h's fused layout, made from a tiny F16 llama), and the bad
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
#include "arch_model.h"
#include "kvtier/kernels.h"
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

// The tiny llama of `shape` with F16 layer matrices (tools/arch_model.h's source format): built in Q4_0, then
// those dequantized.
Status write_f16_llama(const tools::SyntheticShape& shape, const gguf::File& vocab, const std::string& path) {
  tools::SyntheticOptions o;
  o.shape = shape;
  o.mix = tools::WeightMix::Q4_0;
  gguf::GgufWriter q;
  if (Status s = tools::build_synthetic_model(o, vocab, q); !s.ok()) return s;
  const std::vector<uint8_t> bytes = q.to_bytes();
  auto file = gguf::File::from_bytes(bytes.data(), bytes.size());
  if (!file.ok()) return file.status();
  gguf::GgufWriter w;
  tools::arch_detail::copy_metadata(**file, "llama", w);
  for (const gguf::TensorInfo& t : (*file)->tensors()) {
    std::vector<int64_t> dims(t.ne, t.ne + t.n_dims);
    Status s;
    if (t.type == GgmlType::F32) {
      s = w.add_tensor(t.name, t.type, dims, std::span<const uint8_t>(t.data, t.n_bytes));
    } else if (t.n_dims == 1 || t.name.rfind("blk.", 0) != 0) {  // only the layers' matrices must be F16
      s = w.add_tensor(t.name, t.type, dims, std::span<const uint8_t>(t.data, t.n_bytes));
    } else {
      std::vector<float> values(static_cast<size_t>(t.n_elements()));  // [n_elements]
      kernels::dequantize_row_reference(t.type, t.data, values.data(), t.n_elements());
      s = tools::arch_detail::add_f16(w, t.name, dims, values);
    }
    if (!s.ok()) return s;
  }
  return w.write_file(path);
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
  // phi3: made by tools/arch_model.h from a tiny F16 llama without GQA.
  tools::SyntheticShape source_shape = tiny_shape("llama");
  source_shape.n_head_kv = source_shape.n_head;
  source_shape.n_layer = 1;  // F16 layers are large: one keeps the seed near the fuzzer's max_len
  const std::string f16_source = (dir / "phi3-source.tmp").string();
  if (Status s = write_f16_llama(source_shape, **vocab, f16_source); !s.ok()) return fail("phi3 source", s);
  for (const char* variant : {"phi3", "phi3-longrope"}) {
    if (Status s = tools::make_arch_model(f16_source, variant, (dir / (std::string(variant) + ".gguf")).string());
        !s.ok()) {
      fs::remove(f16_source);
      return fail(variant, s);
    }
  }
  fs::remove(f16_source);
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
  std::printf("wrote %zu seeds to %s\n", tools::synthetic_architectures().size() + 2 + variants.size(), out_dir.c_str());
  return 0;
}
