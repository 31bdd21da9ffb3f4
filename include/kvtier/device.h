// Where the forward pass runs: the CPU (the default) or a GPU through the Vulkan compute backend
// (docs/ARCHITECTURE.md, "GPU backend (Vulkan)").
//
// The seam is the KV cache: a DeviceModel holds a model's weights in the GPU's memory and makes KV caches in
// that memory; Model::forward over such a cache runs the whole pass on the GPU (KvCache::device_forward), and
// over any other cache runs the CPU code, untouched. Sessions, generation and perplexity need no change.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "kvtier/kv_cache.h"
#include "kvtier/kv_options.h"
#include "kvtier/model.h"
#include "kvtier/status.h"

namespace kvtier {

enum class DeviceKind { kCpu, kVulkan };

struct DeviceOptions {
  DeviceKind kind = DeviceKind::kCpu;
  int index = -1;           // Vulkan: the physical device; -1: $KVTIER_VK_DEVICE, else the first discrete GPU
  bool validation = false;  // Vulkan: the Khronos validation layer on (tests); also KVTIER_VK_VALIDATE=1
  // Vulkan: prompt tokens per command batch (the prefill's chunk; activations for this many rows live in device
  // memory); 1 runs a prompt token by token through the decode step. 1..kMaxDeviceChunk.
  int prefill_chunk = 256;
};
constexpr int kMaxDeviceChunk = 512;

// "cpu", "vulkan" or "vulkan:N" (N: the device index the Vulkan loader lists). Errors quote the text.
Result<DeviceOptions> parse_device(const std::string& text);
std::string device_name(const DeviceOptions& options);  // "cpu", "vulkan", "vulkan:1"

// Whether this build has the Vulkan backend (CMake's KVTIER_VULKAN).
bool vulkan_backend_built();

// The commands one decode step recorded: the per-token overhead of the device's command stream (kvtier bench -v).
struct DeviceStepCounts {
  int dispatches = 0;  // compute dispatches (the ladder's page moves and attention's per-format dispatches too)
  int barriers = 0;    // pipeline barriers
};

// A model's weights in a GPU's memory and the KV caches that run the forward pass there.
class DeviceModel {
 public:
  virtual ~DeviceModel() = default;
  // An empty cache of max_tokens positions in device memory, pages in the format of kv/page_format.h: f16, or
  // kv.ladder's rungs (e.g. "f16:128,q4:2048,q2"), pages re-encoded on the GPU as they age, as the CPU store
  // does (docs/ARCHITECTURE.md, "GPU backend (Vulkan)"). Errors name what the device does not run yet (3-bit
  // codes, rotated keys, the cold tier). Model::forward over it runs on the device; the model must outlive it,
  // and this object too.
  virtual Result<std::unique_ptr<KvCache>> make_cache(int max_tokens, const KvCacheOptions& kv = KvCacheOptions{}) = 0;
  virtual std::string describe() const = 0;  // the device and what it holds, one line
  // Validation-layer messages since the last call (empty without validation).
  virtual std::vector<std::string> take_validation_messages() = 0;
  // What the last single-token step recorded; zeros before the first.
  virtual DeviceStepCounts last_step_counts() const = 0;
};

// Copies the model's weights to the device (progress: bytes uploaded). Errors: a build without the backend, no
// Vulkan loader, driver or device (named), an architecture the backend does not run (named), a tensor whose
// type it has no shader for (tensor and type named), out of device memory. Never falls back to the CPU: the
// caller asked for the device. `model` must outlive the result.
Result<std::unique_ptr<DeviceModel>> open_device_model(const Model& model, const DeviceOptions& options,
                                                       const ProgressFn& progress = {});

}  // namespace kvtier
