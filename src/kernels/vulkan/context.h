// A small Vulkan compute layer: one device and its compute queue, buffers, pipelines built from the embedded
// SPIR-V, and command batches submitted with a fence and a deadline.
//
// Every failure the outside world can cause (no loader, no driver, no device at the index asked for, out of
// device memory, a lost device, GPU work that does not finish by its deadline) comes back as a Status with a
// message that names it; nothing here aborts or waits without a limit. After a lost device or a missed
// deadline the context is unusable and says so on every later call (Vulkan gives no way to cancel work).
//
// Validation: with ContextOptions::validation (or KVTIER_VK_VALIDATE=1 in the environment) the Khronos
// validation layer (with synchronization validation) is enabled and every warning or error it reports is
// kept; tests fail when take_validation_messages() is not empty.
#pragma once

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "kernels/vulkan/vulkan_api.h"
#include "kvtier/status.h"

namespace kvtier::vulkan {

struct ContextOptions {
  int device_index = -1;  // -1: $KVTIER_VK_DEVICE if set, else the first discrete GPU, else device 0
  bool validation = false;  // also enabled by KVTIER_VK_VALIDATE=1
  uint32_t timeout_ms = 20000;  // deadline of one submitted batch (a hung or lost GPU -> error, not a hang)
};

struct DeviceInfo {
  std::string name;
  uint32_t index = 0;  // among the instance's physical devices
  bool is_cpu = false;  // a software implementation such as lavapipe
  uint32_t vendor_id = 0;
  uint32_t api_version = 0;
  uint32_t subgroup_size = 0;
  uint64_t device_local_bytes = 0;  // the largest device-local heap
  uint64_t max_allocation_bytes = 0;
  uint64_t max_storage_buffer_range = 0;
  uint64_t min_storage_offset_alignment = 0;
  uint32_t max_workgroup_invocations = 0;
  uint32_t max_workgroup_count_x = 0;
  double timestamp_period_ns = 0;  // 0: the queue cannot time
  bool integer_dot_product = false;  // VK_KHR_shader_integer_dot_product present (not used yet)
  bool float64 = false;  // shaderFloat64 (enabled when present): the KV codec's fit solves in f64, as the CPU's
};

// Human-readable list of the devices the loader sees ("0: NVIDIA H100 ...", one a line), or the error.
Result<std::string> list_devices();

enum class MemoryKind {
  DeviceLocal,  // the GPU's own memory: weights, KV pages, activations
  HostVisible,  // mapped host-coherent memory: staging for uploads and read-backs
};

class Context;

// A storage buffer and its memory (one allocation each; a pool can come later). Move-only.
class Buffer {
 public:
  Buffer() = default;
  Buffer(Buffer&& other) noexcept;
  Buffer& operator=(Buffer&& other) noexcept;
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  ~Buffer();

  VkBuffer handle() const { return buffer_; }
  size_t size() const { return size_; }
  MemoryKind kind() const { return kind_; }
  void* mapped() const { return mapped_; }  // non-null for HostVisible

 private:
  friend class Context;
  void release();
  Context* context_ = nullptr;
  VkBuffer buffer_ = VK_NULL_HANDLE;
  VkDeviceMemory memory_ = VK_NULL_HANDLE;
  void* mapped_ = nullptr;
  size_t size_ = 0;
  MemoryKind kind_ = MemoryKind::DeviceLocal;
};

// A compute pipeline over storage buffers at bindings 0..n_buffers-1 of set 0 (push descriptors), with
// push constants and specialization constants (constant_id i takes spec_constants[i]).
struct PipelineDesc {
  std::string_view shader;  // name of an embedded SPIR-V module (shaders/<name>.comp)
  uint32_t n_buffers = 0;
  uint32_t push_constant_bytes = 0;
  std::vector<uint32_t> spec_constants;
};

class Pipeline {
 public:
  Pipeline() = default;
  Pipeline(Pipeline&& other) noexcept;
  Pipeline& operator=(Pipeline&& other) noexcept;
  Pipeline(const Pipeline&) = delete;
  Pipeline& operator=(const Pipeline&) = delete;
  ~Pipeline();

  bool valid() const { return pipeline_ != VK_NULL_HANDLE; }
  uint32_t n_buffers() const { return n_buffers_; }
  uint32_t push_constant_bytes() const { return push_bytes_; }

 private:
  friend class Context;
  friend class CommandBatch;
  void release();
  Context* context_ = nullptr;
  VkDescriptorSetLayout set_layout_ = VK_NULL_HANDLE;
  VkPipelineLayout layout_ = VK_NULL_HANDLE;
  VkPipeline pipeline_ = VK_NULL_HANDLE;
  uint32_t n_buffers_ = 0;
  uint32_t push_bytes_ = 0;
};

// A byte range of a buffer bound to one binding.
struct BufferRange {
  const Buffer* buffer = nullptr;
  size_t offset = 0;
  size_t bytes = 0;  // 0: to the end of the buffer
  BufferRange(const Buffer& b, size_t off = 0, size_t n = 0) : buffer(&b), offset(off), bytes(n) {}  // NOLINT
};

// Commands recorded into one command buffer, then run by Context::submit. Recording errors (a wrong number
// of buffers or push-constant bytes) are kept and returned by submit, so callers check once.
class CommandBatch {
 public:
  CommandBatch(CommandBatch&& other) noexcept;
  CommandBatch& operator=(CommandBatch&&) = delete;
  CommandBatch(const CommandBatch&) = delete;
  CommandBatch& operator=(const CommandBatch&) = delete;
  ~CommandBatch();

