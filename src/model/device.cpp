// --device: parsing, and opening a model on the device it names (kvtier/device.h).
#include "kvtier/device.h"

#include <cctype>

#ifdef KVTIER_HAVE_VULKAN
#include "model/vulkan/vulkan_forward.h"
#endif

namespace kvtier {

Result<DeviceOptions> parse_device(const std::string& text) {
  const std::string bad = text + ": expected cpu, vulkan or vulkan:N";
  DeviceOptions options;
  if (text == "cpu") return options;
  options.kind = DeviceKind::kVulkan;
  if (text == "vulkan") return options;
  const std::string prefix = "vulkan:";
  if (text.rfind(prefix, 0) != 0 || text.size() == prefix.size() || text.size() > prefix.size() + 4) {
    return Status::error(bad);
  }
  int index = 0;
  for (size_t i = prefix.size(); i < text.size(); ++i) {
    if (!std::isdigit(static_cast<unsigned char>(text[i]))) return Status::error(bad);
    index = index * 10 + (text[i] - '0');
  }
  options.index = index;
  return options;
}

std::string device_name(const DeviceOptions& options) {
  if (options.kind == DeviceKind::kCpu) return "cpu";
  return options.index < 0 ? "vulkan" : "vulkan:" + std::to_string(options.index);
}

bool vulkan_backend_built() {
#ifdef KVTIER_HAVE_VULKAN
  return true;
#else
  return false;
#endif
}

Result<std::unique_ptr<DeviceModel>> open_device_model(const Model& model, const DeviceOptions& options,
                                                       const ProgressFn& progress) {
  if (options.kind == DeviceKind::kCpu) return Status::error("open_device_model: the CPU backend needs no device model");
#ifdef KVTIER_HAVE_VULKAN
  return open_vulkan_model(model, options, progress);
#else
  (void)model;
  (void)progress;
  return Status::error("--device " + device_name(options) +
                       ": this kvtier was built without the Vulkan backend (KVTIER_VULKAN=OFF; it needs libvulkan-dev "
                       "and glslc at build time)");
#endif
}

}  // namespace kvtier
