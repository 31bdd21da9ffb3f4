// K-quant kernels (Q2_K, Q3_K, Q4_K, Q5_K, Q6_K and IQ4_XS weights; Q8_K activations):
//  - known answers for the reference dequantizers on handcrafted blocks,
//  - Q8_K quantization: GGML's rules and its round-trip error bound,
//  - reference vec_dot == dot of the reference dequantizations,
//  - every SIMD kernel vs the reference on every compiled + supported Highway
//    target, on random blocks (fixed seeds) and on real tensors of a test model.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <hwy/targets.h>

#include "common/shared_data.h"
#include "kernels/cpu/kquant_blocks.h"
#include "kernels/kquant_ops.h"
#include "kvtier/f16.h"
#include "kvtier/gguf.h"

namespace kvtier::kernels::kquant {
namespace {

// Pins Highway's dispatch to one target while alive.
class PinTarget {
 public:
  explicit PinTarget(int64_t target) { hwy::SetSupportedTargetsForTest(target); }
  ~PinTarget() { hwy::SetSupportedTargetsForTest(0); }
  PinTarget(const PinTarget&) = delete;
  PinTarget& operator=(const PinTarget&) = delete;
};

// Runs `body` once per compiled and supported target, with dispatch pinned to it.
void for_each_target(const std::function<void()>& body) {
  const std::vector<int64_t> targets = hwy::SupportedAndGeneratedTargets();
  ASSERT_FALSE(targets.empty());
  for (int64_t target : targets) {
    SCOPED_TRACE(std::string("Highway target ") + hwy::TargetName(target));
    PinTarget pin(target);
    body();
  }
}

// ---------------------------------------------------------------------------
// Encoders written from the bit layout (independent of the decoders under test).

// Packs 8 scales and 8 mins (6 bits each) into Q4_K/Q5_K's 12 bytes.
void pack_scales_mins(const int scale[8], const int min[8], uint8_t out[12]) {
  for (int j = 0; j < 4; ++j) {
    out[j] = static_cast<uint8_t>((scale[j] & 63) | ((scale[j + 4] >> 4) << 6));
    out[j + 4] = static_cast<uint8_t>((min[j] & 63) | ((min[j + 4] >> 4) << 6));
    out[j + 8] = static_cast<uint8_t>((scale[j + 4] & 15) | ((min[j + 4] & 15) << 4));
  }
}

// Stores 4-bit quant q of element e: chunk e/64, low nibble for e%64 < 32.
void put_low4(uint8_t* qs, int e, int q) {
  uint8_t& byte = qs[32 * (e / 64) + e % 32];
  byte = (e % 64 < 32) ? static_cast<uint8_t>((byte & 0xF0) | q) : static_cast<uint8_t>((byte & 0x0F) | (q << 4));
}

// Stores 6-bit quant q (0..63) of element e of a Q6_K block.
void put_q6(BlockQ6K& b, int e, int q) {
  const int half = e / 128, quarter = (e % 128) / 32, l = e % 32;
  uint8_t& low = b.ql[64 * half + 32 * (quarter & 1) + l];
  low = quarter < 2 ? static_cast<uint8_t>((low & 0xF0) | (q & 15)) : static_cast<uint8_t>((low & 0x0F) | ((q & 15) << 4));
  uint8_t& high = b.qh[32 * half + l];
  high = static_cast<uint8_t>((high & ~(3 << (2 * quarter))) | ((q >> 4) << (2 * quarter)));
}

// Stores 2-bit quant q of element e (Q2_K; the low bits of Q3_K): half e/128, run (e%128)/32 in bits
// 2*run..2*run+1 of qs[32*half + e%32].
void put_low2(uint8_t* qs, int e, int q) {
  const int shift = 2 * ((e % 128) / 32);
  uint8_t& byte = qs[32 * (e / 128) + e % 32];
  byte = static_cast<uint8_t>((byte & ~(3 << shift)) | (q << shift));
}

// Packs 16 Q3_K scales (6 bits) into 12 bytes: low nibbles in bytes 0..7 (scales 0..7 low, 8..15 high
// half of the byte), the two high bits of scale j in byte 8 + j%4 at bit 2*(j/4).
void pack_q3_scales(const int scale[16], uint8_t out[12]) {
  std::memset(out, 0, 12);
  for (int j = 0; j < 16; ++j) {
    out[j % 8] = static_cast<uint8_t>(out[j % 8] | ((scale[j] & 15) << (j < 8 ? 0 : 4)));
    out[8 + j % 4] = static_cast<uint8_t>(out[8 + j % 4] | ((scale[j] >> 4) << (2 * (j / 4))));
  }
}

constexpr int kScales[8] = {1, 2, 3, 63, 17, 33, 48, 5};  // sub-blocks 4..7 exercise the split high bits
constexpr int kMins[8] = {0, 1, 62, 7, 16, 40, 9, 63};
int q4_pattern(int e) { return (e * 7 + 3) % 16; }
int q5_pattern(int e) { return (e * 11 + 5) % 32; }
int q6_pattern(int e) { return (e * 5 + 3) % 64; }

// ---------------------------------------------------------------------------
// Known answers.

TEST(KQuantReference, Q4KKnownAnswer) {
  BlockQ4K b{};
  b.d = f32_to_f16(1.0f);
  b.dmin = f32_to_f16(0.5f);
  pack_scales_mins(kScales, kMins, b.scales);
  for (int e = 0; e < 256; ++e) put_low4(b.qs, e, q4_pattern(e));
  std::vector<float> y(256);
  dequantize_q4_K_reference(&b, y.data(), 256);
  // By hand: element 0: q=3, scale 1, min 0 -> 3. Element 33 (sub-block 1): q=(231+3)%16=10,
  // 2*10 - 0.5*1 = 19.5. Element 100 (sub-block 3): q=(703)%16=15, 63*15 - 0.5*7 = 941.5.
  // Element 200 (sub-block 6): q=1403%16=11, 48*11 - 0.5*9 = 523.5.
  EXPECT_EQ(y[0], 3.0f);
  EXPECT_EQ(y[33], 19.5f);
  EXPECT_EQ(y[100], 941.5f);
  EXPECT_EQ(y[200], 523.5f);
  for (int e = 0; e < 256; ++e) {
    EXPECT_EQ(y[e], 1.0f * kScales[e / 32] * q4_pattern(e) - 0.5f * kMins[e / 32]) << "element " << e;
  }
}

TEST(KQuantReference, Q5KKnownAnswer) {
  BlockQ5K b{};
  b.d = f32_to_f16(0.25f);
  b.dmin = f32_to_f16(2.0f);
  pack_scales_mins(kScales, kMins, b.scales);
  for (int e = 0; e < 256; ++e) {
    put_low4(b.qs, e, q5_pattern(e) & 15);
    if (q5_pattern(e) & 16) b.qh[e % 32] |= static_cast<uint8_t>(1 << (e / 32));
  }
  std::vector<float> y(256);
  dequantize_q5_K_reference(&b, y.data(), 256);
  // By hand: element 1: q=16 (high bit set), 0.25*1*16 - 2*0 = 4. Element 255 (sub-block 7):
  // q=(2805+5)%32=26, 0.25*5*26 - 2*63 = -93.5.
  EXPECT_EQ(y[1], 4.0f);
  EXPECT_EQ(y[255], -93.5f);
  for (int e = 0; e < 256; ++e) {
    EXPECT_EQ(y[e], 0.25f * kScales[e / 32] * q5_pattern(e) - 2.0f * kMins[e / 32]) << "element " << e;
  }
}

TEST(KQuantReference, Q6KKnownAnswer) {
  BlockQ6K b{};
  b.d = f32_to_f16(0.5f);
  const int8_t scales[16] = {1, -1, 2, -2, 127, -128, 3, 4, 5, 6, 7, 8, -9, 10, 11, 12};
  std::memcpy(b.scales, scales, 16);
  for (int e = 0; e < 256; ++e) put_q6(b, e, q6_pattern(e));
  std::vector<float> y(256);
  dequantize_q6_K_reference(&b, y.data(), 256);
  // By hand: element 0: q=3 -> 0.5*1*(3-32) = -14.5. Element 80 (scale -128): q=403%64=19,
  // 0.5*-128*(19-32) = 832. Element 200 (scale -9): q=1003%64=43, 0.5*-9*11 = -49.5.
  EXPECT_EQ(y[0], -14.5f);
  EXPECT_EQ(y[80], 832.0f);
  EXPECT_EQ(y[200], -49.5f);
  for (int e = 0; e < 256; ++e) {
    EXPECT_EQ(y[e], 0.5f * scales[e / 16] * (q6_pattern(e) - 32)) << "element " << e;
  }
}

TEST(KQuantReference, Q2KKnownAnswer) {
  BlockQ2K b{};
  b.d = f32_to_f16(0.5f);
  b.dmin = f32_to_f16(0.25f);
  auto scale = [](int j) { return (3 * j + 1) % 16; };
  auto min = [](int j) { return (5 * j + 2) % 16; };
  auto q2 = [](int e) { return (3 * e + 1) % 4; };
  for (int j = 0; j < 16; ++j) b.scales[j] = static_cast<uint8_t>(scale(j) | (min(j) << 4));
  for (int e = 0; e < 256; ++e) put_low2(b.qs, e, q2(e));
  std::vector<float> y(256);
  dequantize_q2_K_reference(&b, y.data(), 256);
  // By hand: element 0: scale 1, min 2, q 1 -> 0.5 - 0.5 = 0. Element 100 (sub-block 6): scale 3, min 0,
  // q = 301 % 4 = 1 -> 1.5. Element 255 (sub-block 15): scale 14, min 13, q = 766 % 4 = 2 -> 14 - 3.25.
  EXPECT_EQ(y[0], 0.0f);
  EXPECT_EQ(y[100], 1.5f);
  EXPECT_EQ(y[255], 10.75f);
  for (int e = 0; e < 256; ++e) {
    EXPECT_EQ(y[e], 0.5f * scale(e / 16) * q2(e) - 0.25f * min(e / 16)) << "element " << e;
  }
}

TEST(KQuantReference, Q3KKnownAnswer) {
  BlockQ3K b{};
  b.d = f32_to_f16(0.25f);
  const int scales[16] = {0, 1, 31, 32, 33, 63, 17, 48, 5, 40, 62, 15, 16, 47, 8, 55};
  pack_q3_scales(scales, b.scales);
  auto q3 = [](int e) { return (5 * e + 2) % 8; };  // 0..7, the stored value before the -4 offset
  for (int e = 0; e < 256; ++e) {
    put_low2(b.qs, e, q3(e) & 3);
    if (q3(e) & 4) b.hmask[e % 32] = static_cast<uint8_t>(b.hmask[e % 32] | (1 << (e / 32)));
  }
  std::vector<float> y(256);
  dequantize_q3_K_reference(&b, y.data(), 256);
  // By hand: element 0: scale 0 - 32, q 2 - 4 -> 0.25 * -32 * -2 = 16. Element 40 (sub-block 2):
  // scale 31 - 32, q = 202 % 8 - 4 = -2 -> 0.5. Element 255: scale 55 - 32, q = 1277 % 8 - 4 = 1 -> 5.75.
  EXPECT_EQ(y[0], 16.0f);
  EXPECT_EQ(y[40], 0.5f);
  EXPECT_EQ(y[255], 5.75f);
  for (int e = 0; e < 256; ++e) {
    EXPECT_EQ(y[e], 0.25f * (scales[e / 16] - 32) * (q3(e) - 4)) << "element " << e;
  }
}

TEST(KQuantReference, IQ4XSKnownAnswer) {
  // GGML's kvalues_iq4nl, written out here rather than taken from the code under test.
  const int grid[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};
  BlockIQ4XS b{};
  b.d = f32_to_f16(0.125f);
  const int scales[8] = {0, 63, 32, 31, 1, 48, 16, 40};
  for (int j = 0; j < 8; ++j) {
    b.scales_l[j / 2] = static_cast<uint8_t>(b.scales_l[j / 2] | ((scales[j] & 15) << (4 * (j % 2))));
    b.scales_h = static_cast<uint16_t>(b.scales_h | ((scales[j] >> 4) << (2 * j)));
  }
  auto code = [](int e) { return (7 * e + 3) % 16; };
  for (int e = 0; e < 256; ++e) {  // sub-block e/32: byte 16*(e/32) + e%16, high nibble for e%32 >= 16
    uint8_t& byte = b.qs[16 * (e / 32) + e % 16];
    byte = static_cast<uint8_t>(byte | (code(e) << (e % 32 < 16 ? 0 : 4)));
  }
  std::vector<float> y(256);
  dequantize_iq4_xs_reference(&b, y.data(), 256);
  // By hand: element 0: scale 0 - 32, code 3 (-65) -> 0.125 * -32 * -65 = 260. Element 33: scale 63 - 32,
  // code 10 (25) -> 96.875. Element 70: scale 32 - 32 -> 0. Element 255: scale 8, code 12 (53) -> 53.
  EXPECT_EQ(y[0], 260.0f);
  EXPECT_EQ(y[33], 96.875f);
  EXPECT_EQ(y[70], 0.0f);
  EXPECT_EQ(y[255], 53.0f);
  for (int e = 0; e < 256; ++e) {
    EXPECT_EQ(y[e], 0.125f * (scales[e / 32] - 32) * grid[code(e)]) << "element " << e;
  }
}

// ---------------------------------------------------------------------------
// Q8_K quantization.

std::vector<float> random_activations(uint32_t seed, int64_t n) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(n));
  for (float& v : x) v = dist(rng);
  // An outlier channel, as real activations have.
  if (n > 7) x[7] *= 20.0f;
  return x;
}

