#version 450
// Causal attention of a prefill chunk over the pages of ONE format of a precision ladder's cache (kv/page_format.h,
// f16 or quantized, decoded inside the shader with kv_page_read.glsl), the prefill's counterpart of
// attention_decode.comp: query rows [0, n) at positions pos + [0, n), each seeing positions [0, its own] among the
// listed pages. A ladder's chunk runs one dispatch per format, each into its own split of the partial buffers,
// and attention_merge combines them (with the chunk's rows x heads as its "heads"), as decode merges its splits.
// Each list entry gives the page's first position, so the pages of a format need not be consecutive positions
// (the f16 sink page, the f16 tail) and a page re-encoded during the chunk is masked as the f16 one would be.
//
// Workgroup (b, h) takes the BQ query rows [b * BQ, b * BQ + BQ) and the GQA query heads of KV head h (R = BQ * GQA
// query vectors) and folds the pages its last row sees into an online softmax, 256 threads, three steps per page:
//   scores  thread (t, rg) = (tid % 64, tid / 64): token t's q.k for vectors rg, rg + 4, ... (one key decode per
//           channel, reused across the vectors); masked (-inf) past a vector's position;
//   softmax thread r < R: the page's max and sum for vector r, its weights in place of the scores;
//   values  thread (c, vg) = (tid % HEAD_DIM, tid / HEAD_DIM): channel c of vectors vg, vg + 256 / HEAD_DIM, ...
// and writes each vector's unnormalised output with its softmax statistics (m, l); m = -inf where a vector saw no
// position of this format (its output 0: attention_merge skips it).
layout(local_size_x = 256) in;
layout(constant_id = 0) const uint HEAD_DIM = 64;    // a multiple of 8, at most 256
layout(constant_id = 1) const uint GQA = 1;          // query heads per KV head
layout(constant_id = 2) const uint KEY_BITS = 16;    // 16: f16 keys; else per-channel codes
layout(constant_id = 3) const uint VALUE_BITS = 16;  // 16: f16 values; else per-token groups
layout(constant_id = 4) const uint GROUP = 64;       // value group along head_dim (quantized values)
const uint T = 256;                                  // threads
const uint P = 64;                                   // tokens per page (kv::kTokensPerPage)
const uint R_MAX = HEAD_DIM <= 128 ? 32 : 16;        // query vectors per workgroup, at most (shared memory)
const uint BQ = R_MAX / GQA > 0 ? R_MAX / GQA : 1;   // query rows per workgroup
const uint R = BQ * GQA;                             // query vectors: vector r = (row r / GQA, head r % GQA)
const uint SCORE_VECTORS = (R + 3) / 4;              // per score thread
const uint VECTOR_GROUPS = T / HEAD_DIM;             // value thread groups
const uint VALUE_VECTORS = (R + VECTOR_GROUPS - 1) / VECTOR_GROUPS;  // per value thread

layout(push_constant) uniform Push {
  uint pos;                // position of query row 0
  uint n;                  // query rows
  uint n_heads;            // query heads (n_kv_heads * GQA)
  uint n_pages;            // entries of the page list
  uint split;              // this dispatch's index in the partial buffers
  uint head_bytes;         // PageFormat fields, in bytes
  uint key_section_bytes;
  uint key_codes_offset;
  uint key_row_code_bytes;
  uint value_codes_offset;
  uint row_code_bytes;
  float scale;             // multiplies q.k
} pc;

layout(binding = 0) readonly buffer PoolBuf { uint pool[]; };        // pages, each 4-byte aligned
// [n_pages] (byte offset in pool, valid rows, first position, unused), position order
layout(binding = 1) readonly buffer PageListBuf { uvec4 pages[]; };
layout(binding = 2) readonly buffer QBuf { float q[]; };             // [n][n_heads][HEAD_DIM] (keys rotated)
layout(binding = 3) writeonly buffer PartialOBuf { float part_o[]; };   // [splits][n][n_heads][HEAD_DIM]
layout(binding = 4) writeonly buffer PartialMlBuf { vec2 part_ml[]; };  // [splits][n][n_heads] (m, l)

#include "kv_page_read.glsl"

shared float q_s[R * HEAD_DIM];  // [R][HEAD_DIM] the vectors times pc.scale
shared float p_s[R * P];         // [R][P] scores, then softmax weights, of the current page
shared float corr_s[R];          // e^(m_old - m_new) of each vector for the current page
shared float l_s[R];             // softmax denominators
shared vec2 key_params_s[HEAD_DIM];  // per-channel (scale, min) of the current page's quantized keys

