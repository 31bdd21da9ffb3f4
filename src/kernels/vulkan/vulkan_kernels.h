// The compute kernels of the Vulkan backend, recorded into a CommandBatch: matrix-vector products over GGUF
// weight blocks as stored in the file (F16, Q8_0, Q4_0, Q4_K, Q5_K, Q6_K), RMSNorm, RoPE, SwiGLU gating and
// softmax. Each method checks its shapes, creates its pipeline on first use (compiling SPIR-V is the slow
// part on some drivers) and records one dispatch; the caller records barriers between dependent kernels.
// Each kernel has a scalar reference on the CPU (kernels/ref/) it is tested against (tests/vulkan/).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "kernels/vulkan/context.h"
#include "kv/page_format.h"
#include "kvtier/ggml_types.h"

namespace kvtier::vulkan {

struct MatvecTuning {
  uint32_t workgroup = 128;       // threads per workgroup
  uint32_t rows_per_group = 2;    // rows each workgroup computes (x is read once for them)
};

// Elementwise work of the decode step folded into a matvec (matvec_head.glsl's FUSE bits): one dispatch and no
// barrier where the step recorded two or three.
struct MatvecFusion {
  static constexpr uint32_t kNorm = 1;  // x RMS-normalised on the way in, aux the norm's weight [cols]
  static constexpr uint32_t kMul = 2;   // x * aux on the way in, aux [n_tokens][cols]
  static constexpr uint32_t kSilu = 4;  // y = silu(W x)
  static constexpr uint32_t kAdd = 8;   // y += W x (the residual add)
  uint32_t bits = 0;
  float eps = 0;  // kNorm's epsilon
};

class Kernels {
 public:
  explicit Kernels(Context& context) : context_(context) {}

  static bool supports_matvec(GgmlType type);

  // y[t][r] = sum_c W[r][c] * x[t][c] for r < rows, t < n_tokens, with W dequantized as GGML defines its
  // type and x in f32 (not quantized, unlike the CPU path's Q8 activations).
  //   w: [rows][ggml_row_bytes(type, cols)] as in the GGUF file;  x: [n_tokens][cols] f32;  y: [n_tokens][rows]
  // cols must be a multiple of the type's block (32, or 256 for K-quants).
  Status matvec(CommandBatch& batch, GgmlType type, BufferRange w, BufferRange x, BufferRange y, int64_t rows,
                int64_t cols, int64_t n_tokens = 1, MatvecTuning tuning = {});
  // The same product with elementwise work fused (MatvecFusion), each against its own CPU reference:
  //   kNorm: y = W rms_norm(x, aux, eps)   kMul: y = W (x * aux)   kSilu: y = silu(W x)   kAdd: y += W x
  // (kNorm and kMul exclude each other; kSilu and kAdd apply after either.)
  //   aux: kNorm [cols] f32, kMul [n_tokens][cols] f32, else unread (pass x);  y: [n_tokens][rows] f32
  Status matvec_fused(CommandBatch& batch, GgmlType type, BufferRange w, BufferRange x, BufferRange aux,
                      BufferRange y, int64_t rows, int64_t cols, int64_t n_tokens, MatvecFusion fusion,
                      MatvecTuning tuning = {});

  // The same product for a chunk of tokens (the prefill): Y = X W^T with W decoded once per tile of 64 tokens
  // rather than once per token (shaders/matmul_head.glsl). Same shapes and column rule as matvec.
  //   w: [rows][ggml_row_bytes(type, cols)];  x: [n_tokens][cols] f32;  y: [n_tokens][rows] f32
  Status matmul(CommandBatch& batch, GgmlType type, BufferRange w, BufferRange x, BufferRange y, int64_t rows,
                int64_t cols, int64_t n_tokens);

