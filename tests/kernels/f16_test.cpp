// kvtier/f16.h against slow, obviously-correct references: every half and
// bfloat16 value, and floats covering every rounding boundary.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "kvtier/f16.h"

namespace kvtier {
namespace {

float bits_to_float(uint32_t b) {
  float f;
  std::memcpy(&f, &b, 4);
  return f;
}
uint32_t float_to_bits(float f) {
  uint32_t b;
  std::memcpy(&b, &f, 4);
  return b;
}

// IEEE half from its fields, with ldexp.
double slow_half_value(uint16_t h) {
  const int sign = h >> 15;
  const int exp = (h >> 10) & 0x1F;
  const int mant = h & 0x3FF;
  double v;
  if (exp == 0) {
    v = std::ldexp(static_cast<double>(mant), -24);
  } else if (exp == 31) {
    v = mant == 0 ? INFINITY : NAN;
  } else {
    v = std::ldexp(static_cast<double>(mant + 1024), exp - 25);
  }
  return sign ? -v : v;
}

TEST(F16, EveryHalfConvertsToItsValue) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const double expected = slow_half_value(static_cast<uint16_t>(h));
    const float got = f16_to_f32(static_cast<uint16_t>(h));
    if (std::isnan(expected)) {
      ASSERT_TRUE(std::isnan(got)) << std::hex << h;
    } else {
      ASSERT_EQ(static_cast<float>(expected), got) << std::hex << h;
      ASSERT_EQ(std::signbit(expected), std::signbit(got)) << std::hex << h;
    }
  }
}

TEST(F16, EveryBf16ConvertsToItsValue) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const float got = bf16_to_f32(static_cast<uint16_t>(h));
    const uint32_t expected_bits = h << 16;
    ASSERT_EQ(float_to_bits(got), expected_bits) << std::hex << h;
  }
}

// Nearest half to x, ties to even, by search over all finite halves.
uint16_t slow_f32_to_f16(float x) {
  if (std::isnan(x)) return 0x7E00;
  const uint16_t sign = std::signbit(x) ? 0x8000 : 0;
  const double a = std::fabs(static_cast<double>(x));
  // Beyond max half + half an ulp (65504 + 16) the result is infinity.
  if (a >= 65520.0) return sign | 0x7C00;
  uint16_t lo = 0, hi = 0x7BFF;  // largest half <= a, by binary search over positive halves
  while (lo < hi) {
    const uint16_t mid = static_cast<uint16_t>((lo + hi + 1) / 2);
    if (slow_half_value(mid) <= a) lo = mid; else hi = mid - 1;
  }
  const double below = slow_half_value(lo);
  if (below == a || lo == 0x7BFF) return sign | lo;
  const double above = slow_half_value(static_cast<uint16_t>(lo + 1));
  const double d_below = a - below, d_above = above - a;
  uint16_t pick;
  if (d_below < d_above) pick = lo;
  else if (d_above < d_below) pick = static_cast<uint16_t>(lo + 1);
  else pick = (lo & 1) ? static_cast<uint16_t>(lo + 1) : lo;
  return sign | pick;
}

void check_f16(float x) {
  const uint16_t expected = slow_f32_to_f16(x);
  const uint16_t got = f32_to_f16(x);
  if (std::isnan(x)) {
    ASSERT_TRUE(std::isnan(f16_to_f32(got))) << x;
    return;
  }
  ASSERT_EQ(expected, got) << "x=" << x << " bits=" << std::hex << float_to_bits(x);
}

TEST(F16, FloatToHalfRoundsToNearestEven) {
  // Every rounding boundary: each half, the midpoints to its neighbours, and
  // one float ulp either side of them, both signs.
  for (uint32_t h = 0; h < 0x7C00; ++h) {
    const double v = slow_half_value(static_cast<uint16_t>(h));
    const double next = h + 1 < 0x7C00 ? slow_half_value(static_cast<uint16_t>(h + 1)) : 65536.0;
    for (double point : {v, (v + next) / 2}) {
      const float f = static_cast<float>(point);  // exact: halves and their midpoints fit a float
      for (float g : {f, std::nextafter(f, 0.0f), std::nextafter(f, INFINITY)}) {
        check_f16(g);
        check_f16(-g);
      }
    }
  }
  // A sparse sweep of all float bit patterns (includes NaN, infinity, huge and tiny).
  for (uint64_t b = 0; b <= 0xFFFFFFFFull; b += 9973) check_f16(bits_to_float(static_cast<uint32_t>(b)));
  check_f16(INFINITY);
  check_f16(-INFINITY);
  check_f16(NAN);
}

uint16_t slow_f32_to_bf16(float x) {
  if (std::isnan(x)) return 0x7FC0;
  const uint32_t bits = float_to_bits(x);
  const uint32_t lower = bits & 0xFFFF;
  uint32_t upper = bits >> 16;
  if (lower > 0x8000 || (lower == 0x8000 && (upper & 1))) ++upper;  // RNE on the magnitude bits
  return static_cast<uint16_t>(upper);
}

TEST(F16, FloatToBf16RoundsToNearestEven) {
  for (uint64_t b = 0; b <= 0xFFFFFFFFull; b += 4099) {
    const float x = bits_to_float(static_cast<uint32_t>(b));
    const uint16_t got = f32_to_bf16(x);
    if (std::isnan(x)) {
      ASSERT_TRUE(std::isnan(bf16_to_f32(got)));
      ASSERT_EQ(got >> 15, static_cast<uint16_t>(b >> 31));  // sign kept
      continue;
    }
    ASSERT_EQ(slow_f32_to_bf16(x), got) << std::hex << b;
  }
  // Ties: the low 16 bits exactly 0x8000 round to the even upper half.
  EXPECT_EQ(f32_to_bf16(bits_to_float(0x3F808000u)), 0x3F80);
  EXPECT_EQ(f32_to_bf16(bits_to_float(0x3F818000u)), 0x3F82);
  EXPECT_EQ(f32_to_bf16(bits_to_float(0x7F7FFFFFu)), 0x7F80);  // max float rounds to infinity
}

}  // namespace
}  // namespace kvtier
