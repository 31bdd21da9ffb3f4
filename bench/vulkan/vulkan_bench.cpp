// Achieved memory bandwidth of the Vulkan matrix-vector shaders, against the device's measured copy
// bandwidth (vkCmdCopyBuffer, bytes read + written), timed with GPU timestamps.
//
//   build/bench/vulkan_bench [--device N] [--quick] [--sweep] [--no-matvec] [--no-attention]
//
// Each (format, shape) gets enough copies of its weight matrix to span well past the GPU's last-level cache
// (>= 384 MiB in all), with random codes and scales; the dispatches cycle through the copies, so each reads
// its weights from memory, as a decode step does. Two numbers per case:
//   chain:  a barrier between dispatches (each waits for the previous, as dependent layers do): the median
//           time of one dispatch, launch and drain included;
//   stream: no barriers, the dispatches overlap: total bytes over total time.
// Before timing, 16 rows of the first copy are checked against the scalar reference (kernels/ref/).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "kernels/paged_attention.h"
#include "kernels/vulkan/context.h"
#include "kernels/vulkan/vulkan_kernels.h"
#include "kvtier/f16.h"
#include "kvtier/kernels.h"
#include "kvtier/thread_pool.h"
#include "kv/codec.h"

namespace kvtier::vulkan {
namespace {

struct Options {
  int device = -1;
  bool quick = false;  // small shapes and few repeats (a smoke run on lavapipe)
  bool sweep = false;  // also try other workgroup shapes
  bool matvec = true;
  bool attention = true;
};

// xorshift64*: fast random bytes for hundreds of MiB of weights.
struct Random {
  uint64_t s = 0x9E3779B97F4A7C15ull;
  uint64_t next() {
    s ^= s >> 12;
    s ^= s << 25;
    s ^= s >> 27;
    return s * 2685821657736338717ull;
  }
  float uniform() { return static_cast<float>(next() >> 40) / static_cast<float>(1 << 24); }  // [0, 1)
};

// Random weights of `rows` x `cols` in `type`: random code bytes, and every f16 scale (and F16 value) a
// finite half of moderate size, so no NaN or infinity reaches the sums.
std::vector<uint8_t> random_weights(Random& rng, GgmlType type, int64_t rows, int64_t cols) {
  std::vector<uint8_t> w(ggml_row_bytes(type, cols) * static_cast<size_t>(rows));
  for (size_t i = 0; i + 8 <= w.size(); i += 8) {
    const uint64_t r = rng.next();
    std::memcpy(w.data() + i, &r, 8);
  }
  auto put_half = [&](size_t at, float v) {
    const uint16_t h = f32_to_f16(v);
    std::memcpy(w.data() + at, &h, 2);
  };
  const GgmlTypeInfo& info = ggml_type_info(type);
  const size_t bb = static_cast<size_t>(info.block_bytes);
  for (size_t at = 0; at < w.size(); at += bb) {
    switch (type) {
      case GgmlType::F16: put_half(at, rng.uniform() * 2 - 1); break;
      case GgmlType::Q8_0:
      case GgmlType::Q4_0: put_half(at, rng.uniform() * 0.02f); break;
      case GgmlType::Q4_K:
      case GgmlType::Q5_K:
        put_half(at, rng.uniform() * 0.01f);
        put_half(at + 2, rng.uniform() * 0.01f);
        break;
      case GgmlType::Q6_K: put_half(at + 208, rng.uniform() * 0.01f); break;
      default: break;
    }
  }
  return w;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

bool check(const Status& s, const char* what) {
  if (!s.ok()) std::fprintf(stderr, "%s: %s\n", what, s.message().c_str());
  return s.ok();
}

// Device-to-device copy bandwidth, counting bytes read plus bytes written: GB/s. With a shader
// (shaders/copy_words.comp: the ceiling for shaders that stream memory) or with vkCmdCopyBuffer.
double copy_bandwidth(Context& ctx, size_t bytes, int reps, bool with_shader) {
  Result<Pipeline> copy_shader = ctx.create_pipeline(PipelineDesc{"copy_words", 2, 4, {256}});
  if (!copy_shader.ok()) return check(copy_shader.status(), "copy pipeline");
  const uint32_t words = static_cast<uint32_t>(bytes / 16);
  const uint32_t groups = std::min<uint32_t>(ctx.info().max_workgroup_count_x, 132 * 32);
  Result<Buffer> a = ctx.create_buffer(bytes, MemoryKind::DeviceLocal);
  Result<Buffer> b = ctx.create_buffer(bytes, MemoryKind::DeviceLocal);
  if (!a.ok() || !b.ok()) {
    std::fprintf(stderr, "copy buffers: %s\n", a.ok() ? b.error().c_str() : a.error().c_str());
    return 0;
  }
  Result<CommandBatch> batch = ctx.begin(static_cast<uint32_t>(reps + 2));
  if (!batch.ok()) return 0;
  batch->fill(*a, 0, bytes, 0x3C003C00u);  // not zeros: f16 ones
  batch->barrier();
  batch->copy(*a, 0, *b, 0, bytes);  // warm-up
  batch->barrier();
  batch->timestamp();
  for (int r = 0; r < reps; ++r) {
    const Buffer& src = r % 2 ? *b : *a;
    const Buffer& dst = r % 2 ? *a : *b;
    if (with_shader) {
      batch->dispatch(*copy_shader, {src, dst}, words, groups);
    } else {
      batch->copy(src, 0, dst, 0, bytes);
    }
    batch->barrier();
    batch->timestamp();
  }
  if (!check(ctx.submit(*batch), "copy")) return 0;
  Result<std::vector<double>> ts = ctx.timestamps_ns(*batch);
  if (!ts.ok()) return 0;
  std::vector<double> each;
  for (int r = 0; r < reps; ++r) each.push_back((*ts)[r + 1] - (*ts)[r]);
  return 2.0 * static_cast<double>(bytes) / median(each);  // bytes per ns = GB/s
}

struct MatvecResult {
  double chain_ns = 0, stream_ns = 0;
  double max_rel_error = 0;
};

bool bench_matvec(Context& ctx, Kernels& kernels, GgmlType type, int64_t rows, int64_t cols, MatvecTuning tuning,
                  size_t span_bytes, int reps, MatvecResult* out) {
  Random rng;
  const size_t w_bytes = ggml_row_bytes(type, cols) * static_cast<size_t>(rows);
  const int copies = static_cast<int>(std::max<size_t>(2, (span_bytes + w_bytes - 1) / w_bytes));
  std::vector<Buffer> weights;
  std::vector<uint8_t> first;
  for (int c = 0; c < copies; ++c) {
    std::vector<uint8_t> w = random_weights(rng, type, rows, cols);
    Result<Buffer> b = ctx.create_buffer(w.size(), MemoryKind::DeviceLocal);
    if (!b.ok()) return check(b.status(), "weights");
    if (!check(ctx.upload(*b, 0, w.data(), w.size()), "upload")) return false;
    weights.push_back(std::move(*b));
    if (c == 0) first = std::move(w);
  }
  std::vector<float> x(static_cast<size_t>(cols));
  for (float& v : x) v = rng.uniform() * 2 - 1;
  Result<Buffer> xb = ctx.create_buffer(x.size() * 4, MemoryKind::DeviceLocal);
  Result<Buffer> yb = ctx.create_buffer(static_cast<size_t>(rows) * 4, MemoryKind::DeviceLocal);
  if (!xb.ok() || !yb.ok()) return false;
  if (!check(ctx.upload(*xb, 0, x.data(), x.size() * 4), "upload x")) return false;

  // Correctness first: 16 rows of copy 0 against the reference.
  {
    Result<CommandBatch> batch = ctx.begin();
    if (!batch.ok()) return false;
    if (!check(kernels.matvec(*batch, type, weights[0], *xb, *yb, rows, cols, 1, tuning), "matvec")) return false;
    if (!check(ctx.submit(*batch), "submit")) return false;
    std::vector<float> y(static_cast<size_t>(rows));
    if (!check(ctx.download(*yb, 0, y.data(), y.size() * 4), "download")) return false;
    std::vector<float> row(static_cast<size_t>(cols));
    for (int64_t r = 0; r < rows; r += std::max<int64_t>(1, rows / 16)) {
      kernels::dequantize_row_reference(type, first.data() + r * ggml_row_bytes(type, cols), row.data(), cols);
      double ref = 0, mag = 0;
      for (int64_t i = 0; i < cols; ++i) {
        ref += static_cast<double>(row[i]) * x[i];
        mag += std::fabs(static_cast<double>(row[i]) * x[i]);
      }
      out->max_rel_error = std::max(out->max_rel_error, std::fabs(y[r] - ref) / std::max(mag, 1e-30));
    }
  }

  const int n = reps * copies;
  for (bool with_barriers : {true, false}) {
    Result<CommandBatch> batch = ctx.begin(static_cast<uint32_t>(n + 2));
    if (!batch.ok()) return check(batch.status(), "begin");
    for (int c = 0; c < copies; ++c) kernels.matvec(*batch, type, weights[c], *xb, *yb, rows, cols, 1, tuning);  // warm
    batch->barrier();
    batch->timestamp();
    for (int i = 0; i < n; ++i) {
      kernels.matvec(*batch, type, weights[i % copies], *xb, *yb, rows, cols, 1, tuning);
      if (with_barriers) {
        batch->barrier();
        batch->timestamp();
      }
    }
    if (!with_barriers) batch->timestamp();
    if (!check(ctx.submit(*batch), "submit")) return false;
    Result<std::vector<double>> ts = ctx.timestamps_ns(*batch);
    if (!ts.ok()) return check(ts.status(), "timestamps");
    if (with_barriers) {
      std::vector<double> each;
      for (int i = 0; i < n; ++i) each.push_back((*ts)[i + 1] - (*ts)[i]);
      out->chain_ns = median(each);
    } else {
      out->stream_ns = (*ts)[1] / n;
    }
  }
  return true;
}

// Decode attention over a paged cache of n_tokens positions of one layer (Llama-3-8B shape: 8 KV heads of
// 128, 32 query heads), f16 or quantized pages: GB/s of page bytes read, decode + merge, with a barrier after
// each layer as in a forward pass. Enough layers (separate pools) to span past the GPU's cache; the pages are
// 8 pages encoded from random keys and values (kv::encode_page), tiled; before timing, the output of layer
// 0 is checked against the CPU kernel (kernels::paged_attention) on the same pages.
bool bench_attention(Context& ctx, Kernels& kernels, kv::Precision precision, int n_tokens, size_t span_bytes,
                     int reps, const std::vector<uint32_t>& splits_per, double copy_gbs) {
  const int n_kv_heads = 8, head_dim = 128, n_heads = 32;
  kv::PageFormat f;
  std::string error;
  if (!kv::make_page_format(precision, kv::KeyMode::PerChannel, kv::kTokensPerPage, n_kv_heads, head_dim, 0, &f,
                            &error)) {
    std::fprintf(stderr, "%s\n", error.c_str());
    return false;
  }
  const int n_pages = n_tokens / kv::kTokensPerPage;
  const size_t layer_bytes = static_cast<size_t>(n_pages) * f.page_bytes;
  const int layers = static_cast<int>(std::max<size_t>(2, (span_bytes + layer_bytes - 1) / layer_bytes));
  Random rng;
  const int distinct = 8;
  std::vector<uint8_t> pages(distinct * f.page_bytes);
  {
    const size_t n = static_cast<size_t>(kv::kTokensPerPage) * n_kv_heads * head_dim;
    std::vector<float> k(n), v(n);
    for (int p = 0; p < distinct; ++p) {
      for (size_t i = 0; i < n; ++i) {
        k[i] = rng.uniform() * 4 - 2;
        v[i] = rng.uniform() * 2 - 1;
      }
      kv::encode_page(f, k.data(), v.data(), kv::kTokensPerPage, pages.data() + p * f.page_bytes);
    }
  }
  std::vector<uint8_t> layer(layer_bytes);
  for (int p = 0; p < n_pages; ++p) {
    std::memcpy(layer.data() + p * f.page_bytes, pages.data() + (p % distinct) * f.page_bytes, f.page_bytes);
  }
  std::vector<Buffer> pools;
  for (int l = 0; l < layers; ++l) {
    Result<Buffer> b = ctx.create_buffer(layer_bytes, MemoryKind::DeviceLocal);
    if (!b.ok()) return check(b.status(), "page pool");
    if (!check(ctx.upload(*b, 0, layer.data(), layer_bytes), "upload pages")) return false;
    pools.push_back(std::move(*b));
  }
  std::vector<uint32_t> list;
  std::vector<kv::PageRef> refs;
  for (int p = 0; p < n_pages; ++p) {
    list.push_back(static_cast<uint32_t>(p * f.page_bytes));
    list.push_back(kv::kTokensPerPage);
    refs.push_back(kv::PageRef{layer.data() + p * f.page_bytes, &f, p * kv::kTokensPerPage, kv::kTokensPerPage});
  }
  std::vector<float> q(static_cast<size_t>(n_heads) * head_dim);
  for (float& x : q) x = rng.uniform() * 2 - 1;
  const float scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
  const uint32_t max_splits = Kernels::attention_splits(n_pages, 1);
  Result<Buffer> list_b = ctx.create_buffer(list.size() * 4, MemoryKind::DeviceLocal);
  Result<Buffer> q_b = ctx.create_buffer(q.size() * 4, MemoryKind::DeviceLocal);
  Result<Buffer> part_o = ctx.create_buffer(static_cast<size_t>(max_splits) * q.size() * 4, MemoryKind::DeviceLocal);
  Result<Buffer> part_ml = ctx.create_buffer(static_cast<size_t>(max_splits) * n_heads * 8, MemoryKind::DeviceLocal);
  Result<Buffer> out = ctx.create_buffer(q.size() * 4, MemoryKind::DeviceLocal);
  Result<Buffer> lse = ctx.create_buffer(static_cast<size_t>(n_heads) * 4, MemoryKind::DeviceLocal);
  if (!list_b.ok() || !q_b.ok() || !part_o.ok() || !part_ml.ok() || !out.ok() || !lse.ok()) return false;
  if (!check(ctx.upload(*list_b, 0, list.data(), list.size() * 4), "upload list") ||
      !check(ctx.upload(*q_b, 0, q.data(), q.size() * 4), "upload q")) {
    return false;
  }
  std::vector<float> expected(q.size());
  {
    ThreadPool threads(0);
    kernels::PagedKv view{refs, n_kv_heads, head_dim, false, false};
    kernels::paged_attention(view, n_tokens - 1, 1, n_heads, q.data(), scale, expected.data(), threads);
  }
  auto record = [&](CommandBatch& batch, int l, uint32_t pps, bool stamp_between) {
    kernels.decode_attention(batch, f, pools[l], *list_b, n_pages, *q_b, n_heads, scale, *part_o, *part_ml, 0, pps);
    batch.barrier();
    if (stamp_between) batch.timestamp();
    kernels.merge_attention(batch, *part_o, *part_ml, Kernels::attention_splits(n_pages, pps), n_heads, head_dim, *out,
                            *lse);
    batch.barrier();
  };
  for (uint32_t pps : splits_per) {
    double max_error = 0;
    {
      Result<CommandBatch> batch = ctx.begin();
      if (!batch.ok()) return false;
      record(*batch, 0, pps, false);
      if (!check(ctx.submit(*batch), "attention")) return false;
      std::vector<float> got(q.size());
      if (!check(ctx.download(*out, 0, got.data(), got.size() * 4), "download")) return false;
      for (size_t i = 0; i < got.size(); ++i) max_error = std::max<double>(max_error, std::fabs(got[i] - expected[i]));
    }
    const int n = reps * layers;
    // Timestamps: one before the first layer, then after each decode and after each merge.
    Result<CommandBatch> batch = ctx.begin(static_cast<uint32_t>(2 * n + 1));
    if (!batch.ok()) return false;
    for (int l = 0; l < layers; ++l) record(*batch, l, pps, false);  // warm-up
    batch->timestamp();
    for (int i = 0; i < n; ++i) {
      record(*batch, i % layers, pps, true);
      batch->timestamp();
    }
    if (!check(ctx.submit(*batch), "attention")) return false;
    Result<std::vector<double>> ts = ctx.timestamps_ns(*batch);
    if (!ts.ok()) return false;
    std::vector<double> each, decode_only;
    for (int i = 0; i < n; ++i) {
      each.push_back((*ts)[2 * i + 2] - (*ts)[2 * i]);
      decode_only.push_back((*ts)[2 * i + 1] - (*ts)[2 * i]);
    }
    const double ns = median(each), decode_ns = median(decode_only);
    const double gbs = static_cast<double>(layer_bytes) / ns;
    std::printf("%-6s %6d %9.1f %5u %6u %10.2f %8.2f %8.0f %5.0f%% %9.1e\n", kv::precision_name(precision), n_tokens,
                static_cast<double>(layer_bytes) / (1 << 20), pps, Kernels::attention_splits(n_pages, pps), ns / 1e3,
                decode_ns / 1e3, gbs, 100 * gbs / copy_gbs, max_error);
    std::fflush(stdout);
  }
  return true;
}

int run(const Options& opt) {
  ContextOptions co;
  co.device_index = opt.device;
  co.timeout_ms = 120000;
  Result<std::unique_ptr<Context>> ctx = Context::create(co);
  if (!ctx.ok()) {
    std::fprintf(stderr, "%s\n", ctx.error().c_str());
    return 1;
  }
  const DeviceInfo& info = (*ctx)->info();
  std::printf("device %u: %s, subgroup %u, %.1f GiB device-local\n", info.index, info.name.c_str(),
              info.subgroup_size, static_cast<double>(info.device_local_bytes) / (1 << 30));
  const size_t copy_bytes = opt.quick ? (size_t{64} << 20) : (size_t{1} << 30);
  const double copy_gbs = copy_bandwidth(**ctx, copy_bytes, opt.quick ? 5 : 20, true);
  const double copy_cmd_gbs = copy_bandwidth(**ctx, copy_bytes, opt.quick ? 5 : 20, false);
  std::printf("copy: %.1f GB/s with a shader, %.1f GB/s with vkCmdCopyBuffer (read + write, %zu MiB buffers); "
              "%%copy below is of the shader copy\n",
              copy_gbs, copy_cmd_gbs, copy_bytes >> 20);

  Kernels kernels(**ctx);
  if (opt.attention) {
    std::printf("decode attention, 8 KV heads x 128, 32 query heads, batch 1 (one layer per dispatch pair):\n");
    std::printf("%-6s %6s %9s %5s %6s %10s %8s %8s %6s %9s\n", "pages", "tokens", "MiB", "pps", "splits", "us",
                "dec us", "GB/s", "%copy", "max err");
    const std::vector<uint32_t> pps = opt.quick ? std::vector<uint32_t>{2} : std::vector<uint32_t>{1, 2, 4, 8, 16, 32};
    const std::vector<int> lengths = opt.quick ? std::vector<int>{1024} : std::vector<int>{32768, 131072};
    for (int n_tokens : lengths) {
      for (kv::Precision p : {kv::Precision::F16, kv::Precision::Q8, kv::Precision::Q4, kv::Precision::Q2}) {
        if (!bench_attention(**ctx, kernels, p, n_tokens, opt.quick ? (size_t{16} << 20) : (size_t{384} << 20),
                             opt.quick ? 2 : 5, pps, copy_gbs)) {
          return 1;
        }
      }
    }
  }
  if (!opt.matvec) return 0;
  struct Shape {
    int64_t rows, cols;
  };
  const std::vector<Shape> shapes = opt.quick ? std::vector<Shape>{{512, 1024}}
                                              : std::vector<Shape>{{4096, 4096}, {14336, 4096}, {4096, 14336}};
  const std::vector<GgmlType> types = {GgmlType::Q4_K, GgmlType::Q8_0, GgmlType::F16, GgmlType::Q4_0,
                                       GgmlType::Q6_K, GgmlType::Q5_K};
  std::vector<MatvecTuning> tunings = {MatvecTuning{}};
  if (opt.sweep) tunings = {{128, 1}, {128, 2}, {128, 4}, {256, 2}, {64, 2}, {64, 4}};
  const size_t span = opt.quick ? (size_t{16} << 20) : (size_t{384} << 20);
  const int reps = opt.quick ? 3 : 10;
  std::printf("%-5s %6s x %-6s %4s %4s %10s %8s %6s %10s %8s %6s %9s\n", "type", "rows", "cols", "wg", "rpg",
              "chain us", "GB/s", "%copy", "stream us", "GB/s", "%copy", "max err");
  for (GgmlType type : types) {
    for (const Shape& s : shapes) {
      for (const MatvecTuning& t : tunings) {
        MatvecResult r;
        if (!bench_matvec(**ctx, kernels, type, s.rows, s.cols, t, span, reps, &r)) return 1;
        const double bytes = static_cast<double>(ggml_row_bytes(type, s.cols) * static_cast<size_t>(s.rows));
        const double chain = bytes / r.chain_ns, stream = bytes / r.stream_ns;
        std::printf("%-5s %6lld x %-6lld %4u %4u %10.2f %8.0f %5.0f%% %10.2f %8.0f %5.0f%% %9.1e\n",
                    ggml_type_name(type), static_cast<long long>(s.rows), static_cast<long long>(s.cols), t.workgroup,
                    t.rows_per_group, r.chain_ns / 1e3, chain, 100 * chain / copy_gbs, r.stream_ns / 1e3, stream,
                    100 * stream / copy_gbs, r.max_rel_error);
        std::fflush(stdout);
      }
    }
  }
  return 0;
}

}  // namespace
}  // namespace kvtier::vulkan

int main(int argc, char** argv) {
  kvtier::vulkan::Options opt;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--quick") == 0) {
      opt.quick = true;
    } else if (std::strcmp(argv[i], "--sweep") == 0) {
      opt.sweep = true;
    } else if (std::strcmp(argv[i], "--no-matvec") == 0) {
      opt.matvec = false;
    } else if (std::strcmp(argv[i], "--no-attention") == 0) {
      opt.attention = false;
    } else if (std::strcmp(argv[i], "--device") == 0 && i + 1 < argc) {
      opt.device = std::atoi(argv[++i]);
    } else {
      std::fprintf(stderr, "usage: vulkan_bench [--device N] [--quick] [--sweep] [--no-matvec] [--no-attention]\n");
      return 2;
    }
  }
  return kvtier::vulkan::run(opt);
}
