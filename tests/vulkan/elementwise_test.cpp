// RMSNorm, RoPE, SwiGLU gating and softmax shaders against the scalar references (kernels/elementwise.h).
#include <cmath>
#include <random>

#include "kernels/elementwise.h"
#include "kernels/kernel_test_util.h"
#include "vulkan_test_util.h"

namespace kvtier::vulkan {
namespace {

using kernels::testing::random_floats;
using testing::VulkanTest;

TEST_F(VulkanTest, RmsNormMatchesTheReference) {
  std::mt19937 rng(1);
  const int rows = 3, d = 1000;  // d not a multiple of the workgroup
  const std::vector<float> x = random_floats(rng, rows * d, 3.0f), weight = random_floats(rng, d);
  std::vector<float> ref(x.size());
  kernels::rms_norm_reference(x.data(), weight.data(), rows, d, 1e-5f, ref.data());
  Buffer xb = upload(x), wb = upload(weight), out = device_buffer(x.size() * 4);
  Result<CommandBatch> batch = context_->begin();
  ASSERT_TRUE(batch.ok());
  poison(*batch, out);
  ASSERT_TRUE(kernels_->rms_norm(*batch, xb, wb, out, rows, d, 1e-5f).ok());
  ASSERT_TRUE(context_->submit(*batch).ok());
  const std::vector<float> got = download(out, x.size());
  for (size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], ref[i], 2e-6f * (1 + std::fabs(ref[i]))) << i;
}

TEST_F(VulkanTest, RopeMatchesTheReferenceInBothModes) {
  std::mt19937 rng(2);
  const int n_tokens = 3, n_heads = 5, head_dim = 64;
  for (bool neox : {false, true}) {
    for (int rope_dims : {64, 32}) {  // whole heads, and the first half only (partial rotary)
      const std::vector<float> rows = random_floats(rng, n_tokens * n_heads * head_dim);
      std::vector<float> table(static_cast<size_t>(n_tokens) * rope_dims);
      kernels::rope_table_reference(n_tokens, 4090, rope_dims, 500000.0f, 1.0f, nullptr, table.data());
      std::vector<float> ref = rows;
      kernels::rope_reference(table.data(), ref.data(), n_tokens, n_heads, head_dim, rope_dims, neox);
      Buffer rb = upload(rows), tb = upload(table);
      Result<CommandBatch> batch = context_->begin();
      ASSERT_TRUE(batch.ok());
      ASSERT_TRUE(kernels_->rope(*batch, rb, tb, n_tokens, n_heads, head_dim, rope_dims, neox).ok());
      ASSERT_TRUE(context_->submit(*batch).ok());
      const std::vector<float> got = download(rb, rows.size());
      for (size_t i = 0; i < got.size(); ++i) {
        EXPECT_NEAR(got[i], ref[i], 1e-5f) << i << (neox ? " neox" : " normal") << " rope_dims " << rope_dims;
      }
    }
  }
}

TEST_F(VulkanTest, SiluMulMatchesTheReference) {
  std::mt19937 rng(3);
  const int n = 1027;
  const std::vector<float> gate = random_floats(rng, n, 4.0f), up = random_floats(rng, n);
  std::vector<float> ref(n);
  kernels::silu_mul_reference(gate.data(), up.data(), ref.data(), n);
  Buffer gb = upload(gate), ub = upload(up), out = device_buffer(n * 4);
  Result<CommandBatch> batch = context_->begin();
  ASSERT_TRUE(batch.ok());
  poison(*batch, out);
  ASSERT_TRUE(kernels_->silu_mul(*batch, gb, ub, out, n).ok());
  ASSERT_TRUE(context_->submit(*batch).ok());
  const std::vector<float> got = download(out, n);
  for (int i = 0; i < n; ++i) EXPECT_NEAR(got[i], ref[i], 1e-5f * (1 + std::fabs(ref[i]))) << i;
}

TEST_F(VulkanTest, SoftmaxMatchesTheReference) {
  std::mt19937 rng(4);
  const int rows = 3, n = 1001;
  const float scale = 0.37f;
  const std::vector<float> x = random_floats(rng, rows * n, 10.0f);
  std::vector<float> ref(x.size());
  for (int r = 0; r < rows; ++r) kernels::softmax_reference(x.data() + r * n, n, scale, ref.data() + r * n);
  Buffer xb = upload(x), out = device_buffer(x.size() * 4);
  Result<CommandBatch> batch = context_->begin();
  ASSERT_TRUE(batch.ok());
  poison(*batch, out);
  ASSERT_TRUE(kernels_->softmax(*batch, xb, out, rows, n, scale).ok());
  ASSERT_TRUE(context_->submit(*batch).ok());
  const std::vector<float> got = download(out, x.size());
  for (size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], ref[i], 1e-5f * ref[i] + 1e-9f) << i;
}

}  // namespace
}  // namespace kvtier::vulkan
