// The CPU codec's parameter fit and quantizer (kv/codec.cpp), shared by the shaders that encode pages
// (kv_transcode.comp, kv_write_row.comp). Needs a `const uint MAX_N` (the most values of one fit) declared
// before the include.
const uint LANES = 8;  // the CPU fit's f32 accumulators (kFitLanes), mirrored

// With KV_FIT_F64 (shaderFloat64) the fit follows the CPU's order of operations bit for bit: f32 divisions
// correctly rounded (Vulkan lets a device's f32 division be 2.5 ulp off: NVIDIA's is, and picked other fits
// than the CPU's near ties), the lanes' sums and the least-squares solve in f64. Without it, f32 throughout.
#ifdef KV_FIT_F64
#define FIT_REAL double
float div_rn(float a, float b) { return float(double(a) / double(b)); }
#else
#define FIT_REAL float
float div_rn(float a, float b) {
  precise float q = a / b;
  return q;
}
#endif

float h2f(uint h) { return unpackHalf2x16(h).x; }

// f32 -> f16 bits, round to nearest even (kvtier/f16.h f32_to_f16; not packHalf2x16, whose rounding the
// Vulkan spec leaves to the driver).
uint f16_bits(float f) {
  uint x = floatBitsToUint(f);
  const uint sign = (x >> 16) & 0x8000u;
  const uint a = x & 0x7FFFFFFFu;
  if (a > 0x7F800000u) return sign | 0x7E00u;   // NaN
  if (a >= 0x477FF000u) return sign | 0x7C00u;  // overflow -> inf
  if (a < 0x38800000u) {                        // subnormal or zero: the mantissa in units of 2^-24, exact
    return sign | uint(roundEven(uintBitsToFloat(a) * 16777216.0));
  }
  const uint odd = (a >> 13) & 1u;
  return sign | ((a + 0xC8000FFFu + odd) >> 13);  // rebias 127 -> 15, round half to even at bit 13
}
// Nearest f16 at or below x, and at or above x (kv/codec.cpp).
uint f16_round_down(float x) {
  const uint h = f16_bits(x);
  if (h2f(h) <= x) return h;
  if (h == 0u) return 0x8001u;
  return (h & 0x8000u) != 0u ? h + 1u : h - 1u;
}
uint f16_round_up(float x) {
  const uint h = f16_bits(x);
  if (h2f(h) >= x) return h;
  if (h == 0x8000u) return 0x0001u;
  return (h & 0x8000u) != 0u ? h - 1u : h + 1u;
}

// The values of one fit: the finite ones, in order (the CPU fit's `values`), and their count.
float vals[MAX_N];
uint n_vals;

// kv::quantize_value.
uint quantize(float x, float scale, float mn, float levels) {
  if (!(scale > 0.0)) return 0u;
  precise float v = div_rn(x - mn, scale);
  const float above = v > 0.0 ? v : 0.0;
  return uint(roundEven(above < levels ? above : levels));
}

// Squared error of vals under (scale, min), codes by multiplication with 1 / scale (kv/codec.cpp group_error).
float group_error(float scale, float mn, float levels) {
  const float inverse = div_rn(1.0, scale);
  precise float acc[LANES];
  for (uint k = 0; k < LANES; ++k) acc[k] = 0.0;
  for (uint i = 0; i < n_vals; ++i) {
    const uint lane = i < n_vals / LANES * LANES ? i % LANES : 0u;
    precise float code = roundEven(min(max((vals[i] - mn) * inverse, 0.0), levels));
    precise float e = code * scale + mn - vals[i];
    acc[lane] += e * e;
  }
  precise float sum = 0.0;
  for (uint k = 0; k < LANES; ++k) sum += acc[k];
  return sum;
}

// kv::fit_group_params over vals: (scale bits, min bits).
uvec2 fit_params(uint bits) {
  float lo = 1.0 / 0.0, hi = -1.0 / 0.0;
  for (uint i = 0; i < n_vals; ++i) lo = min(lo, vals[i]), hi = max(hi, vals[i]);
  if (!(lo <= hi)) lo = hi = 0.0;  // no finite values
  const float levels = float((1u << bits) - 1u);
  uvec2 cover;
  cover.y = f16_round_down(lo);
  precise float needed = div_rn(hi - h2f(cover.y), levels);
  cover.x = f16_round_up(needed);
  for (;;) {
    precise float top = h2f(cover.y) + levels * h2f(cover.x);
    if (!(top < hi && cover.x < 0x7BFFu)) break;
    ++cover.x;
  }
  if (bits >= 8u || !(hi > lo)) return cover;
  uvec2 best = cover;
  float best_err = group_error(h2f(cover.x), h2f(cover.y), levels);
  const uint kSteps = 12u;
  for (uint step = 0u; step <= kSteps; ++step) {
    precise float inverse = div_rn(levels - 0.5 + div_rn(3.0 * float(step), float(kSteps)), hi - lo);
    precise float sl[LANES], sl2[LANES], sx[LANES], sxl[LANES];
    for (uint k = 0; k < LANES; ++k) sl[k] = 0.0, sl2[k] = 0.0, sx[k] = 0.0, sxl[k] = 0.0;
    for (uint i = 0; i < n_vals; ++i) {
      const uint lane = i < n_vals / LANES * LANES ? i % LANES : 0u;
      const float x = vals[i];
      precise float l = roundEven(min(max((x - lo) * inverse, 0.0), levels));
      sl[lane] += l;
      sl2[lane] += l * l;
      sx[lane] += x;
      sxl[lane] += x * l;
    }
    precise FIT_REAL s_l = 0.0, s_l2 = 0.0, s_x = 0.0, s_xl = 0.0;
    for (uint k = 0; k < LANES; ++k) {
      s_l += FIT_REAL(sl[k]), s_l2 += FIT_REAL(sl2[k]), s_x += FIT_REAL(sx[k]), s_xl += FIT_REAL(sxl[k]);
    }
    const FIT_REAL count = FIT_REAL(n_vals);
    precise FIT_REAL det = count * s_l2 - s_l * s_l;  // integers below 2^24: exact
    if (!(det > 0.0)) continue;
    precise FIT_REAL scale = (count * s_xl - s_x * s_l) / det;
    precise FIT_REAL mn = (s_l2 * s_x - s_l * s_xl) / det;
    if (!(scale > 0.0) || isnan(mn) || isinf(mn) || scale > 65504.0 || abs(mn) > 65504.0) continue;
    const uvec2 p = uvec2(f16_bits(float(scale)), f16_bits(float(mn)));
    if (!(h2f(p.x) > 0.0)) continue;
    const float err = group_error(h2f(p.x), h2f(p.y), levels);
    if (err < best_err) best = p, best_err = err;
  }
  return best;
}

void add_value(float x) {
  if (!isnan(x) && !isinf(x)) vals[n_vals++] = x;
}

