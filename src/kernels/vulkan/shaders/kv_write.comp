#version 450
// Writes one token's keys and values (f32, already RoPE-rotated) into row `slot` of an f16 page in the
// project's page format (kv/page_format.h): per KV head, keys channel-major [head_dim][P] and values
// token-major [P][head_dim], both IEEE half. One thread per (head, channel pair): the value pair is one
// 32-bit word of the value row; each of the two key halves shares its word with the neighbouring token's
// key (slot ^ 1), which an earlier dispatch wrote, so the thread reads the word and replaces its own half.
// No two threads of a dispatch touch the same word.
layout(local_size_x_id = 0) in;
layout(constant_id = 0) const uint WG = 256;
const uint P = 64;  // tokens per page (kv::kTokensPerPage)

layout(push_constant) uniform Push {
  uint page_offset;        // byte offset of the page in the pool binding (4-byte aligned)
  uint slot;               // row of the page to write, < P
  uint n_kv_heads;
  uint head_dim;           // even
  uint head_bytes;         // PageFormat fields, in bytes
  uint key_section_bytes;
} pc;

layout(binding = 0) buffer PoolBuf { uint pool[]; };       // pages
layout(binding = 1) readonly buffer KBuf { float k[]; };  // [n_kv_heads][head_dim]
layout(binding = 2) readonly buffer VBuf { float v[]; };  // [n_kv_heads][head_dim]

void main() {
  const uint pairs = pc.head_dim / 2;
  const uint i = gl_GlobalInvocationID.x;
  if (i >= pc.n_kv_heads * pairs) return;
  const uint head = i / pairs, pair = i % pairs;
  const uint d = 2 * pair;
  const uint src = head * pc.head_dim + d;
  const uint keys = pc.page_offset + head * pc.head_bytes;  // bytes
  const uint values = keys + pc.key_section_bytes;
  pool[(values >> 2) + pc.slot * pairs + pair] = packHalf2x16(vec2(v[src], v[src + 1]));
  const uint shift = (pc.slot & 1u) * 16u;
  const uint keep = 0xFFFF0000u >> shift;  // the neighbouring token's half
  for (uint c = 0; c < 2; ++c) {
    const uint word = (keys >> 2) + ((d + c) * P + pc.slot) / 2;
    const uint half_bits = packHalf2x16(vec2(k[src + c], 0.0)) & 0xFFFFu;
    pool[word] = (pool[word] & keep) | (half_bits << shift);
  }
}