TEST(KQuantReference, Q8KRoundTripWithinHalfAStep) {
  const int64_t n = 1024;
  std::vector<float> x = random_activations(11, n);
  x[300] = -50.0f;  // block 1's largest magnitude is negative: d must come out positive
  std::vector<BlockQ8K> q(n / kSuperBlock);
  quantize_q8_K_reference(x.data(), q.data(), n);
  for (int64_t i = 0; i < n / kSuperBlock; ++i) {
    const BlockQ8K& b = q[i];
    float max_abs = 0;
    for (int j = 0; j < 256; ++j) max_abs = std::max(max_abs, std::fabs(x[i * 256 + j]));
    EXPECT_NEAR(std::fabs(b.d), max_abs / 127.0f, max_abs * 1e-6f);
    for (int j = 0; j < 256; ++j) {
      const float v = x[i * 256 + j];
      // |x - d q| <= |d| / 2 (plus float rounding of the scale)
      EXPECT_LE(std::fabs(v - b.d * b.qs[j]), std::fabs(b.d) * 0.5f + max_abs * 1e-6f) << i << "," << j;
      EXPECT_GE(b.qs[j], -127);
    }
    // The largest magnitude maps to -127 exactly (GGML's sign convention).
    const auto largest = std::max_element(x.begin() + i * 256, x.begin() + (i + 1) * 256,
                                          [](float a, float c) { return std::fabs(a) < std::fabs(c); });
    EXPECT_EQ(b.qs[largest - (x.begin() + i * 256)], -127);
    for (int g = 0; g < 16; ++g) {
      int sum = 0;
      for (int l = 0; l < 16; ++l) sum += b.qs[16 * g + l];
      EXPECT_EQ(b.bsums[g], sum);
    }
  }
  EXPECT_GT(q[1].d, 0.0f);  // -127 / max with max = -50 -> iscale > 0
}

