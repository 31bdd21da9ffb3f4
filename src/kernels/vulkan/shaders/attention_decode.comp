#version 450
// Decode attention of one token's query heads over KV pages in the project's page format (kv/page_format.h),
// decoding the pages inside the shader: flash-decoding with split-K over pages. Workgroup (s, h) folds pages
// [s * pages_per_split, ...) of KV head h into an online softmax for the GQA query heads of h, and writes its
// unnormalised output with the softmax statistics (m = max score, l = sum of e^(score - m)); attention_merge
// combines the splits. Each page-head is read once for all GQA query heads.
//
// One thread per token of a page (64) while scoring keys, one per channel (and channel + 64, ...) while
// accumulating values. All pages of a dispatch share one format (a mixed cache dispatches each precision
// over its pages into its own range of splits, merged together). Keys: f16 or per-channel quantized
// (KeyMode::PerChannel); values: f16 or per-token groups. Codes 2, 4 or 8 bits wide (one bit plane).
#extension GL_KHR_shader_subgroup_arithmetic : require

layout(local_size_x = 64) in;  // = kv::kTokensPerPage
layout(constant_id = 0) const uint HEAD_DIM = 64;
layout(constant_id = 1) const uint GQA = 1;         // query heads per KV head
layout(constant_id = 2) const uint KEY_BITS = 16;   // 16: f16 keys
layout(constant_id = 3) const uint VALUE_BITS = 16;  // 16: f16 values
layout(constant_id = 4) const uint GROUP = 64;       // value group along head_dim (quantized values)
const uint P = 64;                                   // tokens per page
const uint DIMS_PER_THREAD = (HEAD_DIM + 63) / 64;

layout(push_constant) uniform Push {
  uint n_pages;            // pages in the page list
  uint pages_per_split;
  uint n_heads;            // query heads (n_kv_heads * GQA)
  uint split_base;         // index of this dispatch's first split in the partial buffers
  uint head_bytes;         // PageFormat fields, in bytes
  uint key_section_bytes;
  uint key_codes_offset;
  uint key_row_code_bytes;
  uint value_codes_offset;
  uint row_code_bytes;
  float scale;             // multiplies q.k
} pc;

layout(binding = 0) readonly buffer PoolBuf { uint pool[]; };         // pages, each 4-byte aligned
layout(binding = 1) readonly buffer PageListBuf { uvec2 pages[]; };   // [n_pages] (byte offset in pool, valid tokens)
layout(binding = 2) readonly buffer QBuf { float q[]; };              // [n_heads][HEAD_DIM]
layout(binding = 3) writeonly buffer PartialOBuf { float part_o[]; };  // [splits][n_heads][HEAD_DIM]
layout(binding = 4) writeonly buffer PartialMlBuf { vec2 part_ml[]; };  // [splits][n_heads] (m, l)

shared float q_s[GQA * HEAD_DIM];  // the group's queries times pc.scale
shared vec2 key_params[HEAD_DIM];  // per-channel (scale, min) of the current page
shared float p_s[GQA * P];         // softmax weights of the current page
shared float red_max[GQA * 64];    // [GQA][subgroups]
shared float red_sum[GQA * 64];

uint byte_at(uint b) { return (pool[b >> 2] >> ((b & 3u) * 8u)) & 255u; }
float half_at(uint b) { return unpackHalf2x16(pool[b >> 2] >> ((b & 2u) * 8u)).x; }  // b even

// Code i of a packed row of n codes `bits` wide (kv/codec.h): byte i % (n * bits / 8), bits from
// (i / (n * bits / 8)) * bits.
uint code_at(uint row, uint n, uint bits, uint i) {
  const uint stride = n * bits / 8;
  return (byte_at(row + i % stride) >> ((i / stride) * bits)) & ((1u << bits) - 1u);
}

