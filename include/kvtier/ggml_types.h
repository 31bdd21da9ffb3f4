// GGML tensor element types as stored in GGUF files, with their block geometry.
// Values are GGML's on-disk enum values (ggml.h, enum ggml_type); they must not change.
#pragma once

#include <cstddef>
#include <cstdint>

namespace kvtier {

enum class GgmlType : uint32_t {
  F32 = 0, F16 = 1, Q4_0 = 2, Q4_1 = 3, Q5_0 = 6, Q5_1 = 7, Q8_0 = 8, Q8_1 = 9,
  Q2_K = 10, Q3_K = 11, Q4_K = 12, Q5_K = 13, Q6_K = 14, Q8_K = 15,
  IQ2_XXS = 16, IQ2_XS = 17, IQ3_XXS = 18, IQ1_S = 19, IQ4_NL = 20, IQ3_S = 21,
  IQ2_S = 22, IQ4_XS = 23, I8 = 24, I16 = 25, I32 = 26, I64 = 27, F64 = 28,
  IQ1_M = 29, BF16 = 30, TQ1_0 = 34, TQ2_0 = 35, MXFP4 = 39,
};

struct GgmlTypeInfo {
  const char* name;
  int64_t block_elems;  // elements per block
  int64_t block_bytes;  // bytes per block
  bool computable;      // kvtier has dequantize/dot kernels for it
};

// Returns nullptr for values that are not a known GGML type.
const GgmlTypeInfo* ggml_type_info(uint32_t raw_type);
inline const GgmlTypeInfo& ggml_type_info(GgmlType t) { return *ggml_type_info(static_cast<uint32_t>(t)); }
inline const char* ggml_type_name(GgmlType t) { return ggml_type_info(t).name; }

// Bytes of a row of n elements; n must be a multiple of the block size.
inline size_t ggml_row_bytes(GgmlType t, int64_t n) {
  const GgmlTypeInfo& info = ggml_type_info(t);
  return static_cast<size_t>(n / info.block_elems * info.block_bytes);
}

// The alignment, in bytes, that a tensor of this type must start at to be read in place: its widest
// scalar field (f32/i32 4, f64/i64 8, i8 1; every block format starts with f16 scales, so 2).
inline size_t ggml_data_alignment(GgmlType t) {
  switch (t) {
    case GgmlType::F32: case GgmlType::I32: return 4;
    case GgmlType::F64: case GgmlType::I64: return 8;
    case GgmlType::I8: return 1;
    default: return 2;
  }
}

}  // namespace kvtier
