// Page format geometry and the scalar page codecs (the definition of the format).
#include "kv/codec.h"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <vector>

#include "kvtier/f16.h"

namespace kvtier::kv {

namespace {

size_t align_up(size_t n, size_t a) { return (n + a - 1) / a * a; }

// Nearest f16 at or below x (toward -inf), and at or above x.
uint16_t f16_round_down(float x) {
  const uint16_t h = f32_to_f16(x);
  if (f16_to_f32(h) <= x) return h;
  if (h == 0x0000) return 0x8001;
  return (h & 0x8000) ? static_cast<uint16_t>(h + 1) : static_cast<uint16_t>(h - 1);
}
uint16_t f16_round_up(float x) {
  const uint16_t h = f32_to_f16(x);
  if (f16_to_f32(h) >= x) return h;
  if (h == 0x8000) return 0x0001;
  return (h & 0x8000) ? static_cast<uint16_t>(h - 1) : static_cast<uint16_t>(h + 1);
}

// std::nearbyint for 0 <= v < 2^23 in the default rounding mode (round half to even), without the libm call
// (baseline x86-64 has no roundss): adding and subtracting 2^23 leaves an integer. The encoder rounds
// ~10^5 values per page in fit_group_params, and nearbyint is a libm call per value there.
inline float round_half_even(float v) { return (v + 0x1p23f) - 0x1p23f; }

// The planes of a code width: {2, 1} for 3 bits, {bits} otherwise.
int plane_count(int bits) { return bits == 3 ? 2 : 1; }
int plane_width(int bits, int plane) { return bits == 3 ? (plane == 0 ? 2 : 1) : bits; }
int plane_shift(int bits, int plane) { return bits == 3 && plane == 1 ? 2 : 0; }

// Bytes per 8 codes for each width: the block-size contract of the layout.
static_assert(8 * 8 / 8 == 8 && 8 * 4 / 8 == 4 && 8 * 2 / 8 == 2 && 8 * 1 / 8 == 1, "plane bytes per 8 codes");
static_assert(8 * 2 / 8 + 8 * 1 / 8 == 3, "a 3-bit row stores 3 bytes per 8 codes");

}  // namespace

namespace {

struct PrecisionInfo {
  const char* name;
  int key_bits, value_bits;
};
// Indexed by the Precision enum value.
constexpr PrecisionInfo kPrecisions[kPrecisionCount] = {
    {"f16", 16, 16}, {"q8", 8, 8},   {"q4", 4, 4},   {"q3", 3, 3},   {"q2", 2, 2},   {"k8v4", 8, 4},
    {"k8v3", 8, 3},  {"k8v2", 8, 2}, {"k4v8", 4, 8}, {"k4v3", 4, 3}, {"k4v2", 4, 2}, {"k3v8", 3, 8},
    {"k3v4", 3, 4},  {"k3v2", 3, 2}, {"k2v8", 2, 8}, {"k2v4", 2, 4}, {"k2v3", 2, 3}, {"k16v8", 16, 8},
    {"k16v4", 16, 4}, {"k16v3", 16, 3}, {"k16v2", 16, 2},
};
const PrecisionInfo& info(Precision p) {
  const int i = static_cast<int>(p);
  assert(i >= 0 && i < kPrecisionCount);
  return kPrecisions[i];
}

}  // namespace

int key_bits(Precision p) { return info(p).key_bits; }
int value_bits(Precision p) { return info(p).value_bits; }
int precision_bits(Precision p) { return std::max(info(p).key_bits, info(p).value_bits); }
const char* precision_name(Precision p) { return info(p).name; }

bool precision_from_bits(int kb, int vb, Precision* out) {
  for (int i = 0; i < kPrecisionCount; ++i) {
    if (kPrecisions[i].key_bits == kb && kPrecisions[i].value_bits == vb) {
      *out = static_cast<Precision>(i);
      return true;
    }
  }
  return false;
}

int default_group(int head_dim) {
  for (int group = std::min(head_dim, 64) / 8 * 8; group >= 8; group -= 8) {
    if (head_dim % group == 0) return group;
  }
  return head_dim;
}

bool make_page_format(Precision precision, KeyMode key_mode, int tokens, int n_kv_heads, int head_dim, int group,
                      PageFormat* out, std::string* error) {
  auto fail = [&](const std::string& message) {
    if (error) *error = message;
    return false;
  };
  if (n_kv_heads <= 0) return fail("n_kv_heads must be positive, got " + std::to_string(n_kv_heads));
  if (head_dim <= 0 || head_dim % 8 != 0)
    return fail("head_dim must be a positive multiple of 8, got " + std::to_string(head_dim));
  if (tokens <= 0 || tokens > 4096) return fail("tokens per page must be in 1..4096, got " + std::to_string(tokens));
  if (precision != Precision::F16 && tokens % 8 != 0)
    return fail("quantized pages need a multiple of 8 tokens, got " + std::to_string(tokens));
  if (group == 0) group = default_group(head_dim);
  if (group % 8 != 0 || head_dim % group != 0)
    return fail("group " + std::to_string(group) + " must be a multiple of 8 dividing head_dim " +
                std::to_string(head_dim));
  PageFormat f;
  f.precision = precision;
  f.key_mode = key_mode;
  f.tokens = tokens;
  f.n_kv_heads = n_kv_heads;
  f.head_dim = head_dim;
  f.group = group;
  f.n_groups = head_dim / group;
  f.key_bits = kv::key_bits(precision);
  f.value_bits = kv::value_bits(precision);
  const size_t rows = static_cast<size_t>(tokens);
  // Each section is f16 or quantized on its own (k16vY pages have f16 keys and quantized values).
  const size_t per_token_params = rows * f.n_groups * sizeof(GroupParams);
  if (f.value_bits == 16) {
    f.row_code_bytes = static_cast<size_t>(head_dim) * 2;
    f.value_section_bytes = align_up(rows * f.row_code_bytes, kSectionAlign);
  } else {
    f.row_code_bytes = packed_row_bytes(head_dim, f.value_bits);
    f.value_params_bytes = per_token_params;
    f.value_codes_offset = align_up(per_token_params, kSectionAlign);
    f.value_section_bytes = align_up(f.value_codes_offset + rows * f.row_code_bytes, kSectionAlign);
  }
  if (f.key_bits == 16) {
    f.key_row_code_bytes = rows * 2;
    f.key_section_bytes = align_up(static_cast<size_t>(head_dim) * f.key_row_code_bytes, kSectionAlign);
  } else {
    f.key_row_code_bytes = packed_row_bytes(tokens, f.key_bits);
    f.key_params_bytes =
        key_mode == KeyMode::PerChannel ? static_cast<size_t>(head_dim) * sizeof(GroupParams) : per_token_params;
    f.key_codes_offset = align_up(f.key_params_bytes, kSectionAlign);
    f.key_section_bytes = align_up(f.key_codes_offset + static_cast<size_t>(head_dim) * f.key_row_code_bytes, kSectionAlign);
  }
  f.head_bytes = f.key_section_bytes + f.value_section_bytes;
  f.page_bytes = f.head_bytes * static_cast<size_t>(n_kv_heads);
  *out = f;
  return true;
}

double PageFormat::key_bits_per_element() const {
  return 8.0 * static_cast<double>(key_section_bytes) / (static_cast<double>(tokens) * head_dim);
}
double PageFormat::value_bits_per_element() const {
  return 8.0 * static_cast<double>(value_section_bytes) / (static_cast<double>(tokens) * head_dim);
}
double PageFormat::bits_per_element() const {
  return 8.0 * static_cast<double>(page_bytes) / (2.0 * tokens * n_kv_heads * head_dim);
}
std::string PageFormat::describe() const {
  std::string s = precision_name(precision);
  if (precision != Precision::F16) {
    s += key_mode == KeyMode::PerChannel ? " (keys per-channel" : " (keys rotated per-token";
    s += ", groups of " + std::to_string(group) + ")";
  }
  char buf[64];
  std::snprintf(buf, sizeof buf, ": %zu bytes/page, %.3f bits/element", page_bytes, bits_per_element());
  return s + buf;
}

size_t packed_row_bytes(int n, int bits) {
  return bits == 3 ? static_cast<size_t>(n) / 4 + static_cast<size_t>(n) / 8 : static_cast<size_t>(n) * bits / 8;
}

void pack_code_row(const uint8_t* codes, int n, int bits, uint8_t* packed) {
  assert(n % 8 == 0);
  for (int plane = 0; plane < plane_count(bits); ++plane) {
    const int w = plane_width(bits, plane);
    const int shift = plane_shift(bits, plane);
    const int per_byte = 8 / w;
    const int stride = n / per_byte;  // bytes in this plane
    const uint8_t mask = static_cast<uint8_t>((1u << w) - 1);
    for (int i = 0; i < stride; ++i) {
      uint8_t byte = 0;
      for (int j = 0; j < per_byte; ++j) byte |= static_cast<uint8_t>(((codes[i + j * stride] >> shift) & mask) << (j * w));
      packed[i] = byte;
    }
    packed += stride;
  }
}

void unpack_code_row(const uint8_t* packed, int n, int bits, uint8_t* codes) {
  assert(n % 8 == 0);
  std::memset(codes, 0, static_cast<size_t>(n));
  for (int plane = 0; plane < plane_count(bits); ++plane) {
    const int w = plane_width(bits, plane);
    const int shift = plane_shift(bits, plane);
    const int per_byte = 8 / w;
    const int stride = n / per_byte;
    const uint8_t mask = static_cast<uint8_t>((1u << w) - 1);
    for (int i = 0; i < stride; ++i) {
      for (int j = 0; j < per_byte; ++j) codes[i + j * stride] |= static_cast<uint8_t>(((packed[i] >> (j * w)) & mask) << shift);
    }
    packed += stride;
  }
}

GroupParams choose_group_params(const float* x, size_t n, size_t stride, int bits) {
  float lo = INFINITY, hi = -INFINITY;
  for (size_t i = 0; i < n; ++i) {
    const float value = x[i * stride];
    if (!std::isfinite(value)) continue;
    lo = std::min(lo, value);
    hi = std::max(hi, value);
  }
  if (!(lo <= hi)) lo = hi = 0.0f;  // no finite values
  GroupParams p;
  p.min = f16_round_down(lo);
  const float levels = static_cast<float>((1u << bits) - 1);
  const float needed = (hi - f16_to_f32(p.min)) / levels;
  p.scale = f16_round_up(needed);
  // The f16 parameters must still reach hi: step the scale up while they do not (rare, from rounding).
  while (f16_to_f32(p.min) + levels * f16_to_f32(p.scale) < hi && p.scale < 0x7BFF) ++p.scale;
  return p;
}

namespace {

// The fit's two passes over a group, written for the vectorizer: f32 lanes in 8 independent accumulators, no
// division, no branches (the encoder runs ~27 passes per group; a re-encode of a 2-bit page used to take ~0.9 ms,
// enough to show in a 2-core decode at depth, where a background re-encode shares the cores with it).
constexpr int kFitLanes = 8;

// Squared error of values[0, n) under scale and min with codes rounded to the nearest level in [0, levels]
// (quantize_value's choice, by multiplication with 1/scale instead of division: the two can differ by one code
// only at an exact tie, where the error is the same).
float group_error(const float* values, size_t n, float scale, float min, float levels) {
  const float inverse = 1.0f / scale;
  float acc[kFitLanes] = {};
  size_t i = 0;
  for (; i + kFitLanes <= n; i += kFitLanes) {
    for (int k = 0; k < kFitLanes; ++k) {
      const float code = round_half_even(std::min(std::max((values[i + k] - min) * inverse, 0.0f), levels));
      const float e = code * scale + min - values[i + k];
      acc[k] += e * e;
    }
  }
  for (; i < n; ++i) {
    const float code = round_half_even(std::min(std::max((values[i] - min) * inverse, 0.0f), levels));
    const float e = code * scale + min - values[i];
    acc[0] += e * e;
  }
  float sum = 0;
  for (const float a : acc) sum += a;
  return sum;
}

// Sums for the least-squares fit of scale and min to the codes l = round(clamp((x - lo) * inverse, 0, levels)):
// sum l, sum l^2 (integers, exact in f32 for any group size the format has), sum x, sum x l.
struct FitSums {
  double l, l2, x, xl;
};
FitSums grid_sums(const float* values, size_t n, float lo, float inverse, float levels) {
  float sl[kFitLanes] = {}, sl2[kFitLanes] = {}, sx[kFitLanes] = {}, sxl[kFitLanes] = {};
  size_t i = 0;
  for (; i + kFitLanes <= n; i += kFitLanes) {
    for (int k = 0; k < kFitLanes; ++k) {
      const float x = values[i + k];
      const float l = round_half_even(std::min(std::max((x - lo) * inverse, 0.0f), levels));
      sl[k] += l, sl2[k] += l * l, sx[k] += x, sxl[k] += x * l;
    }
  }
  for (; i < n; ++i) {
    const float x = values[i];
    const float l = round_half_even(std::min(std::max((x - lo) * inverse, 0.0f), levels));
    sl[0] += l, sl2[0] += l * l, sx[0] += x, sxl[0] += x * l;
  }
  FitSums sums{0, 0, 0, 0};
  for (int k = 0; k < kFitLanes; ++k) sums.l += sl[k], sums.l2 += sl2[k], sums.x += sx[k], sums.xl += sxl[k];
  return sums;
}

}  // namespace

GroupParams fit_group_params(const float* x, size_t n, size_t stride, int bits) {
  const GroupParams cover = choose_group_params(x, n, stride, bits);
  if (bits >= 8) return cover;  // 255 levels: clipping gains nothing measurable
  const float levels = static_cast<float>((1u << bits) - 1);
  // The group's finite values, contiguous: [count].
  thread_local std::vector<float> values;
  values.clear();
  float lo = INFINITY, hi = -INFINITY;
  for (size_t i = 0; i < n; ++i) {
    const float value = x[i * stride];
    if (std::isfinite(value)) values.push_back(value), lo = std::min(lo, value), hi = std::max(hi, value);
  }
  if (!(hi > lo)) return cover;  // constant (or empty): the covering parameters are exact
  const size_t count = values.size();
  auto error_of = [&](GroupParams p) { return group_error(values.data(), count, f16_to_f32(p.scale), f16_to_f32(p.min), levels); };
  GroupParams best = cover;
  float best_err = error_of(cover);
  // Candidate grids with (levels - 0.5 .. levels + 2.5) steps over [lo, hi] (the covering grid has
  // `levels`): codes on the grid, then the least-squares scale and min for those codes.
  constexpr int kSteps = 12;
  for (int step = 0; step <= kSteps; ++step) {
    const float inverse = (levels - 0.5f + 3.0f * step / kSteps) / (hi - lo);
    const FitSums sums = grid_sums(values.data(), count, lo, inverse, levels);
    const double det = static_cast<double>(count) * sums.l2 - sums.l * sums.l;
    if (!(det > 0)) continue;
    const double scale = (static_cast<double>(count) * sums.xl - sums.x * sums.l) / det;
    const double min = (sums.l2 * sums.x - sums.l * sums.xl) / det;
    if (!(scale > 0) || !std::isfinite(min) || scale > 65504.0 || std::abs(min) > 65504.0) continue;
    GroupParams p;
    p.scale = f32_to_f16(static_cast<float>(scale));
    p.min = f32_to_f16(static_cast<float>(min));
    if (!(f16_to_f32(p.scale) > 0.0f)) continue;
    const float err = error_of(p);
    if (err < best_err) best = p, best_err = err;
  }
  return best;
}

uint8_t quantize_value(float x, float scale, float min, int bits) {
  if (!(scale > 0.0f)) return 0;
  const float v = (x - min) / scale;
  const float top = static_cast<float>((1u << bits) - 1);
  const float above = v > 0.0f ? v : 0.0f;  // below the range, or NaN: 0 (branch-free: min/max)
  return static_cast<uint8_t>(round_half_even(above < top ? above : top));
}

namespace {

// Chooses per-token group parameters of one token-major row and quantizes it.
//   row: [head_dim] f32; params: [n_groups]; codes: [head_dim].
void quantize_token_row(const PageFormat& f, const float* row, int bits, GroupParams* params, uint8_t* codes) {
  for (int g = 0; g < f.n_groups; ++g) {
    const GroupParams p = fit_group_params(row + g * f.group, f.group, 1, bits);
    params[g] = p;
    const float scale = f16_to_f32(p.scale), min = f16_to_f32(p.min);
    for (int d = g * f.group; d < (g + 1) * f.group; ++d) codes[d] = quantize_value(row[d], scale, min, bits);
  }
}

// Value section: params [tokens][n_groups], codes [tokens][row_code_bytes]. Writes rows [first, first + n)
// from x's rows [0, n): value groups are per token, so rows can be written a few at a time (write_rows).
void encode_values(const PageFormat& f, const float* x, int head, int first, int n, uint8_t* section) {
  const int bits = f.value_bits;
  const size_t row_stride = static_cast<size_t>(f.n_kv_heads) * f.head_dim;
  auto* params = reinterpret_cast<GroupParams*>(section);
  thread_local std::vector<uint8_t> codes;  // [head_dim]; kept: a tail-page append calls this per head and token
  codes.resize(static_cast<size_t>(f.head_dim));
  for (int t = first; t < first + n; ++t) {
    quantize_token_row(f, x + (t - first) * row_stride + static_cast<size_t>(head) * f.head_dim, bits,
                       params + static_cast<size_t>(t) * f.n_groups, codes.data());
    pack_code_row(codes.data(), f.head_dim, bits, section + f.value_codes_offset + t * f.row_code_bytes);
  }
}

// Key section: params (per channel or per token group), codes [head_dim][key_row_code_bytes].
void encode_keys(const PageFormat& f, const float* x, int head, int n_tokens, uint8_t* section) {
  const int bits = f.key_bits;
  const size_t row_stride = static_cast<size_t>(f.n_kv_heads) * f.head_dim;
  const float* base = x + static_cast<size_t>(head) * f.head_dim;
  auto* params = reinterpret_cast<GroupParams*>(section);
  std::vector<uint8_t> codes(static_cast<size_t>(f.tokens) * f.head_dim, 0);  // [tokens][head_dim]
  if (f.key_mode == KeyMode::PerChannel) {
    for (int d = 0; d < f.head_dim; ++d) {
      params[d] = fit_group_params(base + d, n_tokens, row_stride, bits);
      const float scale = f16_to_f32(params[d].scale), min = f16_to_f32(params[d].min);
      for (int t = 0; t < n_tokens; ++t) codes[t * f.head_dim + d] = quantize_value(base[t * row_stride + d], scale, min, bits);
    }
  } else {
    for (int t = 0; t < n_tokens; ++t) {
      quantize_token_row(f, base + t * row_stride, bits, params + static_cast<size_t>(t) * f.n_groups,
                         codes.data() + static_cast<size_t>(t) * f.head_dim);
    }
  }
  std::vector<uint8_t> channel(static_cast<size_t>(f.tokens));  // [tokens]
  for (int d = 0; d < f.head_dim; ++d) {
    for (int t = 0; t < f.tokens; ++t) channel[t] = codes[static_cast<size_t>(t) * f.head_dim + d];
    pack_code_row(channel.data(), f.tokens, bits, section + f.key_codes_offset + d * f.key_row_code_bytes);
  }
}

// f16 sections: keys [head_dim][tokens], values [tokens][head_dim].
void write_f16_section(const PageFormat& f, const float* x, int head, int first, int n, bool keys, uint8_t* section) {
  const size_t row_stride = static_cast<size_t>(f.n_kv_heads) * f.head_dim;
  auto* out = reinterpret_cast<uint16_t*>(section);
  for (int t = 0; t < n; ++t) {
    const float* row = x + t * row_stride + static_cast<size_t>(head) * f.head_dim;
    if (keys) {
      for (int d = 0; d < f.head_dim; ++d) out[static_cast<size_t>(d) * f.tokens + first + t] = f32_to_f16(row[d]);
    } else {
      uint16_t* dst = out + static_cast<size_t>(first + t) * f.head_dim;
      for (int d = 0; d < f.head_dim; ++d) dst[d] = f32_to_f16(row[d]);
    }
  }
}

void decode_values(const PageFormat& f, const uint8_t* section, int n_tokens, float* out) {
  const int bits = f.value_bits;
  const auto* params = reinterpret_cast<const GroupParams*>(section);
  std::vector<uint8_t> codes(static_cast<size_t>(f.head_dim));  // [head_dim]
  for (int t = 0; t < n_tokens; ++t) {
    unpack_code_row(section + f.value_codes_offset + t * f.row_code_bytes, f.head_dim, bits, codes.data());
    for (int g = 0; g < f.n_groups; ++g) {
      const float scale = f16_to_f32(params[t * f.n_groups + g].scale);
      const float min = f16_to_f32(params[t * f.n_groups + g].min);
      for (int d = g * f.group; d < (g + 1) * f.group; ++d) out[t * f.head_dim + d] = codes[d] * scale + min;
    }
  }
}

void decode_keys(const PageFormat& f, const uint8_t* section, int n_tokens, float* out) {
  const int bits = f.key_bits;
  const auto* params = reinterpret_cast<const GroupParams*>(section);
  std::vector<uint8_t> channel(static_cast<size_t>(f.tokens));  // [tokens]
  for (int d = 0; d < f.head_dim; ++d) {
    unpack_code_row(section + f.key_codes_offset + d * f.key_row_code_bytes, f.tokens, bits, channel.data());
    for (int t = 0; t < n_tokens; ++t) {
      const GroupParams p = f.key_mode == KeyMode::PerChannel ? params[d] : params[t * f.n_groups + d / f.group];
      out[t * f.head_dim + d] = channel[t] * f16_to_f32(p.scale) + f16_to_f32(p.min);
    }
  }
}

}  // namespace

namespace {

// Encodes the key and/or value sections of every head (the others are left as they are).
void encode_sections(const PageFormat& f, const float* k, const float* v, int n_tokens, bool keys, bool values,
                     uint8_t* page) {
  for (int h = 0; h < f.n_kv_heads; ++h) {
    uint8_t* key = page + f.key_section(h);
    uint8_t* value = page + f.value_section(h);
    if (keys && f.key_bits == 16) {
      write_f16_section(f, k, h, 0, n_tokens, true, key);
    } else if (keys) {
      encode_keys(f, k, h, n_tokens, key);
    }
    if (values && f.value_bits == 16) {
      write_f16_section(f, v, h, 0, n_tokens, false, value);
    } else if (values) {
      encode_values(f, v, h, 0, n_tokens, value);
    }
  }
}

bool same_key_layout(const PageFormat& a, const PageFormat& b) {
  return a.key_bits == b.key_bits && a.key_mode == b.key_mode && a.tokens == b.tokens && a.head_dim == b.head_dim &&
         (a.key_bits == 16 || a.key_mode == KeyMode::PerChannel || a.group == b.group);
}

}  // namespace

void encode_page(const PageFormat& f, const float* k, const float* v, int n_tokens, uint8_t* page) {
  assert(n_tokens >= 1 && n_tokens <= f.tokens);
  std::memset(page, 0, f.page_bytes);
  encode_sections(f, k, v, n_tokens, true, true, page);
}

void write_rows(const PageFormat& f, uint8_t* page, int first, int n, const float* k, const float* v) {
  assert(f.key_bits == 16 && first >= 0 && first + n <= f.tokens);
  for (int h = 0; h < f.n_kv_heads; ++h) {
    write_f16_section(f, k, h, first, n, true, page + f.key_section(h));
    uint8_t* value = page + f.value_section(h);
    if (f.value_bits == 16) {
      write_f16_section(f, v, h, first, n, false, value);
    } else {
      encode_values(f, v, h, first, n, value);  // the bytes encode_page gives these rows
    }
  }
}

bool same_value_layout(const PageFormat& a, const PageFormat& b) {
  return a.value_bits == b.value_bits && a.tokens == b.tokens && a.head_dim == b.head_dim && a.group == b.group;
}

void copy_value_rows(const PageFormat& from, const uint8_t* source, const PageFormat& to, uint8_t* target, int first,
                     int n) {
  assert(same_value_layout(from, to) && from.n_kv_heads == to.n_kv_heads && first >= 0 && first + n <= to.tokens);
  const size_t params_row = (to.value_bits == 16 ? 0 : static_cast<size_t>(to.n_groups) * sizeof(GroupParams));
  for (int h = 0; h < to.n_kv_heads; ++h) {
    const uint8_t* src = source + from.value_section(h);
    uint8_t* dst = target + to.value_section(h);
    if (params_row > 0) std::memcpy(dst + first * params_row, src + first * params_row, n * params_row);
    std::memcpy(dst + to.value_codes_offset + first * to.row_code_bytes,
                src + from.value_codes_offset + first * from.row_code_bytes, n * to.row_code_bytes);
  }
}

void transcode_page(const PageFormat& from, const uint8_t* source, const PageFormat& to, uint8_t* target, float* k,
                    float* v) {
  assert(from.n_kv_heads == to.n_kv_heads && from.tokens == to.tokens);
  const bool copy_keys = same_key_layout(from, to), copy_values = same_value_layout(from, to);
  std::memset(target, 0, to.page_bytes);
  if (!copy_keys || !copy_values) {
    decode_page(from, source, from.tokens, k, v);
    encode_sections(to, k, v, to.tokens, !copy_keys, !copy_values, target);
  }
  for (int h = 0; h < to.n_kv_heads; ++h) {
    if (copy_keys) std::memcpy(target + to.key_section(h), source + from.key_section(h), to.key_section_bytes);
  }
  if (copy_values) copy_value_rows(from, source, to, target, 0, to.tokens);
}

// f16 sections: keys [head_dim][tokens] (element (t, d) at d * tokens + t), values [tokens][head_dim].
// Quantized sections: see the layout in kv/page_format.h; element (t, d) decodes to code * scale + min,
//   keys:   code = unpack_code_row(key row d)[t], (scale, min) = params[d] (per-channel) or
//           params[t * n_groups + d / group] (rotated per-token);
//   values: code = unpack_code_row(value row t)[d], (scale, min) = params[t * n_groups + d / group].
void decode_page_head(const PageFormat& f, const uint8_t* page, int head, int n_tokens, float* k, float* v) {
  assert(n_tokens >= 0 && n_tokens <= f.tokens && head >= 0 && head < f.n_kv_heads);
  const uint8_t* key = page + f.key_section(head);
  const uint8_t* value = page + f.value_section(head);
  if (f.key_bits == 16) {
    const auto* kh = reinterpret_cast<const uint16_t*>(key);
    for (int t = 0; t < n_tokens; ++t) {
      for (int d = 0; d < f.head_dim; ++d) k[t * f.head_dim + d] = f16_to_f32(kh[static_cast<size_t>(d) * f.tokens + t]);
    }
  } else {
    decode_keys(f, key, n_tokens, k);
  }
  if (f.value_bits == 16) {
    const auto* vh = reinterpret_cast<const uint16_t*>(value);
    for (int t = 0; t < n_tokens; ++t) {
      for (int d = 0; d < f.head_dim; ++d) v[t * f.head_dim + d] = f16_to_f32(vh[static_cast<size_t>(t) * f.head_dim + d]);
    }
  } else {
    decode_values(f, value, n_tokens, v);
  }
}

void decode_page(const PageFormat& f, const uint8_t* page, int n_tokens, float* k, float* v) {
  std::vector<float> kh(static_cast<size_t>(n_tokens) * f.head_dim), vh(kh.size());  // [n_tokens, head_dim]
  const size_t row = static_cast<size_t>(f.n_kv_heads) * f.head_dim;
  for (int h = 0; h < f.n_kv_heads; ++h) {
    decode_page_head(f, page, h, n_tokens, kh.data(), vh.data());
    for (int t = 0; t < n_tokens; ++t) {
      std::memcpy(k + t * row + static_cast<size_t>(h) * f.head_dim, kh.data() + t * f.head_dim, f.head_dim * sizeof(float));
      std::memcpy(v + t * row + static_cast<size_t>(h) * f.head_dim, vh.data() + t * f.head_dim, f.head_dim * sizeof(float));
    }
  }
}

int hadamard_block(int head_dim) {
  int block = 1;
  while (block < 256 && head_dim % (block * 2) == 0) block *= 2;
  return block;
}

void hadamard_rotate(float* x, int head_dim) {
  const int block = hadamard_block(head_dim);
  const float norm = 1.0f / std::sqrt(static_cast<float>(block));
  for (int base = 0; base < head_dim; base += block) {
    float* b = x + base;
    for (int len = 1; len < block; len *= 2) {
      for (int i = 0; i < block; i += 2 * len) {
        for (int j = i; j < i + len; ++j) {
          const float a = b[j], c = b[j + len];
          b[j] = a + c;
          b[j + len] = a - c;
        }
      }
    }
    for (int i = 0; i < block; ++i) b[i] *= norm;
  }
}

void rotate_heads(float* x, int64_t n_rows, int head_dim) {
  for (int64_t r = 0; r < n_rows; ++r) hadamard_rotate(x + r * head_dim, head_dim);
}

}  // namespace kvtier::kv
