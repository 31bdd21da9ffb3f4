#version 450
// Writes the keys and values (f32, keys already RoPE-rotated) of n consecutive positions [pos, pos + n) into f16
// pages in the project's page format (kv/page_format.h), the prefill's counterpart of kv_write.comp: position t
// is row t % 64 of page t / 64, found at the byte offset the page list gives. Per KV head, keys are channel-major
// [head_dim][P] and values token-major [P][head_dim], both IEEE half. One thread per (pair of positions 2a, 2a+1,
// head, channel pair): the two key words it owns hold both positions' halves, so a position outside
// [pos, pos + n) (the row before an odd pos, or after the last) keeps its half; no two threads share a word.
layout(local_size_x_id = 0) in;
layout(constant_id = 0) const uint WG = 256;
const uint P = 64;  // tokens per page (kv::kTokensPerPage)

layout(push_constant) uniform Push {
  uint pos;                // first position written
  uint n;                  // positions written
  uint n_kv_heads;
  uint head_dim;           // even
  uint head_bytes;         // PageFormat fields, in bytes
  uint key_section_bytes;
} pc;

layout(binding = 0) buffer PoolBuf { uint pool[]; };                 // pages
layout(binding = 1) readonly buffer PageListBuf { uvec2 pages[]; };  // [pages] (byte offset in pool, valid rows)
layout(binding = 2) readonly buffer KBuf { float k[]; };             // [n][n_kv_heads][head_dim]
layout(binding = 3) readonly buffer VBuf { float v[]; };             // [n][n_kv_heads][head_dim]

void main() {
  const uint pairs = pc.head_dim / 2, kv_dim = pc.n_kv_heads * pc.head_dim;
  const uint first_pair = pc.pos / 2, n_pairs = (pc.pos + pc.n - 1) / 2 - first_pair + 1;
  const uint i = gl_GlobalInvocationID.x;
  if (i >= n_pairs * pc.n_kv_heads * pairs) return;
  const uint pair = i % pairs, head = (i / pairs) % pc.n_kv_heads, a = 2 * (first_pair + i / (pairs * pc.n_kv_heads));
  const uint d = 2 * pair, slot = a % P;
  const uint keys = pages[a / P].x + head * pc.head_bytes;  // bytes
  const uint values = keys + pc.key_section_bytes;
  uint key_words[2] = {pool[(keys >> 2) + (d * P + slot) / 2], pool[(keys >> 2) + ((d + 1) * P + slot) / 2]};
  for (uint b = 0; b < 2; ++b) {
    const uint t = a + b;
    if (t < pc.pos || t >= pc.pos + pc.n) continue;
    const uint src = (t - pc.pos) * kv_dim + head * pc.head_dim + d;
    pool[(values >> 2) + (slot + b) * pairs + pair] = packHalf2x16(vec2(v[src], v[src + 1]));
    const uint shift = 16 * b;
    for (uint c = 0; c < 2; ++c) {
      key_words[c] = (key_words[c] & (0xFFFF0000u >> shift)) | ((packHalf2x16(vec2(k[src + c], 0.0)) & 0xFFFFu) << shift);
    }
  }
  pool[(keys >> 2) + (d * P + slot) / 2] = key_words[0];
  pool[(keys >> 2) + ((d + 1) * P + slot) / 2] = key_words[1];
}