TEST(KQuantReference, Q8KRoundsHalfToEvenAndHandlesZeros) {
  std::vector<float> x(512, 0.0f);
  // Block 0: max 127 -> iscale = -1, so q = -round_half_even(x).
  x[0] = 127.0f;
  x[1] = 2.5f;   // -> -2 (half to even)
  x[2] = 3.5f;   // -> -4
  x[3] = -0.5f;  // -> 0
  // Block 1 all zeros.
  std::vector<BlockQ8K> q(2);
  std::memset(q.data(), 0x5A, sizeof(BlockQ8K) * 2);
  quantize_q8_K_reference(x.data(), q.data(), 512);
  EXPECT_EQ(q[0].qs[0], -127);
  EXPECT_EQ(q[0].qs[1], -2);
  EXPECT_EQ(q[0].qs[2], -4);
  EXPECT_EQ(q[0].qs[3], 0);
  EXPECT_EQ(q[0].d, -1.0f);
  EXPECT_EQ(q[0].bsums[0], -127 - 2 - 4);
  EXPECT_EQ(q[1].d, 0.0f);
  for (int j = 0; j < 256; ++j) EXPECT_EQ(q[1].qs[j], 0);
  for (int g = 0; g < 16; ++g) EXPECT_EQ(q[1].bsums[g], 0);
}