  void dispatch(const Pipeline& pipeline, std::initializer_list<BufferRange> buffers, const void* push,
                size_t push_bytes, uint32_t groups_x, uint32_t groups_y = 1, uint32_t groups_z = 1);
  template <class Push>
  void dispatch(const Pipeline& pipeline, std::initializer_list<BufferRange> buffers, const Push& push,
                uint32_t groups_x, uint32_t groups_y = 1, uint32_t groups_z = 1) {
    dispatch(pipeline, buffers, &push, sizeof(Push), groups_x, groups_y, groups_z);
  }
  // Makes every earlier shader write and transfer visible to every later shader read/write and transfer.
  void barrier();
  void copy(const Buffer& src, size_t src_offset, const Buffer& dst, size_t dst_offset, size_t bytes);
  // Fills `bytes` (a multiple of 4) from `offset` with the 32-bit pattern `value`.
  void fill(const Buffer& dst, size_t offset, size_t bytes, uint32_t value);
  // Writes a GPU timestamp after all earlier commands; returns its slot (see Context::timestamps_ns).
  uint32_t timestamp();

  const Status& error() const { return error_; }
  // Commands recorded so far (dispatches skipped as empty are not counted): how the per-token overhead of a
  // decode step is measured (kvtier bench -v, tests/vulkan/model_test.cpp).
  uint32_t dispatches() const { return n_dispatches_; }
  uint32_t barriers() const { return n_barriers_; }

 private:
  friend class Context;
  CommandBatch(Context* context, VkCommandBuffer cmd, VkQueryPool queries, uint32_t max_timestamps);
  void fail(std::string message);
  Context* context_ = nullptr;
  VkCommandBuffer cmd_ = VK_NULL_HANDLE;
  VkQueryPool queries_ = VK_NULL_HANDLE;
  uint32_t max_timestamps_ = 0;
  uint32_t n_timestamps_ = 0;
  uint32_t n_dispatches_ = 0;
  uint32_t n_barriers_ = 0;
  bool submitted_ = false;
  Status error_;
};

class Context {
 public:
  static Result<std::unique_ptr<Context>> create(const ContextOptions& options = {});
  ~Context();
  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;

  const DeviceInfo& info() const { return info_; }
  const VulkanApi& api() const { return api_; }
  VkDevice device() const { return device_; }

  // Errors: sizes over the device's limits, out of device (or host) memory: "out of device memory ...".
  Result<Buffer> create_buffer(size_t bytes, MemoryKind kind);
  Result<Pipeline> create_pipeline(const PipelineDesc& desc);

  // A batch with room for max_timestamps timestamps.
  Result<CommandBatch> begin(uint32_t max_timestamps = 0);
  // Ends, submits and waits for the batch (up to options.timeout_ms). A batch runs once.
  Status submit(CommandBatch& batch);
  // After submit: the timestamps' times in ns, relative to the first.
  Result<std::vector<double>> timestamps_ns(const CommandBatch& batch);

  // Copies through a staging buffer (or directly when dst/src is HostVisible) and waits.
  Status upload(const Buffer& dst, size_t offset, const void* src, size_t bytes);
  Status download(const Buffer& src, size_t offset, void* dst, size_t bytes);

  // Validation-layer messages since the last call (empty without validation).
  std::vector<std::string> take_validation_messages();
  bool validation_enabled() const { return messenger_ != VK_NULL_HANDLE; }
  // Non-OK once the device was lost or a batch missed its deadline.
  const Status& health() const { return health_; }

 private:
  friend class Buffer;
  friend class Pipeline;
  friend class CommandBatch;
  Context() = default;
  Status init(const ContextOptions& options);
  Status pick_device(int index);
  Status create_device();
  int memory_type(uint32_t type_bits, MemoryKind kind) const;
  void add_validation_message(std::string message);
  static VKAPI_ATTR VkBool32 VKAPI_CALL on_debug_message(VkDebugUtilsMessageSeverityFlagBitsEXT severity,
                                                         VkDebugUtilsMessageTypeFlagsEXT types,
                                                         const VkDebugUtilsMessengerCallbackDataEXT* data,
                                                         void* user);

  VulkanApi api_;
  VkInstance instance_ = VK_NULL_HANDLE;
  VkDebugUtilsMessengerEXT messenger_ = VK_NULL_HANDLE;
  VkPhysicalDevice physical_ = VK_NULL_HANDLE;
  VkPhysicalDeviceMemoryProperties memory_props_{};
  VkDevice device_ = VK_NULL_HANDLE;
  VkQueue queue_ = VK_NULL_HANDLE;
  uint32_t queue_family_ = 0;
  VkCommandPool pool_ = VK_NULL_HANDLE;
  VkFence fence_ = VK_NULL_HANDLE;
  uint32_t timeout_ms_ = 20000;
  DeviceInfo info_;
  Status health_;
  std::mutex messages_mutex_;  // the validation layer may call back from driver threads
  std::vector<std::string> messages_;
};

}  // namespace kvtier::vulkan
