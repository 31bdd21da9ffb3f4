#include "kernels/vulkan/context.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <utility>

#include <fmt/format.h>

#include "kernels/vulkan/embedded_shaders.h"

namespace kvtier::vulkan {
namespace {

constexpr const char* kValidationLayer = "VK_LAYER_KHRONOS_validation";

Status vk_error(std::string_view what, VkResult r) {
  return Status::error(fmt::format("Vulkan: {} failed ({})", what, vk_result_name(r)));
}

bool env_flag(const char* name) {
  const char* v = std::getenv(name);
  return v != nullptr && std::strcmp(v, "0") != 0 && v[0] != '\0';
}

bool has_extension(const std::vector<VkExtensionProperties>& list, const char* name) {
  return std::any_of(list.begin(), list.end(), [&](const VkExtensionProperties& e) {
    return std::strcmp(e.extensionName, name) == 0;
  });
}

std::vector<VkExtensionProperties> instance_extensions(const VulkanApi& api, const char* layer) {
  uint32_t n = 0;
  api.vkEnumerateInstanceExtensionProperties(layer, &n, nullptr);
  std::vector<VkExtensionProperties> list(n);
  api.vkEnumerateInstanceExtensionProperties(layer, &n, list.data());
  list.resize(n);
  return list;
}

std::vector<VkExtensionProperties> device_extensions(const VulkanApi& api, VkPhysicalDevice device) {
  uint32_t n = 0;
  api.vkEnumerateDeviceExtensionProperties(device, nullptr, &n, nullptr);
  std::vector<VkExtensionProperties> list(n);
  api.vkEnumerateDeviceExtensionProperties(device, nullptr, &n, list.data());
  list.resize(n);
  return list;
}

std::string mib(uint64_t bytes) { return fmt::format("{:.1f} MiB", static_cast<double>(bytes) / (1 << 20)); }

}  // namespace

// ---------------------------------------------------------------------------------------------------------
// Buffer and Pipeline: RAII over the handles; the context outlives them.

Buffer::Buffer(Buffer&& other) noexcept { *this = std::move(other); }

Buffer& Buffer::operator=(Buffer&& other) noexcept {
  if (this != &other) {
    release();
    context_ = std::exchange(other.context_, nullptr);
    buffer_ = std::exchange(other.buffer_, VK_NULL_HANDLE);
    memory_ = std::exchange(other.memory_, VK_NULL_HANDLE);
    mapped_ = std::exchange(other.mapped_, nullptr);
    size_ = std::exchange(other.size_, 0);
    kind_ = other.kind_;
  }
  return *this;
}

Buffer::~Buffer() { release(); }

void Buffer::release() {
  if (context_ == nullptr) return;
  const VulkanApi& api = context_->api_;
  if (buffer_ != VK_NULL_HANDLE) api.vkDestroyBuffer(context_->device_, buffer_, nullptr);
  if (memory_ != VK_NULL_HANDLE) api.vkFreeMemory(context_->device_, memory_, nullptr);  // unmaps too
  context_ = nullptr;
  buffer_ = VK_NULL_HANDLE;
  memory_ = VK_NULL_HANDLE;
  mapped_ = nullptr;
  size_ = 0;
}

Pipeline::Pipeline(Pipeline&& other) noexcept { *this = std::move(other); }

Pipeline& Pipeline::operator=(Pipeline&& other) noexcept {
  if (this != &other) {
    release();
    context_ = std::exchange(other.context_, nullptr);
    set_layout_ = std::exchange(other.set_layout_, VK_NULL_HANDLE);
    layout_ = std::exchange(other.layout_, VK_NULL_HANDLE);
    pipeline_ = std::exchange(other.pipeline_, VK_NULL_HANDLE);
    n_buffers_ = other.n_buffers_;
    push_bytes_ = other.push_bytes_;
  }
  return *this;
}

Pipeline::~Pipeline() { release(); }

void Pipeline::release() {
  if (context_ == nullptr) return;
  const VulkanApi& api = context_->api_;
  VkDevice dev = context_->device_;
  if (pipeline_ != VK_NULL_HANDLE) api.vkDestroyPipeline(dev, pipeline_, nullptr);
  if (layout_ != VK_NULL_HANDLE) api.vkDestroyPipelineLayout(dev, layout_, nullptr);
  if (set_layout_ != VK_NULL_HANDLE) api.vkDestroyDescriptorSetLayout(dev, set_layout_, nullptr);
  context_ = nullptr;
  pipeline_ = VK_NULL_HANDLE;
  layout_ = VK_NULL_HANDLE;
  set_layout_ = VK_NULL_HANDLE;
}

// ---------------------------------------------------------------------------------------------------------
// CommandBatch

CommandBatch::CommandBatch(Context* context, VkCommandBuffer cmd, VkQueryPool queries, uint32_t max_timestamps)
    : context_(context), cmd_(cmd), queries_(queries), max_timestamps_(max_timestamps) {}

CommandBatch::CommandBatch(CommandBatch&& other) noexcept
    : context_(std::exchange(other.context_, nullptr)),
      cmd_(std::exchange(other.cmd_, VK_NULL_HANDLE)),
      queries_(std::exchange(other.queries_, VK_NULL_HANDLE)),
      max_timestamps_(other.max_timestamps_),
      n_timestamps_(other.n_timestamps_),
      n_dispatches_(other.n_dispatches_),
      n_barriers_(other.n_barriers_),
      submitted_(other.submitted_),
      error_(std::move(other.error_)) {}

CommandBatch::~CommandBatch() {
  if (context_ == nullptr) return;
  // A batch whose work may still run (a missed deadline) must not be freed: the context's destructor waits
  // for the device and then frees the pool with it.
  if (!context_->health_.ok()) return;
  const VulkanApi& api = context_->api_;
  if (queries_ != VK_NULL_HANDLE) api.vkDestroyQueryPool(context_->device_, queries_, nullptr);
  if (cmd_ != VK_NULL_HANDLE) api.vkFreeCommandBuffers(context_->device_, context_->pool_, 1, &cmd_);
}

void CommandBatch::fail(std::string message) {
  if (error_.ok()) error_ = Status::error(std::move(message));
}

void CommandBatch::dispatch(const Pipeline& pipeline, std::initializer_list<BufferRange> buffers, const void* push,
                            size_t push_bytes, uint32_t groups_x, uint32_t groups_y, uint32_t groups_z) {
  if (!error_.ok()) return;
  if (submitted_) return fail("Vulkan: a command batch runs once; begin a new one");
  if (!pipeline.valid()) return fail("Vulkan: dispatch of an empty pipeline");
  if (buffers.size() != pipeline.n_buffers_) {
    return fail(fmt::format("Vulkan: pipeline takes {} buffers, dispatch gave {}", pipeline.n_buffers_,
                            buffers.size()));
  }
  if (push_bytes != pipeline.push_bytes_) {
    return fail(fmt::format("Vulkan: pipeline takes {} push-constant bytes, dispatch gave {}", pipeline.push_bytes_,
                            push_bytes));
  }
  const DeviceInfo& info = context_->info_;
  if (groups_x == 0 || groups_y == 0 || groups_z == 0) return;  // nothing to do
  if (groups_x > info.max_workgroup_count_x) {
    return fail(fmt::format("Vulkan: {} workgroups exceed the device's limit {}", groups_x, info.max_workgroup_count_x));
  }
  VkDescriptorBufferInfo infos[8];
  VkWriteDescriptorSet writes[8];
  if (buffers.size() > 8) return fail("Vulkan: more than 8 buffers in one dispatch");
  uint32_t i = 0;
  for (const BufferRange& r : buffers) {
    const size_t size = r.buffer->size();
    const size_t bytes = r.bytes != 0 ? r.bytes : size - std::min(size, r.offset);
    if (r.buffer->handle() == VK_NULL_HANDLE || r.offset + bytes > size || bytes == 0) {
      return fail(fmt::format("Vulkan: binding {} is outside its buffer ({} + {} of {} bytes)", i, r.offset, bytes,
                              size));
    }
    if (r.offset % info.min_storage_offset_alignment != 0) {
      return fail(fmt::format("Vulkan: binding {} offset {} is not a multiple of {}", i, r.offset,
                              info.min_storage_offset_alignment));
    }
    if (bytes > info.max_storage_buffer_range) {
      return fail(fmt::format("Vulkan: binding {} covers {} bytes, over the device's storage-buffer range {}", i,
                              bytes, info.max_storage_buffer_range));
    }
    infos[i] = VkDescriptorBufferInfo{r.buffer->handle(), r.offset, bytes};
    writes[i] = VkWriteDescriptorSet{VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET};
    writes[i].dstBinding = i;
    writes[i].descriptorCount = 1;
    writes[i].descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER;
    writes[i].pBufferInfo = &infos[i];
    ++i;
  }
  const VulkanApi& api = context_->api_;
  api.vkCmdBindPipeline(cmd_, VK_PIPELINE_BIND_POINT_COMPUTE, pipeline.pipeline_);
  api.vkCmdPushDescriptorSetKHR(cmd_, VK_PIPELINE_BIND_POINT_COMPUTE, pipeline.layout_, 0, i, writes);
  if (push_bytes > 0) {
    api.vkCmdPushConstants(cmd_, pipeline.layout_, VK_SHADER_STAGE_COMPUTE_BIT, 0, static_cast<uint32_t>(push_bytes),
                           push);
  }
  api.vkCmdDispatch(cmd_, groups_x, groups_y, groups_z);
  ++n_dispatches_;
}

void CommandBatch::barrier() {
  if (!error_.ok()) return;
  VkMemoryBarrier b{VK_STRUCTURE_TYPE_MEMORY_BARRIER};
  b.srcAccessMask = VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_TRANSFER_WRITE_BIT;
  b.dstAccessMask = VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_TRANSFER_READ_BIT |
                    VK_ACCESS_TRANSFER_WRITE_BIT;
  const VkPipelineStageFlags stages = VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT;
  context_->api_.vkCmdPipelineBarrier(cmd_, stages, stages, 0, 1, &b, 0, nullptr, 0, nullptr);
  ++n_barriers_;
}

void CommandBatch::copy(const Buffer& src, size_t src_offset, const Buffer& dst, size_t dst_offset, size_t bytes) {
  if (!error_.ok() || bytes == 0) return;
  if (src_offset + bytes > src.size() || dst_offset + bytes > dst.size()) {
    return fail(fmt::format("Vulkan: copy of {} bytes is outside its buffers", bytes));
  }
  const VkBufferCopy region{src_offset, dst_offset, bytes};
  context_->api_.vkCmdCopyBuffer(cmd_, src.handle(), dst.handle(), 1, &region);
}

void CommandBatch::fill(const Buffer& dst, size_t offset, size_t bytes, uint32_t value) {
  if (!error_.ok() || bytes == 0) return;
  if (offset % 4 != 0 || bytes % 4 != 0 || offset + bytes > dst.size()) {
    return fail(fmt::format("Vulkan: fill of {} bytes at {} is unaligned or outside its buffer", bytes, offset));
  }
  context_->api_.vkCmdFillBuffer(cmd_, dst.handle(), offset, bytes, value);
}

uint32_t CommandBatch::timestamp() {
  if (!error_.ok()) return 0;
  if (n_timestamps_ >= max_timestamps_) {
    fail(fmt::format("Vulkan: more than the {} timestamps the batch was begun with", max_timestamps_));
    return 0;
  }
  context_->api_.vkCmdWriteTimestamp(cmd_, VK_PIPELINE_STAGE_BOTTOM_OF_PIPE_BIT, queries_, n_timestamps_);
  return n_timestamps_++;
}

// ---------------------------------------------------------------------------------------------------------
// Context

Result<std::unique_ptr<Context>> Context::create(const ContextOptions& options) {
  std::unique_ptr<Context> context(new Context());
  Status s = context->init(options);
  if (!s.ok()) return s;
  return context;
}

Status Context::init(const ContextOptions& options) {
  timeout_ms_ = options.timeout_ms;
  Status s = load_vulkan_loader(api_);
  if (!s.ok()) return s;
  uint32_t loader_version = VK_API_VERSION_1_0;
  api_.vkEnumerateInstanceVersion(&loader_version);
  if (loader_version < VK_API_VERSION_1_1) {
    return Status::error(fmt::format("the Vulkan loader supports only Vulkan {}.{}; kvtier needs 1.1 or later",
                                     VK_API_VERSION_MAJOR(loader_version), VK_API_VERSION_MINOR(loader_version)));
  }

  const bool validation = options.validation || env_flag("KVTIER_VK_VALIDATE");
  std::vector<const char*> layers, extensions;
  const std::vector<VkExtensionProperties> available = instance_extensions(api_, nullptr);
  VkInstanceCreateFlags flags = 0;
  // MoltenVK (Apple) devices are listed only to instances that enable portability enumeration.
  if (has_extension(available, VK_KHR_PORTABILITY_ENUMERATION_EXTENSION_NAME)) {
    extensions.push_back(VK_KHR_PORTABILITY_ENUMERATION_EXTENSION_NAME);
    flags |= VK_INSTANCE_CREATE_ENUMERATE_PORTABILITY_BIT_KHR;
  }
  VkValidationFeaturesEXT validation_features{VK_STRUCTURE_TYPE_VALIDATION_FEATURES_EXT};
  const VkValidationFeatureEnableEXT enabled_checks[] = {VK_VALIDATION_FEATURE_ENABLE_SYNCHRONIZATION_VALIDATION_EXT};
  const void* instance_next = nullptr;
  if (validation) {
    uint32_t n = 0;
    api_.vkEnumerateInstanceLayerProperties(&n, nullptr);
    std::vector<VkLayerProperties> present(n);
    api_.vkEnumerateInstanceLayerProperties(&n, present.data());
    const bool found = std::any_of(present.begin(), present.begin() + n, [](const VkLayerProperties& l) {
      return std::strcmp(l.layerName, kValidationLayer) == 0;
    });
    if (!found) {
      return Status::error(
          "Vulkan validation was asked for (KVTIER_VK_VALIDATE=1 or a test) but VK_LAYER_KHRONOS_validation is "
          "not installed (Debian: vulkan-validationlayers)");
    }
    layers.push_back(kValidationLayer);
    extensions.push_back(VK_EXT_DEBUG_UTILS_EXTENSION_NAME);
    if (has_extension(instance_extensions(api_, kValidationLayer), VK_EXT_VALIDATION_FEATURES_EXTENSION_NAME)) {
      extensions.push_back(VK_EXT_VALIDATION_FEATURES_EXTENSION_NAME);
      validation_features.enabledValidationFeatureCount = 1;
      validation_features.pEnabledValidationFeatures = enabled_checks;
      instance_next = &validation_features;
    }
  }

  VkApplicationInfo app{VK_STRUCTURE_TYPE_APPLICATION_INFO};
  app.pApplicationName = "kvtier";
  app.pEngineName = "kvtier";
  app.apiVersion = VK_API_VERSION_1_2;
  VkInstanceCreateInfo ici{VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO};
  ici.pNext = instance_next;
  ici.flags = flags;
  ici.pApplicationInfo = &app;
  ici.enabledLayerCount = static_cast<uint32_t>(layers.size());
  ici.ppEnabledLayerNames = layers.data();
  ici.enabledExtensionCount = static_cast<uint32_t>(extensions.size());
  ici.ppEnabledExtensionNames = extensions.data();
  VkResult r = api_.vkCreateInstance(&ici, nullptr, &instance_);
  if (r == VK_ERROR_INCOMPATIBLE_DRIVER) {
    return Status::error("no Vulkan driver: vkCreateInstance found no driver it could use "
                         "(VK_ERROR_INCOMPATIBLE_DRIVER; Debian: mesa-vulkan-drivers, or the GPU vendor's driver)");
  }
  if (r != VK_SUCCESS) return vk_error("vkCreateInstance", r);
  s = load_instance_functions(api_, instance_, validation);
  if (!s.ok()) return s;

  if (validation) {
    VkDebugUtilsMessengerCreateInfoEXT mci{VK_STRUCTURE_TYPE_DEBUG_UTILS_MESSENGER_CREATE_INFO_EXT};
    mci.messageSeverity = VK_DEBUG_UTILS_MESSAGE_SEVERITY_WARNING_BIT_EXT | VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT;
    mci.messageType = VK_DEBUG_UTILS_MESSAGE_TYPE_VALIDATION_BIT_EXT | VK_DEBUG_UTILS_MESSAGE_TYPE_GENERAL_BIT_EXT;
    mci.pfnUserCallback = &Context::on_debug_message;
    mci.pUserData = this;
    r = api_.vkCreateDebugUtilsMessengerEXT(instance_, &mci, nullptr, &messenger_);
    if (r != VK_SUCCESS) return vk_error("vkCreateDebugUtilsMessengerEXT", r);
  }

  int index = options.device_index;
  if (index < 0) {
    if (const char* env = std::getenv("KVTIER_VK_DEVICE"); env != nullptr && env[0] != '\0') index = std::atoi(env);
  }
  s = pick_device(index);
  if (!s.ok()) return s;
  return create_device();
}

Status Context::pick_device(int index) {
  uint32_t n = 0;
  VkResult r = api_.vkEnumeratePhysicalDevices(instance_, &n, nullptr);
  if (r != VK_SUCCESS) return vk_error("vkEnumeratePhysicalDevices", r);
  if (n == 0) return Status::error("no Vulkan device: the driver lists none");
  std::vector<VkPhysicalDevice> devices(n);
  api_.vkEnumeratePhysicalDevices(instance_, &n, devices.data());
  if (index >= static_cast<int>(n)) {
    return Status::error(fmt::format("no Vulkan device {}: there are {} (0..{})", index, n, n - 1));
  }
  if (index < 0) {  // the first discrete GPU, else the first device
    index = 0;
    for (uint32_t i = 0; i < n; ++i) {
      VkPhysicalDeviceProperties p;
      api_.vkGetPhysicalDeviceProperties(devices[i], &p);
      if (p.deviceType == VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU) {
        index = static_cast<int>(i);
        break;
      }
    }
  }
  physical_ = devices[index];
  info_.index = static_cast<uint32_t>(index);

  VkPhysicalDeviceSubgroupProperties subgroup{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_PROPERTIES};
  VkPhysicalDeviceProperties2 props{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2};
  props.pNext = &subgroup;
  api_.vkGetPhysicalDeviceProperties2(physical_, &props);
  const VkPhysicalDeviceLimits& limits = props.properties.limits;
  info_.name = props.properties.deviceName;
  info_.is_cpu = props.properties.deviceType == VK_PHYSICAL_DEVICE_TYPE_CPU;
  info_.vendor_id = props.properties.vendorID;
  info_.api_version = props.properties.apiVersion;
  info_.subgroup_size = subgroup.subgroupSize;
  info_.max_storage_buffer_range = limits.maxStorageBufferRange;
  info_.min_storage_offset_alignment = std::max<uint64_t>(limits.minStorageBufferOffsetAlignment, 4);
  info_.max_workgroup_invocations = limits.maxComputeWorkGroupInvocations;
  info_.max_workgroup_count_x = limits.maxComputeWorkGroupCount[0];

  VkPhysicalDeviceMaintenance3Properties m3{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_MAINTENANCE_3_PROPERTIES};
  VkPhysicalDeviceProperties2 props_m3{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2};
  props_m3.pNext = &m3;
  api_.vkGetPhysicalDeviceProperties2(physical_, &props_m3);
  info_.max_allocation_bytes = m3.maxMemoryAllocationSize;

  api_.vkGetPhysicalDeviceMemoryProperties(physical_, &memory_props_);
  for (uint32_t h = 0; h < memory_props_.memoryHeapCount; ++h) {
    if (memory_props_.memoryHeaps[h].flags & VK_MEMORY_HEAP_DEVICE_LOCAL_BIT) {
      info_.device_local_bytes = std::max<uint64_t>(info_.device_local_bytes, memory_props_.memoryHeaps[h].size);
    }
  }

  // What the shaders need: Vulkan 1.1, 16-bit storage-buffer loads, subgroup arithmetic in compute shaders,
  // push descriptors. Each missing one is named.
  std::string missing;
  auto need = [&](bool ok, const char* what) {
    if (!ok) missing += missing.empty() ? what : fmt::format(", {}", what);
  };
  need(info_.api_version >= VK_API_VERSION_1_1, "Vulkan 1.1");
  VkPhysicalDevice16BitStorageFeatures storage16{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_16BIT_STORAGE_FEATURES};
  VkPhysicalDeviceFeatures2 features{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2};
  features.pNext = &storage16;
  api_.vkGetPhysicalDeviceFeatures2(physical_, &features);
  need(storage16.storageBuffer16BitAccess == VK_TRUE, "storageBuffer16BitAccess");
  info_.float64 = features.features.shaderFloat64 == VK_TRUE;
  need((subgroup.supportedStages & VK_SHADER_STAGE_COMPUTE_BIT) != 0 &&
           (subgroup.supportedOperations & VK_SUBGROUP_FEATURE_ARITHMETIC_BIT) != 0,
       "subgroup arithmetic in compute shaders");
  const std::vector<VkExtensionProperties> exts = device_extensions(api_, physical_);
  need(has_extension(exts, VK_KHR_PUSH_DESCRIPTOR_EXTENSION_NAME), VK_KHR_PUSH_DESCRIPTOR_EXTENSION_NAME);
  info_.integer_dot_product = has_extension(exts, VK_KHR_SHADER_INTEGER_DOT_PRODUCT_EXTENSION_NAME);
  if (!missing.empty()) {
    return Status::error(fmt::format("Vulkan device {} ({}) lacks what kvtier's shaders need: {}", index, info_.name,
                                     missing));
  }

  uint32_t n_families = 0;
  api_.vkGetPhysicalDeviceQueueFamilyProperties(physical_, &n_families, nullptr);
  std::vector<VkQueueFamilyProperties> families(n_families);
  api_.vkGetPhysicalDeviceQueueFamilyProperties(physical_, &n_families, families.data());
  bool found = false;
  for (uint32_t f = 0; f < n_families && !found; ++f) {
    if (families[f].queueFlags & VK_QUEUE_COMPUTE_BIT) {
      queue_family_ = f;
      found = true;
      info_.timestamp_period_ns = families[f].timestampValidBits > 0 ? limits.timestampPeriod : 0.0;
    }
  }
  if (!found) return Status::error(fmt::format("Vulkan device {} ({}) has no compute queue", index, info_.name));
  return Status();
}

Status Context::create_device() {
  const float priority = 1.0f;
  VkDeviceQueueCreateInfo qci{VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO};
  qci.queueFamilyIndex = queue_family_;
  qci.queueCount = 1;
  qci.pQueuePriorities = &priority;
  std::vector<const char*> extensions = {VK_KHR_PUSH_DESCRIPTOR_EXTENSION_NAME};
  // A portability (MoltenVK) device must have its subset extension enabled.
  if (has_extension(device_extensions(api_, physical_), "VK_KHR_portability_subset")) {
    extensions.push_back("VK_KHR_portability_subset");
  }
  VkPhysicalDevice16BitStorageFeatures storage16{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_16BIT_STORAGE_FEATURES};
  storage16.storageBuffer16BitAccess = VK_TRUE;
  VkPhysicalDeviceFeatures2 features{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2};
  features.pNext = &storage16;
  features.features.shaderFloat64 = info_.float64 ? VK_TRUE : VK_FALSE;
  VkDeviceCreateInfo dci{VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO};
  dci.pNext = &features;
  dci.queueCreateInfoCount = 1;
  dci.pQueueCreateInfos = &qci;
  dci.enabledExtensionCount = static_cast<uint32_t>(extensions.size());
  dci.ppEnabledExtensionNames = extensions.data();
  VkResult r = api_.vkCreateDevice(physical_, &dci, nullptr, &device_);
  if (r != VK_SUCCESS) return vk_error(fmt::format("vkCreateDevice on {}", info_.name), r);
  Status s = load_device_functions(api_, device_);
  if (!s.ok()) return s;
  api_.vkGetDeviceQueue(device_, queue_family_, 0, &queue_);

  VkCommandPoolCreateInfo pci{VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO};
  pci.flags = VK_COMMAND_POOL_CREATE_RESET_COMMAND_BUFFER_BIT;
  pci.queueFamilyIndex = queue_family_;
  r = api_.vkCreateCommandPool(device_, &pci, nullptr, &pool_);
  if (r != VK_SUCCESS) return vk_error("vkCreateCommandPool", r);
  VkFenceCreateInfo fci{VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
  r = api_.vkCreateFence(device_, &fci, nullptr, &fence_);
  if (r != VK_SUCCESS) return vk_error("vkCreateFence", r);
  return Status();
}

Context::~Context() {
  if (device_ != VK_NULL_HANDLE) {
    // Waits for work still running after a missed deadline (a lost device returns at once).
    if (api_.vkDeviceWaitIdle) api_.vkDeviceWaitIdle(device_);
    if (fence_ != VK_NULL_HANDLE) api_.vkDestroyFence(device_, fence_, nullptr);
    if (pool_ != VK_NULL_HANDLE) api_.vkDestroyCommandPool(device_, pool_, nullptr);
    api_.vkDestroyDevice(device_, nullptr);
  }
  if (messenger_ != VK_NULL_HANDLE) api_.vkDestroyDebugUtilsMessengerEXT(instance_, messenger_, nullptr);
  if (instance_ != VK_NULL_HANDLE) api_.vkDestroyInstance(instance_, nullptr);
  unload_vulkan_loader(api_);
}

int Context::memory_type(uint32_t type_bits, MemoryKind kind) const {
  const VkMemoryPropertyFlags required = kind == MemoryKind::DeviceLocal
                                             ? VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT
                                             : VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT;
  // Device-local: prefer memory the host cannot see (the GPU's own); staging: prefer cached (fast read-back).
  const VkMemoryPropertyFlags preferred = kind == MemoryKind::DeviceLocal ? 0 : VK_MEMORY_PROPERTY_HOST_CACHED_BIT;
  const VkMemoryPropertyFlags avoided = kind == MemoryKind::DeviceLocal ? VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT : 0;
  int best = -1, best_score = -1;
  for (uint32_t i = 0; i < memory_props_.memoryTypeCount; ++i) {
    const VkMemoryPropertyFlags f = memory_props_.memoryTypes[i].propertyFlags;
    if (!(type_bits & (1u << i)) || (f & required) != required) continue;
    const int score = ((f & preferred) == preferred ? 2 : 0) + ((f & avoided) == 0 ? 1 : 0);
    if (score > best_score) {
      best = static_cast<int>(i);
      best_score = score;
    }
  }
  return best;
}

Result<Buffer> Context::create_buffer(size_t bytes, MemoryKind kind) {
  if (!health_.ok()) return health_;
  const char* kind_name = kind == MemoryKind::DeviceLocal ? "device-local" : "host-visible";
  if (bytes == 0) return Status::error("Vulkan: a buffer of 0 bytes");
  if (bytes > info_.max_allocation_bytes) {
    return Status::error(fmt::format("out of device memory: a {} buffer of {} is over {}'s largest allocation ({})",
                                     kind_name, mib(bytes), info_.name, mib(info_.max_allocation_bytes)));
  }
  Buffer b;
  VkBufferCreateInfo bci{VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO};
  bci.size = bytes;
  bci.usage = VK_BUFFER_USAGE_STORAGE_BUFFER_BIT | VK_BUFFER_USAGE_TRANSFER_SRC_BIT | VK_BUFFER_USAGE_TRANSFER_DST_BIT;
  bci.sharingMode = VK_SHARING_MODE_EXCLUSIVE;
  VkResult r = api_.vkCreateBuffer(device_, &bci, nullptr, &b.buffer_);
  if (r != VK_SUCCESS) return vk_error(fmt::format("vkCreateBuffer of {}", mib(bytes)), r);
  b.context_ = this;
  b.size_ = bytes;
  b.kind_ = kind;
  VkMemoryRequirements req;
  api_.vkGetBufferMemoryRequirements(device_, b.buffer_, &req);
  const int type = memory_type(req.memoryTypeBits, kind);
  if (type < 0) return Status::error(fmt::format("Vulkan: {} has no {} memory for buffers", info_.name, kind_name));
  const uint32_t heap = memory_props_.memoryTypes[type].heapIndex;
  if (req.size > memory_props_.memoryHeaps[heap].size) {
    return Status::error(fmt::format("out of device memory: a {} buffer of {} is larger than its heap ({})", kind_name,
                                     mib(req.size), mib(memory_props_.memoryHeaps[heap].size)));
  }
  VkMemoryAllocateInfo mai{VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO};
  mai.allocationSize = req.size;
  mai.memoryTypeIndex = static_cast<uint32_t>(type);
  r = api_.vkAllocateMemory(device_, &mai, nullptr, &b.memory_);
  if (r == VK_ERROR_OUT_OF_DEVICE_MEMORY || r == VK_ERROR_OUT_OF_HOST_MEMORY) {
    return Status::error(fmt::format("out of {} memory: allocating a {} buffer of {} on {} ({})",
                                     r == VK_ERROR_OUT_OF_DEVICE_MEMORY ? "device" : "host", kind_name, mib(bytes),
                                     info_.name, vk_result_name(r)));
  }
  if (r != VK_SUCCESS) return vk_error(fmt::format("vkAllocateMemory of {}", mib(req.size)), r);
  r = api_.vkBindBufferMemory(device_, b.buffer_, b.memory_, 0);
  if (r != VK_SUCCESS) return vk_error("vkBindBufferMemory", r);
  if (kind == MemoryKind::HostVisible) {
    r = api_.vkMapMemory(device_, b.memory_, 0, VK_WHOLE_SIZE, 0, &b.mapped_);
    if (r != VK_SUCCESS) return vk_error("vkMapMemory", r);
  }
  return b;
}

Result<Pipeline> Context::create_pipeline(const PipelineDesc& desc) {
  if (!health_.ok()) return health_;
  const std::span<const uint32_t> spirv = embedded_spirv(desc.shader);
  if (spirv.empty()) return Status::error(fmt::format("Vulkan: no embedded shader named '{}'", desc.shader));
  Pipeline p;
  p.context_ = this;
  p.n_buffers_ = desc.n_buffers;
  p.push_bytes_ = desc.push_constant_bytes;

  std::vector<VkDescriptorSetLayoutBinding> bindings(desc.n_buffers);
  for (uint32_t i = 0; i < desc.n_buffers; ++i) {
    bindings[i] = VkDescriptorSetLayoutBinding{i, VK_DESCRIPTOR_TYPE_STORAGE_BUFFER, 1, VK_SHADER_STAGE_COMPUTE_BIT,
                                               nullptr};
  }
  VkDescriptorSetLayoutCreateInfo dsl{VK_STRUCTURE_TYPE_DESCRIPTOR_SET_LAYOUT_CREATE_INFO};
  dsl.flags = VK_DESCRIPTOR_SET_LAYOUT_CREATE_PUSH_DESCRIPTOR_BIT_KHR;
  dsl.bindingCount = desc.n_buffers;
  dsl.pBindings = bindings.data();
  VkResult r = api_.vkCreateDescriptorSetLayout(device_, &dsl, nullptr, &p.set_layout_);
  if (r != VK_SUCCESS) return vk_error("vkCreateDescriptorSetLayout", r);

  const VkPushConstantRange range{VK_SHADER_STAGE_COMPUTE_BIT, 0, desc.push_constant_bytes};
  VkPipelineLayoutCreateInfo pl{VK_STRUCTURE_TYPE_PIPELINE_LAYOUT_CREATE_INFO};
  pl.setLayoutCount = 1;
  pl.pSetLayouts = &p.set_layout_;
  pl.pushConstantRangeCount = desc.push_constant_bytes > 0 ? 1 : 0;
  pl.pPushConstantRanges = &range;
  r = api_.vkCreatePipelineLayout(device_, &pl, nullptr, &p.layout_);
  if (r != VK_SUCCESS) return vk_error("vkCreatePipelineLayout", r);

  VkShaderModuleCreateInfo smi{VK_STRUCTURE_TYPE_SHADER_MODULE_CREATE_INFO};
  smi.codeSize = spirv.size() * sizeof(uint32_t);
  smi.pCode = spirv.data();
  VkShaderModule module = VK_NULL_HANDLE;
  r = api_.vkCreateShaderModule(device_, &smi, nullptr, &module);
  if (r != VK_SUCCESS) return vk_error(fmt::format("vkCreateShaderModule({})", desc.shader), r);

  std::vector<VkSpecializationMapEntry> entries(desc.spec_constants.size());
  for (uint32_t i = 0; i < entries.size(); ++i) entries[i] = VkSpecializationMapEntry{i, i * 4, 4};
  const VkSpecializationInfo spec{static_cast<uint32_t>(entries.size()), entries.data(),
                                  desc.spec_constants.size() * sizeof(uint32_t), desc.spec_constants.data()};
  VkComputePipelineCreateInfo cpi{VK_STRUCTURE_TYPE_COMPUTE_PIPELINE_CREATE_INFO};
  cpi.stage = VkPipelineShaderStageCreateInfo{VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_CREATE_INFO};
  cpi.stage.stage = VK_SHADER_STAGE_COMPUTE_BIT;
  cpi.stage.module = module;
  cpi.stage.pName = "main";
  cpi.stage.pSpecializationInfo = entries.empty() ? nullptr : &spec;
  cpi.layout = p.layout_;
  r = api_.vkCreateComputePipelines(device_, VK_NULL_HANDLE, 1, &cpi, nullptr, &p.pipeline_);
  api_.vkDestroyShaderModule(device_, module, nullptr);
  if (r != VK_SUCCESS) return vk_error(fmt::format("vkCreateComputePipelines({})", desc.shader), r);
  return p;
}

Result<CommandBatch> Context::begin(uint32_t max_timestamps) {
  if (!health_.ok()) return health_;
  if (max_timestamps > 0 && info_.timestamp_period_ns == 0) {
    return Status::error(fmt::format("Vulkan: {}'s compute queue cannot write timestamps", info_.name));
  }
  VkCommandBufferAllocateInfo cai{VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO};
  cai.commandPool = pool_;
  cai.level = VK_COMMAND_BUFFER_LEVEL_PRIMARY;
  cai.commandBufferCount = 1;
  VkCommandBuffer cmd = VK_NULL_HANDLE;
  VkResult r = api_.vkAllocateCommandBuffers(device_, &cai, &cmd);
  if (r != VK_SUCCESS) return vk_error("vkAllocateCommandBuffers", r);
  VkQueryPool queries = VK_NULL_HANDLE;
  if (max_timestamps > 0) {
    VkQueryPoolCreateInfo qpi{VK_STRUCTURE_TYPE_QUERY_POOL_CREATE_INFO};
    qpi.queryType = VK_QUERY_TYPE_TIMESTAMP;
    qpi.queryCount = max_timestamps;
    r = api_.vkCreateQueryPool(device_, &qpi, nullptr, &queries);
    if (r != VK_SUCCESS) {
      api_.vkFreeCommandBuffers(device_, pool_, 1, &cmd);
      return vk_error("vkCreateQueryPool", r);
    }
  }
  CommandBatch batch(this, cmd, queries, max_timestamps);
  VkCommandBufferBeginInfo bi{VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO};
  bi.flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT;
  r = api_.vkBeginCommandBuffer(cmd, &bi);
  if (r != VK_SUCCESS) return vk_error("vkBeginCommandBuffer", r);
  if (queries != VK_NULL_HANDLE) api_.vkCmdResetQueryPool(cmd, queries, 0, max_timestamps);
  return batch;
}

Status Context::submit(CommandBatch& batch) {
  if (!health_.ok()) return health_;
  if (!batch.error_.ok()) return batch.error_;
  if (batch.submitted_) return Status::error("Vulkan: a command batch runs once; begin a new one");
  batch.submitted_ = true;
  VkResult r = api_.vkEndCommandBuffer(batch.cmd_);
  if (r != VK_SUCCESS) return vk_error("vkEndCommandBuffer", r);
  r = api_.vkResetFences(device_, 1, &fence_);
  if (r != VK_SUCCESS) return vk_error("vkResetFences", r);
  VkSubmitInfo si{VK_STRUCTURE_TYPE_SUBMIT_INFO};
  si.commandBufferCount = 1;
  si.pCommandBuffers = &batch.cmd_;
  r = api_.vkQueueSubmit(queue_, 1, &si, fence_);
  if (r == VK_SUCCESS) {
    r = api_.vkWaitForFences(device_, 1, &fence_, VK_TRUE, static_cast<uint64_t>(timeout_ms_) * 1000000);
  }
  if (r == VK_TIMEOUT) {
    health_ = Status::error(fmt::format(
        "Vulkan: GPU work on {} did not finish within {} ms (a hung shader or a stalled device); the Vulkan "
        "context is unusable",
        info_.name, timeout_ms_));
    return health_;
  }
  if (r == VK_ERROR_DEVICE_LOST) {
    health_ = Status::error(fmt::format("Vulkan: device lost on {} (driver reset or GPU fault); the Vulkan "
                                        "context is unusable",
                                        info_.name));
    return health_;
  }
  if (r != VK_SUCCESS) return vk_error("vkQueueSubmit/vkWaitForFences", r);
  return Status();
}

Result<std::vector<double>> Context::timestamps_ns(const CommandBatch& batch) {
  if (!batch.submitted_ || !health_.ok()) return Status::error("Vulkan: timestamps of a batch that did not run");
  std::vector<uint64_t> ticks(batch.n_timestamps_);
  if (ticks.empty()) return std::vector<double>{};
  VkResult r = api_.vkGetQueryPoolResults(device_, batch.queries_, 0, batch.n_timestamps_,
                                          ticks.size() * sizeof(uint64_t), ticks.data(), sizeof(uint64_t),
                                          VK_QUERY_RESULT_64_BIT | VK_QUERY_RESULT_WAIT_BIT);
  if (r != VK_SUCCESS) return vk_error("vkGetQueryPoolResults", r);
  std::vector<double> ns(ticks.size());
  for (size_t i = 0; i < ticks.size(); ++i) {
    ns[i] = static_cast<double>(ticks[i] - ticks[0]) * info_.timestamp_period_ns;
  }
  return ns;
}

Status Context::upload(const Buffer& dst, size_t offset, const void* src, size_t bytes) {
  if (!health_.ok()) return health_;
  if (offset + bytes > dst.size()) return Status::error("Vulkan: upload past the end of its buffer");
  if (bytes == 0) return Status();
  if (dst.mapped() != nullptr) {
    std::memcpy(static_cast<uint8_t*>(dst.mapped()) + offset, src, bytes);
    return Status();
  }
  Result<Buffer> staging = create_buffer(bytes, MemoryKind::HostVisible);
  if (!staging.ok()) return staging.status();
  std::memcpy(staging->mapped(), src, bytes);
  Result<CommandBatch> batch = begin();
  if (!batch.ok()) return batch.status();
  batch->copy(*staging, 0, dst, offset, bytes);
  return submit(*batch);
}

Status Context::download(const Buffer& src, size_t offset, void* dst, size_t bytes) {
  if (!health_.ok()) return health_;
  if (offset + bytes > src.size()) return Status::error("Vulkan: download past the end of its buffer");
  if (bytes == 0) return Status();
  if (src.mapped() != nullptr) {
    std::memcpy(dst, static_cast<const uint8_t*>(src.mapped()) + offset, bytes);
    return Status();
  }
  Result<Buffer> staging = create_buffer(bytes, MemoryKind::HostVisible);
  if (!staging.ok()) return staging.status();
  Result<CommandBatch> batch = begin();
  if (!batch.ok()) return batch.status();
  batch->copy(src, offset, *staging, 0, bytes);
  Status s = submit(*batch);
  if (!s.ok()) return s;
  std::memcpy(dst, staging->mapped(), bytes);
  return Status();
}

void Context::add_validation_message(std::string message) {
  std::lock_guard<std::mutex> lock(messages_mutex_);
  messages_.push_back(std::move(message));
}

std::vector<std::string> Context::take_validation_messages() {
  std::lock_guard<std::mutex> lock(messages_mutex_);
  return std::exchange(messages_, {});
}

VKAPI_ATTR VkBool32 VKAPI_CALL Context::on_debug_message(VkDebugUtilsMessageSeverityFlagBitsEXT severity,
                                                         VkDebugUtilsMessageTypeFlagsEXT types,
                                                         const VkDebugUtilsMessengerCallbackDataEXT* data,
                                                         void* user) {
  // General (loader) messages only when they are errors: the loader warns about unrelated ICD files.
  const bool is_validation = (types & VK_DEBUG_UTILS_MESSAGE_TYPE_VALIDATION_BIT_EXT) != 0;
  if (!is_validation && severity < VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT) return VK_FALSE;
  static_cast<Context*>(user)->add_validation_message(
      fmt::format("[{}] {}: {}", severity >= VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT ? "error" : "warning",
                  data->pMessageIdName ? data->pMessageIdName : "?", data->pMessage ? data->pMessage : ""));
  return VK_FALSE;
}

Result<std::string> list_devices() {
  VulkanApi api;
  Status s = load_vulkan_loader(api);
  if (!s.ok()) return s;
  VkApplicationInfo app{VK_STRUCTURE_TYPE_APPLICATION_INFO};
  app.apiVersion = VK_API_VERSION_1_2;
  VkInstanceCreateInfo ici{VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO};
  ici.pApplicationInfo = &app;
  VkInstance instance = VK_NULL_HANDLE;
  VkResult r = api.vkCreateInstance(&ici, nullptr, &instance);
  if (r != VK_SUCCESS) {
    unload_vulkan_loader(api);
    return vk_error("vkCreateInstance", r);
  }
  std::string out;
  s = load_instance_functions(api, instance, false);
  if (s.ok()) {
    uint32_t n = 0;
    api.vkEnumeratePhysicalDevices(instance, &n, nullptr);
    std::vector<VkPhysicalDevice> devices(n);
    api.vkEnumeratePhysicalDevices(instance, &n, devices.data());
    for (uint32_t i = 0; i < n; ++i) {
      VkPhysicalDeviceProperties p;
      api.vkGetPhysicalDeviceProperties(devices[i], &p);
      out += fmt::format("{}: {} (Vulkan {}.{})\n", i, p.deviceName, VK_API_VERSION_MAJOR(p.apiVersion),
                         VK_API_VERSION_MINOR(p.apiVersion));
    }
    api.vkDestroyInstance(instance, nullptr);
  }
  unload_vulkan_loader(api);
  if (!s.ok()) return s;
  return out;
}

}  // namespace kvtier::vulkan
