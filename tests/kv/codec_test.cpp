// Page codecs: bit packing, round-trip error bounds, exact bits accounting, the Hadamard rotation.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "kv/codec.h"
#include "kvtier/f16.h"

namespace kvtier::kv {
namespace {

PageFormat make_format(Precision p, KeyMode m, int tokens, int heads, int head_dim, int group = 0) {
  PageFormat f;
  std::string error;
  EXPECT_TRUE(make_page_format(p, m, tokens, heads, head_dim, group, &f, &error)) << error;
  return f;
}

// [n, heads, head_dim] values with a few outlier channels, as real keys have.
std::vector<float> random_rows(int n, int heads, int head_dim, uint32_t seed, float outlier = 8.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(n) * heads * head_dim);
  for (size_t i = 0; i < x.size(); ++i) {
    const int d = static_cast<int>(i % head_dim);
    x[i] = normal(rng) + (d % 13 == 3 ? outlier : 0.0f);
  }
  return x;
}

TEST(PackCodes, RoundTripsEveryWidth) {
  std::mt19937 rng(1);
  for (int bits : {2, 3, 4, 8}) {
    for (int n : {8, 24, 64, 128}) {
      std::vector<uint8_t> codes(n), packed(packed_row_bytes(n, bits)), back(n);
      for (auto& c : codes) c = static_cast<uint8_t>(rng() & ((1u << bits) - 1));
      pack_code_row(codes.data(), n, bits, packed.data());
      unpack_code_row(packed.data(), n, bits, back.data());
      EXPECT_EQ(codes, back) << "bits " << bits << " n " << n;
    }
  }
}

TEST(PackCodes, StridedLayoutIsAsDocumented) {
  // 4-bit: byte i = code[i] | code[i + n/2] << 4.
  std::vector<uint8_t> codes(16);
  for (int i = 0; i < 16; ++i) codes[i] = static_cast<uint8_t>(i);
  std::vector<uint8_t> packed(8);
  pack_code_row(codes.data(), 16, 4, packed.data());
  for (int i = 0; i < 8; ++i) EXPECT_EQ(packed[i], i | (i + 8) << 4);
  // 3-bit: a 2-bit plane (n/4 bytes) then a 1-bit plane (n/8 bytes).
  std::vector<uint8_t> c3(8, 0), p3(3);
  c3[5] = 7;  // low2 = 3 in plane byte 5 % 2 = 1 at j = 2 (shift 4); high bit in byte 0 bit 5
  pack_code_row(c3.data(), 8, 3, p3.data());
  EXPECT_EQ(p3[0], 0);
  EXPECT_EQ(p3[1], 3 << 4);
  EXPECT_EQ(p3[2], 1 << 5);
}

TEST(PageFormatTest, RejectsUnsupportedGeometry) {
  PageFormat f;
  std::string error;
  EXPECT_FALSE(make_page_format(Precision::Q4, KeyMode::PerChannel, 64, 2, 12, 0, &f, &error));
  EXPECT_NE(error.find("head_dim"), std::string::npos) << error;
  EXPECT_FALSE(make_page_format(Precision::Q4, KeyMode::PerChannel, 64, 0, 64, 0, &f, &error));
  EXPECT_NE(error.find("n_kv_heads"), std::string::npos) << error;
  EXPECT_FALSE(make_page_format(Precision::Q4, KeyMode::PerChannel, 64, 2, 64, 12, &f, &error));
  EXPECT_NE(error.find("group"), std::string::npos) << error;
}

TEST(PageFormatTest, BitsAccountingIsExact) {
  // tiny-llama-31m geometry: P = 64, 2 KV heads, head_dim 64, value groups of 64 (the default) or 32.
  struct Case {
    Precision p;
    KeyMode m;
    int group;
    double key_bits, value_bits;
  };
  const Case cases[] = {
      {Precision::F16, KeyMode::PerChannel, 0, 16.0, 16.0},
      {Precision::Q8, KeyMode::PerChannel, 0, 8.5, 8.5},  // codes + 32 bits per 64-token channel / 64-element row
      {Precision::Q4, KeyMode::PerChannel, 0, 4.5, 4.5},
      {Precision::Q3, KeyMode::PerChannel, 0, 3.5, 3.5},
      {Precision::Q2, KeyMode::PerChannel, 0, 2.5, 2.5},
      {Precision::Q4, KeyMode::PerChannel, 32, 4.5, 5.0},  // values: codes + 32 bits per 32-element group
      {Precision::Q2, KeyMode::PerChannel, 32, 2.5, 3.0},
      {Precision::Q4, KeyMode::RotatedPerToken, 0, 4.5, 4.5},
      {Precision::Q2, KeyMode::RotatedPerToken, 32, 3.0, 3.0},
      {Precision::K4V2, KeyMode::PerChannel, 0, 4.5, 2.5},  // split: each section at its own width
      {Precision::K3V2, KeyMode::PerChannel, 0, 3.5, 2.5},
      {Precision::K2V8, KeyMode::PerChannel, 0, 2.5, 8.5},
      {Precision::K8V3, KeyMode::RotatedPerToken, 32, 9.0, 4.0},
  };
  for (const Case& c : cases) {
    const PageFormat f = make_format(c.p, c.m, 64, 2, 64, c.group);
    EXPECT_DOUBLE_EQ(f.key_bits_per_element(), c.key_bits) << f.describe();
    EXPECT_DOUBLE_EQ(f.value_bits_per_element(), c.value_bits) << f.describe();
    EXPECT_DOUBLE_EQ(f.bits_per_element(), (c.key_bits + c.value_bits) / 2) << f.describe();
    EXPECT_EQ(f.page_bytes * 8, static_cast<size_t>((c.key_bits + c.value_bits) * 64 * 2 * 64)) << f.describe();
  }
  // Padding counts: head_dim 24 at q4 per-channel: params 96 B, codes at 96, 64 rows x 12 B = 768 -> 864 B.
  const PageFormat odd = make_format(Precision::Q4, KeyMode::PerChannel, 64, 3, 24);
  EXPECT_EQ(odd.key_section_bytes, 864u);
  EXPECT_EQ(odd.value_section_bytes, 256u + 768u);  // 64 x 1 group x 4 B params, then codes
  EXPECT_EQ(odd.page_bytes, 3u * (864u + 1024u));
}

// The largest error the codec may make on element (t, h, d): for q8, half a quantization step of the
// group that holds it (range / levels, widened by f16 rounding of scale and min); f16 rounding for f16.
// At 2-4 bits the encoder may clip outliers to the end codes (fit_group_params), so the bound is half the
// group's range plus half a step: loose on purpose; GroupErrorNeverAboveCovering checks the fit itself.
float error_bound(const PageFormat& f, const std::vector<float>& x, int n_tokens, bool key, int t, int h, int d) {
  const size_t row = static_cast<size_t>(f.n_kv_heads) * f.head_dim;
  auto at = [&](int tt, int dd) { return x[tt * row + static_cast<size_t>(h) * f.head_dim + dd]; };
  const float value = at(t, d);
  const int bits = key ? f.key_bits : f.value_bits;
  if (bits == 16) return std::abs(value) * 0x1p-11f + 1e-7f;  // an f16 section (f16, or k16vY keys)
  float lo = INFINITY, hi = -INFINITY;
  if (key && f.key_mode == KeyMode::PerChannel) {
    for (int tt = 0; tt < n_tokens; ++tt) lo = std::min(lo, at(tt, d)), hi = std::max(hi, at(tt, d));
  } else {
    const int g0 = d / f.group * f.group;
    for (int dd = g0; dd < g0 + f.group; ++dd) lo = std::min(lo, at(t, dd)), hi = std::max(hi, at(t, dd));
  }
  const float levels = static_cast<float>((1 << bits) - 1);
  const float slack = (std::abs(lo) + std::abs(hi)) * 0x1p-10f;
  const float half_step = 0.5f * ((hi - lo) + slack) / levels * (1.0f + 0x1p-9f) + slack + 1e-6f;
  return bits >= 8 ? half_step : 0.5f * (hi - lo) + half_step;
}

TEST(PageCodec, RoundTripWithinBoundEveryCodecAndGeometry) {
  struct Geometry {
    int heads, head_dim, group;
  };
  const Geometry geometries[] = {{2, 64, 0}, {1, 64, 64}, {3, 40, 0}, {5, 24, 8}, {1, 128, 0}, {7, 8, 0}};
  int checked = 0;
  for (const Geometry& g : geometries) {
    for (int n_tokens : {64, 1, 17, 63}) {
      const auto k = random_rows(n_tokens, g.heads, g.head_dim, 11u + n_tokens);
      const auto v = random_rows(n_tokens, g.heads, g.head_dim, 97u + n_tokens, 0.0f);
      for (int pi = 0; pi < kPrecisionCount; ++pi) {
        const Precision p = static_cast<Precision>(pi);
        for (KeyMode m : {KeyMode::PerChannel, KeyMode::RotatedPerToken}) {
          const PageFormat f = make_format(p, m, 64, g.heads, g.head_dim, g.group);
          std::vector<uint8_t> page(f.page_bytes, 0xAB);
          encode_page(f, k.data(), v.data(), n_tokens, page.data());
          std::vector<float> k2(k.size()), v2(v.size());
          decode_page(f, page.data(), n_tokens, k2.data(), v2.data());
          for (int t = 0; t < n_tokens; ++t)
            for (int h = 0; h < g.heads; ++h)
              for (int d = 0; d < g.head_dim; ++d) {
                const size_t i = (static_cast<size_t>(t) * g.heads + h) * g.head_dim + d;
                ASSERT_LE(std::abs(k2[i] - k[i]), error_bound(f, k, n_tokens, true, t, h, d))
                    << f.describe() << " key t=" << t << " h=" << h << " d=" << d;
                ASSERT_LE(std::abs(v2[i] - v[i]), error_bound(f, v, n_tokens, false, t, h, d))
                    << f.describe() << " value t=" << t << " h=" << h << " d=" << d;
                ++checked;
              }
          // Rows past the tail decode to zero: the page is fully written, never garbage.
          if (n_tokens < 64) {
            std::vector<float> kf(static_cast<size_t>(64) * g.head_dim), vf(kf.size());
            decode_page_head(f, page.data(), g.heads - 1, 64, kf.data(), vf.data());
            if (p == Precision::F16) {
              EXPECT_EQ(kf[static_cast<size_t>(63) * g.head_dim], 0.0f);
            }
          }
        }
      }
    }
  }
  EXPECT_GT(checked, 100000);
}

// The hot tail page of a quantized ladder (k16vY) fills a few rows at a time; its bytes must be those of
// encoding all its rows at once, so that the page leaving the ring holds exactly the first rung's values.
TEST(PageCodec, TailPageRowsMatchTheWholePageEncoding) {
  for (Precision p : {Precision::K16V8, Precision::K16V4, Precision::K16V3, Precision::K16V2, Precision::F16}) {
    for (int group : {0, 8}) {
      const PageFormat f = make_format(p, KeyMode::PerChannel, 64, 3, 40, group);
      const auto k = random_rows(64, 3, 40, 21), v = random_rows(64, 3, 40, 22);
      const size_t row = 3 * 40;
      for (int n_tokens : {64, 37, 1}) {
        std::vector<uint8_t> whole(f.page_bytes), rows(f.page_bytes, 0);
        encode_page(f, k.data(), v.data(), n_tokens, whole.data());
        for (int first = 0, n = 1; first < n_tokens; first += n, n = n % 5 + 2) {
          n = std::min(n, n_tokens - first);
          write_rows(f, rows.data(), first, n, k.data() + first * row, v.data() + first * row);
        }
        EXPECT_EQ(rows, whole) << precision_name(p) << " group " << group << " tokens " << n_tokens;
      }
    }
  }
}

// Re-encoding copies a section whose layout does not change: k16v4 -> q4 keeps the 4-bit values byte for
// byte (no second quantization), q4 -> k4v2 keeps the keys; sections that change are encoded from the
// decoded page, as before.
void check_transcode(uint32_t seed) {
  const int heads = 2, hd = 64;
  const auto k = random_rows(64, heads, hd, 31 + 2 * seed), v = random_rows(64, heads, hd, 32 + 2 * seed);
  const PageFormat tail = make_format(Precision::K16V4, KeyMode::PerChannel, 64, heads, hd);
  const PageFormat q4 = make_format(Precision::Q4, KeyMode::PerChannel, 64, heads, hd);
  const PageFormat k4v2 = make_format(Precision::K4V2, KeyMode::PerChannel, 64, heads, hd);
  std::vector<uint8_t> tail_page(tail.page_bytes), direct(q4.page_bytes), moved(q4.page_bytes), split(k4v2.page_bytes);
  std::vector<float> k_scratch(k.size()), v_scratch(v.size());
  encode_page(tail, k.data(), v.data(), 64, tail_page.data());
  encode_page(q4, k.data(), v.data(), 64, direct.data());
  transcode_page(tail, tail_page.data(), q4, moved.data(), k_scratch.data(), v_scratch.data());
  for (int h = 0; h < heads; ++h) {
    auto section = [&](const std::vector<uint8_t>& page, size_t offset, size_t bytes) {
      return std::vector<uint8_t>(page.begin() + offset, page.begin() + offset + bytes);
    };
    // Values: exactly what encoding the original rows at q4 gives.
    EXPECT_EQ(section(moved, q4.value_section(h), q4.value_section_bytes),
              section(direct, q4.value_section(h), q4.value_section_bytes)) << "seed " << seed << " head " << h;
    EXPECT_EQ(section(moved, q4.value_section(h), q4.value_section_bytes),
              section(tail_page, tail.value_section(h), tail.value_section_bytes)) << "seed " << seed << " head " << h;
  }
  // Keys: encoded from the tail page's f16 keys, so within q4's error of the originals.
  std::vector<float> k2(k.size()), v2(v.size());
  decode_page(q4, moved.data(), 64, k2.data(), v2.data());
  for (size_t i = 0; i < k.size(); ++i) ASSERT_NEAR(k2[i], k[i], 0.6f) << i;
  // q4 -> k4v2: keys copied, values re-encoded at 2 bits from the decoded 4-bit values.
  transcode_page(q4, direct.data(), k4v2, split.data(), k_scratch.data(), v_scratch.data());
  std::vector<float> kd(k.size()), vd(v.size());
  decode_page(q4, direct.data(), 64, kd.data(), vd.data());
  std::vector<uint8_t> reencoded(k4v2.page_bytes);
  encode_page(k4v2, kd.data(), vd.data(), 64, reencoded.data());
  for (int h = 0; h < heads; ++h) {
    EXPECT_EQ(0, std::memcmp(split.data() + k4v2.key_section(h), direct.data() + q4.key_section(h), q4.key_section_bytes))
        << "seed " << seed << " head " << h;
    EXPECT_EQ(0, std::memcmp(split.data() + k4v2.value_section(h), reencoded.data() + k4v2.value_section(h),
                             k4v2.value_section_bytes)) << "seed " << seed << " head " << h;
  }
}

// (Quantizing decoded 4-bit values again mostly gives the same bytes, so several seeds: a transcode that
// re-encodes instead of copying fails on some of them.)
TEST(PageCodec, TranscodeCopiesSectionsThatKeepTheirLayout) {
  for (uint32_t seed = 0; seed < 8; ++seed) check_transcode(seed);
}

// Squared error of x[0..n) (stride) quantized with parameters p.
double group_error(const float* x, size_t n, size_t stride, GroupParams p, int bits) {
  const float scale = f16_to_f32(p.scale), min = f16_to_f32(p.min);
  double err = 0;
  for (size_t i = 0; i < n; ++i) {
    const float e = quantize_value(x[i * stride], scale, min, bits) * scale + min - x[i * stride];
    err += static_cast<double>(e) * e;
  }
  return err;
}

TEST(PageCodec, GroupErrorNeverAboveCovering) {
  // The encoder's parameters are a least-squares search that includes the covering ones: per group, its
  // squared error is at most theirs, and on data with outliers it is clearly lower at 2 and 3 bits.
  const int n = 64;
  double fit_total[9] = {}, cover_total[9] = {};
  for (uint32_t seed = 0; seed < 200; ++seed) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> normal(0.0f, 1.0f + seed % 5);
    std::vector<float> x(2 * n);  // stride 2: the odd elements are not in the group
    for (float& v : x) v = normal(rng) + (seed % 3 == 0 ? 0.5f * seed : 0.0f);
    x[2 * (seed % n)] += (seed % 2 ? 9.0f : -7.0f) * (1.0f + seed % 5);  // one outlier
    for (int bits : {2, 3, 4, 8}) {
      const GroupParams fit = fit_group_params(x.data(), n, 2, bits);
      const GroupParams cover = choose_group_params(x.data(), n, 2, bits);
      const double fe = group_error(x.data(), n, 2, fit, bits), ce = group_error(x.data(), n, 2, cover, bits);
      ASSERT_LE(fe, ce) << "bits " << bits << " seed " << seed;
      fit_total[bits] += fe;
      cover_total[bits] += ce;
    }
  }
  EXPECT_LT(fit_total[2], 0.8 * cover_total[2]);
  EXPECT_LT(fit_total[3], 0.8 * cover_total[3]);
  EXPECT_LE(fit_total[4], cover_total[4]);
  EXPECT_EQ(fit_total[8], cover_total[8]);  // 8-bit groups keep the covering parameters
  // And the page encoder uses them: a decoded per-channel key row has the fit's error.
  const PageFormat f = make_format(Precision::Q2, KeyMode::PerChannel, 64, 1, 8);
  const auto k = random_rows(64, 1, 8, 3), v = random_rows(64, 1, 8, 4);
  std::vector<uint8_t> page(f.page_bytes);
  encode_page(f, k.data(), v.data(), 64, page.data());
  std::vector<float> k2(k.size()), v2(v.size());
  decode_page(f, page.data(), 64, k2.data(), v2.data());
  for (int d = 0; d < 8; ++d) {
    double err = 0;
    for (int t = 0; t < 64; ++t) err += (k2[t * 8 + d] - k[t * 8 + d]) * (k2[t * 8 + d] - k[t * 8 + d]);
    EXPECT_NEAR(err, group_error(k.data() + d, 64, 8, fit_group_params(k.data() + d, 64, 8, 2), 2), 1e-4 * (1 + err));
  }
}

