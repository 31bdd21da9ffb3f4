// Re-encodes one page of the project's page format (kv/page_format.h) into another format on the GPU: the
// precision ladder's move of a page down a rung (f16 -> q8/q4/q2/kXvY, q8 -> q4, ...), and back to f16 (a
// truncated cache's partial tail page). The same math as the CPU codec (kv/codec.cpp, the definition):
//   keys, KeyMode::PerChannel: one (scale, min) per channel over the page's n_tokens valid tokens;
//   values: one (scale, min) per token and group of GROUP channels;
//   parameters: kv::fit_group_params (the covering f16 parameters, then 13 least-squares fits on grids of
//     levels - 0.5 .. levels + 2.5 steps over [lo, hi], the lowest squared error wins; 8-bit groups keep the
//     covering ones); codes: kv::quantize_value, round((x - min) / scale) half to even, clamped.
// A section whose width does not change (e.g. the 4-bit values of q4 -> k2v4) is copied word for word, as
// kv::transcode_page copies it, so a page loses precision only where its width drops. Rows past n_tokens get
// code 0 (zero parameters) or f16 zero; section padding is not written.
//
// Bit layout of one packed code row (kv/codec.h, kv::unpack_code_row): n codes of `bits` bits (8, 4 or 2;
// 3-bit rows are not read by the attention shader and not written here), one plane of n * bits / 8 bytes;
// with e = 8 / bits codes per byte and stride s = n * bits / 8, byte i holds code i + j * s in bits
// [j * bits, j * bits + bits), j = 0 .. e - 1. A key row packs the P = 64 codes of one channel, a value row
// the HEAD_DIM codes of one token. GroupParams are two IEEE halves in one 32-bit word: scale (low), min (high).
//
// Where the bytes can differ from the CPU's: the fit's sums (f32 lanes here; the CPU adds its f32 lanes in
// f64 and solves in f64) and the GPU's f32 division may round one ulp apart, which can pick a neighbouring f16
// parameter or, at an exact tie, the other code. Every such choice is one the CPU's error bound allows
// (tests/vulkan/transcode_test.cpp measures both).
//
// One workgroup per KV head; thread i encodes key channels i, i + 64, ... and the value row of token i.
layout(local_size_x = 64) in;
layout(constant_id = 0) const uint HEAD_DIM = 64;
layout(constant_id = 1) const uint GROUP = 64;  // value group along head_dim (<= 64)
const uint P = 64;                              // tokens per page (kv::kTokensPerPage)
const uint N_GROUPS = HEAD_DIM / GROUP;
const uint MAX_N = 64;                          // values of one fit: P (a key channel) or GROUP (a value group)

layout(push_constant) uniform Push {
  uint src_offset;              // byte offsets of the two pages in the pool binding (4-byte aligned)
  uint dst_offset;
  uint n_tokens;                // valid rows of the source page, 1..P
  uint src_key_bits, src_value_bits, dst_key_bits, dst_value_bits;  // 16 (f16), 8, 4 or 2
  uint src_head_bytes, src_key_section_bytes, src_key_codes_offset, src_value_codes_offset;  // PageFormat
  uint dst_head_bytes, dst_key_section_bytes, dst_key_codes_offset, dst_value_codes_offset;
} pc;

layout(binding = 0) buffer PoolBuf { uint pool[]; };  // pages; source and target do not overlap

#include "kv_fit.glsl"

uint byte_at(uint b) { return (pool[b >> 2] >> ((b & 3u) * 8u)) & 255u; }
float half_at(uint b) { return unpackHalf2x16(pool[b >> 2] >> ((b & 2u) * 8u)).x; }  // b even

// Code i of a packed row of n codes `bits` wide.
uint code_at(uint row, uint n, uint bits, uint i) {
  const uint stride = n * bits / 8;
  return (byte_at(row + i % stride) >> ((i / stride) * bits)) & ((1u << bits) - 1u);
}

uint src_keys(uint head) { return pc.src_offset + head * pc.src_head_bytes; }
uint dst_keys(uint head) { return pc.dst_offset + head * pc.dst_head_bytes; }

float source_key(uint head, uint t, uint d) {
  const uint keys = src_keys(head), bits = pc.src_key_bits;
  if (bits == 16u) return half_at(keys + 2u * (d * P + t));
  const vec2 sm = unpackHalf2x16(pool[(keys >> 2) + d]);
  // precise: code * scale + min rounded twice, as the CPU decodes (not one fused multiply-add)
  precise float x = float(code_at(keys + pc.src_key_codes_offset + d * (P * bits / 8u), P, bits, t)) * sm.x + sm.y;
  return x;
}
float source_value(uint head, uint t, uint d) {
  const uint values = src_keys(head) + pc.src_key_section_bytes, bits = pc.src_value_bits;
  if (bits == 16u) return half_at(values + 2u * (t * HEAD_DIM + d));
  const vec2 sm = unpackHalf2x16(pool[(values >> 2) + t * N_GROUPS + d / GROUP]);
  precise float x =
      float(code_at(values + pc.src_value_codes_offset + t * (HEAD_DIM * bits / 8u), HEAD_DIM, bits, d)) * sm.x + sm.y;
  return x;
}

