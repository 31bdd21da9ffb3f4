// The shaders the Vulkan forward pass adds around the kernels: one token's keys and values written into an
// f16 page (against kv::write_rows, the CPU cache's writer) and the in-place add of residuals and biases.
#include <cmath>
#include <cstring>
#include <random>

#include "kernels/kernel_test_util.h"
#include "kv/codec.h"
#include "kvtier/f16.h"
#include "vulkan_test_util.h"

namespace kvtier::vulkan {
namespace {

using kernels::testing::random_floats;
using testing::VulkanTest;

TEST_F(VulkanTest, KvWriteFillsAPageRowByRowAsTheCpuWriterDoes) {
  std::mt19937 rng(3);
  kv::PageFormat format;
  std::string error;
  // 3 KV heads of 40 channels: not a power of two, and 37 rows: a partial page with an odd last row.
  ASSERT_TRUE(kv::make_page_format(kv::Precision::F16, kv::KeyMode::PerChannel, kv::kTokensPerPage, 3, 40, 40,
                                   &format, &error))
      << error;
  const int rows = 37, kv_dim = format.n_kv_heads * format.head_dim;
  const std::vector<float> k = random_floats(rng, rows * kv_dim, 2.0f), v = random_floats(rng, rows * kv_dim, 2.0f);
  std::vector<uint8_t> ref(format.page_bytes, 0);
  kv::write_rows(format, ref.data(), 0, rows, k.data(), v.data());

  // The page is the second of a two-page pool; the first must stay as it was.
  Buffer pool = device_buffer(2 * format.page_bytes);
  Buffer kb = upload(k), vb = upload(v);
  Result<CommandBatch> batch = context_->begin();
  ASSERT_TRUE(batch.ok());
  batch->fill(pool, 0, format.page_bytes, 0x7FC00000u);
  batch->fill(pool, format.page_bytes, format.page_bytes, 0);
  batch->barrier();
  for (int t = 0; t < rows; ++t) {
    const size_t at = static_cast<size_t>(t) * kv_dim * sizeof(float);
    ASSERT_TRUE(kernels_
                    ->write_kv_f16(*batch, format, pool, static_cast<uint32_t>(format.page_bytes), t,
                                   BufferRange(kb, at, kv_dim * sizeof(float)),
                                   BufferRange(vb, at, kv_dim * sizeof(float)))
                    .ok());
    batch->barrier();  // rows t and t + 1 share key words
  }
  ASSERT_TRUE(context_->submit(*batch).ok());
  std::vector<uint8_t> got(2 * format.page_bytes);
  ASSERT_TRUE(context_->download(pool, 0, got.data(), got.size()).ok());

  for (size_t i = 0; i < format.page_bytes; i += 4) {
    uint32_t word;
    std::memcpy(&word, got.data() + i, 4);
    ASSERT_EQ(word, 0x7FC00000u) << "the shader wrote outside its page, byte " << i;
  }
  // Halves equal, or one unit in the last place apart where the GPU's f32 -> f16 rounding differs.
  int differing = 0;
  for (size_t i = 0; i < format.page_bytes; i += 2) {
    uint16_t want, have;
    std::memcpy(&want, ref.data() + i, 2);
    std::memcpy(&have, got.data() + format.page_bytes + i, 2);
    if (want == have) continue;
    ++differing;
    ASSERT_LE(std::abs(static_cast<int>(want) - static_cast<int>(have)), 1)
        << "half " << i / 2 << ": " << f16_to_f32(want) << " vs " << f16_to_f32(have);
  }
  EXPECT_LT(differing, static_cast<int>(format.page_bytes / 2 / 100));  // rounding ties are rare
}

TEST_F(VulkanTest, KvWriteRejectsQuantizedPagesAndRowsPastThePage) {
  kv::PageFormat f16, q8;
  std::string error;
  ASSERT_TRUE(kv::make_page_format(kv::Precision::F16, kv::KeyMode::PerChannel, kv::kTokensPerPage, 1, 64, 64, &f16,
                                   &error));
  ASSERT_TRUE(kv::make_page_format(kv::Precision::Q8, kv::KeyMode::PerChannel, kv::kTokensPerPage, 1, 64, 64, &q8,
                                   &error));
  Buffer pool = device_buffer(f16.page_bytes), k = device_buffer(256), v = device_buffer(256);
  Result<CommandBatch> batch = context_->begin();
  ASSERT_TRUE(batch.ok());
  EXPECT_FALSE(kernels_->write_kv_f16(*batch, q8, pool, 0, 0, k, v).ok());
  EXPECT_FALSE(kernels_->write_kv_f16(*batch, f16, pool, 0, kv::kTokensPerPage, k, v).ok());
}

TEST_F(VulkanTest, AddRepeatsItsAddendOverTheRows) {
  std::mt19937 rng(4);
  const int n_rows = 5, d = 333;
  const std::vector<float> x = random_floats(rng, n_rows * d), bias = random_floats(rng, d),
                           residual = random_floats(rng, n_rows * d);
  Buffer xb = upload(x), bb = upload(bias), rb = upload(residual);
  Result<CommandBatch> batch = context_->begin();
  ASSERT_TRUE(batch.ok());
  ASSERT_TRUE(kernels_->add(*batch, xb, bb, n_rows * d, d).ok());
  batch->barrier();
  ASSERT_TRUE(kernels_->add(*batch, xb, rb, n_rows * d, n_rows * d).ok());
  ASSERT_TRUE(context_->submit(*batch).ok());
  const std::vector<float> got = download(xb, x.size());
  for (size_t i = 0; i < x.size(); ++i) EXPECT_FLOAT_EQ(got[i], (x[i] + bias[i % d]) + residual[i]) << i;
  Result<CommandBatch> bad = context_->begin();
  ASSERT_TRUE(bad.ok());
  EXPECT_FALSE(kernels_->add(*bad, xb, bb, n_rows * d, 7).ok());  // 1665 elements are not rows of 7
}

}  // namespace
}  // namespace kvtier::vulkan