TEST(PageFormatTest, SplitPrecisionsNamesAndWidths) {
  for (int i = 0; i < kPrecisionCount; ++i) {
    const Precision p = static_cast<Precision>(i);
    Precision back;
    ASSERT_TRUE(precision_from_bits(key_bits(p), value_bits(p), &back)) << precision_name(p);
    EXPECT_EQ(back, p);
    const std::string name = precision_name(p);
    if (key_bits(p) != value_bits(p)) {
      EXPECT_EQ(name, "k" + std::to_string(key_bits(p)) + "v" + std::to_string(value_bits(p)));
    }
  }
  Precision none;
  EXPECT_FALSE(precision_from_bits(5, 2, &none));
  EXPECT_EQ(default_group(64), 64);
  EXPECT_EQ(default_group(128), 64);
  EXPECT_EQ(default_group(96), 48);
  EXPECT_EQ(default_group(40), 40);
}

TEST(PageCodec, ConstantAndZeroGroupsAreExactEnough) {
  const PageFormat f = make_format(Precision::Q2, KeyMode::PerChannel, 64, 1, 32);
  std::vector<float> k(64 * 32, 0.0f), v(64 * 32, 1.5f);
  std::vector<uint8_t> page(f.page_bytes);
  encode_page(f, k.data(), v.data(), 64, page.data());
  std::vector<float> k2(k.size()), v2(v.size());
  decode_page(f, page.data(), 64, k2.data(), v2.data());
  for (size_t i = 0; i < k.size(); ++i) {
    EXPECT_EQ(k2[i], 0.0f);
    EXPECT_EQ(v2[i], 1.5f);
  }
}