void encode_key_channel(uint head, uint d) {
  const uint keys = dst_keys(head), bits = pc.dst_key_bits, n = pc.n_tokens;
  if (bits == 16u) {
    for (uint w = 0; w < P / 2; ++w) {
      const uint t = 2u * w;
      const uint lo = t < n ? f16_bits(source_key(head, t, d)) : 0u;
      const uint hi = t + 1u < n ? f16_bits(source_key(head, t + 1u, d)) : 0u;
      pool[(keys >> 2) + (d * P) / 2u + w] = lo | (hi << 16);
    }
    return;
  }
  n_vals = 0u;
  for (uint t = 0; t < n; ++t) add_value(source_key(head, t, d));
  const uvec2 p = fit_params(bits);
  pool[(keys >> 2) + d] = p.x | (p.y << 16);
  const float scale = h2f(p.x), mn = h2f(p.y), levels = float((1u << bits) - 1u);
  const uint stride = P * bits / 8u, per_byte = 8u / bits;
  const uint row = (keys + pc.dst_key_codes_offset + d * stride) >> 2;
  for (uint w = 0; w < stride / 4u; ++w) {
    uint word = 0u;
    for (uint b = 0; b < 4u; ++b) {
      for (uint j = 0; j < per_byte; ++j) {
        const uint t = 4u * w + b + j * stride;
        const uint code = t < n ? quantize(source_key(head, t, d), scale, mn, levels) : 0u;
        word |= code << (8u * b + j * bits);
      }
    }
    pool[row + w] = word;
  }
}

void encode_value_row(uint head, uint t) {
  const uint values = dst_keys(head) + pc.dst_key_section_bytes, bits = pc.dst_value_bits;
  const bool valid = t < pc.n_tokens;
  if (bits == 16u) {
    for (uint w = 0; w < HEAD_DIM / 2u; ++w) {
      const uint lo = valid ? f16_bits(source_value(head, t, 2u * w)) : 0u;
      const uint hi = valid ? f16_bits(source_value(head, t, 2u * w + 1u)) : 0u;
      pool[(values >> 2) + t * (HEAD_DIM / 2u) + w] = lo | (hi << 16);
    }
    return;
  }
  uint params[N_GROUPS];
  for (uint g = 0; g < N_GROUPS; ++g) {
    uvec2 p = uvec2(0u);
    if (valid) {
      n_vals = 0u;
      for (uint i = 0; i < GROUP; ++i) add_value(source_value(head, t, g * GROUP + i));
      p = fit_params(bits);
    }
    params[g] = p.x | (p.y << 16);
    pool[(values >> 2) + t * N_GROUPS + g] = params[g];
  }
  const float levels = float((1u << bits) - 1u);
  const uint stride = HEAD_DIM * bits / 8u, per_byte = 8u / bits;
  const uint row = (values + pc.dst_value_codes_offset + t * stride) >> 2;
  for (uint w = 0; w < stride / 4u; ++w) {
    uint word = 0u;
    if (valid) {
      for (uint b = 0; b < 4u; ++b) {
        for (uint j = 0; j < per_byte; ++j) {
          const uint d = 4u * w + b + j * stride;
          const vec2 sm = unpackHalf2x16(params[d / GROUP]);
          word |= quantize(source_value(head, t, d), sm.x, sm.y, levels) << (8u * b + j * bits);
        }
      }
    }
    pool[row + w] = word;
  }
}

void main() {
  const uint head = gl_WorkGroupID.x, tid = gl_LocalInvocationID.x;
  if (pc.dst_key_bits == pc.src_key_bits) {  // same layout: copy the section
    const uint words = pc.src_key_section_bytes / 4u;
    for (uint i = tid; i < words; i += 64u) pool[(dst_keys(head) >> 2) + i] = pool[(src_keys(head) >> 2) + i];
  } else {
    for (uint d = tid; d < HEAD_DIM; d += 64u) encode_key_channel(head, d);
  }
  if (pc.dst_value_bits == pc.src_value_bits) {
    const uint words = (pc.src_head_bytes - pc.src_key_section_bytes) / 4u;
    const uint src = (src_keys(head) + pc.src_key_section_bytes) >> 2;
    const uint dst = (dst_keys(head) + pc.dst_key_section_bytes) >> 2;
    for (uint i = tid; i < words; i += 64u) pool[dst + i] = pool[src + i];
  } else {
    encode_value_row(head, tid);
  }
}
