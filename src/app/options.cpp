#include "app/options.h"

#include <cmath>
#include <cstdio>
#include <limits>
#include <string>

#include "kvtier/resources.h"

namespace kvtier::app {

void add_weight_options(CLI::App& app, ModelLoadOptions& options) {
  // Both flags write one residency: "--no-mmap --mlock" is not a combination kvtier has, so they exclude
  // each other rather than one silently winning.
  auto* lock = app.add_flag_callback(
      "--mlock", [&options] { options.residency = WeightResidency::kLocked; },
      "lock the weights in RAM at load (never paged out; needs the locked-memory limit, ulimit -l)");
  auto* copy = app.add_flag_callback(
      "--no-mmap", [&options] { options.residency = WeightResidency::kCopied; },
      "read the weights into memory at load instead of mapping the file (default: mapped, read on first use)");
  lock->excludes(copy);
}

void add_device_option(CLI::App& app, DeviceOptions& device) {
  app.add_option_function<std::string>(
         "--device",
         [&device](const std::string& text) {
           Result<DeviceOptions> parsed = parse_device(text);
           if (!parsed.ok()) throw CLI::ValidationError("--device", parsed.error());
           device = *parsed;
         },
         "where the forward pass runs: cpu (default), vulkan (the first discrete GPU) or vulkan:N")
      ->type_name("DEVICE");
  app.add_option("--ubatch", device.prefill_chunk,
                 "--device vulkan: prompt tokens per GPU command batch (default 256; 1 runs a prompt token by token)")
      ->check(CLI::Range(1, kMaxDeviceChunk));
}

void add_threads_option(CLI::App& app, int& threads) {
  app.add_option("-t,--threads", threads, "worker threads (default: all cores)")
      ->check(CLI::Validator(
          [](std::string& text) -> std::string {
            int n = 0;
            try {
              size_t used = 0;
              n = std::stoi(text, &used);
              if (used != text.size()) return text + ": not a whole number";
            } catch (...) {
              return text + ": not a whole number";
            }
            const int cpus = hardware_threads();
            if (n < 0) return text + ": must be >= 0 (0 = all cores)";
            if (n > 4 * cpus) {
              return text + ": this machine has " + std::to_string(cpus) + " logical CPUs; at most " +
                     std::to_string(4 * cpus) + " threads are accepted";
            }
            if (n > cpus) {
              std::fprintf(stderr, "warning: -t %d is more threads than the %d logical CPUs; expect it to be slower\n",
                           n, cpus);
            }
            return std::string();
          },
          "THREADS"));
}

void add_sampling_options(CLI::App& app, SamplingParams& sampling) {
  // A finite number in [low, high] (low excluded when open_low), else "TEXT: must be RANGE" (CLI11 names the flag).
  auto number_in = [](double low, bool open_low, double high, const char* range) {
    return CLI::Validator(
        [=](std::string& text) -> std::string {
          const std::string bad = text + ": must be " + range;
          double v = 0;
          try {
            size_t used = 0;
            v = std::stod(text, &used);
            if (used != text.size()) return bad;
          } catch (...) {
            return bad;
          }
          const bool above_low = open_low ? v > low : v >= low;
          return std::isfinite(v) && above_low && v <= high ? std::string() : bad;
        },
        "");
  };
  const double inf = std::numeric_limits<double>::infinity();
  app.add_option("--temp", sampling.temperature, "temperature; 0 = greedy (default 0.8)")
      ->check(number_in(0, false, inf, "a finite number >= 0"));
  app.add_option("--top-k", sampling.top_k, "top-k (0 = off, default 40)")->check(CLI::Range(0, 1 << 30));
  app.add_option("--top-p", sampling.top_p, "top-p in (0, 1]; 1 = off (default 0.95)")
      ->check(number_in(0, true, 1, "in (0, 1]"));
  app.add_option("--min-p", sampling.min_p, "min-p in [0, 1]; 0 = off (default 0.05)")
      ->check(number_in(0, false, 1, "in [0, 1]"));
  app.add_option("--repeat-penalty", sampling.repeat_penalty, "repetition penalty > 0; 1 = off (default 1)")
      ->check(number_in(0, true, inf, "a finite number > 0"));
  app.add_option("--repeat-last-n", sampling.repeat_last_n, "tokens the penalty looks back over (64)")
      ->check(CLI::Range(0, 1 << 24));
  app.add_option_function<std::string>(
         "--seed",
         [&sampling](const std::string& text) {
           auto seed = parse_seed(text);
           if (!seed.ok()) throw CLI::ValidationError("--seed", text + ": must be a whole number in [0, 2^64)");
           sampling.seed = *seed;
         },
         "random seed: a whole number in [0, 2^64)")
      ->type_name("SEED");
}

}  // namespace kvtier::app
