// Command-line options shared by the subcommands (CLI11), each checked at parse time. Kept apart from
// app/loading.h so that only the files that register options compile CLI11.
#pragma once

#include "kvtier/device.h"
#include "kvtier/kv_options.h"
#include "kvtier/model.h"
#include "kvtier/sampling.h"

#include <CLI/CLI.hpp>

namespace kvtier::app {

// --mlock and --no-mmap, as llama.cpp names them (kvtier/model.h WeightResidency); they exclude each other.
void add_weight_options(CLI::App& app, ModelLoadOptions& options);

// Threads option shared by every computing subcommand (-t; 0 = all cores). More threads than logical CPUs
// is allowed with a warning (they time-share cores and spin-wait on each other); more than four per CPU is
// refused: such a run would not finish in any useful time.
void add_threads_option(CLI::App& app, int& threads);

// Sampling options of run and chat (--temp, --top-k, --top-p, --min-p, --repeat-penalty, --repeat-last-n,
// --seed), each checked for range at parse time (kvtier/sampling.h: validate_sampling_params).
void add_sampling_options(CLI::App& app, SamplingParams& sampling);

// --device cpu|vulkan[:N] of run and perplexity, resolved into its typed form at parse time (kvtier/device.h).
void add_device_option(CLI::App& app, DeviceOptions& device);

// An option taking a byte size (512K, 64M, 2G: parse_byte_size), stored in `out` at parse time.
inline CLI::Option* add_byte_size_option(CLI::App& app, const std::string& name, size_t& out,
                                         const std::string& description) {
  return app.add_option(name, description)
      ->check(CLI::Validator(
          [&out](const std::string& text) -> std::string {
            Result<size_t> bytes = parse_byte_size(text);
            if (!bytes.ok()) return bytes.error();
            out = *bytes;
            return std::string();
          },
          "SIZE"));
}

// KV cache options shared by run, perplexity and bench.
inline void add_kv_options(CLI::App& app, KvCacheOptions& kv) {
  auto* preset = app.add_option("--kv", kv.ladder,
                                "uniform KV precision of the paged cache: f16 (default)|q8|q4|q3|q2, "
                                "or contiguous (the plain f16 cache)");
  auto* ladder = app.add_option("--kv-ladder", kv.ladder,
                                "KV precision by token age, newest first, e.g. f16:128,q8:512,q4:4096,q2");
  preset->excludes(ladder);
  app.add_option("--kv-sinks", kv.sinks, "first tokens kept in f16 in the paged cache (default 4)")
      ->check(CLI::Range(0, 64));
  app.add_option("--kv-keys", kv.key_mode, "quantized key grouping: channel (KIVI, default) or rotated (Hadamard)")
      ->check(CLI::IsMember({"channel", "rotated"}));
  add_byte_size_option(app, "--kv-budget", kv.budget_bytes,
                       "RAM for the KV cache (e.g. 256K, 512M, 2G); older pages spill to --kv-spill");
  app.add_option("--kv-spill", kv.spill_dir, "directory for the cold tier's page file (with --kv-budget)");
  app.add_option("--kv-cold", kv.cold_mode,
                 "cold pages: sparse (default; the best pages within --kv-cold-read per step) or exact (all, every step)")
      ->check(CLI::IsMember({"exact", "sparse"}));
  add_byte_size_option(app, "--kv-cold-read", kv.cold_read_bytes,
                       "sparse mode: cold bytes read per decode step, all layers (default 2M)");
}

}  // namespace kvtier::app
