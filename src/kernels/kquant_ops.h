// K-quant formats (QK_K = 256 elements per super-block): Q2_K, Q3_K, Q4_K, Q5_K,
// Q6_K, the super-block non-linear IQ4_XS, and the Q8_K activation format they
// are all dotted with. Block layouts are bit-exact
// with GGML's ggml-common.h. The generic entry points in kvtier/kernels.h route
// K-quant types here.
#pragma once

#include <cstddef>
#include <cstdint>

namespace kvtier::kernels::kquant {

constexpr int64_t kSuperBlock = 256;  // QK_K

// Scalar references (the definition of each format).
void dequantize_q4_K_reference(const void* src, float* dst, int64_t n);
void dequantize_q5_K_reference(const void* src, float* dst, int64_t n);
void dequantize_q6_K_reference(const void* src, float* dst, int64_t n);
void dequantize_q2_K_reference(const void* src, float* dst, int64_t n);
void dequantize_q3_K_reference(const void* src, float* dst, int64_t n);
void dequantize_iq4_xs_reference(const void* src, float* dst, int64_t n);
void quantize_q8_K_reference(const float* x, void* dst, int64_t n);
float vec_dot_q4_K_q8_K_reference(int64_t n, const void* w, const void* a);
float vec_dot_q5_K_q8_K_reference(int64_t n, const void* w, const void* a);
float vec_dot_q6_K_q8_K_reference(int64_t n, const void* w, const void* a);
float vec_dot_q2_K_q8_K_reference(int64_t n, const void* w, const void* a);
float vec_dot_q3_K_q8_K_reference(int64_t n, const void* w, const void* a);
float vec_dot_iq4_xs_q8_K_reference(int64_t n, const void* w, const void* a);

// Runtime-dispatched SIMD versions (same results as the references up to
// float summation order).
void dequantize_q4_K(const void* src, float* dst, int64_t n);
void dequantize_q5_K(const void* src, float* dst, int64_t n);
void dequantize_q6_K(const void* src, float* dst, int64_t n);
void quantize_q8_K(const float* x, void* dst, int64_t n);
float vec_dot_q4_K_q8_K(int64_t n, const void* w, const void* a);
float vec_dot_q5_K_q8_K(int64_t n, const void* w, const void* a);
float vec_dot_q6_K_q8_K(int64_t n, const void* w, const void* a);
float vec_dot_q2_K_q8_K(int64_t n, const void* w, const void* a);
float vec_dot_q3_K_q8_K(int64_t n, const void* w, const void* a);
float vec_dot_iq4_xs_q8_K(int64_t n, const void* w, const void* a);

// Tiles (prefill): y[t * y_stride + r] = vec_dot(n, w + r * w_stride, a + t * a_stride)
// for r < rows, t < tokens; the signature of kernels::simd::TileFn. The same
// values as the row dots above, bit for bit, but each weight block is decoded
// once for several tokens.
void tile_q4_K_q8_K(int64_t n, const uint8_t* w, size_t w_stride, int64_t rows, const uint8_t* a, size_t a_stride,
                    int64_t tokens, float* y, size_t y_stride);
void tile_q5_K_q8_K(int64_t n, const uint8_t* w, size_t w_stride, int64_t rows, const uint8_t* a, size_t a_stride,
                    int64_t tokens, float* y, size_t y_stride);
void tile_q6_K_q8_K(int64_t n, const uint8_t* w, size_t w_stride, int64_t rows, const uint8_t* a, size_t a_stride,
                    int64_t tokens, float* y, size_t y_stride);
void tile_q2_K_q8_K(int64_t n, const uint8_t* w, size_t w_stride, int64_t rows, const uint8_t* a, size_t a_stride,
                    int64_t tokens, float* y, size_t y_stride);
void tile_q3_K_q8_K(int64_t n, const uint8_t* w, size_t w_stride, int64_t rows, const uint8_t* a, size_t a_stride,
                    int64_t tokens, float* y, size_t y_stride);
void tile_iq4_xs_q8_K(int64_t n, const uint8_t* w, size_t w_stride, int64_t rows, const uint8_t* a,
                      size_t a_stride, int64_t tokens, float* y, size_t y_stride);

}  // namespace kvtier::kernels::kquant
