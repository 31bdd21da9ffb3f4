#version 450
// Causal attention of a prefill chunk over f16 pages in the project's page format (kv/page_format.h): query rows
// [0, n) at positions pos + [0, n), each seeing positions [0, its own]. The chunk's own keys and values are
// already in the pages (kv_write_rows.comp). Workgroup (b, h) takes the BQ query rows [b * BQ, b * BQ + BQ)
// and the GQA query heads of KV head h — R = BQ * GQA query vectors — and folds the pages its last row sees into
// an online softmax, so each page-head is read once for the R vectors (the decode shader reads it once per row).
//
// 256 threads, three steps per page:
//   scores  thread (t, rg) = (tid % 64, tid / 64): token t's q.k for vectors rg, rg + 4, ... (one key load per
//           channel, reused across the vectors); masked (-inf) past a vector's position;
//   softmax thread r < R: the page's max and sum for vector r, its weights in place of the scores;
//   values  thread (c, vg) = (tid % HEAD_DIM, tid / HEAD_DIM): channel c of vectors vg, vg + 256 / HEAD_DIM, ...
//           accumulated in registers over the pages, consecutive threads reading consecutive halves of a row.
layout(local_size_x = 256) in;
layout(constant_id = 0) const uint HEAD_DIM = 64;  // a multiple of 8, at most 256
layout(constant_id = 1) const uint GQA = 1;        // query heads per KV head
const uint T = 256;                                // threads
const uint P = 64;                                 // tokens per page (kv::kTokensPerPage)
const uint R_MAX = HEAD_DIM <= 128 ? 32 : 16;      // query vectors per workgroup, at most (shared memory)
const uint BQ = R_MAX / GQA > 0 ? R_MAX / GQA : 1;  // query rows per workgroup
const uint R = BQ * GQA;                           // query vectors: vector r = (row r / GQA, head r % GQA)
const uint SCORE_VECTORS = (R + 3) / 4;            // per score thread
const uint VECTOR_GROUPS = T / HEAD_DIM;           // value thread groups
const uint VALUE_VECTORS = (R + VECTOR_GROUPS - 1) / VECTOR_GROUPS;  // per value thread

layout(push_constant) uniform Push {
  uint pos;                // position of query row 0
  uint n;                  // query rows
  uint n_heads;            // query heads (n_kv_heads * GQA)
  uint head_bytes;         // PageFormat fields, in bytes
  uint key_section_bytes;
  float scale;             // multiplies q.k
} pc;

layout(binding = 0) readonly buffer PoolBuf { uint pool[]; };        // f16 pages, each 4-byte aligned
layout(binding = 1) readonly buffer PageListBuf { uvec2 pages[]; };  // [pages] (byte offset in pool, valid rows)
layout(binding = 2) readonly buffer QBuf { float q[]; };             // [n][n_heads][HEAD_DIM] (keys rotated)
layout(binding = 3) writeonly buffer OutBuf { float out_[]; };       // [n][n_heads][HEAD_DIM]

shared float q_s[R * HEAD_DIM];  // [R][HEAD_DIM] the vectors times pc.scale
shared float p_s[R * P];         // [R][P] scores, then softmax weights, of the current page
shared float corr_s[R];          // e^(m_old - m_new) of each vector for the current page
shared float l_s[R];             // softmax denominators

float half_at(uint b) { return unpackHalf2x16(pool[b >> 2] >> ((b & 2u) * 8u)).x; }  // b even

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

  for (uint page = 0; page <= last_position / P; ++page) {
    const uvec2 entry = pages[page];
    const uint keys = entry.x + kv_head * pc.head_bytes, values = keys + pc.key_section_bytes;
    const uint position = page * P + t;
    // Scores.
    {
      float s[SCORE_VECTORS];
      for (uint j = 0; j < SCORE_VECTORS; ++j) s[j] = 0.0;
      if (t < entry.y) {
        for (uint d = 0; d < HEAD_DIM; ++d) {
          const float k = half_at(keys + 2 * (d * P + t));
          for (uint j = 0; j < SCORE_VECTORS; ++j) {
            const uint r = rg + 4 * j;
            if (r < R) s[j] += q_s[r * HEAD_DIM + d] * k;
          }
        }
      }
      for (uint j = 0; j < SCORE_VECTORS; ++j) {
        const uint r = rg + 4 * j;
        if (r >= R) continue;
        const bool visible = t < entry.y && position <= pc.pos + row0 + min(r / GQA, rows - 1);
        p_s[r * P + t] = visible ? s[j] : -1.0 / 0.0;
      }
    }
    barrier();
    // Softmax.
    if (tid < R) {
      float page_max = -1.0 / 0.0;
      for (uint i = 0; i < P; ++i) page_max = max(page_max, p_s[tid * P + i]);
      const float m_new = max(m, page_max);
      if (m_new == -1.0 / 0.0) {  // nothing visible yet (not the case from page 0 on, kept for safety)
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
      const uint n_tokens = min(entry.y, P);
      for (uint i = 0; i < n_tokens; ++i) {
        const float v = half_at(values + 2 * (i * HEAD_DIM + c));
        for (uint j = 0; j < VALUE_VECTORS; ++j) {
          const uint r = vg + VECTOR_GROUPS * j;
          if (r < R) acc[j] += p_s[r * P + i] * v;
        }
      }
    }
    barrier();  // p_s and corr_s are rewritten by the next page
  }
  for (uint j = 0; j < VALUE_VECTORS; ++j) {
    const uint r = vg + VECTOR_GROUPS * j;
    if (vg >= VECTOR_GROUPS || r >= R || r / GQA >= rows) continue;
    const uint row = row0 + r / GQA;
    out_[(row * pc.n_heads + kv_head * GQA + r % GQA) * HEAD_DIM + c] = acc[j] / l_s[r];
  }
}
