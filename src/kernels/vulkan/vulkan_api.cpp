#include "kernels/vulkan/vulkan_api.h"

#include <dlfcn.h>

#include <string>

namespace kvtier::vulkan {
namespace {

// Collects the names that did not resolve, so that one error lists them all.
class FunctionLoader {
 public:
  explicit FunctionLoader(const char* scope) : scope_(scope) {}

  template <class Fn>
  void get(PFN_vkVoidFunction f, const char* name, Fn* out) {
    *out = reinterpret_cast<Fn>(f);
    if (f == nullptr) missing_ += missing_.empty() ? name : std::string(", ") + name;
  }

  Status status() const {
    if (missing_.empty()) return Status();
    return Status::error(std::string("the Vulkan loader lacks ") + scope_ + " functions: " + missing_);
  }

 private:
  const char* scope_;
  std::string missing_;
};

}  // namespace

Status load_vulkan_loader(VulkanApi& api) {
  // Opened once per process and never closed: the loader keeps the drivers and layers it loaded, and drivers
  // keep process-wide state (Mesa's lavapipe: LLVM) that must not be unmapped while referenced. Only the
  // versioned name: the unversioned libvulkan.so belongs to the -dev package.
  static void* const library = dlopen("libvulkan.so.1", RTLD_NOW | RTLD_LOCAL);
  static const std::string open_error = [] {
    const char* why = library ? nullptr : dlerror();
    return std::string(why ? why : "");
  }();
  api.library = library;
  if (api.library == nullptr) {
    return Status::error("no Vulkan loader: could not open libvulkan.so.1 (" + open_error +
                         "); install libvulkan1 and a Vulkan driver (Debian: mesa-vulkan-drivers, or the GPU "
                         "vendor's driver)");
  }
  api.vkGetInstanceProcAddr = reinterpret_cast<PFN_vkGetInstanceProcAddr>(dlsym(api.library, "vkGetInstanceProcAddr"));
  if (api.vkGetInstanceProcAddr == nullptr) {
    unload_vulkan_loader(api);
    return Status::error("libvulkan.so.1 has no vkGetInstanceProcAddr: not a Vulkan loader");
  }
  FunctionLoader load("global");
  auto global = [&](const char* name) { return api.vkGetInstanceProcAddr(VK_NULL_HANDLE, name); };
  load.get(global("vkEnumerateInstanceVersion"), "vkEnumerateInstanceVersion", &api.vkEnumerateInstanceVersion);
  load.get(global("vkEnumerateInstanceLayerProperties"), "vkEnumerateInstanceLayerProperties",
           &api.vkEnumerateInstanceLayerProperties);
  load.get(global("vkEnumerateInstanceExtensionProperties"), "vkEnumerateInstanceExtensionProperties",
           &api.vkEnumerateInstanceExtensionProperties);
  load.get(global("vkCreateInstance"), "vkCreateInstance", &api.vkCreateInstance);
  Status s = load.status();
  if (!s.ok()) unload_vulkan_loader(api);
  return s;
}

Status load_instance_functions(VulkanApi& api, VkInstance instance, bool with_debug_utils) {
  FunctionLoader load("instance");
  auto get = [&](const char* name) { return api.vkGetInstanceProcAddr(instance, name); };
  load.get(get("vkDestroyInstance"), "vkDestroyInstance", &api.vkDestroyInstance);
  load.get(get("vkEnumeratePhysicalDevices"), "vkEnumeratePhysicalDevices", &api.vkEnumeratePhysicalDevices);
  load.get(get("vkGetPhysicalDeviceProperties"), "vkGetPhysicalDeviceProperties", &api.vkGetPhysicalDeviceProperties);
  load.get(get("vkGetPhysicalDeviceProperties2"), "vkGetPhysicalDeviceProperties2",
           &api.vkGetPhysicalDeviceProperties2);
  load.get(get("vkGetPhysicalDeviceFeatures2"), "vkGetPhysicalDeviceFeatures2", &api.vkGetPhysicalDeviceFeatures2);
  load.get(get("vkGetPhysicalDeviceQueueFamilyProperties"), "vkGetPhysicalDeviceQueueFamilyProperties",
           &api.vkGetPhysicalDeviceQueueFamilyProperties);
  load.get(get("vkGetPhysicalDeviceMemoryProperties"), "vkGetPhysicalDeviceMemoryProperties",
           &api.vkGetPhysicalDeviceMemoryProperties);
  load.get(get("vkEnumerateDeviceExtensionProperties"), "vkEnumerateDeviceExtensionProperties",
           &api.vkEnumerateDeviceExtensionProperties);
  load.get(get("vkCreateDevice"), "vkCreateDevice", &api.vkCreateDevice);
  load.get(get("vkGetDeviceProcAddr"), "vkGetDeviceProcAddr", &api.vkGetDeviceProcAddr);
  if (with_debug_utils) {
    load.get(get("vkCreateDebugUtilsMessengerEXT"), "vkCreateDebugUtilsMessengerEXT",
             &api.vkCreateDebugUtilsMessengerEXT);
    load.get(get("vkDestroyDebugUtilsMessengerEXT"), "vkDestroyDebugUtilsMessengerEXT",
             &api.vkDestroyDebugUtilsMessengerEXT);
  }
  return load.status();
}

Status load_device_functions(VulkanApi& api, VkDevice device) {
  FunctionLoader load("device");
  auto get = [&](const char* name) { return api.vkGetDeviceProcAddr(device, name); };
  load.get(get("vkDestroyDevice"), "vkDestroyDevice", &api.vkDestroyDevice);
  load.get(get("vkGetDeviceQueue"), "vkGetDeviceQueue", &api.vkGetDeviceQueue);
  load.get(get("vkDeviceWaitIdle"), "vkDeviceWaitIdle", &api.vkDeviceWaitIdle);
  load.get(get("vkCreateBuffer"), "vkCreateBuffer", &api.vkCreateBuffer);
  load.get(get("vkDestroyBuffer"), "vkDestroyBuffer", &api.vkDestroyBuffer);
  load.get(get("vkGetBufferMemoryRequirements"), "vkGetBufferMemoryRequirements", &api.vkGetBufferMemoryRequirements);
  load.get(get("vkAllocateMemory"), "vkAllocateMemory", &api.vkAllocateMemory);
  load.get(get("vkFreeMemory"), "vkFreeMemory", &api.vkFreeMemory);
  load.get(get("vkBindBufferMemory"), "vkBindBufferMemory", &api.vkBindBufferMemory);
  load.get(get("vkMapMemory"), "vkMapMemory", &api.vkMapMemory);
  load.get(get("vkUnmapMemory"), "vkUnmapMemory", &api.vkUnmapMemory);
  load.get(get("vkCreateShaderModule"), "vkCreateShaderModule", &api.vkCreateShaderModule);
  load.get(get("vkDestroyShaderModule"), "vkDestroyShaderModule", &api.vkDestroyShaderModule);
  load.get(get("vkCreateDescriptorSetLayout"), "vkCreateDescriptorSetLayout", &api.vkCreateDescriptorSetLayout);
  load.get(get("vkDestroyDescriptorSetLayout"), "vkDestroyDescriptorSetLayout", &api.vkDestroyDescriptorSetLayout);
  load.get(get("vkCreatePipelineLayout"), "vkCreatePipelineLayout", &api.vkCreatePipelineLayout);
  load.get(get("vkDestroyPipelineLayout"), "vkDestroyPipelineLayout", &api.vkDestroyPipelineLayout);
  load.get(get("vkCreateComputePipelines"), "vkCreateComputePipelines", &api.vkCreateComputePipelines);
  load.get(get("vkDestroyPipeline"), "vkDestroyPipeline", &api.vkDestroyPipeline);
  load.get(get("vkCreateCommandPool"), "vkCreateCommandPool", &api.vkCreateCommandPool);
  load.get(get("vkDestroyCommandPool"), "vkDestroyCommandPool", &api.vkDestroyCommandPool);
  load.get(get("vkAllocateCommandBuffers"), "vkAllocateCommandBuffers", &api.vkAllocateCommandBuffers);
  load.get(get("vkFreeCommandBuffers"), "vkFreeCommandBuffers", &api.vkFreeCommandBuffers);
  load.get(get("vkBeginCommandBuffer"), "vkBeginCommandBuffer", &api.vkBeginCommandBuffer);
  load.get(get("vkEndCommandBuffer"), "vkEndCommandBuffer", &api.vkEndCommandBuffer);
  load.get(get("vkCmdBindPipeline"), "vkCmdBindPipeline", &api.vkCmdBindPipeline);
  load.get(get("vkCmdPushDescriptorSetKHR"), "vkCmdPushDescriptorSetKHR", &api.vkCmdPushDescriptorSetKHR);
  load.get(get("vkCmdPushConstants"), "vkCmdPushConstants", &api.vkCmdPushConstants);
  load.get(get("vkCmdDispatch"), "vkCmdDispatch", &api.vkCmdDispatch);
  load.get(get("vkCmdPipelineBarrier"), "vkCmdPipelineBarrier", &api.vkCmdPipelineBarrier);
  load.get(get("vkCmdCopyBuffer"), "vkCmdCopyBuffer", &api.vkCmdCopyBuffer);
  load.get(get("vkCmdFillBuffer"), "vkCmdFillBuffer", &api.vkCmdFillBuffer);
  load.get(get("vkCmdResetQueryPool"), "vkCmdResetQueryPool", &api.vkCmdResetQueryPool);
  load.get(get("vkCmdWriteTimestamp"), "vkCmdWriteTimestamp", &api.vkCmdWriteTimestamp);
  load.get(get("vkCreateQueryPool"), "vkCreateQueryPool", &api.vkCreateQueryPool);
  load.get(get("vkDestroyQueryPool"), "vkDestroyQueryPool", &api.vkDestroyQueryPool);
  load.get(get("vkGetQueryPoolResults"), "vkGetQueryPoolResults", &api.vkGetQueryPoolResults);
  load.get(get("vkCreateFence"), "vkCreateFence", &api.vkCreateFence);
  load.get(get("vkDestroyFence"), "vkDestroyFence", &api.vkDestroyFence);
  load.get(get("vkResetFences"), "vkResetFences", &api.vkResetFences);
  load.get(get("vkWaitForFences"), "vkWaitForFences", &api.vkWaitForFences);
  load.get(get("vkQueueSubmit"), "vkQueueSubmit", &api.vkQueueSubmit);
  return load.status();
}

void unload_vulkan_loader(VulkanApi& api) {
  api = VulkanApi{};  // the library stays loaded (see load_vulkan_loader)
}

const char* vk_result_name(VkResult r) {
  switch (r) {
    case VK_SUCCESS: return "VK_SUCCESS";
    case VK_NOT_READY: return "VK_NOT_READY";
    case VK_TIMEOUT: return "VK_TIMEOUT";
    case VK_INCOMPLETE: return "VK_INCOMPLETE";
    case VK_ERROR_OUT_OF_HOST_MEMORY: return "VK_ERROR_OUT_OF_HOST_MEMORY";
    case VK_ERROR_OUT_OF_DEVICE_MEMORY: return "VK_ERROR_OUT_OF_DEVICE_MEMORY";
    case VK_ERROR_INITIALIZATION_FAILED: return "VK_ERROR_INITIALIZATION_FAILED";
    case VK_ERROR_DEVICE_LOST: return "VK_ERROR_DEVICE_LOST";
    case VK_ERROR_MEMORY_MAP_FAILED: return "VK_ERROR_MEMORY_MAP_FAILED";
    case VK_ERROR_LAYER_NOT_PRESENT: return "VK_ERROR_LAYER_NOT_PRESENT";
    case VK_ERROR_EXTENSION_NOT_PRESENT: return "VK_ERROR_EXTENSION_NOT_PRESENT";
    case VK_ERROR_FEATURE_NOT_PRESENT: return "VK_ERROR_FEATURE_NOT_PRESENT";
    case VK_ERROR_INCOMPATIBLE_DRIVER: return "VK_ERROR_INCOMPATIBLE_DRIVER";
    case VK_ERROR_TOO_MANY_OBJECTS: return "VK_ERROR_TOO_MANY_OBJECTS";
    case VK_ERROR_OUT_OF_POOL_MEMORY: return "VK_ERROR_OUT_OF_POOL_MEMORY";
    case VK_ERROR_INVALID_SHADER_NV: return "VK_ERROR_INVALID_SHADER_NV";
    default: return "VkResult (unnamed)";
  }
}

}  // namespace kvtier::vulkan
