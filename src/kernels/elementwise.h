// Scalar references of the small per-row operations of the forward pass (RMSNorm, RoPE, SwiGLU gating,
// softmax), written as the CPU forward pass computes them (model/forward.cpp), so that GPU shaders can be
// tested against them. The CPU forward pass keeps its own copies until the backend seam moves it onto these.
#pragma once

#include <cstdint>

namespace kvtier::kernels {

// out = x / sqrt(mean(x^2) + eps) * weight for each of n_rows rows of width d (sum of squares in double).
//   x, out: [n_rows][d];  weight: [d]
void rms_norm_reference(const float* x, const float* weight, int n_rows, int d, float eps, float* out);

// (cos, sin) of the rotary angles of positions [pos, pos + n), GGML's way: theta starts at the position and
// is multiplied by base^(-2/rope_dims) pair after pair, in float; angle = freq_scale * theta / factor.
//   freq_factors: [rope_dims / 2] or null;  cos_sin: [n][rope_dims] as (cos, sin) pairs
void rope_table_reference(int n, int pos, int rope_dims, float freq_base, float freq_scale, const float* freq_factors,
                          float* cos_sin);
// Rotates the first rope_dims elements of each head in place with that table: pairs (2p, 2p + 1) in normal
// mode, (p, p + rope_dims / 2) in NeoX mode.  rows: [n_tokens][n_heads][head_dim]
void rope_reference(const float* cos_sin, float* rows, int n_tokens, int n_heads, int head_dim, int rope_dims,
                    bool neox);

// out[i] = silu(gate[i]) * up[i], silu(g) = g / (1 + e^-g).
void silu_mul_reference(const float* gate, const float* up, float* out, int64_t n);

// out = softmax(scale * x) over one row of n (in double).
void softmax_reference(const float* x, int n, float scale, float* out);

}  // namespace kvtier::kernels
