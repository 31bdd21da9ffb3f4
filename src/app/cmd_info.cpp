// kvtier info: a summary of a GGUF file's metadata and tensors.
#include <cstdio>
#include <map>
#include <string>

#include "app/commands.h"
#include "kvtier/gguf.h"
#include "kvtier/model.h"

namespace kvtier::app {

namespace {
std::string value_summary(const gguf::Value& v) {
  using gguf::ValueType;
  switch (v.type) {
    case ValueType::UINT8: case ValueType::UINT16: case ValueType::UINT32: case ValueType::UINT64:
      return std::to_string(v.u);
    case ValueType::INT8: case ValueType::INT16: case ValueType::INT32: case ValueType::INT64:
      return std::to_string(v.i);
    case ValueType::FLOAT32: case ValueType::FLOAT64: {
      char buf[64];
      std::snprintf(buf, sizeof buf, "%g", v.f);
      return buf;
    }
    case ValueType::BOOL:
      return v.b ? "true" : "false";
    case ValueType::STRING: {
      std::string s(v.str.substr(0, 80));
      for (char& ch : s) {
        if (ch == '\n' || ch == '\r' || ch == '\t') ch = ' ';
      }
      return "\"" + s + (v.str.size() > 80 ? "...\"" : "\"");
    }
    case ValueType::ARRAY: {
      std::string s = std::string("array of ") + std::to_string(v.array_count) + " " +
                      gguf::value_type_name(v.array_type);
      if (!v.array_strings.empty()) {
        s += ": [";
        for (size_t i = 0; i < std::min<size_t>(3, v.array_strings.size()); ++i) {
          s += (i ? ", \"" : "\"") + std::string(v.array_strings[i].substr(0, 20)) + "\"";
        }
        s += v.array_strings.size() > 3 ? ", ...]" : "]";
      }
      return s;
    }
  }
  return "?";
}

int run(const std::string& path, bool all_tensors) {
  auto file = gguf::File::open(path);
  if (!file.ok()) return fail(file.error());
  const gguf::File& f = **file;
  std::printf("file: %s\nGGUF version %u, %zu metadata keys, %zu tensors, alignment %llu, data at offset %llu\n",
              path.c_str(), f.version(), f.metadata().size(), f.tensors().size(),
              static_cast<unsigned long long>(f.alignment()), static_cast<unsigned long long>(f.data_offset()));
  std::printf("\nmetadata:\n");
  for (const auto& [key, value] : f.metadata()) std::printf("  %-44s %s\n", key.c_str(), value_summary(value).c_str());

  std::map<std::string, std::pair<int, uint64_t>> by_type;  // type -> (count, bytes)
  uint64_t total_bytes = 0, total_params = 0;
  for (const auto& t : f.tensors()) {
    auto& entry = by_type[ggml_type_name(t.type)];
    ++entry.first;
    entry.second += t.n_bytes;
    total_bytes += t.n_bytes;
    total_params += static_cast<uint64_t>(t.n_elements());
  }
  std::printf("\ntensors: %zu, %.2f M parameters, %.2f MiB (%.2f bits per weight)\n", f.tensors().size(),
              total_params / 1e6, total_bytes / 1048576.0, total_params ? 8.0 * total_bytes / total_params : 0.0);
  for (const auto& [type, entry] : by_type) {
    std::printf("  %-8s %5d tensors %10.2f MiB\n", type.c_str(), entry.first, entry.second / 1048576.0);
  }
  const size_t shown = all_tensors ? f.tensors().size() : std::min<size_t>(f.tensors().size(), 12);
  for (size_t i = 0; i < shown; ++i) {
    const auto& t = f.tensors()[i];
    std::string shape;
    for (int d = 0; d < t.n_dims; ++d) shape += (d ? " x " : "") + std::to_string(t.ne[d]);
    std::printf("  %-32s %-6s %s\n", t.name.c_str(), ggml_type_name(t.type), shape.c_str());
  }
  if (shown < f.tensors().size()) std::printf("  ... (%zu more; --all shows every tensor)\n", f.tensors().size() - shown);

  if (f.find("general.architecture")) {
    auto config = ModelConfig::from_gguf(f);
    if (config.ok()) {
      const ModelConfig& c = *config;
      std::printf("\nmodel: %s, vocab %d, embd %d, %d layers, %d heads / %d KV heads, head_dim %d, ffn %d, "
                  "trained ctx %d, rope base %g%s%s\n",
                  c.architecture.c_str(), c.n_vocab, c.n_embd, c.n_layers, c.n_heads, c.n_kv_heads, c.head_dim,
                  c.n_ff, c.n_ctx_train, c.rope_freq_base, c.tied_embeddings ? ", tied embeddings" : "",
                  c.has_rope_freq_factors ? ", rope freq factors" : "");
      const double kv_per_token = 2.0 * c.n_layers * c.n_kv_heads * c.head_dim * 2;
      std::printf("f16 KV cache: %.1f KiB per token, %.1f MiB at the trained context\n", kv_per_token / 1024,
                  kv_per_token * c.n_ctx_train / 1048576.0);
    } else {
      std::printf("\nmodel: not runnable by kvtier: %s\n", config.error().c_str());
    }
  }
  return 0;
}
}  // namespace

Command add_info_command(CLI::App& app) {
  auto path = std::make_shared<std::string>();
  auto all = std::make_shared<bool>(false);
  app.add_option("-m,--model", *path, "GGUF file")->required()->check(CLI::ExistingFile);
  app.add_flag("--all", *all, "list every tensor");
  return [path, all] { return run(*path, *all); };
}

}  // namespace kvtier::app
