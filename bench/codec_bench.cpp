// Page codec speed: encode_page (the re-encode cost when a page moves down the ladder) and the scalar
// reference decode, per precision, on tiny-llama geometry (2 KV heads, head_dim 64, P = 64).
//   build-codec/codec_bench --benchmark_filter=Encode
// Encoding at 2-4 bits runs the least-squares parameter search (kv::fit_group_params: 27 passes over each
// 64-element group); 8-bit pages keep the covering parameters (one pass).
#include <benchmark/benchmark.h>

#include <random>
#include <string>
#include <vector>

#include "kv/codec.h"

namespace kvtier {
namespace {

struct PageData {
  kv::PageFormat format;
  std::vector<float> k, v;     // [P, n_kv_heads, head_dim]
  std::vector<uint8_t> page;   // [page_bytes]
};

PageData make(int precision) {
  PageData d;
  std::string error;
  kv::make_page_format(static_cast<kv::Precision>(precision), kv::KeyMode::PerChannel, kv::kTokensPerPage, 2, 64, 0,
                       &d.format, &error);
  std::mt19937 rng(7);
  std::normal_distribution<float> normal;
  d.k.resize(static_cast<size_t>(kv::kTokensPerPage) * 2 * 64);
  d.v.resize(d.k.size());
  for (size_t i = 0; i < d.k.size(); ++i) {
    d.k[i] = normal(rng) + (i % 64 == 5 ? 8.0f : 0.0f);  // an outlier channel, as real keys have
    d.v[i] = normal(rng);
  }
  d.page.resize(d.format.page_bytes);
  return d;
}

void BM_EncodePage(benchmark::State& state) {
  PageData d = make(static_cast<int>(state.range(0)));
  for (auto _ : state) {
    kv::encode_page(d.format, d.k.data(), d.v.data(), kv::kTokensPerPage, d.page.data());
    benchmark::DoNotOptimize(d.page.data());
  }
  state.SetLabel(kv::precision_name(d.format.precision));
}
BENCHMARK(BM_EncodePage)->DenseRange(1, 4)->Arg(10)->ArgName("precision")->Unit(benchmark::kMicrosecond);

void BM_DecodePageReference(benchmark::State& state) {
  PageData d = make(static_cast<int>(state.range(0)));
  kv::encode_page(d.format, d.k.data(), d.v.data(), kv::kTokensPerPage, d.page.data());
  std::vector<float> k(d.k.size()), v(d.v.size());
  for (auto _ : state) {
    kv::decode_page(d.format, d.page.data(), kv::kTokensPerPage, k.data(), v.data());
    benchmark::DoNotOptimize(k.data());
  }
  state.SetLabel(kv::precision_name(d.format.precision));
}
BENCHMARK(BM_DecodePageReference)->DenseRange(1, 4)->ArgName("precision")->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace kvtier

BENCHMARK_MAIN();