void main() {
  const uint split = gl_WorkGroupID.x, kv_head = gl_WorkGroupID.y, tid = gl_LocalInvocationID.x;
  const uint first_head = kv_head * GQA;
  for (uint i = tid; i < GQA * HEAD_DIM; i += 64) q_s[i] = q[first_head * HEAD_DIM + i] * pc.scale;

  float m[GQA], l[GQA], o[GQA][DIMS_PER_THREAD];
  for (uint g = 0; g < GQA; ++g) {
    m[g] = -1.0 / 0.0;
    l[g] = 0.0;
    for (uint i = 0; i < DIMS_PER_THREAD; ++i) o[g][i] = 0.0;
  }
  const uint first_page = split * pc.pages_per_split;
  const uint end_page = min(first_page + pc.pages_per_split, pc.n_pages);
  for (uint page = first_page; page < end_page; ++page) {
    const uvec2 entry = pages[page];
    const uint keys = entry.x + kv_head * pc.head_bytes, values = keys + pc.key_section_bytes;
    const uint n_valid = entry.y;
    if (KEY_BITS != 16) {
      for (uint d = tid; d < HEAD_DIM; d += 64) key_params[d] = unpackHalf2x16(pool[(keys >> 2) + d]);
    }
    barrier();  // q_s, key_params

    // Scores of token tid for every query head of the group.
    float s[GQA];
    for (uint g = 0; g < GQA; ++g) s[g] = 0.0;
    for (uint d = 0; d < HEAD_DIM; ++d) {
      float k;
      if (KEY_BITS == 16) {
        k = half_at(keys + 2 * (d * P + tid));
      } else {
        const vec2 sm = key_params[d];
        k = float(code_at(keys + pc.key_codes_offset + d * pc.key_row_code_bytes, P, KEY_BITS, tid)) * sm.x + sm.y;
      }
      for (uint g = 0; g < GQA; ++g) s[g] += q_s[g * HEAD_DIM + d] * k;
    }
    const bool valid = tid < n_valid;
    for (uint g = 0; g < GQA; ++g) {
      const float mx = subgroupMax(valid ? s[g] : -1.0 / 0.0);
      if (subgroupElect()) red_max[g * 64 + gl_SubgroupID] = mx;
    }
    barrier();
    float corr[GQA];
    for (uint g = 0; g < GQA; ++g) {
      float page_max = red_max[g * 64];
      for (uint sg = 1; sg < gl_NumSubgroups; ++sg) page_max = max(page_max, red_max[g * 64 + sg]);
      const float m_new = max(m[g], page_max);
      corr[g] = exp(m[g] - m_new);
      m[g] = m_new;
      const float p = valid ? exp(s[g] - m_new) : 0.0;
      p_s[g * P + tid] = p;
      const float sum = subgroupAdd(p);
      if (subgroupElect()) red_sum[g * 64 + gl_SubgroupID] = sum;
    }
    barrier();
    for (uint g = 0; g < GQA; ++g) {
      float page_sum = 0.0;
      for (uint sg = 0; sg < gl_NumSubgroups; ++sg) page_sum += red_sum[g * 64 + sg];
      l[g] = l[g] * corr[g] + page_sum;
    }

    // Values: channel d = tid + 64 i of every valid token.
    for (uint i = 0; i < DIMS_PER_THREAD; ++i) {
      const uint d = tid + 64 * i;
      if (d >= HEAD_DIM) break;
      float acc[GQA];
      for (uint g = 0; g < GQA; ++g) acc[g] = o[g][i] * corr[g];
      for (uint t = 0; t < n_valid; ++t) {
        float v;
        if (VALUE_BITS == 16) {
          v = half_at(values + 2 * (t * HEAD_DIM + d));
        } else {
          const vec2 sm = unpackHalf2x16(pool[(values >> 2) + t * (HEAD_DIM / GROUP) + d / GROUP]);
          v = float(code_at(values + pc.value_codes_offset + t * pc.row_code_bytes, HEAD_DIM, VALUE_BITS, d)) * sm.x +
              sm.y;
        }
        for (uint g = 0; g < GQA; ++g) acc[g] += p_s[g * P + t] * v;
      }
      for (uint g = 0; g < GQA; ++g) o[g][i] = acc[g];
    }
    barrier();  // key_params, p_s and the reductions are rewritten by the next page
  }

  const uint out_split = pc.split_base + split;
  for (uint g = 0; g < GQA; ++g) {
    const uint head = first_head + g;
    for (uint i = 0; i < DIMS_PER_THREAD; ++i) {
      const uint d = tid + 64 * i;
      if (d < HEAD_DIM) part_o[(out_split * pc.n_heads + head) * HEAD_DIM + d] = o[g][i];
    }
    if (tid == 0) part_ml[out_split * pc.n_heads + head] = vec2(m[g], l[g]);
  }
}
