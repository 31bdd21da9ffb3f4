// Generic entry points of kvtier/kernels.h: route each weight type to its
// reference or SIMD kernels (K-quants to kernels/kquant_ops.h), and the
// threaded matmul that cuts y = x W^T into tiles.
#include <algorithm>
#include <atomic>
#include <cassert>
#include <cstring>
#include <vector>

#include "kernels/kquant_ops.h"
#include "kernels/weight_blocks.h"
#include "kvtier/kernels.h"

namespace kvtier::kernels {
namespace {

bool is_kquant(GgmlType t) { return t == GgmlType::Q4_K || t == GgmlType::Q5_K || t == GgmlType::Q6_K; }

uint32_t index_of(GgmlType t) { return static_cast<uint32_t>(t); }

struct KquantKernels {
  simd::TileFn tile;
  void (*dequantize)(const void*, float*, int64_t);
  void (*dequantize_reference)(const void*, float*, int64_t);
  float (*vec_dot_reference)(int64_t, const void*, const void*);
};

KquantKernels kquant_kernels(GgmlType t) {
  switch (t) {
    case GgmlType::Q4_K:
      return {&kquant::tile_q4_K_q8_K, &kquant::dequantize_q4_K,
              &kquant::dequantize_q4_K_reference, &kquant::vec_dot_q4_K_q8_K_reference};
    case GgmlType::Q5_K:
      return {&kquant::tile_q5_K_q8_K, &kquant::dequantize_q5_K,
              &kquant::dequantize_q5_K_reference, &kquant::vec_dot_q5_K_q8_K_reference};
    case GgmlType::Q6_K:
      return {&kquant::tile_q6_K_q8_K, &kquant::dequantize_q6_K,
              &kquant::dequantize_q6_K_reference, &kquant::vec_dot_q6_K_q8_K_reference};
    default: assert(false && "not a K-quant"); return {};
  }
}

// The tile kernel of weight type t on the best target.
simd::TileFn tile_kernel(GgmlType t) {
  if (is_kquant(t)) return kquant_kernels(t).tile;
  return simd::best_kernels().tile[index_of(t)];
}

}  // namespace

bool is_supported_weight_type(GgmlType t) {
  switch (t) {
    case GgmlType::F32: case GgmlType::F16: case GgmlType::BF16:
    case GgmlType::Q4_0: case GgmlType::Q4_1: case GgmlType::Q5_0: case GgmlType::Q5_1: case GgmlType::Q8_0:
    case GgmlType::Q4_K: case GgmlType::Q5_K: case GgmlType::Q6_K:
      return true;
    default: return false;
  }
}

GgmlType activation_type(GgmlType weight_type) {
  switch (weight_type) {
    // As GGML's type_traits vec_dot_type: Q4_1/Q5_1 meet Q8_1, whose s = d * sum(q)
    // turns the weight minimum m into one product m * s per block.
    case GgmlType::Q4_0: case GgmlType::Q5_0: case GgmlType::Q8_0: return GgmlType::Q8_0;
    case GgmlType::Q4_1: case GgmlType::Q5_1: return GgmlType::Q8_1;
    case GgmlType::Q4_K: case GgmlType::Q5_K: case GgmlType::Q6_K: return GgmlType::Q8_K;
    case GgmlType::F16: return GgmlType::F16;
    case GgmlType::BF16: return GgmlType::BF16;
    default: return GgmlType::F32;
  }
}

void dequantize_row_reference(GgmlType t, const void* src, float* dst, int64_t n) {
  assert(is_supported_weight_type(t));
  if (is_kquant(t)) {
    kquant_kernels(t).dequantize_reference(src, dst, n);
    return;
  }
  const bool ok = ref::dequantize(t, src, dst, n);
  assert(ok);
  (void)ok;
}

void dequantize_row(GgmlType t, const void* src, float* dst, int64_t n) {
  assert(is_supported_weight_type(t));
  if (is_kquant(t)) {
    kquant_kernels(t).dequantize(src, dst, n);
    return;
  }
  simd::best_kernels().dequantize[index_of(t)](src, dst, n);
}

void quantize_activation_reference(GgmlType weight_type, const float* x, void* dst, int64_t n) {
  const GgmlType at = activation_type(weight_type);
  if (at == GgmlType::Q8_K) {
    kquant::quantize_q8_K_reference(x, dst, n);
    return;
  }
  ref::quantize_activation(at, x, dst, n);
}

void quantize_activation(GgmlType weight_type, const float* x, void* dst, int64_t n) {
  const GgmlType at = activation_type(weight_type);
  if (at == GgmlType::Q8_K) {
    kquant::quantize_q8_K(x, dst, n);
    return;
  }
  simd::best_kernels().quantize[index_of(at)](x, dst, n);
}

float vec_dot_reference(GgmlType weight_type, int64_t n, const void* weight_row, const void* activation_row) {
  assert(is_supported_weight_type(weight_type));
  if (is_kquant(weight_type)) return kquant_kernels(weight_type).vec_dot_reference(n, weight_row, activation_row);
  float result = 0.0f;
  const bool ok = ref::vec_dot(weight_type, n, weight_row, activation_row, &result);
  assert(ok);
  (void)ok;
  return result;
}

float vec_dot(GgmlType weight_type, int64_t n, const void* weight_row, const void* activation_row) {
  assert(is_supported_weight_type(weight_type));
  float result = 0.0f;
  tile_kernel(weight_type)(n, static_cast<const uint8_t*>(weight_row), 0, 1,
                           static_cast<const uint8_t*>(activation_row), 0, 1, &result, 1);
  return result;
}

void get_row(const WeightMatrix& w, int64_t row, float* dst) {
  assert(row >= 0 && row < w.rows);
  dequantize_row(w.type, static_cast<const uint8_t*>(w.data) + static_cast<size_t>(row) * w.row_bytes, dst, w.cols);
}

void matmul(const WeightMatrix& w, const float* x, int64_t n_tokens, float* y, ThreadPool& pool) {
  assert(is_supported_weight_type(w.type));
  if (n_tokens <= 0 || w.rows <= 0) return;
  const GgmlType act_type = activation_type(w.type);
  const size_t act_row_bytes = ggml_row_bytes(act_type, w.cols);
  const int n_threads = pool.size();

  // Quantized activations: [n_tokens][act_row_bytes]. One buffer per calling
  // thread, grown as needed, so steady-state decode allocates nothing.
  thread_local std::vector<uint8_t> act_buffer;
  const size_t act_bytes = act_row_bytes * static_cast<size_t>(n_tokens);
  if (act_buffer.size() < act_bytes) act_buffer.resize(act_bytes);
  uint8_t* act = act_buffer.data();
  if (n_tokens < 2 * n_threads) {
    for (int64_t t = 0; t < n_tokens; ++t) quantize_activation(w.type, x + t * w.cols, act + t * act_row_bytes, w.cols);
  } else {
    pool.parallel_for(n_tokens, [&](int64_t begin, int64_t end, int) {
      for (int64_t t = begin; t < end; ++t) quantize_activation(w.type, x + t * w.cols, act + t * act_row_bytes, w.cols);
    });
  }

  // Work units: row chunks x token chunks, handed out through an atomic
  // counter so a thread slowed by another process does not hold up the rest.
  // Decode (few tokens) is memory-bound: many row chunks balance the load.
  // Prefill keeps a chunk's weight rows in L2 while they meet a token chunk.
  const simd::TileFn tile = tile_kernel(w.type);
  const int64_t row_align = 16;
  int64_t token_chunk = std::min<int64_t>(n_tokens, 64);
  int64_t row_chunk = 0;
  if (n_tokens <= 4) {
    row_chunk = (w.rows + 8 * n_threads - 1) / (8 * n_threads);
    row_chunk = std::clamp<int64_t>(row_chunk, row_align, 512);
  } else {
    row_chunk = 64;
  }
  row_chunk = (row_chunk + row_align - 1) / row_align * row_align;
  const int64_t row_chunks = (w.rows + row_chunk - 1) / row_chunk;
  const int64_t token_chunks = (n_tokens + token_chunk - 1) / token_chunk;
  const int64_t jobs = row_chunks * token_chunks;
  const auto* weights = static_cast<const uint8_t*>(w.data);

  auto run_job = [&](int64_t job) {
    const int64_t r0 = job / token_chunks * row_chunk;
    const int64_t t0 = job % token_chunks * token_chunk;
    const int64_t rows = std::min(row_chunk, w.rows - r0);
    const int64_t tokens = std::min(token_chunk, n_tokens - t0);
    tile(w.cols, weights + static_cast<size_t>(r0) * w.row_bytes, w.row_bytes, rows, act + t0 * act_row_bytes,
         act_row_bytes, tokens, y + t0 * w.rows + r0, static_cast<size_t>(w.rows));
  };
  if (n_threads == 1 || jobs == 1) {
    for (int64_t j = 0; j < jobs; ++j) run_job(j);
    return;
  }
  std::atomic<int64_t> next_job{0};
  pool.run([&](int, int) {
    for (int64_t j = next_job.fetch_add(1, std::memory_order_relaxed); j < jobs;
         j = next_job.fetch_add(1, std::memory_order_relaxed)) {
      run_job(j);
    }
  });
}

}  // namespace kvtier::kernels