  //   x, out: [n_rows][d];  weight: [d]
  Status rms_norm(CommandBatch& batch, BufferRange x, BufferRange weight, BufferRange out, int n_rows, int d,
                  float eps);
  // In place.  rows: [n_tokens][n_heads][head_dim];  cos_sin: [n_tokens][rope_dims] (cos, sin) pairs, from
  // kernels::rope_table_reference.
  Status rope(CommandBatch& batch, BufferRange rows, BufferRange cos_sin, int n_tokens, int n_heads, int head_dim,
              int rope_dims, bool neox);
  //   gate, up, out: [n]
  Status silu_mul(CommandBatch& batch, BufferRange gate, BufferRange up, BufferRange out, int64_t n);
  // x[i] += y[i % n_y] for i < n (residual adds; bias adds over n / n_y rows).
  //   x: [n];  y: [n_y], n a multiple of n_y
  Status add(CommandBatch& batch, BufferRange x, BufferRange y, int64_t n, int64_t n_y);
  //   x, out: [n_rows][n]
  Status softmax(CommandBatch& batch, BufferRange x, BufferRange out, int n_rows, int n, float scale);

  // Decode attention (one query token at the newest position, so every cached position is visible) over
  // pages of one format, decoded inside the shader; split-K: splits of pages_per_split pages each write
  // their unnormalised output and softmax statistics at split index split_base + s; merge_attention then
  // combines all splits (of one or several dispatches, e.g. one per precision of a mixed cache).
  //   pool: page bytes (each page 4-byte aligned);  page_list: [n_pages] uint32 pairs (byte offset of the
  //   page in pool, valid tokens 1..64), position order;  q: [n_heads][head_dim] f32 (keys not rotated)
  //   partial_o: [splits][n_heads][head_dim] f32;  partial_ml: [splits][n_heads][2] f32
  // Supported: KeyMode::PerChannel, key and value widths 16 (f16), 8, 4 or 2; GQA up to 8.
  static uint32_t attention_splits(uint32_t n_pages, uint32_t pages_per_split) {
    return (n_pages + pages_per_split - 1) / pages_per_split;
  }
  Status decode_attention(CommandBatch& batch, const kv::PageFormat& format, BufferRange pool, BufferRange page_list,
                          uint32_t n_pages, BufferRange q, int n_heads, float scale, BufferRange partial_o,
                          BufferRange partial_ml, uint32_t split_base, uint32_t pages_per_split);
  // Causal attention of a prefill chunk over f16 pages: query rows [0, n) at positions pos + [0, n), each over
  // positions [0, its own] (the chunk's keys and values already written), one dispatch (shaders/
  // attention_prefill.comp: each page-head read once per block of query rows).
  //   pool: f16 pages;  page_list: [pages] uint32 pairs (byte offset of the page in pool, valid rows), covering
  //   positions [0, pos + n);  q: [n][n_heads][head_dim] f32 (keys rotated);  out: [n][n_heads][head_dim] f32
  Status prefill_attention(CommandBatch& batch, const kv::PageFormat& format, BufferRange pool, BufferRange page_list,
                           uint32_t pos, uint32_t n, BufferRange q, int n_heads, float scale, BufferRange out);
  // Causal attention of a prefill chunk over the pages of one format of a ladder's cache (f16 or quantized,
  // decoded in the shader: shaders/attention_prefill_pages.comp): query rows [0, n) at positions pos + [0, n), each
  // over the listed positions up to its own, written unnormalised with their softmax statistics at split index
  // `split`; merge_attention with n_heads = n * heads combines the formats' splits into [n][n_heads][head_dim].
  //   page_list: [n_pages] uint32 quadruples (byte offset of the page in pool, valid rows, first position, 0),
  //   position order;  q: [n][n_heads][head_dim] f32 (keys rotated);
  //   partial_o: [splits][n][n_heads][head_dim] f32;  partial_ml: [splits][n][n_heads][2] f32
  // Supported: the formats decode_attention reads.
  Status prefill_attention_pages(CommandBatch& batch, const kv::PageFormat& format, BufferRange pool,
                                 BufferRange page_list, uint32_t n_pages, uint32_t pos, uint32_t n, BufferRange q,
                                 int n_heads, float scale, BufferRange partial_o, BufferRange partial_ml,
                                 uint32_t split);
  // Writes one token's keys and values into row `slot` of the f16 page at byte page_offset of pool (the
  // bytes kv::write_rows gives; the other rows are left as they are).
  //   k, v: [n_kv_heads][head_dim] f32 (keys already rotated by RoPE)
  Status write_kv_f16(CommandBatch& batch, const kv::PageFormat& format, BufferRange pool, uint32_t page_offset,
                      uint32_t slot, BufferRange k, BufferRange v);
  // The decode step's RoPE and f16 KV write in one dispatch (shaders/rope_kv_write.comp): q rotated in place as
  // rope does; the keys rotated on their way into row `slot` of the f16 page at page_offset and the values
  // written beside them, as rope then write_kv_f16 would (k itself is left unrotated).
  //   q: [n_heads][head_dim] f32;  k, v: [n_kv_heads][head_dim] f32;  cos_sin: [rope_dims / 2] (cos, sin)
  Status rope_write_kv_f16(CommandBatch& batch, const kv::PageFormat& format, BufferRange pool, uint32_t page_offset,
                           uint32_t slot, BufferRange q, int n_heads, BufferRange k, BufferRange v,
                           BufferRange cos_sin, int rope_dims, bool neox);
  // Re-encodes the page at byte src_offset of pool (format `from`, n_tokens valid rows) into the page at
  // dst_offset (format `to`): a ladder move down a rung, or back to f16. The CPU codec's math
  // (kv::transcode_page); sections whose width does not change are copied. The pages must not overlap.
  // Supported: KeyMode::PerChannel, widths 16, 8, 4 or 2, 64-token pages, value groups of at most 64, packed
  // value rows of whole 32-bit words (head_dim * bits % 32 == 0, as decode_attention needs).
  static bool supports_transcode(const kv::PageFormat& format);
  Status transcode_page(CommandBatch& batch, const kv::PageFormat& from, const kv::PageFormat& to, BufferRange pool,
                        uint32_t src_offset, uint32_t dst_offset, uint32_t n_tokens);
  // Writes one token's row `slot` of the page at page_offset: f16 pages as write_kv_f16; k16vY pages (the hot
  // tail of a ladder that starts quantized) with f16 keys and the values quantized per token, the bytes
  // kv::write_rows gives (kv_write_row.comp).  k, v: [n_kv_heads][head_dim] f32
  Status write_kv_row(CommandBatch& batch, const kv::PageFormat& format, BufferRange pool, uint32_t page_offset,
                      uint32_t slot, BufferRange k, BufferRange v);
  // Writes the keys and values of n consecutive positions [pos, pos + n) into their f16 pages (position t: row
  // t % 64 of the page at byte page_list[t / 64].x of pool), as kv::write_rows lays them out; the other rows are
  // left as they are. One dispatch for a prefill chunk (write_kv_f16 writes one row).
  //   page_list: [pages] uint32 pairs (byte offset of the page in pool, valid rows);
  //   k, v: [n][n_kv_heads][head_dim] f32 (keys already rotated by RoPE)
  Status write_kv_rows_f16(CommandBatch& batch, const kv::PageFormat& format, BufferRange pool, BufferRange page_list,
                           uint32_t pos, uint32_t n, BufferRange k, BufferRange v);
  // The same for k16vY pages (the hot tail pages of a ladder that starts quantized), as write_kv_row writes
  // them row by row (kv_write_rows_tail.comp): f16 keys, values quantized per token.
  Status write_kv_rows_tail(CommandBatch& batch, const kv::PageFormat& format, BufferRange pool,
                            BufferRange page_list, uint32_t pos, uint32_t n, BufferRange k, BufferRange v);
  //   out: [n_heads][head_dim] f32;  lse: [n_heads] f32, log of each head's softmax denominator
  Status merge_attention(CommandBatch& batch, BufferRange partial_o, BufferRange partial_ml, uint32_t n_splits,
                         int n_heads, int head_dim, BufferRange out, BufferRange lse);

 private:
  Result<const Pipeline*> pipeline(const std::string& shader, uint32_t n_buffers, uint32_t push_bytes,
                                   std::vector<uint32_t> spec_constants);

  Context& context_;
  std::map<std::string, Pipeline> pipelines_;  // by shader name and specialization
};

}  // namespace kvtier::vulkan
