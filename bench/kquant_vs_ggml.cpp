// kvtier's K-quant kernels against GGML's, in one process on the same data:
//  - Q8_K quantization: bytes identical to GGML's quantize_row_q8_K?
//  - dequantize_row_q*_K: largest relative difference;
//  - vec_dot_q*_K_q8_K: largest relative difference and weight GB/s over every
//    row of a matrix (best of 30 passes, one thread), kvtier / GGML ratio.
// Built and run by bench/kquant_vs_ggml.sh against the peer llama.cpp build
// (bench/build_llamacpp.sh); not part of the CMake build. GGML functions are only
// declared here and linked from the peer's static libraries.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

#include <hwy/targets.h>

#include "kernels/cpu/kquant_blocks.h"
#include "kernels/kquant_ops.h"
#include "kvtier/f16.h"

extern "C" {
void ggml_cpu_init(void);
void ggml_vec_dot_q4_K_q8_K(int n, float* s, size_t bs, const void* vx, size_t bx, const void* vy, size_t by, int nrc);
void ggml_vec_dot_q5_K_q8_K(int n, float* s, size_t bs, const void* vx, size_t bx, const void* vy, size_t by, int nrc);
void ggml_vec_dot_q6_K_q8_K(int n, float* s, size_t bs, const void* vx, size_t bx, const void* vy, size_t by, int nrc);
void quantize_row_q8_K(const float* x, void* y, int64_t k);
void dequantize_row_q4_K(const void* x, float* y, int64_t k);
void dequantize_row_q5_K(const void* x, float* y, int64_t k);
void dequantize_row_q6_K(const void* x, float* y, int64_t k);
}

namespace {

using namespace kvtier::kernels::kquant;
using GgmlDot = void (*)(int, float*, size_t, const void*, size_t, const void*, size_t, int);
using KvtierDot = float (*)(int64_t, const void*, const void*);
using Dequantize = void (*)(const void*, float*, int64_t);

constexpr int64_t kCols = 8192;

struct Format {
  const char* name;
  size_t block_bytes, d_offset;
  bool has_dmin;
  GgmlDot ggml_dot;
  KvtierDot kvtier_dot;
  Dequantize ggml_dequantize, kvtier_dequantize;
};

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

void compare(const Format& f, int64_t rows) {
  std::mt19937 rng(7);
  std::uniform_int_distribution<int> byte(0, 255);
  std::vector<uint8_t> w(f.block_bytes * rows * kCols / kSuperBlock);  // [rows][row bytes]
  for (uint8_t& b : w) b = static_cast<uint8_t>(byte(rng));
  const uint16_t d = kvtier::f32_to_f16(0.01f);
  for (size_t off = 0; off < w.size(); off += f.block_bytes) {
    std::memcpy(&w[off + f.d_offset], &d, 2);
    if (f.has_dmin) std::memcpy(&w[off + f.d_offset + 2], &d, 2);
  }
  std::vector<float> x(kCols);  // [kCols]
  std::normal_distribution<float> normal;
  for (float& v : x) v = normal(rng);
  std::vector<BlockQ8K> act_ggml(kCols / kSuperBlock), act(kCols / kSuperBlock);
  quantize_row_q8_K(x.data(), act_ggml.data(), kCols);
  quantize_q8_K(x.data(), act.data(), kCols);
  const bool q8_same = std::memcmp(act.data(), act_ggml.data(), act.size() * sizeof(BlockQ8K)) == 0;

  std::vector<float> y_ggml(kCols), y_kvtier(kCols);
  f.ggml_dequantize(w.data(), y_ggml.data(), kCols);
  f.kvtier_dequantize(w.data(), y_kvtier.data(), kCols);
  double dequant_diff = 0;
  for (int64_t i = 0; i < kCols; ++i)
    dequant_diff = std::max(dequant_diff, std::fabs(y_ggml[i] - y_kvtier[i]) / (std::fabs(y_ggml[i]) + 1e-6));

  const size_t row_bytes = f.block_bytes * kCols / kSuperBlock;
  double dot_diff = 0;
  for (int64_t r = 0; r < rows; r += 17) {
    float g;
    f.ggml_dot(kCols, &g, 0, &w[r * row_bytes], 0, act.data(), 0, 1);
    const float k = f.kvtier_dot(kCols, &w[r * row_bytes], act.data());
    dot_diff = std::max(dot_diff, static_cast<double>(std::fabs(g - k) / (std::fabs(g) + 1e-3f)));
  }

  std::vector<float> out(rows);  // [rows]
  double best_ggml = 1e30, best_kvtier = 1e30;
  for (int pass = 0; pass < 30; ++pass) {  // interleaved, so both see the same machine state
    const double t0 = now_seconds();
    for (int64_t r = 0; r < rows; ++r) f.ggml_dot(kCols, &out[r], 0, &w[r * row_bytes], 0, act.data(), 0, 1);
    const double t1 = now_seconds();
    for (int64_t r = 0; r < rows; ++r) out[r] += f.kvtier_dot(kCols, &w[r * row_bytes], act.data());
    const double t2 = now_seconds();
    best_ggml = std::min(best_ggml, t1 - t0);
    best_kvtier = std::min(best_kvtier, t2 - t1);
  }
  std::printf("%s %5ld x %ld | q8_K same bytes: %-3s | dequant max rel diff %.1e | dot max rel diff %.1e | "
              "GGML %6.2f GB/s  kvtier %6.2f GB/s  kvtier/GGML %.3f\n",
              f.name, static_cast<long>(rows), static_cast<long>(kCols), q8_same ? "yes" : "NO", dequant_diff,
              dot_diff, w.size() / best_ggml / 1e9, w.size() / best_kvtier / 1e9, best_ggml / best_kvtier);
}

}  // namespace

int main() {
  ggml_cpu_init();  // GGML's f16 tables
  const Format formats[] = {
      {"Q4_K", sizeof(BlockQ4K), offsetof(BlockQ4K, d), true, ggml_vec_dot_q4_K_q8_K, vec_dot_q4_K_q8_K,
       dequantize_row_q4_K, dequantize_q4_K},
      {"Q5_K", sizeof(BlockQ5K), offsetof(BlockQ5K, d), true, ggml_vec_dot_q5_K_q8_K, vec_dot_q5_K_q8_K,
       dequantize_row_q5_K, dequantize_q5_K},
      {"Q6_K", sizeof(BlockQ6K), offsetof(BlockQ6K, d), false, ggml_vec_dot_q6_K_q8_K, vec_dot_q6_K_q8_K,
       dequantize_row_q6_K, dequantize_q6_K},
  };
  const int64_t best = hwy::SupportedTargets() & HWY_TARGETS;
  // kvtier's best target first, then AVX2 alone (the path llama.cpp's x86 K-quant kernels use).
  std::vector<int64_t> pins = {0};
#if HWY_ARCH_X86
  if ((best & HWY_AVX2) && (best & -best) != HWY_AVX2) pins.push_back(HWY_AVX2);
#endif
  for (int64_t pin : pins) {
    hwy::SetSupportedTargetsForTest(pin);
    std::printf("== kvtier on Highway target %s\n", hwy::TargetName(pin != 0 ? pin : (best & -best)));
    for (const Format& f : formats) {
      for (int64_t rows : {2048, 64}) compare(f, rows);
    }
  }
  hwy::SetSupportedTargetsForTest(0);
  return 0;
}