void main() {
  const uint block = gl_WorkGroupID.x, kv_head = gl_WorkGroupID.y, tid = gl_LocalInvocationID.x;
  const uint row0 = block * BQ, rows = min(BQ, pc.n - row0);
  for (uint i = tid; i < R * HEAD_DIM; i += T) {
    const uint r = i / HEAD_DIM, row = row0 + min(r / GQA, rows - 1);  // rows past n repeat the last one
    q_s[i] = q[(row * pc.n_heads + kv_head * GQA + r % GQA) * HEAD_DIM + i % HEAD_DIM] * pc.scale;
  }
  float m = -1.0 / 0.0;  // softmax max of vector tid (tid < R)
  if (tid < R) l_s[tid] = 0.0;
  const uint c = tid % HEAD_DIM, vg = tid / HEAD_DIM;
  float acc[VALUE_VECTORS];
  for (uint j = 0; j < VALUE_VECTORS; ++j) acc[j] = 0.0;
  const uint t = tid % P, rg = tid / P;
  const uint last_position = pc.pos + row0 + rows - 1;
  barrier();  // q_s, l_s

  for (uint page = 0; page < pc.n_pages; ++page) {
    const uvec4 entry = pages[page];
    if (entry.z > last_position) break;  // position order: no later page is visible either
    const uint keys = entry.x + kv_head * pc.head_bytes, values = keys + pc.key_section_bytes;
    const uint n_valid = min(entry.y, P);
    const uint position = entry.z + t;
    if (KEY_BITS != 16) {
      for (uint d = tid; d < HEAD_DIM; d += T) key_params_s[d] = key_params_at(keys, d);
      barrier();
    }
    // Scores.
    {
      float s[SCORE_VECTORS];
      for (uint j = 0; j < SCORE_VECTORS; ++j) s[j] = 0.0;
      if (t < n_valid) {
        for (uint d = 0; d < HEAD_DIM; ++d) {
          const float k = key_at(keys, P, KEY_BITS, pc.key_codes_offset, pc.key_row_code_bytes,
                                 KEY_BITS == 16 ? vec2(0.0) : key_params_s[d], d, t);
          for (uint j = 0; j < SCORE_VECTORS; ++j) {
            const uint r = rg + 4 * j;
            if (r < R) s[j] += q_s[r * HEAD_DIM + d] * k;
          }
        }
      }
      for (uint j = 0; j < SCORE_VECTORS; ++j) {
        const uint r = rg + 4 * j;
        if (r >= R) continue;
        const bool visible = t < n_valid && position <= pc.pos + row0 + min(r / GQA, rows - 1);
        p_s[r * P + t] = visible ? s[j] : -1.0 / 0.0;
      }
    }
    barrier();
    // Softmax.
    if (tid < R) {
      float page_max = -1.0 / 0.0;
      for (uint i = 0; i < P; ++i) page_max = max(page_max, p_s[tid * P + i]);
      const float m_new = max(m, page_max);
      if (m_new == -1.0 / 0.0) {  // nothing visible yet: a row before this format's first position
        corr_s[tid] = 1.0;
        for (uint i = 0; i < P; ++i) p_s[tid * P + i] = 0.0;
      } else {
        const float corr = exp(m - m_new);  // m = -inf before the first visible token: e^-inf = 0
        float sum = 0.0;
        for (uint i = 0; i < P; ++i) {
          const float p = exp(p_s[tid * P + i] - m_new);
          p_s[tid * P + i] = p;
          sum += p;
        }
        corr_s[tid] = corr;
        l_s[tid] = l_s[tid] * corr + sum;
        m = m_new;
      }
    }
    barrier();
    // Values.
    if (vg < VECTOR_GROUPS) {
      for (uint j = 0; j < VALUE_VECTORS; ++j) {
        const uint r = vg + VECTOR_GROUPS * j;
        if (r < R) acc[j] *= corr_s[r];
      }
      for (uint i = 0; i < n_valid; ++i) {
        const float v = value_at(values, HEAD_DIM, VALUE_BITS, GROUP, pc.value_codes_offset, pc.row_code_bytes, i, c);
        for (uint j = 0; j < VALUE_VECTORS; ++j) {
          const uint r = vg + VECTOR_GROUPS * j;
          if (r < R) acc[j] += p_s[r * P + i] * v;
        }
      }
    }
    barrier();  // p_s, corr_s and key_params_s are rewritten by the next page
  }
  const uint base = pc.split * pc.n;  // this split's first row
  for (uint j = 0; j < VALUE_VECTORS; ++j) {
    const uint r = vg + VECTOR_GROUPS * j;
    if (vg >= VECTOR_GROUPS || r >= R || r / GQA >= rows) continue;
    const uint row = row0 + r / GQA;
    part_o[((base + row) * pc.n_heads + kv_head * GQA + r % GQA) * HEAD_DIM + c] = acc[j];
  }
  if (tid < R && tid / GQA < rows) {
    const uint row = row0 + tid / GQA;
    part_ml[(base + row) * pc.n_heads + kv_head * GQA + tid % GQA] = vec2(m, l_s[tid]);
  }
}
