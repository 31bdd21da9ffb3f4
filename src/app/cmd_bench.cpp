// kvtier bench: prefill and decode throughput measured the way llama-bench does
// (pp: one batch of N random tokens after the -d depth tokens; tg: N single-token steps after them),
// averaged over repetitions after a warm-up run, on the CPU or on --device vulkan.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "app/commands.h"
#include "app/loading.h"
#include "app/options.h"
#include "kvtier/model.h"

namespace kvtier::app {

namespace {
struct BenchOptions {
  std::string model_path;
  ModelLoadOptions load;  // --mlock, --no-mmap
  int n_prompt = 512;
  int n_gen = 128;
  int repetitions = 3;
  int threads = 0;
  int depth = 0;
  KvCacheOptions kv;
  DeviceOptions device;  // --device
  bool verbose = false;  // -v: the device's commands per decode step
};

struct Stats {
  double mean = 0, stddev = 0;
};

Stats summarize(const std::vector<double>& values) {
  Stats s;
  for (double v : values) s.mean += v;
  s.mean /= values.size();
  for (double v : values) s.stddev += (v - s.mean) * (v - s.mean);
  s.stddev = values.size() > 1 ? std::sqrt(s.stddev / (values.size() - 1)) : 0;
  return s;
}

int run(const BenchOptions& o) {
  auto model_or = Model::load(o.model_path, o.load);
  if (!model_or.ok()) return fail(model_or.error());
  Model& model = **model_or;
  for (const std::string& w : model.load_warnings()) std::fprintf(stderr, "warning: %s\n", w.c_str());
  const ModelConfig& c = model.config();
  ThreadPool pool(o.threads);
  std::mt19937 rng(42);
  std::uniform_int_distribution<int32_t> token(0, c.n_vocab - 1);
  std::vector<float> logits(c.n_vocab);  // [n_vocab]: only the last row is computed, as llama-bench does
  const int n_ctx = o.depth + std::max(o.n_prompt, o.n_gen);
  if (Status s = check_run_memory(c, o.kv, RunMemoryRequest{.n_ctx = n_ctx, .input_tokens = o.depth});
      !s.ok()) {
    return fail(s.message());
  }
  if (auto probe = make_kv_cache(c, n_ctx, o.kv); !probe.ok()) return fail(probe.error());
  auto device_model = open_device(model, o.device, o.kv);  // null on the CPU; outlives every cache below
  if (!device_model.ok()) return fail(device_model.error());

  // The cache every run starts from: `depth` tokens, filled untimed once, as llama-bench -d does (it restores a
  // saved state for each run); each run appends its tokens and the next one truncates them away again.
  std::unique_ptr<KvCache> depth_cache;
  auto cache_at_depth = [&]() -> KvCache* {
    if (depth_cache) {
      depth_cache->truncate(o.depth);
      return depth_cache.get();
    }
    auto made = make_run_cache(device_model->get(), c, n_ctx, o.kv, &pool);
    if (!made.ok()) return nullptr;
    depth_cache = std::move(*made);
    if (o.depth > 0) {
      std::vector<int32_t> tokens(o.depth);
      for (auto& t : tokens) t = token(rng);
      if (!model.forward(tokens.data(), o.depth, 0, *depth_cache, pool, o.depth, nullptr).ok()) return nullptr;
    }
    return depth_cache.get();
  };
  auto time_prefill = [&]() -> double {
    std::vector<int32_t> tokens(o.n_prompt);
    for (auto& t : tokens) t = token(rng);
    KvCache* cache = cache_at_depth();
    if (!cache) return -1;
    const auto start = std::chrono::steady_clock::now();
    Status s = model.forward(tokens.data(), o.n_prompt, o.depth, *cache, pool, o.n_prompt - 1, logits.data());
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    return s.ok() ? o.n_prompt / seconds : -1;
  };
  KvIoStats decode_io;          // cold-tier reads during the timed decode runs (summed)
  double decode_seconds = 0;
  auto time_decode = [&]() -> double {
    KvCache* cache = cache_at_depth();
    if (!cache) return -1;
    int32_t next = token(rng);
    const KvIoStats before = cache->io_stats();
    const auto start = std::chrono::steady_clock::now();
    for (int i = 0; i < o.n_gen; ++i) {
      if (!model.forward(&next, 1, o.depth + i, *cache, pool, 0, logits.data()).ok()) return -1;
      next = static_cast<int32_t>((next + 1 + i) % c.n_vocab);
    }
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const KvIoStats after = cache->io_stats();
    decode_io.bytes_read += after.bytes_read - before.bytes_read;
    decode_io.pages_read += after.pages_read - before.pages_read;
    decode_io.stall_seconds += after.stall_seconds - before.stall_seconds;
    decode_seconds += seconds;
    return o.n_gen / seconds;
  };

  std::fprintf(stderr, "model %s: %s, weights %.1f MiB, %d threads, %d repetitions, device %s\n",
               o.model_path.c_str(), c.architecture.c_str(), model.weight_bytes() / 1048576.0, pool.size(),
               o.repetitions, device_name(o.device).c_str());
  for (int kind = 0; kind < 2; ++kind) {
    const int n = kind == 0 ? o.n_prompt : o.n_gen;
    if (n <= 0) continue;
    auto measure = kind == 0 ? std::function<double()>(time_prefill) : std::function<double()>(time_decode);
    if (measure() < 0) return fail("forward pass failed");  // warm-up
    std::vector<double> rates;
    for (int r = 0; r < o.repetitions; ++r) rates.push_back(measure());
    const Stats s = summarize(rates);
    std::printf("%s%d%s: %.2f +/- %.2f tok/s\n", kind == 0 ? "pp" : "tg", n,
                o.depth > 0 ? (" @ d" + std::to_string(o.depth)).c_str() : "", s.mean, s.stddev);
    if (kind == 1 && o.verbose && *device_model) {
      const DeviceStepCounts counts = (*device_model)->last_step_counts();
      std::printf("device commands per decode step: %d dispatches, %d barriers\n", counts.dispatches,
                  counts.barriers);
    }
    if (kind == 1 && decode_io.pages_read > 0) {
      // Includes the warm-up run: rates over every timed and untimed decode step alike.
      const double steps = static_cast<double>(o.n_gen) * (o.repetitions + 1);
      std::printf("cold reads during decode: %.2f MiB/token (%.0f pages), %.2f GB/s while decoding, stalled %.1f%% of the time\n",
                  decode_io.bytes_read / steps / 1048576.0, decode_io.pages_read / steps,
                  decode_io.bytes_read / decode_seconds / 1e9, 100.0 * decode_io.stall_seconds / decode_seconds);
    }
    std::fflush(stdout);
  }
  return 0;
}
}  // namespace

Command add_bench_command(CLI::App& app) {
  auto o = std::make_shared<BenchOptions>();
  app.add_option("-m,--model", o->model_path, "GGUF model file")->required()->check(CLI::ExistingFile);
  app.add_option("-p,--n-prompt", o->n_prompt, "prompt tokens for the prefill test (default 512; 0 skips)")
      ->check(CLI::Range(0, 1 << 24));
  app.add_option("-n,--n-gen", o->n_gen, "tokens for the decode test (default 128; 0 skips)")
      ->check(CLI::Range(0, 1 << 24));
  app.add_option("-r,--repetitions", o->repetitions, "repetitions (default 3)")->check(CLI::Range(1, 1 << 24));
  add_threads_option(app, o->threads);
  add_weight_options(app, o->load);
  app.add_option("-d,--depth", o->depth, "tokens already in the cache before each test (default 0)")
      ->check(CLI::Range(0, 1 << 22));
  add_kv_options(app, o->kv);
  add_device_option(app, o->device);
  app.add_flag("-v,--verbose", o->verbose, "print the device's dispatches and barriers per decode step");
  return [o] { return run(*o); };
}

}  // namespace kvtier::app
