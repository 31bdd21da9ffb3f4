// The SPIR-V modules compiled from shaders/*.comp at build time (cmake/vulkan_shaders.cmake) and embedded in
// the library, so a kvtier binary needs no shader files beside it.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>

namespace kvtier::vulkan {

// The words of the module compiled from shaders/<name>.comp; empty when there is none.
std::span<const uint32_t> embedded_spirv(std::string_view name);

}  // namespace kvtier::vulkan
