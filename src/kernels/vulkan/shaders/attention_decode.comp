#version 450
// Decode attention of one token's query heads over KV pages in the project's page format (kv/page_format.h),
// decoding the pages inside the shader: flash-decoding with split-K over pages. Workgroup (s, h) folds pages
// [s * pages_per_split, ...) of KV head h into an online softmax for the GQA query heads of h, and writes its
// unnormalised output with the softmax statistics (m = max score, l = sum of e^(score - m)); attention_merge
// combines the splits. Each page-head is read once for all GQA query heads. All pages of a dispatch share one
// format (a mixed cache dispatches each precision over its pages into its own range of splits, merged
// together). Keys: f16 or per-channel quantized (KeyMode::PerChannel); values: f16 or per-token groups.
// Codes 2, 4 or 8 bits wide.
//
// 256 threads, three steps per page:
//   scores  thread (t, c) = (tid % 64, tid / 64): token t's partial q.k over channel quarter c, summed over the
//           quarters through shared memory (4 x the threads of one thread per token, the same loads);
//   softmax every (query head, token) pair by one thread; page max and sum by subgroup then shared reductions;
//   values  thread (w, ch) = (tid % VW, tid / VW): 32-bit word w of a value row (2 f16 channels, or 32 / bits
//           codes) of the tokens ch, ch + VCH, ... — consecutive threads read consecutive words of one row.
//           Each thread keeps its partial outputs in registers across the split's pages; the VCH token
//           chunks are summed once, at the end of the split. The value words are loaded at the start of the
//           page (f16 values, into registers) and the key scales one page ahead (quantized keys, shared memory).
#extension GL_KHR_shader_subgroup_arithmetic : require

layout(local_size_x = 256) in;
layout(constant_id = 0) const uint HEAD_DIM = 64;
layout(constant_id = 1) const uint GQA = 1;         // query heads per KV head
layout(constant_id = 2) const uint KEY_BITS = 16;   // 16: f16 keys
layout(constant_id = 3) const uint VALUE_BITS = 16;  // 16: f16 values
layout(constant_id = 4) const uint GROUP = 64;       // value group along head_dim (quantized values)
const uint T = 256;                                  // threads
const uint P = 64;                                   // tokens per page (kv::kTokensPerPage)
const uint QUARTER = HEAD_DIM / 4;                   // channels per score thread (HEAD_DIM % 8 == 0)
// Values: words per row, channels per word, token chunks.
const uint VW = VALUE_BITS == 16 ? HEAD_DIM / 2 : HEAD_DIM * VALUE_BITS / 32;
const uint CPW = VALUE_BITS == 16 ? 2 : 32 / VALUE_BITS;
const uint VCH = T / VW;
const uint N_GROUPS = HEAD_DIM / GROUP;
const uint PLANES = VALUE_BITS == 16 ? 1 : 8 / VALUE_BITS;  // bit planes of a value code row
const uint VALUE_STRIDE = HEAD_DIM * VALUE_BITS / 8;       // bytes of one plane of a value code row
const uint TOKENS_PER_CHUNK = (P + VCH - 1) / VCH;
const uint OUT_PER_THREAD = (GQA * HEAD_DIM + T - 1) / T;
const uint REDUCE_SLOTS = 2;  // token chunks summed per round at the end of a split
const uint SCRATCH = 4 * P > REDUCE_SLOTS * HEAD_DIM ? 4 * GQA * P : REDUCE_SLOTS * GQA * HEAD_DIM;

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
  uint row_code_bytes;     // a multiple of 4 (checked by the host)
  float scale;             // multiplies q.k
} pc;

layout(binding = 0) readonly buffer PoolBuf { uint pool[]; };         // pages, each 4-byte aligned
layout(binding = 1) readonly buffer PageListBuf { uvec2 pages[]; };   // [n_pages] (byte offset in pool, valid tokens)
layout(binding = 2) readonly buffer QBuf { float q[]; };              // [n_heads][HEAD_DIM]
layout(binding = 3) writeonly buffer PartialOBuf { float part_o[]; };  // [splits][n_heads][HEAD_DIM]
layout(binding = 4) writeonly buffer PartialMlBuf { vec2 part_ml[]; };  // [splits][n_heads] (m, l)

shared float q_s[GQA * HEAD_DIM];  // the group's queries times pc.scale
shared vec2 key_params[2][HEAD_DIM];  // per-channel (scale, min) of the current page [page & 1] and the next
shared float scratch[SCRATCH];     // per page: [4][GQA][P] partial scores; at the end: [REDUCE_SLOTS][GQA][HEAD_DIM]
shared float p_s[GQA * P];         // [GQA][P] scores, then softmax weights, of the current page
shared float red_max[GQA * P];     // [GQA * P / subgroup size] per-subgroup maxima
shared float red_sum[GQA * P];