// ---------------------------------------------------------------------------
// Random blocks and the formats' function tables.

struct Format {
  const char* name;
  size_t block_bytes;
  void (*dequantize_reference)(const void*, float*, int64_t);
  void (*dequantize)(const void*, float*, int64_t);  // the reference where there is no SIMD version
  float (*dot_reference)(int64_t, const void*, const void*);
  float (*dot)(int64_t, const void*, const void*);
  void (*tile)(int64_t, const uint8_t*, size_t, int64_t, const uint8_t*, size_t, int64_t, float*, size_t);
  size_t d_offset;  // where the f16 d lives in a block (Q6_K: at the end)
  bool has_dmin;
};

const Format kFormats[] = {
    {"Q4_K", sizeof(BlockQ4K), dequantize_q4_K_reference, dequantize_q4_K, vec_dot_q4_K_q8_K_reference,
     vec_dot_q4_K_q8_K, tile_q4_K_q8_K, offsetof(BlockQ4K, d), true},
    {"Q5_K", sizeof(BlockQ5K), dequantize_q5_K_reference, dequantize_q5_K, vec_dot_q5_K_q8_K_reference,
     vec_dot_q5_K_q8_K, tile_q5_K_q8_K, offsetof(BlockQ5K, d), true},
    {"Q6_K", sizeof(BlockQ6K), dequantize_q6_K_reference, dequantize_q6_K, vec_dot_q6_K_q8_K_reference,
     vec_dot_q6_K_q8_K, tile_q6_K_q8_K, offsetof(BlockQ6K, d), false},
    {"Q2_K", sizeof(BlockQ2K), dequantize_q2_K_reference, dequantize_q2_K_reference, vec_dot_q2_K_q8_K_reference,
     vec_dot_q2_K_q8_K, tile_q2_K_q8_K, offsetof(BlockQ2K, d), true},
    {"Q3_K", sizeof(BlockQ3K), dequantize_q3_K_reference, dequantize_q3_K_reference, vec_dot_q3_K_q8_K_reference,
     vec_dot_q3_K_q8_K, tile_q3_K_q8_K, offsetof(BlockQ3K, d), false},
    {"IQ4_XS", sizeof(BlockIQ4XS), dequantize_iq4_xs_reference, dequantize_iq4_xs_reference, vec_dot_iq4_xs_q8_K_reference,
     vec_dot_iq4_xs_q8_K, tile_iq4_xs_q8_K, offsetof(BlockIQ4XS, d), false},
};

