#version 450
// Writes the keys and values (f32, keys already RoPE-rotated) of n consecutive positions [pos, pos + n) into
// k16vY pages (kv/page_format.h) — the hot tail pages of a ladder that starts quantized — the prefill's
// counterpart of kv_write_row.comp, with its math: keys f16 (kv_fit.glsl's f16_bits), values quantized per token
// (kv::fit_group_params per group of GROUP channels, kv::quantize_value). Position t is row t % 64 of the page at
// byte offset pages[t / 64].x. Workgroup (j, head) writes the pair of positions 2a, 2a + 1 (a = pos / 2 + j) of
// one KV head: a key word holds both positions' halves, so one workgroup owns it, and a position outside
// [pos, pos + n) keeps its half. Thread i writes key channels i, i + 64, ..., then per row the parameters of value
// groups i, i + 64, ... and, after a barrier, value code words i, i + 64, ... Other rows are left as they are.
layout(local_size_x = 64) in;
layout(constant_id = 0) const uint HEAD_DIM = 64;
layout(constant_id = 1) const uint GROUP = 64;      // value group along head_dim (<= 64)
layout(constant_id = 2) const uint VALUE_BITS = 4;  // 8, 4 or 2
const uint P = 64;                                  // tokens per page (kv::kTokensPerPage)
const uint N_GROUPS = HEAD_DIM / GROUP;
const uint MAX_N = 64;                              // values of one fit: GROUP

layout(push_constant) uniform Push {
  uint pos;                // first position written
  uint n;                  // positions written
  uint n_kv_heads;
  uint head_bytes;         // PageFormat fields, in bytes
  uint key_section_bytes;
  uint value_codes_offset;
} pc;

layout(binding = 0) buffer PoolBuf { uint pool[]; };                 // pages
layout(binding = 1) readonly buffer PageListBuf { uvec2 pages[]; };  // [pages] (byte offset in pool, unused)
layout(binding = 2) readonly buffer KBuf { float k[]; };             // [n][n_kv_heads][HEAD_DIM]
layout(binding = 3) readonly buffer VBuf { float v[]; };             // [n][n_kv_heads][HEAD_DIM]

#include "kv_fit.glsl"

shared uint params_s[N_GROUPS];  // (scale, min) halves of the current row's groups

void main() {
  const uint head = gl_WorkGroupID.y, tid = gl_LocalInvocationID.x;
  const uint a = 2 * (pc.pos / 2 + gl_WorkGroupID.x), slot = a % P;  // slot even: the pair shares its key words
  const uint keys = pages[a / P].x + head * pc.head_bytes, values = keys + pc.key_section_bytes;
  const uint kv_dim = pc.n_kv_heads * HEAD_DIM;
  for (uint d = tid; d < HEAD_DIM; d += 64u) {
    const uint word = (keys >> 2) + (d * P + slot) / 2u;
    uint bits = pool[word];
    for (uint b = 0; b < 2u; ++b) {
      const uint t = a + b;
      if (t < pc.pos || t >= pc.pos + pc.n) continue;
      const uint shift = 16u * b;
      bits = (bits & (0xFFFF0000u >> shift)) | (f16_bits(k[(t - pc.pos) * kv_dim + head * HEAD_DIM + d]) << shift);
    }
    pool[word] = bits;
  }
  const float levels = float((1u << VALUE_BITS) - 1u);
  const uint stride = HEAD_DIM * VALUE_BITS / 8u, per_byte = 8u / VALUE_BITS;
  for (uint b = 0; b < 2u; ++b) {  // uniform in the workgroup: the barriers below are reached by every thread
    const uint t = a + b;
    if (t < pc.pos || t >= pc.pos + pc.n) continue;
    const uint src = (t - pc.pos) * kv_dim + head * HEAD_DIM;
    for (uint g = tid; g < N_GROUPS; g += 64u) {
      n_vals = 0u;
      for (uint i = 0; i < GROUP; ++i) add_value(v[src + g * GROUP + i]);
      const uvec2 p = fit_params(VALUE_BITS);
      params_s[g] = p.x | (p.y << 16);
      pool[(values >> 2) + (slot + b) * N_GROUPS + g] = params_s[g];
    }
    barrier();
    const uint row = (values + pc.value_codes_offset + (slot + b) * stride) >> 2;
    for (uint w = tid; w < stride / 4u; w += 64u) {
      uint word = 0u;
      for (uint c = 0; c < 4u; ++c) {
        for (uint j = 0; j < per_byte; ++j) {
          const uint d = 4u * w + c + j * stride;
          const vec2 sm = unpackHalf2x16(params_s[d / GROUP]);
          word |= quantize(v[src + d], sm.x, sm.y, levels) << (8u * c + j * VALUE_BITS);
        }
      }
      pool[row + w] = word;
    }
    barrier();  // params_s is rewritten for the next row
  }
}
