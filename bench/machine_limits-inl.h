// The machine's limits per Highway target, which the attention microbenchmark reports its kernels against: f32
// fused-multiply-add throughput and read bandwidth. Included once per target by attention_bench.cpp
// (foreach_target); no include guard on purpose (Highway's per-target re-inclusion).
#include <cstdint>

#include <hwy/highway.h>

HWY_BEFORE_NAMESPACE();
namespace kvtier_bench::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// `iterations` rounds of 12 independent FMA chains: enough in flight to cover an FMA latency of 4-6 cycles on
// two pipes, so the loop runs at the FMA issue rate. Returns a value that depends on every chain (the
// compiler must compute them) and writes the lane count.
HWY_NOINLINE float FmaChains(int64_t iterations, int64_t* lanes) {
  const hn::ScalableTag<float> df;
  *lanes = static_cast<int64_t>(hn::Lanes(df));
  const auto x = hn::Set(df, 0.9999999f), y = hn::Set(df, 1e-7f);
  auto a0 = hn::Set(df, 1.0f), a1 = hn::Set(df, 1.1f), a2 = hn::Set(df, 1.2f), a3 = hn::Set(df, 1.3f);
  auto a4 = hn::Set(df, 1.4f), a5 = hn::Set(df, 1.5f), a6 = hn::Set(df, 1.6f), a7 = hn::Set(df, 1.7f);
  auto a8 = hn::Set(df, 1.8f), a9 = hn::Set(df, 1.9f), a10 = hn::Set(df, 2.0f), a11 = hn::Set(df, 2.1f);
  for (int64_t i = 0; i < iterations; ++i) {
    a0 = hn::MulAdd(a0, x, y);
    a1 = hn::MulAdd(a1, x, y);
    a2 = hn::MulAdd(a2, x, y);
    a3 = hn::MulAdd(a3, x, y);
    a4 = hn::MulAdd(a4, x, y);
    a5 = hn::MulAdd(a5, x, y);
    a6 = hn::MulAdd(a6, x, y);
    a7 = hn::MulAdd(a7, x, y);
    a8 = hn::MulAdd(a8, x, y);
    a9 = hn::MulAdd(a9, x, y);
    a10 = hn::MulAdd(a10, x, y);
    a11 = hn::MulAdd(a11, x, y);
  }
  const auto sum = hn::Add(hn::Add(hn::Add(hn::Add(a0, a1), hn::Add(a2, a3)), hn::Add(hn::Add(a4, a5), hn::Add(a6, a7))),
                           hn::Add(hn::Add(a8, a9), hn::Add(a10, a11)));
  return hn::GetLane(hn::SumOfLanes(df, sum));
}

// Reads bytes [0, n) of `data` (64-byte aligned, n a multiple of 4 vectors) once, as a stream of vector loads
// into 4 independent XOR chains, and returns a value that depends on every byte: the memory's read rate
// without the writes a copy adds.
HWY_NOINLINE uint64_t ReadStream(const uint8_t* data, size_t n) {
  const hn::ScalableTag<uint64_t> d;
  const size_t lanes = hn::Lanes(d);
  const auto* words = reinterpret_cast<const uint64_t*>(data);
  auto x0 = hn::Zero(d), x1 = hn::Zero(d), x2 = hn::Zero(d), x3 = hn::Zero(d);
  for (size_t i = 0; i + 4 * lanes <= n / 8; i += 4 * lanes) {
    x0 = hn::Xor(x0, hn::Load(d, words + i));
    x1 = hn::Xor(x1, hn::Load(d, words + i + lanes));
    x2 = hn::Xor(x2, hn::Load(d, words + i + 2 * lanes));
    x3 = hn::Xor(x3, hn::Load(d, words + i + 3 * lanes));
  }
  const auto all = hn::Xor(hn::Xor(x0, x1), hn::Xor(x2, x3));
  uint64_t result = 0;
  for (size_t i = 0; i < lanes; ++i) result ^= hn::ExtractLane(all, i);
  return result;
}

}  // namespace kvtier_bench::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();
