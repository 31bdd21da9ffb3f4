// Block layouts of the 32-element GGML weight formats (bit-exact with GGML's
// ggml-common.h) and the kernel-internal interfaces behind kvtier/kernels.h.
// IQ4_NL shares Q4_0's layout; only what a code means differs.
//
// All scales are IEEE half bits (uint16_t). Quantized values of element i of a
// block live in qs[i % 16] (low nibble for i < 16, high nibble for i >= 16);
// the 5th bit of Q5 formats is bit i of the little-endian 32-bit word qh.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "kvtier/ggml_types.h"

namespace kvtier::kernels {

constexpr int64_t kBlock32 = 32;  // QK4_0 = QK4_1 = QK5_0 = QK5_1 = QK8_0 = QK8_1

struct BlockQ4_0 {
  uint16_t d;       // scale (f16)
  uint8_t qs[16];   // nibbles, value = (q - 8) * d
};
static_assert(sizeof(BlockQ4_0) == 18, "GGML block_q4_0 is 18 bytes");

struct BlockQ4_1 {
  uint16_t d;       // scale (f16)
  uint16_t m;       // minimum (f16), value = q * d + m
  uint8_t qs[16];
};
static_assert(sizeof(BlockQ4_1) == 20, "GGML block_q4_1 is 20 bytes");

struct BlockQ5_0 {
  uint16_t d;       // scale (f16)
  uint8_t qh[4];    // 5th bits, bit i for element i (little-endian u32)
  uint8_t qs[16];   // low 4 bits, value = (q - 16) * d
};
static_assert(sizeof(BlockQ5_0) == 22, "GGML block_q5_0 is 22 bytes");

struct BlockQ5_1 {
  uint16_t d;       // scale (f16)
  uint16_t m;       // minimum (f16), value = q * d + m
  uint8_t qh[4];
  uint8_t qs[16];
};
static_assert(sizeof(BlockQ5_1) == 24, "GGML block_q5_1 is 24 bytes");

struct BlockQ8_0 {
  uint16_t d;       // scale (f16), value = q * d
  int8_t qs[32];
};
static_assert(sizeof(BlockQ8_0) == 34, "GGML block_q8_0 is 34 bytes");

struct BlockQ8_1 {
  uint16_t d;       // scale (f16)
  uint16_t s;       // d * sum(qs) (f16), so that a minimum m dots as m * s
  int8_t qs[32];
};
static_assert(sizeof(BlockQ8_1) == 36, "GGML block_q8_1 is 36 bytes");

// The 16 values a 4-bit IQ4_NL / IQ4_XS code stands for (GGML's kvalues_iq4nl): a non-uniform grid, denser
// near zero, fitted to the bell-shaped distribution of trained weights.
inline constexpr int8_t kIQ4Values[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};

struct BlockIQ4_NL {
  uint16_t d;       // scale (f16), value = kIQ4Values[code] * d
  uint8_t qs[16];   // 4-bit codes, laid out as Q4_0's nibbles
};
static_assert(sizeof(BlockIQ4_NL) == 18, "GGML block_iq4_nl is 18 bytes");

// ---------------------------------------------------------------------------
// Scalar references (src/kernels/ref/weight_reference.cpp): the definition of
// each format, written for clarity. Only the 32-element and float formats (not K-quants).
namespace ref {
bool dequantize(GgmlType t, const void* src, float* dst, int64_t n);
// Activation quantization into the activation type (Q8_0, Q8_1, F16, BF16, F32).
void quantize_activation(GgmlType activation, const float* x, void* dst, int64_t n);
bool vec_dot(GgmlType weight_type, int64_t n, const void* w, const void* a, float* result);
}  // namespace ref

// ---------------------------------------------------------------------------
// SIMD kernels (src/kernels/cpu/weight_kernels.cpp, Highway). One dispatch
// picks a table of the best target's functions; calls through it are static.
namespace simd {

// y[t * y_stride + r] = dot(weight row r, activation row t) for r < rows, t < tokens.
// w: [rows][w_stride bytes], a: [tokens][a_stride bytes] in the activation type.
using TileFn = void (*)(int64_t n, const uint8_t* w, size_t w_stride, int64_t rows, const uint8_t* a,
                        size_t a_stride, int64_t tokens, float* y, size_t y_stride);
using DequantizeFn = void (*)(const void* src, float* dst, int64_t n);
using QuantizeFn = void (*)(const float* x, void* dst, int64_t n);

struct TargetKernels {
  const char* target_name;
  // Indexed by static_cast<uint32_t>(GgmlType); null where a type has no kernel here.
  TileFn tile[40];
  DequantizeFn dequantize[40];
  QuantizeFn quantize[40];  // indexed by the activation type
  // Rows and tokens one micro-tile covers best (matmul cuts work in multiples).
  int64_t tile_rows;
  int64_t tile_tokens;
};

// The table of the best target the CPU supports (honours SetSupportedTargetsForTest).
const TargetKernels& best_kernels();
// Highway targets compiled into the kernel library (for tests: run every one).
std::vector<int64_t> compiled_targets();

}  // namespace simd
}  // namespace kvtier::kernels
