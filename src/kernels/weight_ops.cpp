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

// The super-block formats dotted with Q8_K, whose kernels live in kernels/kquant_ops.h.
bool is_kquant(GgmlType t) {
  switch (t) {
    case GgmlType::Q2_K: case GgmlType::Q3_K: case GgmlType::Q4_K: case GgmlType::Q5_K: case GgmlType::Q6_K:
    case GgmlType::IQ4_XS:
      return true;
    default: return false;
  }
}

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
    // Q2_K, Q3_K and IQ4_XS rows are dequantized only for embedding lookups (one row per token), so
    // by the scalar references. (A Highway version built on kquant_blocks.h's decode_super_block was
    // compiled to an empty function for the AVX2 target by GCC 12.2 at -O3; the kquant tests caught it.)
    case GgmlType::Q2_K:
      return {&kquant::tile_q2_K_q8_K, &kquant::dequantize_q2_K_reference,
              &kquant::dequantize_q2_K_reference, &kquant::vec_dot_q2_K_q8_K_reference};
    case GgmlType::Q3_K:
      return {&kquant::tile_q3_K_q8_K, &kquant::dequantize_q3_K_reference,
              &kquant::dequantize_q3_K_reference, &kquant::vec_dot_q3_K_q8_K_reference};
    case GgmlType::IQ4_XS:
      return {&kquant::tile_iq4_xs_q8_K, &kquant::dequantize_iq4_xs_reference,
              &kquant::dequantize_iq4_xs_reference, &kquant::vec_dot_iq4_xs_q8_K_reference};
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
    case GgmlType::Q2_K: case GgmlType::Q3_K: case GgmlType::IQ4_NL: case GgmlType::IQ4_XS:
      return true;
    default: return false;
  }
}

GgmlType activation_type(GgmlType weight_type) {
  switch (weight_type) {
    // As GGML's type_traits vec_dot_type: Q4_1/Q5_1 meet Q8_1, whose s = d * sum(q)
    // turns the weight minimum m into one product m * s per block.
    case GgmlType::Q4_0: case GgmlType::Q5_0: case GgmlType::Q8_0: case GgmlType::IQ4_NL: return GgmlType::Q8_0;
    case GgmlType::Q4_1: case GgmlType::Q5_1: return GgmlType::Q8_1;
    case GgmlType::Q2_K: case GgmlType::Q3_K: case GgmlType::Q4_K: case GgmlType::Q5_K: case GgmlType::Q6_K:
    case GgmlType::IQ4_XS:
      return GgmlType::Q8_K;
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
  const MatmulOutput output{&w, y};
  matmul_shared({&output, 1}, x, n_tokens, pool);
}

void matmul_shared(std::span<const MatmulOutput> outputs, const float* x, int64_t n_tokens, ThreadPool& pool) {
  if (n_tokens <= 0 || outputs.empty()) return;
  constexpr size_t kMaxOutputs = 4;
  assert(outputs.size() <= kMaxOutputs);
  const int n_threads = pool.size();
  const int64_t cols = outputs[0].w->cols;

  // Quantized activations, one buffer per activation type among the outputs (q, k and v usually share
  // one): [n_tokens][act_row_bytes]. Per calling thread, grown as needed: steady-state decode allocates nothing.
  thread_local std::vector<uint8_t> act_buffers[kMaxOutputs];
  const uint8_t* acts[kMaxOutputs] = {};
  size_t act_row_bytes[kMaxOutputs] = {};
  for (size_t i = 0; i < outputs.size(); ++i) {
    const WeightMatrix& w = *outputs[i].w;
    assert(is_supported_weight_type(w.type) && w.cols == cols);
    const GgmlType act_type = activation_type(w.type);
    act_row_bytes[i] = ggml_row_bytes(act_type, cols);
    size_t same = 0;
    while (same < i && activation_type(outputs[same].w->type) != act_type) ++same;
    if (same < i) {
      acts[i] = acts[same];
      continue;
    }
    std::vector<uint8_t>& buffer = act_buffers[i];
    const size_t act_bytes = act_row_bytes[i] * static_cast<size_t>(n_tokens);
    if (buffer.size() < act_bytes) buffer.resize(act_bytes);
    uint8_t* act = buffer.data();
    const size_t row_bytes = act_row_bytes[i];
    if (n_tokens < 2 * n_threads) {
      for (int64_t t = 0; t < n_tokens; ++t) quantize_activation(w.type, x + t * cols, act + t * row_bytes, cols);
    } else {
      pool.parallel_for(n_tokens, [&](int64_t begin, int64_t end, int) {
        for (int64_t t = begin; t < end; ++t) quantize_activation(w.type, x + t * cols, act + t * row_bytes, cols);
      });
    }
    acts[i] = act;
  }

  // Work units: row chunks x token chunks of every output, handed out through one atomic counter so that a
  // thread slowed by another process does not hold up the rest, and so that several small matrices (k and v
  // are 128 rows in tiny-llama) share one pool hand-off. Decode (few tokens) is memory-bound: many row
  // chunks balance the load. Prefill keeps a chunk's weight rows in L2 while they meet a token chunk.
  const int64_t row_align = 16;
  const int64_t token_chunk = std::min<int64_t>(n_tokens, 64);
  const int64_t token_chunks = (n_tokens + token_chunk - 1) / token_chunk;
  int64_t row_chunk[kMaxOutputs] = {};
  int64_t first_job[kMaxOutputs + 1] = {};
  simd::TileFn tiles[kMaxOutputs] = {};
  for (size_t i = 0; i < outputs.size(); ++i) {
    const WeightMatrix& w = *outputs[i].w;
    int64_t chunk = 64;
    if (n_tokens <= 4) chunk = std::clamp<int64_t>((w.rows + 8 * n_threads - 1) / (8 * n_threads), row_align, 512);
    row_chunk[i] = (chunk + row_align - 1) / row_align * row_align;
    first_job[i + 1] = first_job[i] + (w.rows + row_chunk[i] - 1) / row_chunk[i] * token_chunks;
    tiles[i] = tile_kernel(w.type);
  }
  const int64_t jobs = first_job[outputs.size()];

  auto run_job = [&](int64_t job) {
    size_t i = 0;
    while (job >= first_job[i + 1]) ++i;
    const WeightMatrix& w = *outputs[i].w;
    const int64_t local = job - first_job[i];
    const int64_t r0 = local / token_chunks * row_chunk[i];
    const int64_t t0 = local % token_chunks * token_chunk;
    const int64_t rows = std::min(row_chunk[i], w.rows - r0);
    const int64_t tokens = std::min(token_chunk, n_tokens - t0);
    tiles[i](cols, static_cast<const uint8_t*>(w.data) + static_cast<size_t>(r0) * w.row_bytes, w.row_bytes, rows,
             acts[i] + t0 * act_row_bytes[i], act_row_bytes[i], tokens, outputs[i].y + t0 * w.rows + r0,
             static_cast<size_t>(w.rows));
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