#include "kv_page_read.glsl"  // byte_at, half_at, code_at

void main() {
  const uint split = gl_WorkGroupID.x, kv_head = gl_WorkGroupID.y, tid = gl_LocalInvocationID.x;
  const uint first_head = kv_head * GQA;
  for (uint i = tid; i < GQA * HEAD_DIM; i += T) q_s[i] = q[first_head * HEAD_DIM + i] * pc.scale;

  // Softmax state per query head (the same in every thread) and this thread's partial outputs: channels
  // value_channel(j) of its word, over its token chunk.
  float m[GQA], l[GQA], acc[GQA][CPW];
  for (uint g = 0; g < GQA; ++g) {
    m[g] = -1.0 / 0.0;
    l[g] = 0.0;
    for (uint j = 0; j < CPW; ++j) acc[g][j] = 0.0;
  }
  const uint word = tid % VW, chunk = tid / VW;  // chunk >= VCH: idle in the value step
  const uint score_token = tid % P, quarter = tid / P;

  const uint first_page = split * pc.pages_per_split;
  const uint end_page = min(first_page + pc.pages_per_split, pc.n_pages);
  // Quantized keys' per-channel scales go through shared memory (one load per channel per page, not one per
  // thread and channel), double-buffered: the next page's are loaded at the start of a page and stored at its
  // end, so their trip to memory overlaps the page's work.
  if (KEY_BITS != 16 && first_page < end_page) {
    const uint keys = pages[first_page].x + kv_head * pc.head_bytes;
    for (uint d = tid; d < HEAD_DIM; d += T) key_params[first_page & 1u][d] = unpackHalf2x16(pool[(keys >> 2) + d]);
  }
  barrier();  // q_s, key_params
  for (uint page = first_page; page < end_page; ++page) {
    const uvec2 entry = pages[page];
    const uint keys = entry.x + kv_head * pc.head_bytes, values = keys + pc.key_section_bytes;
    const uint n_valid = entry.y;
    vec2 next_params = vec2(0.0);  // channel tid of the next page (tid < HEAD_DIM; HEAD_DIM <= T)
    if (KEY_BITS != 16 && page + 1 < end_page && tid < HEAD_DIM) {
      next_params = unpackHalf2x16(pool[((pages[page + 1].x + kv_head * pc.head_bytes) >> 2) + tid]);
    }
    // f16 pages: the page's value words are loaded now, into registers, so that their trip to memory overlaps
    // the score and softmax steps. (Quantized values are read in the value step: prefetching their words and
    // scales measured slower on the H100 — q8 at 32K: 89 -> 156 us.)
    uint value_bits[TOKENS_PER_CHUNK];
    if (VALUE_BITS == 16 && chunk < VCH) {
      for (uint i = 0; i < TOKENS_PER_CHUNK; ++i) {
        const uint t = chunk + i * VCH;
        if (t >= n_valid) break;
        value_bits[i] = pool[(values >> 2) + t * (HEAD_DIM / 2) + word];
      }
    }

    // Scores: partial q.k of token score_token over channels [quarter * QUARTER, +QUARTER).
    {
      float s[GQA];
      for (uint g = 0; g < GQA; ++g) s[g] = 0.0;
      for (uint d = quarter * QUARTER; d < (quarter + 1) * QUARTER; ++d) {
        float k;
        if (KEY_BITS == 16) {
          k = half_at(keys + 2 * (d * P + score_token));
        } else {
          const vec2 sm = key_params[page & 1u][d];
          k = float(code_at(keys + pc.key_codes_offset + d * pc.key_row_code_bytes, P, KEY_BITS, score_token)) * sm.x +
              sm.y;
        }
        for (uint g = 0; g < GQA; ++g) s[g] += q_s[g * HEAD_DIM + d] * k;
      }
      for (uint g = 0; g < GQA; ++g) scratch[(quarter * GQA + g) * P + score_token] = s[g];
    }
    barrier();

    // Softmax: pair i = (g, t) = (i / P, i % P). A subgroup never spans two query heads (P is a multiple of
    // the subgroup size), so red_*[i / subgroup size] hold per-head partial reductions.
    for (uint i = tid; i < GQA * P; i += T) {
      const uint t = i % P;
      float s = -1.0 / 0.0;
      if (t < n_valid) s = scratch[i] + scratch[GQA * P + i] + scratch[2 * GQA * P + i] + scratch[3 * GQA * P + i];
      p_s[i] = s;
      const float mx = subgroupMax(s);
      if (subgroupElect()) red_max[i / gl_SubgroupSize] = mx;
    }
    barrier();
    const uint per_head = P / gl_SubgroupSize;  // reductions per query head
    float corr[GQA];
    for (uint g = 0; g < GQA; ++g) {
      float page_max = red_max[g * per_head];
      for (uint r = 1; r < per_head; ++r) page_max = max(page_max, red_max[g * per_head + r]);
      const float m_new = max(m[g], page_max);
      corr[g] = exp(m[g] - m_new);  // m = -inf before the first page: e^-inf = 0 scales the zeros
      m[g] = m_new;
    }
    for (uint i = tid; i < GQA * P; i += T) {
      const uint g = i / P;
      const float p = i % P < n_valid ? exp(p_s[i] - m[g]) : 0.0;
      p_s[i] = p;
      const float sum = subgroupAdd(p);
      if (subgroupElect()) red_sum[i / gl_SubgroupSize] = sum;
    }
    barrier();
    for (uint g = 0; g < GQA; ++g) {
      float page_sum = 0.0;
      for (uint r = 0; r < per_head; ++r) page_sum += red_sum[g * per_head + r];
      l[g] = l[g] * corr[g] + page_sum;
    }

    // Values: word `word` of the rows of tokens chunk, chunk + VCH, ...
    for (uint g = 0; g < GQA; ++g) {
      for (uint j = 0; j < CPW; ++j) acc[g][j] *= corr[g];
    }
    if (chunk < VCH) {
      for (uint i = 0; i < TOKENS_PER_CHUNK; ++i) {
        const uint t = chunk + i * VCH;
        if (t >= n_valid) break;
        float v[CPW];
        if (VALUE_BITS == 16) {
          const vec2 pair = unpackHalf2x16(value_bits[i]);
          for (uint j = 0; j < CPW; ++j) v[j] = j == 0 ? pair.x : pair.y;  // CPW = 2 (a constant index into
                                                                            // a spec-constant-sized array fails glslc)
        } else {
          const uint bits = pool[(values + pc.value_codes_offset + t * pc.row_code_bytes) / 4 + word];
          for (uint k = 0; k < PLANES; ++k) {
            const vec2 sm = unpackHalf2x16(pool[(values >> 2) + t * N_GROUPS + (4 * word + k * VALUE_STRIDE) / GROUP]);
            for (uint b = 0; b < 4; ++b) {
              const uint code = (bits >> (8 * b + k * VALUE_BITS)) & ((1u << VALUE_BITS) - 1u);
              v[k * 4 + b] = float(code) * sm.x + sm.y;
            }
          }
        }
        for (uint g = 0; g < GQA; ++g) {
          const float p = p_s[g * P + t];
          for (uint j = 0; j < CPW; ++j) acc[g][j] += p * v[j];
        }
      }
    }
    if (KEY_BITS != 16 && page + 1 < end_page && tid < HEAD_DIM) key_params[(page + 1) & 1u][tid] = next_params;
    barrier();  // scratch, p_s and the reductions are rewritten by the next page; the next key_params are in
  }

  // Sum the token chunks' partial outputs, REDUCE_SLOTS chunks per round, into out_acc: element
  // e = tid + T * i of [GQA][HEAD_DIM].
  float out_acc[OUT_PER_THREAD];
  for (uint i = 0; i < OUT_PER_THREAD; ++i) out_acc[i] = 0.0;
  for (uint base = 0; base < VCH; base += REDUCE_SLOTS) {
    if (chunk >= base && chunk < base + REDUCE_SLOTS && chunk < VCH) {
      for (uint g = 0; g < GQA; ++g) {
        for (uint j = 0; j < CPW; ++j) {
          uint channel;
          if (VALUE_BITS == 16) {
            channel = 2 * word + j;
          } else {
            channel = 4 * word + j % 4 + (j / 4) * (HEAD_DIM * VALUE_BITS / 8);
          }
          scratch[((chunk - base) * GQA + g) * HEAD_DIM + channel] = acc[g][j];
        }
      }
    }
    barrier();
    const uint slots = min(REDUCE_SLOTS, VCH - base);
    for (uint i = 0; i < OUT_PER_THREAD; ++i) {
      const uint e = tid + T * i;
      if (e < GQA * HEAD_DIM) {
        for (uint r = 0; r < slots; ++r) out_acc[i] += scratch[r * GQA * HEAD_DIM + e];
      }
    }
    barrier();
  }

  const uint out_split = pc.split_base + split;
  for (uint i = 0; i < OUT_PER_THREAD; ++i) {
    const uint e = tid + T * i;
    if (e < GQA * HEAD_DIM) part_o[(out_split * pc.n_heads + first_head) * HEAD_DIM + e] = out_acc[i];
  }
  if (tid < GQA) part_ml[out_split * pc.n_heads + first_head + tid] = vec2(m[tid], l[tid]);
}
