#include "app/loading.h"

#include <cstdio>

#include "kvtier/file_io.h"
#include "kvtier/resources.h"

#include "app/progress.h"

namespace kvtier::app {

Result<LoadedModel> load_model_and_tokenizer(const std::string& path, const ModelLoadOptions& options) {
  LoadedModel loaded;
  {
    ProgressBar bar((options.residency == WeightResidency::kLocked ? "locking " : "reading ") + path);
    auto model = Model::load(path, options, [&](uint64_t done, uint64_t total) { bar.update(done, total); });
    if (!model.ok()) return Status::error(model.error());
    loaded.model = std::move(*model);
  }
  for (const std::string& w : loaded.model->load_warnings()) {
    std::fprintf(stderr, "warning: %s: %s; the weights stay memory-mapped\n", path.c_str(), w.c_str());
  }
  auto tokenizer = Tokenizer::from_gguf(loaded.model->file());
  if (!tokenizer.ok()) return Status::error(path + ": " + tokenizer.error());
  loaded.tokenizer = std::move(*tokenizer);
  // llama.cpp requires token_embd's rows to be the vocabulary: a larger matrix would let the sampler pick ids
  // that have no text, a smaller one would make ids of the tokenizer (BOS …) index past the embeddings.
  const int32_t n_tokens = loaded.tokenizer->n_vocab();
  if (n_tokens != loaded.model->config().n_vocab) {
    return Status::error(path + ": the tokenizer has " + std::to_string(n_tokens) +
                         " tokens (tokenizer.ggml.tokens) but token_embd.weight has " +
                         std::to_string(loaded.model->config().n_vocab) + " rows; they must be equal");
  }
  for (const std::string& w : loaded.tokenizer->load_warnings()) {
    std::fprintf(stderr, "warning: %s: %s\n", path.c_str(), w.c_str());
  }
  loaded.model->file().release_metadata_pages();  // model and tokenizer hold what they need from it now
  return loaded;
}

Result<ChatFormatter> load_chat_formatter(const gguf::File* model_file, const Tokenizer* tokenizer,
                                          const std::string& chat_template, bool builtin_names) {
  if (chat_template.empty()) {
    if (!model_file || !tokenizer) return Status::error("no chat template: give a model or a template");
    return ChatFormatter::from_model(*model_file, *tokenizer);
  }
  if (builtin_names) {
    if (auto builtin = builtin_chat_template(chat_template); builtin.ok()) {
      return ChatFormatter::from_source(*builtin, chat_template + " (built-in)", tokenizer);
    }
  }
  auto source = read_bounded_file(chat_template, 1u << 20, "chat template file");
  if (!source.ok()) {
    return Status::error(source.error() + (builtin_names ? " (--chat-template takes a built-in name or a file)" : ""));
  }
  return ChatFormatter::from_source(*source, chat_template, tokenizer);
}

Result<std::unique_ptr<DeviceModel>> open_device(const Model& model, const DeviceOptions& device,
                                                 const KvCacheOptions& kv) {
  if (device.kind == DeviceKind::kCpu) return std::unique_ptr<DeviceModel>();
  const std::string flag = "--device " + device_name(device);
  if (kv.budget_bytes > 0 || !kv.spill_dir.empty()) {
    return Status::error(flag + ": --kv-budget and --kv-spill (the cold tier) do not run on the GPU yet");
  }
  ProgressBar bar("uploading weights to the GPU");
  auto opened = open_device_model(model, device, [&](uint64_t done, uint64_t total) { bar.update(done, total); });
  bar.finish();
  if (!opened.ok()) return opened.status();
  // A KV ladder the device does not run (3-bit codes, rotated keys) fails here, once, before any work.
  if (auto probe = (*opened)->make_cache(1, kv); !probe.ok()) return probe.status();
  std::fprintf(stderr, "%s\n", (*opened)->describe().c_str());
  return opened;
}

Result<std::unique_ptr<KvCache>> make_run_cache(DeviceModel* device_model, const ModelConfig& config, int n_ctx,
                                                const KvCacheOptions& kv, ThreadPool* pool) {
  if (device_model) return device_model->make_cache(n_ctx, kv);
  return make_kv_cache(config, n_ctx, kv, pool);
}

Status check_run_memory(const ModelConfig& config, const KvCacheOptions& kv, const RunMemoryRequest& request) {
  auto items = plan_run_memory(config, kv, request);
  if (!items.ok()) return items.status();
  if (Status s = check_memory(*items, available_memory()); !s.ok()) {
    return Status::error("this run " + s.message() +
                         "; lower -c, or use a smaller --kv ladder, or --kv-budget with --kv-spill");
  }
  return Status();
}

}  // namespace kvtier::app
