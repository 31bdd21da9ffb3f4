// Decode attention over the paged KV cache, per codec and depth, for tiny-llama-31m's geometry
// (8 layers, 8 query heads, 2 KV heads, head_dim 64), against the memory copy bandwidth of this machine.
//
//   cmake -S . -B build-bench -G Ninja -DKVTIER_BUILD_BENCH=ON && cmake --build build-bench --target attention_bench
//   build-bench/attention_bench --benchmark_min_time=0.5
//
// bytes_per_second = KV page bytes read per decode step (all 8 layers, K and V, scales included) / time.
// GFLOP/s = the attention's arithmetic, 2 flops per multiply-add of q.k and p.V for every query head and
// cached token (8 layers x 8 heads x tokens x 64 x 2 x 2 per step), whatever the codec costs to unpack.
// BM_Memcpy reports the bytes it reads (it writes as many) from a buffer far larger than the caches: the
// memory limit by the yardstick. BM_ReadBandwidth reads without writing: the memory limit of a kernel that
// only reads (on the 2-core Zen 5 VM here ~2.8x memcpy's bytes read). BM_FmaPeak reports the f32 FMA rate of
// the dispatched Highway target, BM_DotBytesPeak the int8 vpdpbusd rate (x86 with AVX-512 VNNI): the arithmetic
// limits of the f32 and the integer kernels.
// Single-thread runs report rates from CPU time (robust on a shared machine), two-thread runs from wall time.
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <vector>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "kernels/paged_attention.h"
#include "kv/codec.h"
#include "kv/page_pool.h"

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "bench/machine_limits-inl.h"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/highway.h>
#include "bench/machine_limits-inl.h"

namespace kvtier_bench {
HWY_EXPORT(FmaChains);
HWY_EXPORT(ReadStream);
}

namespace {

using namespace kvtier;

constexpr int kLayers = 8, kHeads = 8, kKvHeads = 2, kHeadDim = 64;

struct CodecSpec {
  const char* name;
  kv::Precision precision;
  kv::KeyMode mode;
};
const CodecSpec kCodecs[] = {
    {"f16", kv::Precision::F16, kv::KeyMode::PerChannel}, {"q8", kv::Precision::Q8, kv::KeyMode::PerChannel},
    {"q4", kv::Precision::Q4, kv::KeyMode::PerChannel},   {"q3", kv::Precision::Q3, kv::KeyMode::PerChannel},
    {"q2", kv::Precision::Q2, kv::KeyMode::PerChannel},   {"q4-rotated", kv::Precision::Q4, kv::KeyMode::RotatedPerToken},
};

// A whole cache of one codec: 8 layers x n_tokens, every layer its own pages (no sharing of cache lines).
struct Cache {
  kv::PageFormat format;
  kv::PagePool pool;
  std::vector<std::vector<kv::PageRef>> layers;  // [kLayers][n_pages]
  size_t bytes_per_step = 0;