TEST(PageCodec, MeanErrorFallsWithBits) {
  // A check that can fail if a codec silently degrades: RMS error per precision must strictly fall.
  const auto k = random_rows(64, 2, 64, 5);
  const auto v = random_rows(64, 2, 64, 6, 0.0f);
  for (KeyMode m : {KeyMode::PerChannel, KeyMode::RotatedPerToken}) {
    double previous = INFINITY;
    for (Precision p : {Precision::Q2, Precision::Q3, Precision::Q4, Precision::Q8, Precision::F16}) {
      const PageFormat f = make_format(p, m, 64, 2, 64);
      std::vector<uint8_t> page(f.page_bytes);
      encode_page(f, k.data(), v.data(), 64, page.data());
      std::vector<float> k2(k.size()), v2(v.size());
      decode_page(f, page.data(), 64, k2.data(), v2.data());
      double err = 0;
      for (size_t i = 0; i < k.size(); ++i) err += (k2[i] - k[i]) * (k2[i] - k[i]) + (v2[i] - v[i]) * (v2[i] - v[i]);
      err = std::sqrt(err / (2.0 * k.size()));
      EXPECT_LT(err, previous) << f.describe();
      previous = err;
    }
  }
}

TEST(Hadamard, OrthogonalAndSelfInverse) {
  for (int head_dim : {8, 24, 40, 64, 96, 128}) {
    std::mt19937 rng(head_dim);
    std::normal_distribution<float> normal;
    std::vector<float> a(head_dim), b(head_dim);
    for (auto& x : a) x = normal(rng);
    for (auto& x : b) x = normal(rng);
    double dot = 0;
    for (int d = 0; d < head_dim; ++d) dot += a[d] * b[d];
    std::vector<float> ra = a, rb = b;
    hadamard_rotate(ra.data(), head_dim);
    hadamard_rotate(rb.data(), head_dim);
    double rotated_dot = 0;
    for (int d = 0; d < head_dim; ++d) rotated_dot += ra[d] * rb[d];
    EXPECT_NEAR(rotated_dot, dot, 1e-4 * head_dim) << head_dim;
    EXPECT_NE(ra, a);
    hadamard_rotate(ra.data(), head_dim);
    for (int d = 0; d < head_dim; ++d) EXPECT_NEAR(ra[d], a[d], 1e-5f);
  }
  EXPECT_EQ(hadamard_block(64), 64);
  EXPECT_EQ(hadamard_block(40), 8);
  EXPECT_EQ(hadamard_block(96), 32);
}

}  // namespace
}  // namespace kvtier::kv