// Random blocks: every code byte uniform (all bit patterns occur), d/dmin finite halves.
// `extreme` makes every code byte 0xFF and d positive (largest quants and scales).
std::vector<uint8_t> random_blocks(const Format& f, int64_t n, uint32_t seed, bool extreme = false) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> byte(0, 255);
  std::uniform_real_distribution<float> scale(-0.02f, 0.02f);
  std::vector<uint8_t> data(f.block_bytes * static_cast<size_t>(n / kSuperBlock));  // [blocks][block_bytes]
  for (uint8_t& b : data) b = extreme ? 0xFF : static_cast<uint8_t>(byte(rng));
  for (size_t off = 0; off < data.size(); off += f.block_bytes) {
    const uint16_t d = f32_to_f16(extreme ? 0.02f : scale(rng));
    std::memcpy(data.data() + off + f.d_offset, &d, 2);
    if (f.has_dmin) {
      const uint16_t dmin = f32_to_f16(extreme ? 0.01f : scale(rng));
      std::memcpy(data.data() + off + f.d_offset + 2, &dmin, 2);
    }
  }
  return data;
}

std::vector<float> dequantize_q8_K(const std::vector<BlockQ8K>& q) {
  std::vector<float> x(q.size() * 256);
  for (size_t i = 0; i < q.size(); ++i)
    for (int j = 0; j < 256; ++j) x[i * 256 + j] = q[i].d * q[i].qs[j];
  return x;
}

