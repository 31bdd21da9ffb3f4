// K-quant kernel throughput: weight bytes streamed per second by vec_dot over
// every row of a matrix (one thread), for the dispatched SIMD kernels and the
// scalar references, plus dequantize and Q8_K quantize.
//
//   cmake -S . -B build-kquant -G Ninja -DKVTIER_BUILD_BENCH=ON
//   cmake --build build-kquant --target kquant_bench -j2
//   build-kquant/kquant_bench --benchmark_filter=VecDot   (or =Tile for prefill tiles)
//
// Shapes: "large" is 2048 rows x 8192 columns (Q4_K: 9 MiB, beyond L2: the
// memory-bound decode case); "hot" is 64 x 8192 (fits L2: compute-bound).
#include <cstring>
#include <random>
#include <vector>

#include <benchmark/benchmark.h>

#include "kernels/cpu/kquant_blocks.h"
#include "kernels/kquant_ops.h"
#include "kvtier/f16.h"

namespace kvtier::kernels::kquant {
namespace {

using DotFn = float (*)(int64_t, const void*, const void*);
using DequantFn = void (*)(const void*, float*, int64_t);

constexpr int64_t kCols = 8192;

// Random weight blocks with finite f16 scales at `d_offset` (and dmin after it).
std::vector<uint8_t> random_weights(size_t block_bytes, size_t d_offset, bool has_dmin, int64_t rows) {
  std::mt19937 rng(1234);
  std::uniform_int_distribution<int> byte(0, 255);
  std::vector<uint8_t> data(block_bytes * static_cast<size_t>(rows * kCols / kSuperBlock));  // [rows][row bytes]
  for (uint8_t& b : data) b = static_cast<uint8_t>(byte(rng));
  for (size_t off = 0; off < data.size(); off += block_bytes) {
    const uint16_t d = f32_to_f16(0.01f);
    std::memcpy(data.data() + off + d_offset, &d, 2);
    if (has_dmin) std::memcpy(data.data() + off + d_offset + 2, &d, 2);
  }
  return data;
}

std::vector<BlockQ8K> random_activation_row() {
  std::mt19937 rng(99);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> x(kCols);  // [kCols]
  for (float& v : x) v = dist(rng);
  std::vector<BlockQ8K> q(kCols / kSuperBlock);
  quantize_q8_K_reference(x.data(), q.data(), kCols);
  return q;
}

struct Format {
  size_t block_bytes, d_offset;
  bool has_dmin;
};
constexpr Format kQ4K{sizeof(BlockQ4K), offsetof(BlockQ4K, d), true};
constexpr Format kQ5K{sizeof(BlockQ5K), offsetof(BlockQ5K, d), true};
constexpr Format kQ6K{sizeof(BlockQ6K), offsetof(BlockQ6K, d), false};

// y[r] = dot(W[r], a) for all rows; bytes processed = weight bytes read.
void BenchVecDot(benchmark::State& state, Format f, DotFn dot) {
  const int64_t rows = state.range(0);
  const std::vector<uint8_t> w = random_weights(f.block_bytes, f.d_offset, f.has_dmin, rows);
  const std::vector<BlockQ8K> a = random_activation_row();
  const size_t row_bytes = f.block_bytes * kCols / kSuperBlock;
  std::vector<float> y(static_cast<size_t>(rows));  // [rows]
  for (auto _ : state) {
    for (int64_t r = 0; r < rows; ++r) y[r] = dot(kCols, w.data() + r * row_bytes, a.data());
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(w.size()));
}

using TileFn = void (*)(int64_t, const uint8_t*, size_t, int64_t, const uint8_t*, size_t, int64_t, float*, size_t);

// Prefill: a tile of `rows` weight rows x 64 tokens. items = multiply-adds.
// tile = nullptr runs the row dot for every (row, token) pair instead.
void BenchTile(benchmark::State& state, Format f, TileFn tile, DotFn dot) {
  const int64_t rows = 128, tokens = 64;
  const std::vector<uint8_t> w = random_weights(f.block_bytes, f.d_offset, f.has_dmin, rows);
  const std::vector<BlockQ8K> one = random_activation_row();
  std::vector<BlockQ8K> act;  // [tokens][kCols / 256]
  for (int64_t t = 0; t < tokens; ++t) act.insert(act.end(), one.begin(), one.end());
  const size_t row_bytes = f.block_bytes * kCols / kSuperBlock, act_bytes = one.size() * sizeof(BlockQ8K);
  const auto* a = reinterpret_cast<const uint8_t*>(act.data());
  std::vector<float> y(static_cast<size_t>(rows * tokens));  // [tokens][rows]
  for (auto _ : state) {
    if (tile != nullptr) {
      tile(kCols, w.data(), row_bytes, rows, a, act_bytes, tokens, y.data(), rows);
    } else {
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t t = 0; t < tokens; ++t) y[t * rows + r] = dot(kCols, w.data() + r * row_bytes, a + t * act_bytes);
    }
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(state.iterations() * rows * tokens * kCols);
}

void BenchDequantize(benchmark::State& state, Format f, DequantFn dequantize) {
  const int64_t rows = 64;
  const std::vector<uint8_t> w = random_weights(f.block_bytes, f.d_offset, f.has_dmin, rows);
  std::vector<float> out(static_cast<size_t>(rows * kCols));  // [rows][kCols]
  for (auto _ : state) {
    dequantize(w.data(), out.data(), rows * kCols);
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(w.size()));
}

void BenchQuantizeQ8K(benchmark::State& state, void (*quantize)(const float*, void*, int64_t)) {
  std::mt19937 rng(5);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> x(kCols * 16);  // [16][kCols]
  for (float& v : x) v = dist(rng);
  std::vector<BlockQ8K> q(x.size() / kSuperBlock);
  for (auto _ : state) {
    quantize(x.data(), q.data(), static_cast<int64_t>(x.size()));
    benchmark::DoNotOptimize(q.data());
  }
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(x.size() * sizeof(float)));
}

constexpr int64_t kLargeRows = 2048, kHotRows = 64;

BENCHMARK_CAPTURE(BenchVecDot, Q4_K_simd, kQ4K, vec_dot_q4_K_q8_K)->Arg(kLargeRows)->Arg(kHotRows);
BENCHMARK_CAPTURE(BenchVecDot, Q5_K_simd, kQ5K, vec_dot_q5_K_q8_K)->Arg(kLargeRows)->Arg(kHotRows);
BENCHMARK_CAPTURE(BenchVecDot, Q6_K_simd, kQ6K, vec_dot_q6_K_q8_K)->Arg(kLargeRows)->Arg(kHotRows);
BENCHMARK_CAPTURE(BenchVecDot, Q4_K_reference, kQ4K, vec_dot_q4_K_q8_K_reference)->Arg(kHotRows);
BENCHMARK_CAPTURE(BenchVecDot, Q5_K_reference, kQ5K, vec_dot_q5_K_q8_K_reference)->Arg(kHotRows);
BENCHMARK_CAPTURE(BenchVecDot, Q6_K_reference, kQ6K, vec_dot_q6_K_q8_K_reference)->Arg(kHotRows);
BENCHMARK_CAPTURE(BenchTile, Q4_K_tile, kQ4K, tile_q4_K_q8_K, nullptr);
BENCHMARK_CAPTURE(BenchTile, Q4_K_row_dots, kQ4K, nullptr, vec_dot_q4_K_q8_K);
BENCHMARK_CAPTURE(BenchTile, Q5_K_tile, kQ5K, tile_q5_K_q8_K, nullptr);
BENCHMARK_CAPTURE(BenchTile, Q5_K_row_dots, kQ5K, nullptr, vec_dot_q5_K_q8_K);
BENCHMARK_CAPTURE(BenchTile, Q6_K_tile, kQ6K, tile_q6_K_q8_K, nullptr);
BENCHMARK_CAPTURE(BenchTile, Q6_K_row_dots, kQ6K, nullptr, vec_dot_q6_K_q8_K);
BENCHMARK_CAPTURE(BenchDequantize, Q4_K_simd, kQ4K, dequantize_q4_K);
BENCHMARK_CAPTURE(BenchDequantize, Q5_K_simd, kQ5K, dequantize_q5_K);
BENCHMARK_CAPTURE(BenchDequantize, Q6_K_simd, kQ6K, dequantize_q6_K);
BENCHMARK_CAPTURE(BenchDequantize, Q4_K_reference, kQ4K, dequantize_q4_K_reference);
BENCHMARK_CAPTURE(BenchDequantize, Q6_K_reference, kQ6K, dequantize_q6_K_reference);
BENCHMARK_CAPTURE(BenchQuantizeQ8K, simd, quantize_q8_K);
BENCHMARK_CAPTURE(BenchQuantizeQ8K, reference, quantize_q8_K_reference);

}  // namespace
}  // namespace kvtier::kernels::kquant

BENCHMARK_MAIN();
