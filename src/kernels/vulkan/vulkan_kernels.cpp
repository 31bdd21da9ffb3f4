#include "kernels/vulkan/vulkan_kernels.h"

#include <algorithm>
#include <cstdint>
#include <cstring>

#include <fmt/format.h>

namespace kvtier::vulkan {
namespace {

// How a matvec shader reads a format: the unit of columns one thread takes at a time, and the word size
// its weight binding is declared with (rows are row_bytes / word_bytes words apart).
struct MatvecFormat {
  const char* shader;
  uint32_t unit_elems;
  uint32_t word_bytes;
  uint32_t offset_align;  // the weights' buffer offset (Q4_K/Q5_K also load 16-byte words)
};

bool matvec_format(GgmlType type, MatvecFormat* out) {
  switch (type) {
    case GgmlType::F16: *out = {"matvec_f16", 8, 16, 16}; return true;
    case GgmlType::Q8_0: *out = {"matvec_q8_0", 8, 2, 2}; return true;
    case GgmlType::Q4_0: *out = {"matvec_q4_0", 16, 2, 2}; return true;
    case GgmlType::Q4_K: *out = {"matvec_q4_k", 32, 4, 16}; return true;
    case GgmlType::Q5_K: *out = {"matvec_q5_k", 32, 4, 16}; return true;
    case GgmlType::Q6_K: *out = {"matvec_q6_k", 32, 2, 2}; return true;
    default: return false;
  }
}

// The matmul shaders (matmul_<format>.comp): the weight binding's word size (which is also the alignment the
// weights' offset needs) and the tile shaped in matmul_head.glsl.
struct MatmulFormat {
  const char* shader;
  uint32_t word_bytes;
};

bool matmul_format(GgmlType type, MatmulFormat* out) {
  switch (type) {
    case GgmlType::F16: *out = {"matmul_f16", 4}; return true;
    case GgmlType::Q8_0: *out = {"matmul_q8_0", 2}; return true;
    case GgmlType::Q4_0: *out = {"matmul_q4_0", 2}; return true;
    case GgmlType::Q4_K: *out = {"matmul_q4_k", 4}; return true;
    case GgmlType::Q5_K: *out = {"matmul_q5_k", 4}; return true;
    case GgmlType::Q6_K: *out = {"matmul_q6_k", 2}; return true;
    default: return false;
  }
}
constexpr uint32_t kMatmulRows = 64, kMatmulTokens = 64, kMatmulColumns = 32;  // BM, BN, BK of the shaders

constexpr uint32_t kRowWorkgroup = 256;  // rms_norm, softmax: one workgroup per row
constexpr uint32_t kFlatWorkgroup = 256;  // silu_mul, rope: one thread per element or pair

uint32_t ceil_div(uint64_t a, uint64_t b) { return static_cast<uint32_t>((a + b - 1) / b); }

// Where a page's parts lie, as the push constants of attention_decode.comp and attention_prefill_pages.comp list
// them, in this order after each shader's own leading words.
struct PageLayoutWords {
  uint32_t head_bytes, key_section_bytes, key_codes_offset, key_row_code_bytes, value_codes_offset, row_code_bytes;
};
static_assert(sizeof(PageLayoutWords) == 6 * 4);

PageLayoutWords page_layout_words(const kv::PageFormat& f) {
  return {static_cast<uint32_t>(f.head_bytes),         static_cast<uint32_t>(f.key_section_bytes),
          static_cast<uint32_t>(f.key_codes_offset),   static_cast<uint32_t>(f.key_row_code_bytes),
          static_cast<uint32_t>(f.value_codes_offset), static_cast<uint32_t>(f.row_code_bytes)};
}

}  // namespace

bool Kernels::supports_matvec(GgmlType type) {
  MatvecFormat f;
  return matvec_format(type, &f);
}

Result<const Pipeline*> Kernels::pipeline(const std::string& shader, uint32_t n_buffers, uint32_t push_bytes,
                                          std::vector<uint32_t> spec_constants) {
  std::string key = shader;
  for (uint32_t c : spec_constants) key += fmt::format(":{}", c);
  auto it = pipelines_.find(key);
  if (it != pipelines_.end()) return &it->second;
  Result<Pipeline> p = context_.create_pipeline(PipelineDesc{shader, n_buffers, push_bytes, std::move(spec_constants)});
  if (!p.ok()) return p.status();
  return &pipelines_.emplace(key, std::move(*p)).first->second;
}

Status Kernels::matvec(CommandBatch& batch, GgmlType type, BufferRange w, BufferRange x, BufferRange y, int64_t rows,
                       int64_t cols, int64_t n_tokens, MatvecTuning tuning) {
  return matvec_fused(batch, type, w, x, x, y, rows, cols, n_tokens, MatvecFusion{}, tuning);
}

Status Kernels::matvec_fused(CommandBatch& batch, GgmlType type, BufferRange w, BufferRange x, BufferRange aux,
                             BufferRange y, int64_t rows, int64_t cols, int64_t n_tokens, MatvecFusion fusion,
                             MatvecTuning tuning) {
  MatvecFormat f;
  if (!matvec_format(type, &f)) {
    return Status::error(fmt::format("Vulkan matvec: no shader for {} weights", ggml_type_name(type)));
  }
  const GgmlTypeInfo& info = ggml_type_info(type);
  if (rows <= 0 || cols <= 0 || n_tokens <= 0 || cols % info.block_elems != 0 || cols % f.unit_elems != 0) {
    return Status::error(fmt::format("Vulkan matvec: bad shape {} x {} ({} tokens) for {}", rows, cols, n_tokens,
                                     info.name));
  }
  const size_t row_bytes = ggml_row_bytes(type, cols);
  if (row_bytes % f.word_bytes != 0 || w.offset % f.offset_align != 0) {
    return Status::error(fmt::format("Vulkan matvec: {} rows of {} bytes at offset {} are not aligned ({}, {})",
                                     info.name, row_bytes, w.offset, f.word_bytes, f.offset_align));
  }
  if (w.bytes == 0) w.bytes = static_cast<size_t>(rows) * row_bytes;
  if (x.bytes == 0) x.bytes = static_cast<size_t>(n_tokens * cols) * sizeof(float);
  if (y.bytes == 0) y.bytes = static_cast<size_t>(n_tokens * rows) * sizeof(float);
  if (w.bytes < static_cast<size_t>(rows) * row_bytes || x.bytes < static_cast<size_t>(n_tokens * cols) * 4 ||
      y.bytes < static_cast<size_t>(n_tokens * rows) * 4) {
    return Status::error("Vulkan matvec: a buffer is smaller than its shape");
  }
  const uint32_t known = MatvecFusion::kNorm | MatvecFusion::kMul | MatvecFusion::kSilu | MatvecFusion::kAdd;
  const bool norm = (fusion.bits & MatvecFusion::kNorm) != 0, mul = (fusion.bits & MatvecFusion::kMul) != 0;
  if ((fusion.bits & ~known) != 0 || (norm && mul)) {
    return Status::error(fmt::format("Vulkan matvec: unknown or conflicting fusion bits {:#x}", fusion.bits));
  }
  const size_t aux_needed = norm ? static_cast<size_t>(cols) * 4 : mul ? static_cast<size_t>(n_tokens * cols) * 4 : 0;
  const size_t aux_bytes = aux.bytes != 0 ? aux.bytes : aux.buffer->size() - std::min(aux.buffer->size(), aux.offset);
  if (aux_bytes < aux_needed) {
    return Status::error("Vulkan matvec: the fused operand is smaller than its shape");
  }
  const uint32_t groups = ceil_div(static_cast<uint64_t>(rows), tuning.rows_per_group);
  if (groups > context_.info().max_workgroup_count_x) {
    return Status::error(fmt::format("Vulkan matvec: {} rows need more workgroups than the device allows; raise "
                                     "rows_per_group",
                                     rows));
  }
  uint32_t eps_bits = 0;
  static_assert(sizeof(float) == sizeof(uint32_t));
  if (norm) std::memcpy(&eps_bits, &fusion.eps, sizeof eps_bits);
  Result<const Pipeline*> p =
      pipeline(f.shader, 4, 16, {tuning.workgroup, tuning.rows_per_group, fusion.bits, eps_bits});
  if (!p.ok()) return p.status();
  struct {
    uint32_t rows, cols, row_words, units_per_row;
  } push{static_cast<uint32_t>(rows), static_cast<uint32_t>(cols), static_cast<uint32_t>(row_bytes / f.word_bytes),
         static_cast<uint32_t>(cols / f.unit_elems)};
  batch.dispatch(**p, {w, x, y, aux}, push, groups, static_cast<uint32_t>(n_tokens));
  return batch.error();
}

Status Kernels::matmul(CommandBatch& batch, GgmlType type, BufferRange w, BufferRange x, BufferRange y, int64_t rows,
                       int64_t cols, int64_t n_tokens) {
  MatmulFormat f;
  if (!matmul_format(type, &f)) {
    return Status::error(fmt::format("Vulkan matmul: no shader for {} weights", ggml_type_name(type)));
  }
  const GgmlTypeInfo& info = ggml_type_info(type);
  if (rows <= 0 || cols <= 0 || n_tokens <= 0 || cols % info.block_elems != 0 || cols % kMatmulColumns != 0 ||
      rows > UINT32_MAX || n_tokens * cols > UINT32_MAX || n_tokens * rows > UINT32_MAX) {
    return Status::error(fmt::format("Vulkan matmul: bad shape {} x {} ({} tokens) for {}", rows, cols, n_tokens,
                                     info.name));
  }
  const size_t row_bytes = ggml_row_bytes(type, cols);
  if (row_bytes % f.word_bytes != 0 || w.offset % f.word_bytes != 0 || x.offset % 16 != 0) {
    return Status::error(fmt::format("Vulkan matmul: {} rows of {} bytes at offset {} (activations at {}) are not "
                                     "aligned",
                                     info.name, row_bytes, w.offset, x.offset));
  }
  const size_t w_bytes = static_cast<size_t>(rows) * row_bytes;
  const size_t x_bytes = static_cast<size_t>(n_tokens * cols) * sizeof(float);
  const size_t y_bytes = static_cast<size_t>(n_tokens * rows) * sizeof(float);
  if (w.bytes == 0) w.bytes = w_bytes;
  if (x.bytes == 0) x.bytes = x_bytes;
  if (y.bytes == 0) y.bytes = y_bytes;
  if (w.bytes < w_bytes || x.bytes < x_bytes || y.bytes < y_bytes) {
    return Status::error("Vulkan matmul: a buffer is smaller than its shape");
  }
  const uint32_t row_groups = ceil_div(static_cast<uint64_t>(rows), kMatmulRows);
  const uint32_t token_groups = ceil_div(static_cast<uint64_t>(n_tokens), kMatmulTokens);
  if (row_groups > context_.info().max_workgroup_count_x || token_groups > 65535) {
    return Status::error(fmt::format("Vulkan matmul: {} rows x {} tokens need more workgroups than the device allows",
                                     rows, n_tokens));
  }
  Result<const Pipeline*> p = pipeline(f.shader, 3, 16, {});
  if (!p.ok()) return p.status();
  struct {
    uint32_t rows, cols, row_words, n_tokens;
  } push{static_cast<uint32_t>(rows), static_cast<uint32_t>(cols), static_cast<uint32_t>(row_bytes / f.word_bytes),
         static_cast<uint32_t>(n_tokens)};
  batch.dispatch(**p, {w, x, y}, push, row_groups, token_groups);
  return batch.error();
}

Status Kernels::rms_norm(CommandBatch& batch, BufferRange x, BufferRange weight, BufferRange out, int n_rows, int d,
                         float eps) {
  if (n_rows <= 0 || d <= 0) return Status::error("Vulkan rms_norm: empty shape");
  Result<const Pipeline*> p = pipeline("rms_norm", 3, 8, {kRowWorkgroup});
  if (!p.ok()) return p.status();
  struct {
    uint32_t d;
    float eps;
  } push{static_cast<uint32_t>(d), eps};
  batch.dispatch(**p, {x, weight, out}, push, static_cast<uint32_t>(n_rows));
  return batch.error();
}

Status Kernels::rope(CommandBatch& batch, BufferRange rows, BufferRange cos_sin, int n_tokens, int n_heads,
                     int head_dim, int rope_dims, bool neox) {
  if (n_tokens <= 0 || n_heads <= 0 || rope_dims <= 0 || rope_dims % 2 != 0 || rope_dims > head_dim) {
    return Status::error(fmt::format("Vulkan rope: bad shape (rope_dims {} of head_dim {})", rope_dims, head_dim));
  }
  Result<const Pipeline*> p = pipeline("rope", 2, 20, {kFlatWorkgroup});
  if (!p.ok()) return p.status();
  struct {
    uint32_t n_tokens, n_heads, head_dim, rope_dims, neox;
  } push{static_cast<uint32_t>(n_tokens), static_cast<uint32_t>(n_heads), static_cast<uint32_t>(head_dim),
         static_cast<uint32_t>(rope_dims), neox ? 1u : 0u};
  const uint64_t threads = static_cast<uint64_t>(n_tokens) * n_heads * (rope_dims / 2);
  batch.dispatch(**p, {rows, cos_sin}, push, ceil_div(threads, kFlatWorkgroup));
  return batch.error();
}

Status Kernels::silu_mul(CommandBatch& batch, BufferRange gate, BufferRange up, BufferRange out, int64_t n) {
  if (n <= 0) return Status::error("Vulkan silu_mul: empty shape");
  Result<const Pipeline*> p = pipeline("silu_mul", 3, 4, {kFlatWorkgroup});
  if (!p.ok()) return p.status();
  const uint32_t push = static_cast<uint32_t>(n);
  batch.dispatch(**p, {gate, up, out}, push, ceil_div(static_cast<uint64_t>(n), kFlatWorkgroup));
  return batch.error();
}

Status Kernels::add(CommandBatch& batch, BufferRange x, BufferRange y, int64_t n, int64_t n_y) {
  if (n <= 0 || n_y <= 0 || n % n_y != 0 || n > UINT32_MAX) {
    return Status::error(fmt::format("Vulkan add: bad shape ({} elements, addend of {})", n, n_y));
  }
  Result<const Pipeline*> p = pipeline("add", 2, 8, {kFlatWorkgroup});
  if (!p.ok()) return p.status();
  struct {
    uint32_t n, n_y;
  } push{static_cast<uint32_t>(n), static_cast<uint32_t>(n_y)};
  batch.dispatch(**p, {x, y}, push, ceil_div(static_cast<uint64_t>(n), kFlatWorkgroup));
  return batch.error();
}

Status Kernels::softmax(CommandBatch& batch, BufferRange x, BufferRange out, int n_rows, int n, float scale) {
  if (n_rows <= 0 || n <= 0) return Status::error("Vulkan softmax: empty shape");
  Result<const Pipeline*> p = pipeline("softmax", 2, 8, {kRowWorkgroup});
  if (!p.ok()) return p.status();
  struct {
    uint32_t n;
    float scale;
  } push{static_cast<uint32_t>(n), scale};
  batch.dispatch(**p, {x, out}, push, static_cast<uint32_t>(n_rows));
  return batch.error();
}

Status Kernels::decode_attention(CommandBatch& batch, const kv::PageFormat& format, BufferRange pool,
                                 BufferRange page_list, uint32_t n_pages, BufferRange q, int n_heads, float scale,
                                 BufferRange partial_o, BufferRange partial_ml, uint32_t split_base,
                                 uint32_t pages_per_split) {
  auto width_ok = [](int bits) { return bits == 16 || bits == 8 || bits == 4 || bits == 2; };
  if (!width_ok(format.key_bits) || !width_ok(format.value_bits)) {
    return Status::error(fmt::format("Vulkan decode attention: {} pages (3-bit codes) are not supported yet",
                                     format.describe()));
  }
  if (format.key_bits != 16 && format.key_mode != kv::KeyMode::PerChannel) {
    return Status::error("Vulkan decode attention: rotated per-token keys are not supported yet");
  }
  if (format.tokens != kv::kTokensPerPage || format.n_kv_heads <= 0 || n_heads % format.n_kv_heads != 0 ||
      n_heads / format.n_kv_heads > 8 || n_pages == 0 || pages_per_split == 0 || format.head_dim % 8 != 0 ||
      format.head_dim > 256 || format.page_bytes % 4 != 0 ||
      (format.value_bits != 16 && (format.row_code_bytes % 4 != 0 || format.value_codes_offset % 4 != 0))) {
    return Status::error(fmt::format("Vulkan decode attention: unsupported geometry ({} query heads over {})",
                                     n_heads, format.describe()));
  }
  const uint32_t group = format.value_bits == 16 ? 64 : static_cast<uint32_t>(format.group);
  Result<const Pipeline*> p =
      pipeline("attention_decode", 5, 44,
               {static_cast<uint32_t>(format.head_dim), static_cast<uint32_t>(n_heads / format.n_kv_heads),
                static_cast<uint32_t>(format.key_bits), static_cast<uint32_t>(format.value_bits), group});
  if (!p.ok()) return p.status();
  struct {
    uint32_t n_pages, pages_per_split, n_heads, split_base;
    PageLayoutWords layout;
    float scale;
  } push{n_pages, pages_per_split, static_cast<uint32_t>(n_heads), split_base, page_layout_words(format), scale};
  batch.dispatch(**p, {pool, page_list, q, partial_o, partial_ml}, push, attention_splits(n_pages, pages_per_split),
                 static_cast<uint32_t>(format.n_kv_heads));
  return batch.error();
}

Status Kernels::prefill_attention(CommandBatch& batch, const kv::PageFormat& format, BufferRange pool,
                                  BufferRange page_list, uint32_t pos, uint32_t n, BufferRange q, int n_heads,
                                  float scale, BufferRange out) {
  if (format.precision != kv::Precision::F16 || format.tokens != kv::kTokensPerPage || format.n_kv_heads <= 0 ||
      n_heads % format.n_kv_heads != 0 || n_heads / format.n_kv_heads > 8 || format.head_dim % 8 != 0 ||
      format.head_dim > 256 || format.head_bytes % 4 != 0 || format.key_section_bytes % 4 != 0 || n == 0) {
    return Status::error(fmt::format("Vulkan prefill attention: unsupported geometry ({} query heads over {}, {} rows)",
                                     n_heads, format.describe(), n));
  }
  const uint32_t gqa = static_cast<uint32_t>(n_heads / format.n_kv_heads);
  const uint32_t max_vectors = format.head_dim <= 128 ? 32 : 16;  // R_MAX and BQ of the shader
  const uint32_t rows_per_group = std::max<uint32_t>(1, max_vectors / gqa);
  Result<const Pipeline*> p = pipeline("attention_prefill", 4, 24, {static_cast<uint32_t>(format.head_dim), gqa});
  if (!p.ok()) return p.status();
  struct {
    uint32_t pos, n, n_heads, head_bytes, key_section_bytes;
    float scale;
  } push{pos, n, static_cast<uint32_t>(n_heads), static_cast<uint32_t>(format.head_bytes),
         static_cast<uint32_t>(format.key_section_bytes), scale};
  batch.dispatch(**p, {pool, page_list, q, out}, push, ceil_div(n, rows_per_group),
                 static_cast<uint32_t>(format.n_kv_heads));
  return batch.error();
}

Status Kernels::prefill_attention_pages(CommandBatch& batch, const kv::PageFormat& format, BufferRange pool,
                                        BufferRange page_list, uint32_t n_pages, uint32_t pos, uint32_t n,
                                        BufferRange q, int n_heads, float scale, BufferRange partial_o,
                                        BufferRange partial_ml, uint32_t split) {
  auto width_ok = [](int bits) { return bits == 16 || bits == 8 || bits == 4 || bits == 2; };
  if (!width_ok(format.key_bits) || !width_ok(format.value_bits) ||
      (format.key_bits != 16 && format.key_mode != kv::KeyMode::PerChannel) ||
      (format.value_bits != 16 && format.group > 64)) {
    return Status::error(fmt::format("Vulkan prefill attention: {} pages ({}) are not supported yet (widths 16, 8, 4 "
                                     "and 2, per-channel keys, value groups of at most 64)",
                                     kv::precision_name(format.precision), format.describe()));
  }
  if (format.tokens != kv::kTokensPerPage || format.n_kv_heads <= 0 || n_heads % format.n_kv_heads != 0 ||
      n_heads / format.n_kv_heads > 8 || format.head_dim % 8 != 0 || format.head_dim > 256 ||
      format.page_bytes % 4 != 0 || format.head_bytes % 4 != 0 || format.key_section_bytes % 4 != 0 || n == 0 ||
      n_pages == 0) {
    return Status::error(fmt::format("Vulkan prefill attention: unsupported geometry ({} query heads over {}, {} rows, "
                                     "{} pages)", n_heads, format.describe(), n, n_pages));
  }
  const uint32_t gqa = static_cast<uint32_t>(n_heads / format.n_kv_heads);
  const uint32_t max_vectors = format.head_dim <= 128 ? 32 : 16;  // R_MAX and BQ of the shader
  const uint32_t rows_per_group = std::max<uint32_t>(1, max_vectors / gqa);
  const uint32_t group = format.value_bits == 16 ? 64 : static_cast<uint32_t>(format.group);
  Result<const Pipeline*> p =
      pipeline("attention_prefill_pages", 5, 48,
               {static_cast<uint32_t>(format.head_dim), gqa, static_cast<uint32_t>(format.key_bits),
                static_cast<uint32_t>(format.value_bits), group});
  if (!p.ok()) return p.status();
  struct {
    uint32_t pos, n, n_heads, n_pages, split;
    PageLayoutWords layout;
    float scale;
  } push{pos, n, static_cast<uint32_t>(n_heads), n_pages, split, page_layout_words(format), scale};
  batch.dispatch(**p, {pool, page_list, q, partial_o, partial_ml}, push, ceil_div(n, rows_per_group),
                 static_cast<uint32_t>(format.n_kv_heads));
  return batch.error();
}

Status Kernels::write_kv_f16(CommandBatch& batch, const kv::PageFormat& format, BufferRange pool,
                             uint32_t page_offset, uint32_t slot, BufferRange k, BufferRange v) {
  if (format.precision != kv::Precision::F16 || format.head_dim % 2 != 0 || format.n_kv_heads <= 0 ||
      format.tokens != kv::kTokensPerPage || slot >= static_cast<uint32_t>(format.tokens) || page_offset % 4 != 0 ||
      format.head_bytes % 4 != 0 || format.key_section_bytes % 4 != 0) {
    return Status::error(fmt::format("Vulkan write_kv_f16: unsupported page ({}) or row {}", format.describe(), slot));
  }
  Result<const Pipeline*> p = pipeline("kv_write", 3, 24, {kFlatWorkgroup});
  if (!p.ok()) return p.status();
  struct {
    uint32_t page_offset, slot, n_kv_heads, head_dim, head_bytes, key_section_bytes;
  } push{page_offset,
         slot,
         static_cast<uint32_t>(format.n_kv_heads),
         static_cast<uint32_t>(format.head_dim),
         static_cast<uint32_t>(format.head_bytes),
         static_cast<uint32_t>(format.key_section_bytes)};
  const uint64_t threads = static_cast<uint64_t>(format.n_kv_heads) * (format.head_dim / 2);
  batch.dispatch(**p, {pool, k, v}, push, ceil_div(threads, kFlatWorkgroup));
  return batch.error();
}

Status Kernels::rope_write_kv_f16(CommandBatch& batch, const kv::PageFormat& format, BufferRange pool,
                                  uint32_t page_offset, uint32_t slot, BufferRange q, int n_heads, BufferRange k,
                                  BufferRange v, BufferRange cos_sin, int rope_dims, bool neox) {
  if (format.precision != kv::Precision::F16 || format.head_dim % 2 != 0 || format.n_kv_heads <= 0 ||
      format.tokens != kv::kTokensPerPage || slot >= static_cast<uint32_t>(format.tokens) || page_offset % 4 != 0 ||
      format.head_bytes % 4 != 0 || format.key_section_bytes % 4 != 0 || n_heads <= 0 || rope_dims <= 0 ||
      rope_dims % 2 != 0 || rope_dims > format.head_dim) {
    return Status::error(fmt::format("Vulkan rope_write_kv_f16: unsupported page ({}), row {} or rope_dims {}",
                                     format.describe(), slot, rope_dims));
  }
  Result<const Pipeline*> p = pipeline("rope_kv_write", 5, 36, {kFlatWorkgroup});
  if (!p.ok()) return p.status();
  struct {
    uint32_t page_offset, slot, n_heads, n_kv_heads, head_dim, rope_dims, neox, head_bytes, key_section_bytes;
  } push{page_offset,
         slot,
         static_cast<uint32_t>(n_heads),
         static_cast<uint32_t>(format.n_kv_heads),
         static_cast<uint32_t>(format.head_dim),
         static_cast<uint32_t>(rope_dims),
         neox ? 1u : 0u,
         static_cast<uint32_t>(format.head_bytes),
         static_cast<uint32_t>(format.key_section_bytes)};
  const uint64_t threads = static_cast<uint64_t>(n_heads) * (rope_dims / 2) +
                           static_cast<uint64_t>(format.n_kv_heads) * (format.head_dim / 2);
  batch.dispatch(**p, {pool, q, k, v, cos_sin}, push, ceil_div(threads, kFlatWorkgroup));
  return batch.error();
}

Status Kernels::write_kv_row(CommandBatch& batch, const kv::PageFormat& format, BufferRange pool,
                             uint32_t page_offset, uint32_t slot, BufferRange k, BufferRange v) {
  if (format.value_bits == 16) return write_kv_f16(batch, format, pool, page_offset, slot, k, v);
  if (format.key_bits != 16 || !supports_transcode(format) || slot >= static_cast<uint32_t>(format.tokens) ||
      page_offset % 4 != 0) {
    return Status::error(fmt::format("Vulkan write_kv_row: unsupported page ({}) or row {}", format.describe(), slot));
  }
  Result<const Pipeline*> p = pipeline(context_.info().float64 ? "kv_write_row_f64" : "kv_write_row", 3, 20,
                                       {static_cast<uint32_t>(format.head_dim), static_cast<uint32_t>(format.group),
                                        static_cast<uint32_t>(format.value_bits)});
  if (!p.ok()) return p.status();
  struct {
    uint32_t page_offset, slot, head_bytes, key_section_bytes, value_codes_offset;
  } push{page_offset, slot, static_cast<uint32_t>(format.head_bytes), static_cast<uint32_t>(format.key_section_bytes),
         static_cast<uint32_t>(format.value_codes_offset)};
  batch.dispatch(**p, {pool, k, v}, push, static_cast<uint32_t>(format.n_kv_heads));
  return batch.error();
}

bool Kernels::supports_transcode(const kv::PageFormat& f) {
  auto width_ok = [](int bits) { return bits == 16 || bits == 8 || bits == 4 || bits == 2; };
  return width_ok(f.key_bits) && width_ok(f.value_bits) &&
         (f.key_bits == 16 || f.key_mode == kv::KeyMode::PerChannel) && f.tokens == kv::kTokensPerPage &&
         f.n_kv_heads > 0 && f.head_dim % 8 == 0 && f.head_dim <= 256 && f.group > 0 && f.group <= 64 &&
         f.head_bytes % 4 == 0 && f.key_section_bytes % 4 == 0 && f.key_codes_offset % 4 == 0 &&
         f.value_codes_offset % 4 == 0 && (f.value_bits == 16 || f.row_code_bytes % 4 == 0);  // whole words
}

Status Kernels::transcode_page(CommandBatch& batch, const kv::PageFormat& from, const kv::PageFormat& to,
                               BufferRange pool, uint32_t src_offset, uint32_t dst_offset, uint32_t n_tokens) {
  if (!supports_transcode(from) || !supports_transcode(to)) {
    return Status::error(fmt::format("Vulkan transcode_page: {} -> {} is not supported (widths 16, 8, 4 or 2, "
                                     "per-channel keys, value groups of at most 64, value rows of whole 32-bit words)",
                                     from.describe(), to.describe()));
  }
  if (from.head_dim != to.head_dim || from.n_kv_heads != to.n_kv_heads || from.group != to.group ||
      n_tokens == 0 || n_tokens > static_cast<uint32_t>(kv::kTokensPerPage) || src_offset % 4 != 0 ||
      dst_offset % 4 != 0 ||
      (src_offset < dst_offset + to.page_bytes && dst_offset < src_offset + from.page_bytes)) {
    return Status::error(fmt::format("Vulkan transcode_page: bad pages ({} at {}, {} at {}, {} rows)", from.describe(),
                                     src_offset, to.describe(), dst_offset, n_tokens));
  }
  Result<const Pipeline*> p = pipeline(context_.info().float64 ? "kv_transcode_f64" : "kv_transcode", 1, 60,
                                       {static_cast<uint32_t>(from.head_dim), static_cast<uint32_t>(from.group)});
  if (!p.ok()) return p.status();
  auto u = [](size_t n) { return static_cast<uint32_t>(n); };
  struct {
    uint32_t src_offset, dst_offset, n_tokens, src_key_bits, src_value_bits, dst_key_bits, dst_value_bits;
    uint32_t src_head_bytes, src_key_section_bytes, src_key_codes_offset, src_value_codes_offset;
    uint32_t dst_head_bytes, dst_key_section_bytes, dst_key_codes_offset, dst_value_codes_offset;
  } push{src_offset,
         dst_offset,
         n_tokens,
         u(from.key_bits),
         u(from.value_bits),
         u(to.key_bits),
         u(to.value_bits),
         u(from.head_bytes),
         u(from.key_section_bytes),
         u(from.key_codes_offset),
         u(from.value_codes_offset),
         u(to.head_bytes),
         u(to.key_section_bytes),
         u(to.key_codes_offset),
         u(to.value_codes_offset)};
  batch.dispatch(**p, {pool}, push, static_cast<uint32_t>(from.n_kv_heads));
  return batch.error();
}

Status Kernels::write_kv_rows_f16(CommandBatch& batch, const kv::PageFormat& format, BufferRange pool,
                                  BufferRange page_list, uint32_t pos, uint32_t n, BufferRange k, BufferRange v) {
  if (format.precision != kv::Precision::F16 || format.head_dim % 2 != 0 || format.n_kv_heads <= 0 ||
      format.tokens != kv::kTokensPerPage || n == 0 || format.head_bytes % 4 != 0 ||
      format.key_section_bytes % 4 != 0) {
    return Status::error(fmt::format("Vulkan write_kv_rows_f16: unsupported page ({}) or {} rows", format.describe(), n));
  }
  Result<const Pipeline*> p = pipeline("kv_write_rows", 4, 24, {kFlatWorkgroup});
  if (!p.ok()) return p.status();
  struct {
    uint32_t pos, n, n_kv_heads, head_dim, head_bytes, key_section_bytes;
  } push{pos,
         n,
         static_cast<uint32_t>(format.n_kv_heads),
         static_cast<uint32_t>(format.head_dim),
         static_cast<uint32_t>(format.head_bytes),
         static_cast<uint32_t>(format.key_section_bytes)};
  const uint64_t position_pairs = (pos + n - 1) / 2 - pos / 2 + 1;
  const uint64_t threads = position_pairs * format.n_kv_heads * (format.head_dim / 2);
  batch.dispatch(**p, {pool, page_list, k, v}, push, ceil_div(threads, kFlatWorkgroup));
  return batch.error();
}

Status Kernels::write_kv_rows_tail(CommandBatch& batch, const kv::PageFormat& format, BufferRange pool,
                                   BufferRange page_list, uint32_t pos, uint32_t n, BufferRange k, BufferRange v) {
  if (format.key_bits != 16 || format.value_bits == 16 || !supports_transcode(format) || n == 0) {
    return Status::error(fmt::format("Vulkan write_kv_rows_tail: unsupported page ({}) or {} rows", format.describe(), n));
  }
  Result<const Pipeline*> p = pipeline("kv_write_rows_tail", 4, 24,
                                       {static_cast<uint32_t>(format.head_dim), static_cast<uint32_t>(format.group),
                                        static_cast<uint32_t>(format.value_bits)});
  if (!p.ok()) return p.status();
  struct {
    uint32_t pos, n, n_kv_heads, head_bytes, key_section_bytes, value_codes_offset;
  } push{pos,
         n,
         static_cast<uint32_t>(format.n_kv_heads),
         static_cast<uint32_t>(format.head_bytes),
         static_cast<uint32_t>(format.key_section_bytes),
         static_cast<uint32_t>(format.value_codes_offset)};
  const uint32_t pairs = (pos + n - 1) / 2 - pos / 2 + 1;
  batch.dispatch(**p, {pool, page_list, k, v}, push, pairs, static_cast<uint32_t>(format.n_kv_heads));
  return batch.error();
}

Status Kernels::merge_attention(CommandBatch& batch, BufferRange partial_o, BufferRange partial_ml, uint32_t n_splits,
                                int n_heads, int head_dim, BufferRange out, BufferRange lse) {
  if (n_splits == 0 || n_heads <= 0 || head_dim <= 0) return Status::error("Vulkan merge_attention: empty shape");
  if (head_dim > 256) return Status::error("Vulkan merge_attention: head_dim above 256 is not supported yet");
  Result<const Pipeline*> p = pipeline("attention_merge", 4, 12, {});
  if (!p.ok()) return p.status();
  struct {
    uint32_t n_splits, n_heads, head_dim;
  } push{n_splits, static_cast<uint32_t>(n_heads), static_cast<uint32_t>(head_dim)};
  batch.dispatch(**p, {partial_o, partial_ml, out, lse}, push, static_cast<uint32_t>(n_heads));
  return batch.error();
}

}  // namespace kvtier::vulkan