// Checks one weight row against a quantized activation row: the reference dot
// against the double dot of the reference dequantizations, and the dispatched
// dot against the reference on every target. Tolerances are relative to
// sum |w a| (the scale of float rounding in any summation order).
void check_dot(const Format& f, const uint8_t* w, const std::vector<BlockQ8K>& act, int64_t n) {
  std::vector<float> wf(static_cast<size_t>(n));
  f.dequantize_reference(w, wf.data(), n);
  const std::vector<float> af = dequantize_q8_K(act);
  double exact = 0, magnitude = 0, a_abs = 0, w_max = 0;
  for (int64_t i = 0; i < n; ++i) {
    exact += static_cast<double>(wf[i]) * af[i];
    magnitude += std::fabs(static_cast<double>(wf[i]) * af[i]);
    a_abs += std::fabs(af[i]);
    w_max = std::max(w_max, std::fabs(static_cast<double>(wf[i])));
  }
  // The reference's float products d * sum(scale * q * a) and dmin * sum(min * a) may
  // cancel; their size is bounded by sum |a| * max |w| (times 2 for the min term).
  const double rounding_scale = magnitude + 2 * a_abs * w_max;
  const float reference = f.dot_reference(n, w, act.data());
  EXPECT_NEAR(reference, exact, 1e-5 * rounding_scale) << f.name << " reference vs dequantized dot, n=" << n;
  for_each_target([&] {
    EXPECT_NEAR(f.dot(n, w, act.data()), reference, 1e-5 * rounding_scale) << f.name << " n=" << n;
  });
}

void check_dequantize(const Format& f, const uint8_t* w, int64_t n) {
  std::vector<float> expected(static_cast<size_t>(n));
  f.dequantize_reference(w, expected.data(), n);
  for_each_target([&] {
    std::vector<float> got(static_cast<size_t>(n), -12345.0f);
    f.dequantize(w, got.data(), n);
    for (int64_t i = 0; i < n; ++i) {
      // Equal up to a fused multiply-add (one rounding of a product).
      ASSERT_NEAR(got[i], expected[i], 1e-6f * (std::fabs(expected[i]) + 1e-3f)) << f.name << " element " << i;
    }
  });
}

constexpr int64_t kSizes[] = {256, 512, 1536, 2816, 4096};

TEST(KQuantSimd, QuantizeQ8KBitExactOnEveryTarget) {
  for (int64_t n : kSizes) {
    std::vector<float> x = random_activations(static_cast<uint32_t>(n), n);
    if (n >= 512) std::fill(x.begin() + 256, x.begin() + 512, 0.0f);  // an all-zero block
    if (n >= 1536) {
      x[1024] = 3.0f;  // a tie in magnitude: the first one decides the sign
      x[1030] = -3.0f;
      for (int j = 1031; j < 1280; ++j) x[j] = std::clamp(x[j], -2.0f, 2.0f);
      for (int j = 1024 + 1; j < 1030; ++j) x[j] = 0.5f;
    }
    std::vector<BlockQ8K> expected(n / kSuperBlock);
    quantize_q8_K_reference(x.data(), expected.data(), n);
    for_each_target([&] {
      std::vector<BlockQ8K> got(n / kSuperBlock);
      std::memset(got.data(), 0x77, got.size() * sizeof(BlockQ8K));
      quantize_q8_K(x.data(), got.data(), n);
      ASSERT_EQ(std::memcmp(got.data(), expected.data(), got.size() * sizeof(BlockQ8K)), 0) << "n=" << n;
    });
  }
}

