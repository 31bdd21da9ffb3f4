// matmul() speed per weight format: decode (1 token) and prefill (512 tokens)
// at tiny-llama-31m and Llama-3.2-1B shapes. Reports weight GB/s (weight bytes
// streamed per call / time) and GFLOP/s (2 * rows * cols * tokens / time).
//
//   cmake -S . -B build-bench -G Ninja -DKVTIER_BUILD_BENCH=ON
//   cmake --build build-bench --target matmul_bench -j2
//   build-bench/matmul_bench --benchmark_filter='Q4_0'      # KVTIER_BENCH_THREADS=2 by default
// On a shared machine, take the best of several runs:
//   --benchmark_repetitions=5 --benchmark_report_aggregates_only=true  (see the _min rows)
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <cstring>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "kvtier/f16.h"
#include "kvtier/gguf.h"
#include "kvtier/ggml_types.h"
#include "kvtier/kernels.h"
#include "kvtier/thread_pool.h"

namespace {

using kvtier::GgmlType;

int bench_threads() {
  const char* env = std::getenv("KVTIER_BENCH_THREADS");
  return env ? std::max(1, std::atoi(env)) : 2;
}

kvtier::ThreadPool& pool() {
  static kvtier::ThreadPool p(bench_threads());
  return p;
}

// Random weights with finite scales (speed does not depend on the values, but
// NaN-free data keeps the work representative).
std::vector<uint8_t> make_weights(GgmlType t, int64_t rows, int64_t cols) {
  const size_t bytes = kvtier::ggml_row_bytes(t, cols) * static_cast<size_t>(rows);
  std::vector<uint8_t> data(bytes);
  std::mt19937 rng(42);
  for (size_t i = 0; i + 4 <= bytes; i += 4) {
    const uint32_t r = rng();
    std::memcpy(data.data() + i, &r, 4);
  }
  const kvtier::GgmlTypeInfo& info = kvtier::ggml_type_info(t);
  const uint16_t small = kvtier::f32_to_f16(0.01f);
  auto put = [&](size_t off) { std::memcpy(data.data() + off, &small, 2); };
  if (t == GgmlType::F16 || t == GgmlType::BF16) {
    for (size_t i = 0; i < bytes; i += 2) put(i);
  } else if (t == GgmlType::F32) {
    for (size_t i = 0; i < bytes; i += 4) {
      const float f = 0.01f;
      std::memcpy(data.data() + i, &f, 4);
    }
  } else {
    for (size_t off = 0; off < bytes; off += static_cast<size_t>(info.block_bytes)) {
      if (t == GgmlType::Q6_K) {
        put(off + 208);  // d at the end of block_q6_K
      } else {
        put(off);
        if (t == GgmlType::Q4_1 || t == GgmlType::Q5_1 || t == GgmlType::Q4_K || t == GgmlType::Q5_K) put(off + 2);
      }
    }
  }
  return data;
}

struct Shape {
  const char* model;
  const char* name;
  int64_t rows;  // output features
  int64_t cols;  // input features
};

void run_matmul(benchmark::State& state, GgmlType type, Shape shape, int64_t tokens) {
  static std::map<std::string, std::vector<uint8_t>> cache;  // weights per (type, shape)
  const std::string key = std::string(kvtier::ggml_type_name(type)) + shape.model + shape.name;
  auto it = cache.find(key);
  if (it == cache.end()) {
    cache.clear();  // keep at most one large matrix resident
    it = cache.emplace(key, make_weights(type, shape.rows, shape.cols)).first;
  }
  const kvtier::kernels::WeightMatrix w{type, it->second.data(), shape.rows, shape.cols,
                                        kvtier::ggml_row_bytes(type, shape.cols)};
  std::vector<float> x(static_cast<size_t>(tokens * shape.cols));  // [tokens, cols]
  std::mt19937 rng(7);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  for (float& v : x) v = dist(rng);
  std::vector<float> y(static_cast<size_t>(tokens * shape.rows));  // [tokens, rows]
  for (auto _ : state) {
    kvtier::kernels::matmul(w, x.data(), tokens, y.data(), pool());
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  const double weight_bytes = static_cast<double>(it->second.size());
  const double flops = 2.0 * static_cast<double>(shape.rows) * static_cast<double>(shape.cols) * tokens;
  state.counters["GB/s"] = benchmark::Counter(weight_bytes * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["GFLOP/s"] = benchmark::Counter(flops * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["threads"] = pool().size();
}

// Every weight matmul of one forward pass of a real model file: n tokens
// through all layers, the output projection for the last token only (as
// llama.cpp computes logits in llama-bench). Compare tokens/s with
// `llama-bench -m FILE -t 2 -p 512 -n 32`: this is kvtier's matmul time alone,
// llama.cpp's number includes everything else.
void run_model(benchmark::State& state, const std::string& path, int64_t tokens) {
  auto file = kvtier::gguf::File::open(path);
  if (!file.ok()) {
    state.SkipWithError(file.status().message().c_str());
    return;
  }
  struct Layer {
    kvtier::kernels::WeightMatrix w;
    int64_t tokens;
  };
  std::vector<Layer> layers;
  int64_t max_cols = 0, max_rows = 0;
  for (const kvtier::gguf::TensorInfo& t : (*file)->tensors()) {
    if (t.n_dims != 2 || t.name == "token_embd.weight") continue;
    const bool output = t.name == "output.weight";
    layers.push_back({{t.type, t.data, t.ne[1], t.ne[0], kvtier::ggml_row_bytes(t.type, t.ne[0])}, output ? 1 : tokens});
    max_cols = std::max(max_cols, t.ne[0]);
    max_rows = std::max(max_rows, t.ne[1]);
  }
  std::vector<float> x(static_cast<size_t>(tokens * max_cols));  // [tokens, max_cols]
  std::mt19937 rng(7);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  for (float& v : x) v = dist(rng);
  std::vector<float> y(static_cast<size_t>(tokens * max_rows));  // [tokens, max_rows]
  double flops = 0;
  for (const Layer& l : layers) flops += 2.0 * static_cast<double>(l.w.rows * l.w.cols * l.tokens);
  for (auto _ : state) {
    for (const Layer& l : layers) kvtier::kernels::matmul(l.w, x.data(), l.tokens, y.data(), pool());
    benchmark::ClobberMemory();
  }
  state.counters["tokens/s"] = benchmark::Counter(static_cast<double>(tokens), benchmark::Counter::kIsIterationInvariantRate);
  state.counters["GFLOP/s"] = benchmark::Counter(flops * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["threads"] = pool().size();
}

std::string shared_models_dir() {
  if (const char* env = std::getenv("KVTIER_SHARED")) return std::string(env) + "/models/";
  // <repo>/bench/matmul_bench.cpp -> <repo>/../shared/models/
  return (std::filesystem::path(__FILE__).parent_path().parent_path() / ".." / "shared" / "models").string() + "/";
}

double min_of(const std::vector<double>& v) { return *std::min_element(v.begin(), v.end()); }

void register_all() {
  for (const char* model : {"tiny-llama-31m.Q4_0.gguf", "tiny-llama-31m.Q4_K_M.gguf", "tiny-llama-31m.Q8_0.gguf",
                            "tiny-llama-31m.f16.gguf"}) {
    const std::string path = shared_models_dir() + model;
    if (!std::filesystem::exists(path)) continue;
    for (int64_t tokens : {int64_t{1}, int64_t{512}}) {
      const std::string name = std::string("model/") + model + (tokens == 1 ? "/decode" : "/prefill512");
      benchmark::RegisterBenchmark(name.c_str(), [=](benchmark::State& st) { run_model(st, path, tokens); })
          ->Unit(benchmark::kMicrosecond)
          ->UseRealTime()
          ->ComputeStatistics("min", min_of);
    }
  }
  const Shape shapes[] = {
      {"tiny31m", "attn_512x512", 512, 512},         {"tiny31m", "ffn_up_1408x512", 1408, 512},
      {"tiny31m", "ffn_down_512x1408", 512, 1408},   {"tiny31m", "output_8192x512", 8192, 512},
      {"llama1b", "attn_2048x2048", 2048, 2048},     {"llama1b", "ffn_up_8192x2048", 8192, 2048},
      {"llama1b", "ffn_down_2048x8192", 2048, 8192}, {"llama1b", "output_128256x2048", 128256, 2048},
  };
  const GgmlType types[] = {GgmlType::Q4_0, GgmlType::Q4_K, GgmlType::Q6_K, GgmlType::Q8_0, GgmlType::Q4_1,
                            GgmlType::Q5_0, GgmlType::Q5_1, GgmlType::Q5_K, GgmlType::F16,  GgmlType::BF16,
                            GgmlType::F32};
  for (GgmlType type : types) {
    const int64_t block = kvtier::ggml_type_info(type).block_elems;
    for (const Shape& s : shapes) {
      if (s.cols % block != 0) continue;  // e.g. K-quants need 256 | cols (GGML falls back to Q5_0/Q8_0)
      const bool huge = s.rows * s.cols > 64 * 1024 * 1024;
      const bool wide_type = type == GgmlType::F32 || type == GgmlType::F16 || type == GgmlType::BF16;
      if (huge && wide_type) continue;  // a 0.5-1 GB matrix; not a case anyone runs
      for (int64_t tokens : {int64_t{1}, int64_t{512}}) {
        if (huge && tokens > 1) continue;  // prefill computes logits of the last token only
        const std::string name = std::string(tokens == 1 ? "decode/" : "prefill512/") +
                                 kvtier::ggml_type_name(type) + "/" + s.model + "/" + s.name;
        benchmark::RegisterBenchmark(name.c_str(), [=](benchmark::State& st) { run_matmul(st, type, s, tokens); })
            ->Unit(benchmark::kMicrosecond)
            ->UseRealTime()
            ->ComputeStatistics("min", min_of);
      }
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  register_all();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