  Cache(const CodecSpec& codec, int n_tokens) {
    std::string error;
    kv::make_page_format(codec.precision, codec.mode, kv::kTokensPerPage, kKvHeads, kHeadDim, 0, &format, &error);
    const int size_class = pool.add_size_class(format.page_bytes, codec.name);
    const int n_pages = (n_tokens + kv::kTokensPerPage - 1) / kv::kTokensPerPage;
    std::mt19937 rng(1);
    std::normal_distribution<float> normal;
    const size_t page_elems = static_cast<size_t>(kv::kTokensPerPage) * kKvHeads * kHeadDim;
    std::vector<float> k(page_elems), v(page_elems);  // [P, n_kv_heads, head_dim]
    std::vector<std::vector<uint8_t>> encoded(n_pages, std::vector<uint8_t>(format.page_bytes));
    for (int p = 0; p < n_pages; ++p) {
      for (auto& x : k) x = normal(rng);
      for (auto& x : v) x = normal(rng);
      kv::encode_page(format, k.data(), v.data(), kv::kTokensPerPage, encoded[p].data());
    }
    layers.resize(kLayers);
    for (int l = 0; l < kLayers; ++l) {
      for (int p = 0; p < n_pages; ++p) {
        const kv::PageId id = *pool.allocate(size_class);
        std::memcpy(pool.data(id), encoded[p].data(), format.page_bytes);
        const int rows = std::min(kv::kTokensPerPage, n_tokens - p * kv::kTokensPerPage);
        layers[l].push_back({pool.data(id), &format, p * kv::kTokensPerPage, rows});
        bytes_per_step += format.page_bytes;
      }
    }
  }
};

int threads_arg(const benchmark::State& state) { return static_cast<int>(state.range(2)); }

void BM_DecodeAttention(benchmark::State& state) {
  const CodecSpec& codec = kCodecs[state.range(0)];
  const int n_tokens = static_cast<int>(state.range(1));
  ThreadPool pool(threads_arg(state));
  Cache cache(codec, n_tokens);
  std::vector<float> q(static_cast<size_t>(kHeads) * kHeadDim, 0.1f), out(q.size());
  const float scale = 0.125f;
  for (auto _ : state) {
    for (int l = 0; l < kLayers; ++l) {
      kernels::PagedKv view{cache.layers[l], kKvHeads, kHeadDim, codec.mode == kv::KeyMode::RotatedPerToken};
      kernels::paged_attention(view, n_tokens - 1, 1, kHeads, q.data(), scale, out.data(), pool);
    }
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * static_cast<int64_t>(cache.bytes_per_step));
  state.SetLabel(std::string(codec.name) + " " + kernels::paged_attention_target() + " " +
                 std::to_string(cache.format.bits_per_element()).substr(0, 5) + " bits");
  state.counters["KV_MiB"] = static_cast<double>(cache.bytes_per_step) / 1048576.0;
  state.counters["tok/s"] = benchmark::Counter(static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
  const double flops_per_step = 2.0 * 2.0 * kLayers * kHeads * static_cast<double>(n_tokens) * kHeadDim;
  state.counters["GFLOP/s"] =
      benchmark::Counter(flops_per_step * 1e-9 * static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
}

template <int kThreads>
void DecodeArgs(benchmark::internal::Benchmark* b) {
  for (int tokens : {4096, 16384, 65536})
    for (int codec = 0; codec < static_cast<int>(std::size(kCodecs)); ++codec) b->Args({codec, tokens, kThreads});
}
// One thread: rates from CPU time, so that a busy shared machine does not distort them.
BENCHMARK(BM_DecodeAttention)->Apply(DecodeArgs<1>)->ArgNames({"codec", "tokens", "threads"})->Unit(benchmark::kMicrosecond);
// Two threads: wall-clock rates (CPU time counts only the calling thread).
BENCHMARK(BM_DecodeAttention)->Apply(DecodeArgs<2>)->ArgNames({"codec", "tokens", "threads"})->UseRealTime()->Unit(benchmark::kMicrosecond);

// Prefill attention of 512 queries at the end of a cache of depth tokens, ONE layer (x8 for the model),
// two threads (wall time). items_per_second = query tokens per second for this layer.
void BM_PrefillAttention(benchmark::State& state) {
  const CodecSpec& codec = kCodecs[state.range(0)];
  const int depth = static_cast<int>(state.range(1));
  const int n_q = 512;
  ThreadPool pool(2);
  Cache cache(codec, depth + n_q);
  std::vector<float> q(static_cast<size_t>(n_q) * kHeads * kHeadDim, 0.1f), out(q.size());
  for (auto _ : state) {
    kernels::PagedKv view{cache.layers[0], kKvHeads, kHeadDim, codec.mode == kv::KeyMode::RotatedPerToken};
    kernels::paged_attention(view, depth, n_q, kHeads, q.data(), 0.125f, out.data(), pool);
    benchmark::DoNotOptimize(out.data());
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()) * n_q);
  state.SetLabel(std::string(codec.name) + " " + kernels::paged_attention_target() + " 1 layer, 2 threads");
}
BENCHMARK(BM_PrefillAttention)
    ->ArgsProduct({{0, 2, 4}, {4096, 16384}})
    ->ArgNames({"codec", "depth"})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

// Copy bandwidth: 256 MiB (far beyond the caches), split across the pool's threads.
void BM_Memcpy(benchmark::State& state) {
  const size_t bytes = size_t{256} << 20;
  ThreadPool pool(static_cast<int>(state.range(0)));
  std::unique_ptr<uint8_t, decltype(&std::free)> src(static_cast<uint8_t*>(std::aligned_alloc(4096, bytes)), &std::free);
  std::unique_ptr<uint8_t, decltype(&std::free)> dst(static_cast<uint8_t*>(std::aligned_alloc(4096, bytes)), &std::free);
  std::memset(src.get(), 1, bytes);
  std::memset(dst.get(), 2, bytes);
  for (auto _ : state) {
    pool.parallel_for(static_cast<int64_t>(bytes / 4096), [&](int64_t begin, int64_t end, int) {
      std::memcpy(dst.get() + begin * 4096, src.get() + begin * 4096, static_cast<size_t>(end - begin) * 4096);
    });
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * static_cast<int64_t>(bytes));
}
BENCHMARK(BM_Memcpy)->Arg(1)->ArgNames({"threads"})->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Memcpy)->Arg(2)->ArgNames({"threads"})->UseRealTime()->Unit(benchmark::kMillisecond);

// Read bandwidth: 256 MiB (far beyond the caches) read once per iteration, split across the pool's threads. A
// copy moves each byte twice (and the write first reads the line), so a kernel that only reads can go faster
// than BM_Memcpy's bytes read; this is the memory limit such a kernel meets.
void BM_ReadBandwidth(benchmark::State& state) {
  const size_t bytes = size_t{256} << 20;
  ThreadPool pool(static_cast<int>(state.range(0)));
  std::unique_ptr<uint8_t, decltype(&std::free)> src(static_cast<uint8_t*>(std::aligned_alloc(4096, bytes)), &std::free);
  std::memset(src.get(), 1, bytes);
  std::vector<uint64_t> sinks(pool.size());
  for (auto _ : state) {
    pool.parallel_for(static_cast<int64_t>(bytes / 4096), [&](int64_t begin, int64_t end, int slot) {
      sinks[slot] ^= HWY_DYNAMIC_DISPATCH(kvtier_bench::ReadStream)(src.get() + begin * 4096,
                                                                    static_cast<size_t>(end - begin) * 4096);
    });
    benchmark::DoNotOptimize(sinks.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * static_cast<int64_t>(bytes));
}
BENCHMARK(BM_ReadBandwidth)->Arg(1)->ArgNames({"threads"})->Unit(benchmark::kMillisecond);
BENCHMARK(BM_ReadBandwidth)->Arg(2)->ArgNames({"threads"})->UseRealTime()->Unit(benchmark::kMillisecond);

#if defined(__x86_64__)
// The int8 dot-product issue rate (AVX-512 VNNI vpdpbusd on 512-bit vectors, 64 multiply-adds each, all
// operands in registers: the instruction's best form): the arithmetic limit of the 2- and 4-bit kernels on
// AVX3_DL. Reported as int8 GMAC/s (x2 to compare with the decode benchmarks' GFLOP/s; the 4-bit kernels spend
// two int8 multiply-adds per element, code x coefficient and code x its rounding residual).
__attribute__((target("avx512f,avx512vnni"))) int64_t DotBytesChains(int64_t iterations) {
  __m512i acc[16];
  for (int i = 0; i < 16; ++i) acc[i] = _mm512_set1_epi32(i);
  const __m512i codes = _mm512_set1_epi8(3), words = _mm512_set1_epi32(0x01020304);
  for (int64_t it = 0; it < iterations; ++it) {
#pragma GCC unroll 16
    for (int i = 0; i < 16; ++i) asm("vpdpbusd %2, %1, %0" : "+v"(acc[i]) : "v"(codes), "v"(words));
  }
  alignas(64) int32_t lanes[16];
  int64_t sum = 0;
  for (int i = 0; i < 16; ++i) {
    _mm512_store_si512(lanes, acc[i]);
    for (const int32_t lane : lanes) sum += lane;
  }
  return sum;
}

void BM_DotBytesPeak(benchmark::State& state) {
  if (!__builtin_cpu_supports("avx512vnni")) {
    state.SkipWithError("no AVX-512 VNNI on this CPU");
    return;
  }
  ThreadPool pool(static_cast<int>(state.range(0)));
  const int64_t rounds = 1 << 18;
  std::vector<int64_t> sinks(pool.size());
  for (auto _ : state) {
    pool.run([&](int slot, int) { sinks[slot] += DotBytesChains(rounds); });
    benchmark::DoNotOptimize(sinks.data());
  }
  const double macs = 16.0 * 64 * static_cast<double>(rounds) * pool.size();
  state.counters["GMAC/s"] = benchmark::Counter(macs * 1e-9 * static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
}
BENCHMARK(BM_DotBytesPeak)->Arg(1)->ArgNames({"threads"})->Unit(benchmark::kMillisecond);
BENCHMARK(BM_DotBytesPeak)->Arg(2)->ArgNames({"threads"})->UseRealTime()->Unit(benchmark::kMillisecond);
#endif

// The f32 FMA issue rate on the dispatched target, per thread or over the pool's threads.
void BM_FmaPeak(benchmark::State& state) {
  ThreadPool pool(static_cast<int>(state.range(0)));
  const int64_t rounds = 1 << 20;
  std::vector<int64_t> lanes(pool.size());
  std::vector<float> sinks(pool.size());
  for (auto _ : state) {
    pool.run([&](int slot, int) { sinks[slot] += HWY_DYNAMIC_DISPATCH(kvtier_bench::FmaChains)(rounds, &lanes[slot]); });
    benchmark::DoNotOptimize(sinks.data());
  }
  const double flops = 2.0 * 12 * static_cast<double>(lanes[0]) * static_cast<double>(rounds) * pool.size();
  state.counters["GFLOP/s"] =
      benchmark::Counter(flops * 1e-9 * static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
  state.SetLabel(std::string(kernels::paged_attention_target()) + ", " + std::to_string(lanes[0]) + " f32 lanes");
}
BENCHMARK(BM_FmaPeak)->Arg(1)->ArgNames({"threads"})->Unit(benchmark::kMillisecond);
BENCHMARK(BM_FmaPeak)->Arg(2)->ArgNames({"threads"})->UseRealTime()->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