TEST(KQuantSimd, DequantizeMatchesReferenceOnEveryTarget) {
  for (const Format& f : kFormats) {
    for (int64_t n : kSizes) {
      const std::vector<uint8_t> w = random_blocks(f, n, static_cast<uint32_t>(n) + 1);
      check_dequantize(f, w.data(), n);
    }
    const std::vector<uint8_t> extreme = random_blocks(f, 512, 0, /*extreme=*/true);
    check_dequantize(f, extreme.data(), 512);
  }
}

TEST(KQuantSimd, VecDotMatchesReferenceOnEveryTarget) {
  for (const Format& f : kFormats) {
    for (int64_t n : kSizes) {
      const std::vector<uint8_t> w = random_blocks(f, n, static_cast<uint32_t>(n) + 2);
      const std::vector<float> x = random_activations(static_cast<uint32_t>(n) + 3, n);
      std::vector<BlockQ8K> act(n / kSuperBlock);
      quantize_q8_K_reference(x.data(), act.data(), n);
      check_dot(f, w.data(), act, n);
    }
  }
}

// A tile (rows x tokens) gives exactly the row dots on every target, for token
// counts around the kernels' groups of four and eight, with padded strides.
TEST(KQuantSimd, TileEqualsRowDotsOnEveryTarget) {
  const int64_t n = 1024, rows = 3;
  for (const Format& f : kFormats) {
    const size_t row_bytes = f.block_bytes * n / kSuperBlock;
    const size_t w_stride = row_bytes + 16;  // rows need not be packed
    const std::vector<uint8_t> packed = random_blocks(f, n * rows, 77);
    std::vector<uint8_t> w(w_stride * rows);  // [rows][w_stride]
    for (int64_t r = 0; r < rows; ++r) std::memcpy(&w[r * w_stride], &packed[r * row_bytes], row_bytes);
    for (int64_t tokens : {1, 3, 4, 5, 8, 9, 17}) {
      const size_t a_stride = sizeof(BlockQ8K) * n / kSuperBlock + 8;
      std::vector<uint8_t> act(a_stride * tokens);  // [tokens][a_stride]
      for (int64_t t = 0; t < tokens; ++t) {
        const std::vector<float> x = random_activations(static_cast<uint32_t>(100 + t), n);
        quantize_q8_K_reference(x.data(), &act[t * a_stride], n);
      }
      const size_t y_stride = rows + 2;
      for_each_target([&] {
        std::vector<float> y(y_stride * tokens, -1.0f);  // [tokens][y_stride]
        f.tile(n, w.data(), w_stride, rows, act.data(), a_stride, tokens, y.data(), y_stride);
        for (int64_t t = 0; t < tokens; ++t) {
          for (int64_t r = 0; r < rows; ++r) {
            const float row_dot = f.dot(n, &w[r * w_stride], &act[t * a_stride]);
            ASSERT_EQ(y[t * y_stride + r], row_dot) << f.name << " tokens=" << tokens << " t=" << t << " r=" << r;
          }
          EXPECT_EQ(y[t * y_stride + rows], -1.0f) << "wrote past the tile";
        }
      });
    }
  }
}

// The largest quants, scales and activations: no i16 saturation in pairwise products.
TEST(KQuantSimd, VecDotExtremeValuesOnEveryTarget) {
  for (const Format& f : kFormats) {
    const int64_t n = 512;
    const std::vector<uint8_t> w = random_blocks(f, n, 0, /*extreme=*/true);
    for (int8_t value : {int8_t{127}, int8_t{-127}, int8_t{-128}}) {
      // Q8_K quantization never makes -128 (|q| <= 127 by construction); IQ4_XS's x86 kernel relies on it,
      // as GGML's does (the sign of a weight moves onto the activation).
      if (value == -128 && std::string(f.name) == "IQ4_XS") continue;
      std::vector<BlockQ8K> act(n / kSuperBlock);
      for (BlockQ8K& b : act) {
        b.d = 0.01f;
        std::fill(std::begin(b.qs), std::end(b.qs), value);
        std::fill(std::begin(b.bsums), std::end(b.bsums), static_cast<int16_t>(16 * value));
      }
      SCOPED_TRACE(std::string("activation quant ") + std::to_string(value));
      check_dot(f, w.data(), act, n);
    }
  }
}

