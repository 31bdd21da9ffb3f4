// Fixture for the Vulkan tests: a context on the default device (lavapipe in CI) with the validation layer
// on (KVTIER_VK_VALIDATE=0 turns it off), skipped with the reason when the machine has no Vulkan loader,
// driver or device; every validation message fails the test.
#pragma once

#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "kernels/vulkan/context.h"
#include "kernels/vulkan/vulkan_kernels.h"

namespace kvtier::vulkan::testing {

// Set once a test loaded a Vulkan driver (leak_check.cpp: why LeakSanitizer is then off for the process).
extern std::atomic<bool> g_vulkan_device_created;

// n normally distributed values with some outlier channels (every 29th, from the 7th, shifted by 4): the
// key/value rows of the attention tests.
inline std::vector<float> normal_rows(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  std::vector<float> x(n);
  for (size_t i = 0; i < n; ++i) x[i] = normal(rng) + (i % 29 == 7 ? 4.0f : 0.0f);
  return x;
}

inline ContextOptions test_options() {
  ContextOptions options;
  const char* v = std::getenv("KVTIER_VK_VALIDATE");
  options.validation = v == nullptr || std::strcmp(v, "0") != 0;
  return options;
}

// True for the errors that mean "this machine has no Vulkan" (a skip), not "kvtier's Vulkan code is wrong".
inline bool is_missing_vulkan(const std::string& error) { return error.rfind("no Vulkan", 0) == 0; }

// One context per test process, shared by the tests (ctest runs each test in its own process; a gtest run of
// the whole binary would otherwise create ~40 instances and devices, and the NVIDIA driver was seen to refuse
// vkCreateInstance after about 30 in one process). Validation messages are taken after every test.
class VulkanTest : public ::testing::Test {
 protected:
  void SetUp() override {
    static Result<std::unique_ptr<Context>>* shared = new Result<std::unique_ptr<Context>>(
        Context::create(test_options()));  // never destroyed: it lives as long as the process
    if (!shared->ok()) {
      if (is_missing_vulkan(shared->error())) GTEST_SKIP() << shared->error();
      FAIL() << shared->error();
    }
    g_vulkan_device_created = true;
    context_ = shared->value().get();
    ASSERT_TRUE(context_->health().ok()) << context_->health().message();
    kernels_ = std::make_unique<Kernels>(*context_);
  }

  void TearDown() override {
    if (context_ == nullptr) return;
    kernels_.reset();
    for (const std::string& m : context_->take_validation_messages()) ADD_FAILURE() << "validation: " << m;
  }

  template <class T>
  Buffer upload(const std::vector<T>& data) {
    Result<Buffer> b = context_->create_buffer(data.size() * sizeof(T), MemoryKind::DeviceLocal);
    EXPECT_TRUE(b.ok()) << b.error();
    if (!b.ok()) return Buffer();
    Status s = context_->upload(*b, 0, data.data(), data.size() * sizeof(T));
    EXPECT_TRUE(s.ok()) << s.message();
    return std::move(*b);
  }

  Buffer device_buffer(size_t bytes) {
    Result<Buffer> b = context_->create_buffer(bytes, MemoryKind::DeviceLocal);
    EXPECT_TRUE(b.ok()) << b.error();
    return b.ok() ? std::move(*b) : Buffer();
  }

  std::vector<float> download(const Buffer& b, size_t n) {
    std::vector<float> out(n);
    Status s = context_->download(b, 0, out.data(), n * sizeof(float));
    EXPECT_TRUE(s.ok()) << s.message();
    return out;
  }

  // A quiet NaN in every float of `b`, so that an output the shader fails to write shows up.
  static void poison(CommandBatch& batch, const Buffer& b) {
    batch.fill(b, 0, b.size(), 0x7FC00000u);
    batch.barrier();
  }

  Context* context_ = nullptr;
  std::unique_ptr<Kernels> kernels_;
};

}  // namespace kvtier::vulkan::testing
