// Compute kernels over GGML weight formats (CPU, Highway runtime dispatch).
//
// Every weight format has a scalar reference dequantizer (the definition of the
// format) and a SIMD path chosen once at runtime. A matrix-vector product
// quantizes the activations to the weight's "activation type" first, exactly as
// GGML does (Q8_0 for 32-element block formats, Q8_K for K-quants, F16 for F16,
// BF16 for BF16, F32 for F32), then takes integer or float dot products.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "kvtier/ggml_types.h"
#include "kvtier/thread_pool.h"

namespace kvtier::kernels {

// A row-major weight matrix: `rows` rows of `cols` elements in `type`
// (GGUF ne[0] = cols, ne[1] = rows). Rows are `row_bytes` apart.
struct WeightMatrix {
  GgmlType type = GgmlType::F32;
  const void* data = nullptr;
  int64_t rows = 0;
  int64_t cols = 0;
  size_t row_bytes = 0;
};

// True when kvtier can compute with weights of this type.
bool is_supported_weight_type(GgmlType t);

// Scalar reference: dequantizes n elements (n % block_elems == 0) to f32.
void dequantize_row_reference(GgmlType t, const void* src, float* dst, int64_t n);
// SIMD (dispatched) dequantization; same result as the reference.
void dequantize_row(GgmlType t, const void* src, float* dst, int64_t n);

// The format activations are converted to before a dot product with weights of type t.
GgmlType activation_type(GgmlType weight_type);
// Quantizes n f32 activations (n % block of the activation type == 0) into dst,
// which holds ggml_row_bytes(activation_type(w), n) bytes. Matches GGML's
// quantize_row_q8_0 / q8_K rounding. Scalar reference and dispatched versions.
void quantize_activation_reference(GgmlType weight_type, const float* x, void* dst, int64_t n);
void quantize_activation(GgmlType weight_type, const float* x, void* dst, int64_t n);

// Dot product of one weight row with one quantized activation row (n elements).
float vec_dot_reference(GgmlType weight_type, int64_t n, const void* weight_row, const void* activation_row);
float vec_dot(GgmlType weight_type, int64_t n, const void* weight_row, const void* activation_row);

// y = x * W^T.  x: [n_tokens, w.cols] f32 row-major;  y: [n_tokens, w.rows] f32.
// Quantizes x once, splits rows (and tokens, for prefill) across the pool.
void matmul(const WeightMatrix& w, const float* x, int64_t n_tokens, float* y, ThreadPool& pool);

// Several matmuls of the same x (a layer's q, k and v; gate and up) in one pool job: y_i = x * W_i^T.
// At decode a small matrix's work is about what a pool hand-off costs, so they share one. Up to 4 outputs,
// all with w->cols == the width of x; results equal those of separate matmul calls.
struct MatmulOutput {
  const WeightMatrix* w = nullptr;
  float* y = nullptr;  // [n_tokens, w->rows]
};
void matmul_shared(std::span<const MatmulOutput> outputs, const float* x, int64_t n_tokens, ThreadPool& pool);

// Reads row `row` of an embedding table into f32 (dst holds w.cols floats).
void get_row(const WeightMatrix& w, int64_t row, float* dst);

}  // namespace kvtier::kernels