// ---------------------------------------------------------------------------
// Real tensors.

TEST(KQuantSimd, RealModelTensorsMatchReferenceOnEveryTarget) {
  const std::string model = "models/tiny-llama-31m.Q4_K_M.gguf";
  KVTIER_REQUIRE_SHARED(model);
  auto file = gguf::File::open(kvtier::testing::shared_path(model).string());
  ASSERT_TRUE(file.ok()) << file.error();
  int checked_q4 = 0, checked_q6 = 0, checked_q5 = 0;
  for (const gguf::TensorInfo& t : (*file)->tensors()) {
    const Format* f = nullptr;
    if (t.type == GgmlType::Q4_K && checked_q4 < 3) f = &kFormats[0], ++checked_q4;
    if (t.type == GgmlType::Q5_K && checked_q5 < 3) f = &kFormats[1], ++checked_q5;
    if (t.type == GgmlType::Q6_K && checked_q6 < 3) f = &kFormats[2], ++checked_q6;
    if (f == nullptr) continue;
    SCOPED_TRACE(t.name);
    const int64_t cols = t.ne[0];
    const size_t row_bytes = static_cast<size_t>(cols / kSuperBlock) * f->block_bytes;
    ASSERT_EQ(cols % kSuperBlock, 0);
    const std::vector<float> x = random_activations(static_cast<uint32_t>(cols), cols);
    std::vector<BlockQ8K> act(cols / kSuperBlock);
    quantize_q8_K_reference(x.data(), act.data(), cols);
    for (int64_t row : {int64_t{0}, t.ne[1] / 2, t.ne[1] - 1}) {
      const uint8_t* w = t.data + row * row_bytes;
      check_dequantize(*f, w, cols);
      check_dot(*f, w, act, cols);
    }
  }
  // The Q4_K_M mix has both (Q5_K only appears in some mixes).
  EXPECT_GT(checked_q4, 0);
  EXPECT_GT(checked_q6, 0);
}

// Q2_K, Q3_K and IQ4_XS tensors of the low-bit test files (tests/data/quant/, made by llama.cpp's
// llama-quantize): every SIMD dot against the reference on every target.
TEST(KQuantSimd, LowBitTestFilesMatchReferenceOnEveryTarget) {
  const std::filesystem::path dir = std::filesystem::path(KVTIER_SOURCE_DIR) / "tests" / "data" / "quant";
  int checked[3] = {};
  for (const char* name : {"tiny-llama-6m.Q2_K.gguf", "tiny-llama-6m.Q3_K_M.gguf", "tiny-llama-6m.IQ4_XS.gguf"}) {
    auto file = gguf::File::open((dir / name).string());
    ASSERT_TRUE(file.ok()) << name << ": " << file.error();
    for (const gguf::TensorInfo& t : (*file)->tensors()) {
      int k = -1;
      if (t.type == GgmlType::Q2_K) k = 0;
      if (t.type == GgmlType::Q3_K) k = 1;
      if (t.type == GgmlType::IQ4_XS) k = 2;
      if (k < 0 || checked[k] >= 3) continue;
      ++checked[k];
      const Format& f = kFormats[3 + k];  // Q2_K, Q3_K, IQ4_XS
      SCOPED_TRACE(std::string(name) + " " + t.name);
      const int64_t cols = t.ne[0];
      ASSERT_EQ(cols % kSuperBlock, 0);
      const size_t row_bytes = static_cast<size_t>(cols / kSuperBlock) * f.block_bytes;
      const std::vector<float> x = random_activations(static_cast<uint32_t>(cols) + 5, cols);
      std::vector<BlockQ8K> act(cols / kSuperBlock);
      quantize_q8_K_reference(x.data(), act.data(), cols);
      for (int64_t row : {int64_t{0}, t.ne[1] / 2, t.ne[1] - 1}) check_dot(f, t.data + row * row_bytes, act, cols);
    }
  }
  EXPECT_GT(checked[0], 0);
  EXPECT_GT(checked[1], 0);
  EXPECT_GT(checked[2], 0);
}

}  // namespace
}  // namespace kvtier::kernels::kquant
