// The Vulkan context layer: buffers, errors that must come back as Status (never a crash or a hang), and
// the validation messenger that the other tests rely on.
#include <cmath>
#include <numeric>

#include "vulkan_test_util.h"

namespace kvtier::vulkan {
namespace {

using testing::VulkanTest;

TEST_F(VulkanTest, ReportsTheDevice) {
  const DeviceInfo& info = context_->info();
  EXPECT_FALSE(info.name.empty());
  EXPECT_GT(info.subgroup_size, 0u);
  EXPECT_GT(info.max_allocation_bytes, 0u);
  Result<std::string> listed = list_devices();
  ASSERT_TRUE(listed.ok()) << listed.error();
  EXPECT_NE(listed->find(info.name), std::string::npos) << *listed;
}

TEST_F(VulkanTest, BuffersRoundTripThroughDeviceAndHostMemory) {
  std::vector<float> data(1003);
  std::iota(data.begin(), data.end(), -17.5f);
  for (MemoryKind kind : {MemoryKind::DeviceLocal, MemoryKind::HostVisible}) {
    Result<Buffer> b = context_->create_buffer(data.size() * 4, kind);
    ASSERT_TRUE(b.ok()) << b.error();
    EXPECT_EQ(kind == MemoryKind::HostVisible, b->mapped() != nullptr);
    ASSERT_TRUE(context_->upload(*b, 0, data.data(), data.size() * 4).ok());
    std::vector<float> back(data.size() - 3);
    ASSERT_TRUE(context_->download(*b, 12, back.data(), back.size() * 4).ok());
    EXPECT_TRUE(std::equal(back.begin(), back.end(), data.begin() + 3));
  }
}

TEST_F(VulkanTest, CopyAndFillRunInOrderWithinABatch) {
  Buffer a = upload(std::vector<float>(64, 2.5f));
  Buffer b = device_buffer(64 * 4);
  Result<CommandBatch> batch = context_->begin();
  ASSERT_TRUE(batch.ok()) << batch.error();
  batch->fill(b, 0, 64 * 4, 0);
  batch->barrier();
  batch->copy(a, 0, b, 32 * 4, 32 * 4);
  ASSERT_TRUE(context_->submit(*batch).ok());
  std::vector<float> out = download(b, 64);
  for (int i = 0; i < 64; ++i) EXPECT_EQ(out[i], i < 32 ? 0.0f : 2.5f) << i;
}

TEST_F(VulkanTest, AllocationsPastTheDeviceLimitsAreErrors) {
  Result<Buffer> huge = context_->create_buffer(size_t{1} << 60, MemoryKind::DeviceLocal);
  ASSERT_FALSE(huge.ok());
  EXPECT_NE(huge.error().find("out of device memory"), std::string::npos) << huge.error();
  Result<Buffer> over = context_->create_buffer(context_->info().max_allocation_bytes + 1, MemoryKind::HostVisible);
  ASSERT_FALSE(over.ok());
  EXPECT_NE(over.error().find("largest allocation"), std::string::npos) << over.error();
  // The context is still usable afterwards.
  EXPECT_TRUE(context_->create_buffer(4096, MemoryKind::DeviceLocal).ok());
}

TEST_F(VulkanTest, MisuseIsAnErrorNotACrash) {
  Result<Pipeline> missing = context_->create_pipeline(PipelineDesc{"no_such_shader", 1, 0, {}});
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.error().find("no_such_shader"), std::string::npos);

  Result<Pipeline> silu = context_->create_pipeline(PipelineDesc{"silu_mul", 3, 4, {64}});
  ASSERT_TRUE(silu.ok()) << silu.error();
  Buffer a = device_buffer(256);
  Result<CommandBatch> batch = context_->begin();
  ASSERT_TRUE(batch.ok());
  const uint32_t n = 64;
  batch->dispatch(*silu, {a, a}, n, 1);  // two buffers for three bindings
  Status s = context_->submit(*batch);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("takes 3 buffers"), std::string::npos) << s.message();

  Result<CommandBatch> batch2 = context_->begin();
  ASSERT_TRUE(batch2.ok());
  batch2->dispatch(*silu, {a, a, BufferRange(a, 128, 512)}, n, 1);  // past the end of the buffer
  s = context_->submit(*batch2);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("outside its buffer"), std::string::npos) << s.message();
  EXPECT_TRUE(context_->health().ok());
}

TEST(VulkanContext, ADeviceIndexPastTheListIsAnError) {
  ContextOptions options = testing::test_options();
  options.device_index = 999;
  Result<std::unique_ptr<Context>> c = Context::create(options);
  ASSERT_FALSE(c.ok());
  if (!testing::is_missing_vulkan(c.error()) || c.error().find("no Vulkan device 999") != std::string::npos) {
    testing::g_vulkan_device_created = true;  // the driver was loaded (leak_check.cpp)
  }
  if (c.error().find("no Vulkan device 999") == std::string::npos) {
    // No loader or driver at all: the same one clear error as any other use of Vulkan here.
    ASSERT_TRUE(testing::is_missing_vulkan(c.error())) << c.error();
    GTEST_SKIP() << c.error();
  }
}

TEST_F(VulkanTest, TheValidationLayerReportsInvalidUse) {
  if (!context_->validation_enabled()) GTEST_SKIP() << "validation is off (KVTIER_VK_VALIDATE=0)";
  // A buffer of size 0 is invalid (VUID-VkBufferCreateInfo-size-00912); the layer reports it and does not
  // pass the call on to the driver.
  VkBufferCreateInfo bci{VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO};
  bci.size = 0;
  bci.usage = VK_BUFFER_USAGE_STORAGE_BUFFER_BIT;
  VkBuffer buffer = VK_NULL_HANDLE;
  const VkResult r = context_->api().vkCreateBuffer(context_->device(), &bci, nullptr, &buffer);
  if (r == VK_SUCCESS) context_->api().vkDestroyBuffer(context_->device(), buffer, nullptr);
  const std::vector<std::string> messages = context_->take_validation_messages();
  ASSERT_FALSE(messages.empty());
  EXPECT_NE(messages[0].find("00912"), std::string::npos) << messages[0];
}

}  // namespace
}  // namespace kvtier::vulkan
