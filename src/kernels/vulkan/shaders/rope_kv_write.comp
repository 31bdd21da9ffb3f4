#version 450
// The decode step's RoPE and KV write in one dispatch (rope.comp then kv_write.comp, fused): the query heads
// rotated in place, and the token's keys rotated on their way into row `slot` of an f16 page, its values
// written beside them (the page layout of kv_write.comp; the key buffer itself is left unrotated).
// Threads [0, n_heads * rope_dims / 2): one rotated query pair each, as rope.comp. Threads after them: one
// (KV head, channel pair) each, as kv_write.comp, computing both channels' rotated keys from the unrotated
// buffer (in NeoX mode a channel's partner is rope_dims / 2 away, in another thread's pair).
layout(local_size_x_id = 0) in;
layout(constant_id = 0) const uint WG = 256;
const uint P = 64;  // tokens per page (kv::kTokensPerPage)

layout(push_constant) uniform Push {
  uint page_offset;        // byte offset of the page in the pool binding (4-byte aligned)
  uint slot;               // row of the page to write, < P
  uint n_heads;            // query heads
  uint n_kv_heads;
  uint head_dim;           // even
  uint rope_dims;          // rotated dims of each head (even, <= head_dim)
  uint neox;               // 0: normal, 1: NeoX
  uint head_bytes;         // PageFormat fields, in bytes
  uint key_section_bytes;
} pc;

layout(binding = 0) buffer PoolBuf { uint pool[]; };                // pages
layout(binding = 1) buffer QBuf { float q[]; };                     // [n_heads][head_dim], rotated in place
layout(binding = 2) readonly buffer KBuf { float k[]; };            // [n_kv_heads][head_dim], not rotated
layout(binding = 3) readonly buffer VBuf { float v[]; };            // [n_kv_heads][head_dim]
layout(binding = 4) readonly buffer CosSinBuf { vec2 cos_sin[]; };  // [rope_dims / 2] (cos, sin)

// Channel d of a key head whose first element is k[base], rotated as rope.comp rotates it.
float rotated_key(uint base, uint d) {
  const uint pairs = pc.rope_dims / 2;
  if (d >= pc.rope_dims) return k[base + d];
  const bool second = pc.neox != 0 ? d >= pairs : (d & 1u) == 1u;
  const uint p = pc.neox != 0 ? (second ? d - pairs : d) : d / 2;
  const uint a = base + (pc.neox != 0 ? p : 2 * p);
  const uint b = base + (pc.neox != 0 ? p + pairs : 2 * p + 1);
  const vec2 cs = cos_sin[p];
  const float x0 = k[a], x1 = k[b];
  return second ? x0 * cs.y + x1 * cs.x : x0 * cs.x - x1 * cs.y;
}

void main() {
  const uint pairs = pc.rope_dims / 2;
  const uint q_threads = pc.n_heads * pairs;
  const uint i = gl_GlobalInvocationID.x;
  if (i < q_threads) {
    const uint p = i % pairs, head = i / pairs;
    const uint base = head * pc.head_dim;
    const uint a = base + (pc.neox != 0 ? p : 2 * p);
    const uint b = base + (pc.neox != 0 ? p + pairs : 2 * p + 1);
    const vec2 cs = cos_sin[p];
    const float x0 = q[a], x1 = q[b];
    q[a] = x0 * cs.x - x1 * cs.y;
    q[b] = x0 * cs.y + x1 * cs.x;
    return;
  }
  const uint half_dim = pc.head_dim / 2;
  const uint j = i - q_threads;
  if (j >= pc.n_kv_heads * half_dim) return;
  const uint head = j / half_dim, pair = j % half_dim;
  const uint d = 2 * pair;
  const uint src = head * pc.head_dim;
  const uint keys = pc.page_offset + head * pc.head_bytes;  // bytes
  const uint values = keys + pc.key_section_bytes;
  pool[(values >> 2) + pc.slot * half_dim + pair] = packHalf2x16(vec2(v[src + d], v[src + d + 1]));
  const uint shift = (pc.slot & 1u) * 16u;
  const uint keep = 0xFFFF0000u >> shift;  // the neighbouring token's half
  for (uint c = 0; c < 2; ++c) {
    const uint word = (keys >> 2) + ((d + c) * P + pc.slot) / 2;
    const uint half_bits = packHalf2x16(vec2(rotated_key(src, d + c), 0.0)) & 0xFFFFu;
    pool[word] = (pool[word] & keep) | (half_bits << shift);
  }
}
