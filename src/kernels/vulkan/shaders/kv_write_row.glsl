// Writes one token's keys and values (f32, keys already RoPE-rotated) into row `slot` of a k16vY page
// (kv/page_format.h): the hot tail page of a ladder that starts quantized, as the CPU store keeps it — keys f16
// (a per-channel key group spans the whole page, so keys wait in f16 until it is full), values quantized at
// once, per token (kv::write_rows: kv::fit_group_params per group of GROUP channels, kv::quantize_value; the bit
// layout of a packed row is written above kv_transcode.comp). One workgroup per KV head: thread i writes key
// channels i, i + 64, ... (its half of the 32-bit word it shares with the neighbouring token, which an earlier
// dispatch wrote), the parameters of value groups i, i + 64, ..., then, after a barrier, value code words
// i, i + 64, ... of the row. Rows of other tokens are left as they are.
layout(local_size_x = 64) in;
layout(constant_id = 0) const uint HEAD_DIM = 64;
layout(constant_id = 1) const uint GROUP = 64;      // value group along head_dim (<= 64)
layout(constant_id = 2) const uint VALUE_BITS = 4;  // 8, 4 or 2
const uint P = 64;                                  // tokens per page (kv::kTokensPerPage)
const uint N_GROUPS = HEAD_DIM / GROUP;
const uint MAX_N = 64;                              // values of one fit: GROUP

layout(push_constant) uniform Push {
  uint page_offset;  // byte offset of the page in the pool binding (4-byte aligned)
  uint slot;         // row of the page to write, < P
  uint head_bytes;   // PageFormat fields, in bytes
  uint key_section_bytes;
  uint value_codes_offset;
} pc;

layout(binding = 0) buffer PoolBuf { uint pool[]; };       // pages
layout(binding = 1) readonly buffer KBuf { float k[]; };  // [n_kv_heads][HEAD_DIM]
layout(binding = 2) readonly buffer VBuf { float v[]; };  // [n_kv_heads][HEAD_DIM]

#include "kv_fit.glsl"

shared uint params_s[N_GROUPS];  // (scale, min) halves of the row's groups

void main() {
  const uint head = gl_WorkGroupID.x, tid = gl_LocalInvocationID.x;
  const uint src = head * HEAD_DIM;
  const uint keys = pc.page_offset + head * pc.head_bytes, values = keys + pc.key_section_bytes;
  const uint shift = (pc.slot & 1u) * 16u;
  const uint keep = 0xFFFF0000u >> shift;  // the neighbouring token's half
  for (uint d = tid; d < HEAD_DIM; d += 64u) {
    const uint word = (keys >> 2) + (d * P + pc.slot) / 2u;
    pool[word] = (pool[word] & keep) | (f16_bits(k[src + d]) << shift);
  }
  const float levels = float((1u << VALUE_BITS) - 1u);
  for (uint g = tid; g < N_GROUPS; g += 64u) {
    n_vals = 0u;
    for (uint i = 0; i < GROUP; ++i) add_value(v[src + g * GROUP + i]);
    const uvec2 p = fit_params(VALUE_BITS);
    params_s[g] = p.x | (p.y << 16);
    pool[(values >> 2) + pc.slot * N_GROUPS + g] = params_s[g];
  }
  barrier();
  const uint stride = HEAD_DIM * VALUE_BITS / 8u, per_byte = 8u / VALUE_BITS;
  const uint row = (values + pc.value_codes_offset + pc.slot * stride) >> 2;
  for (uint w = tid; w < stride / 4u; w += 64u) {
    uint word = 0u;
    for (uint b = 0; b < 4u; ++b) {
      for (uint j = 0; j < per_byte; ++j) {
        const uint d = 4u * w + b + j * stride;
        const vec2 sm = unpackHalf2x16(params_s[d / GROUP]);
        word |= quantize(v[src + d], sm.x, sm.y, levels) << (8u * b + j * VALUE_BITS);
      }
    }
    pool[row + w] = word;
  }
}
