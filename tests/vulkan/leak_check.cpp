// LeakSanitizer in the ASan build (CI's first stage) and the Vulkan driver.
//
// Mesa's lavapipe (and LLVM, which compiles its shaders) keep allocations alive past vkDestroyDevice /
// vkDestroyInstance and never free them; LSan reports them at exit (about 13 KB and 27 allocations per
// context with Mesa 22.3). Those libraries are built without frame pointers, so LSan's fast unwinder stops
// one frame into them and names a garbage caller (addresses with the same low bits attributed to
// test_vulkan, libasan, libLLVM or no module): a suppression file, which matches module or function names
// in the stack, cannot single them out, and full unwinding (fast_unwind_on_malloc=0) takes over 10 minutes
// through LLVM's allocations. So the leak check is off for a test_vulkan process in which a Vulkan device
// was created. Where none was (no driver: every test skips), it stays on. kvtier's own Vulkan objects are
// RAII-owned (Buffer, Pipeline, CommandBatch, Context), ASan still checks every access, and the validation
// layer checks the Vulkan objects themselves.
#include <atomic>

#include "vulkan_test_util.h"

namespace kvtier::vulkan::testing {
std::atomic<bool> g_vulkan_device_created{false};
}  // namespace kvtier::vulkan::testing

extern "C" int __lsan_is_turned_off() {
  return kvtier::vulkan::testing::g_vulkan_device_created.load() ? 1 : 0;
}
