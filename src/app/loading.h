// Shared steps of the computing subcommands: load a model (with a progress bar) and its tokenizer, the chat
// template, the memory check. Their command-line options are in app/options.h.
#pragma once

#include <memory>
#include <string>

#include "kvtier/chat.h"
#include "kvtier/device.h"
#include "kvtier/kv_options.h"
#include "kvtier/memory_plan.h"
#include "kvtier/model.h"
#include "kvtier/sampling.h"
#include "kvtier/status.h"
#include "kvtier/tokenizer.h"

namespace kvtier::app {

struct LoadedModel {
  std::unique_ptr<Model> model;
  std::unique_ptr<Tokenizer> tokenizer;
};

// Loads the model (a progress bar while weights are read or locked: --no-mmap, --mlock) and its tokenizer;
// load warnings go to stderr.
Result<LoadedModel> load_model_and_tokenizer(const std::string& path, const ModelLoadOptions& options = {});

// The chat template of `--chat-template VALUE` (chat, serve, template): empty = the model's own (else ChatML), a
// built-in name (unless builtin_names is false: `template --chat-template-file`), or a Jinja file. model_file and
// tokenizer may be null (`kvtier template` without -m): the template then renders without special tokens.
Result<ChatFormatter> load_chat_formatter(const gguf::File* model_file, const Tokenizer* tokenizer,
                                          const std::string& chat_template, bool builtin_names = true);

// With --device vulkan: the model's weights uploaded to the GPU (a progress bar on stderr), after checking that
// the KV options are ones the GPU runs (only the default f16 paged cache yet). Null with --device cpu.
Result<std::unique_ptr<DeviceModel>> open_device(const Model& model, const DeviceOptions& device,
                                                 const KvCacheOptions& kv);

// The KV cache of a run: in the device's memory with a device model, else make_kv_cache's.
Result<std::unique_ptr<KvCache>> make_run_cache(DeviceModel* device_model, const ModelConfig& config, int n_ctx,
                                                const KvCacheOptions& kv, ThreadPool* pool);

// Checks what a run will allocate (kvtier/memory_plan.h) against the memory this process can have now.
Status check_run_memory(const ModelConfig& config, const KvCacheOptions& kv, const RunMemoryRequest& request);

}  // namespace kvtier::app
