// kvtier plan: how many tokens a ladder and a KV budget hold in RAM and on disk, and what a decode step
// reads from disk. Reads only the model's metadata.
#include <sys/statvfs.h>

#include <cstdio>
#include <string>

#include "app/commands.h"
#include "app/loading.h"
#include "app/options.h"
#include "kv/capacity_plan.h"
#include "kvtier/gguf.h"
#include "kvtier/model.h"

namespace kvtier::app {

namespace {
struct PlanOptions {
  std::string model_path;
  int n_ctx = 0;
  KvCacheOptions kv;
};

int run(const PlanOptions& o) {
  auto file = gguf::File::open(o.model_path);
  if (!file.ok()) return fail(file.error());
  auto config = ModelConfig::from_gguf(**file);
  if (!config.ok()) return fail(config.error());
  const ModelConfig& c = *config;
  KvCacheOptions kv_options = o.kv;
  if (kv_options.ladder == "contiguous") kv_options.ladder = "f16";
  if (kv_options.budget_bytes > 0 && kv_options.spill_dir.empty()) kv_options.spill_dir = ".";  // plan only
  auto resolved = resolve_tiered_kv_options(kv_options);
  if (!resolved.ok()) return fail(resolved.error());
  const kv::TieredKvOptions& options = *resolved;
  const kv::LadderSpec* ladder = &options.ladder;
  const int n_ctx = o.n_ctx > 0 ? o.n_ctx : c.n_ctx_train;
  auto plan = kv::plan_capacity(c.kv_geometry(n_ctx), options, n_ctx);
  if (!plan.ok()) return fail(plan.error());
  std::printf("model: %s (%d layers, %d KV heads, head_dim %d); ladder %s, keys %s", c.name.c_str(), c.n_layers,
              c.n_kv_heads, c.head_dim, ladder->describe().c_str(), o.kv.key_mode.c_str());
  if (o.kv.budget_bytes > 0) std::printf("; budget %.2f MiB, %s cold reads", o.kv.budget_bytes / 1048576.0, o.kv.cold_mode.c_str());
  const double f16_per_token = 2.0 * c.n_layers * c.n_kv_heads * c.head_dim * 2;
  std::printf("\nf16 KV (llama.cpp's default) at %d tokens: %.2f MiB\n%s", n_ctx, f16_per_token * n_ctx / 1048576.0,
              plan->describe().c_str());
  if (!o.kv.spill_dir.empty()) {
    struct statvfs fs {};
    if (::statvfs(o.kv.spill_dir.c_str(), &fs) != 0) return fail("--kv-spill " + o.kv.spill_dir + ": cannot stat the directory");
    const double free_bytes = static_cast<double>(fs.f_bavail) * fs.f_frsize;
    std::printf("spill directory %s: %.2f GiB free = %.0f cold tokens\n", o.kv.spill_dir.c_str(), free_bytes / (1 << 30),
                plan->disk_bytes_per_token > 0 ? free_bytes / plan->disk_bytes_per_token : 0.0);
  }
  return 0;
}
}  // namespace

Command add_plan_command(CLI::App& app) {
  auto o = std::make_shared<PlanOptions>();
  app.add_option("-m,--model", o->model_path, "GGUF model file")->required()->check(CLI::ExistingFile);
  app.add_option("-c,--ctx-size", o->n_ctx, "context to plan for (default: the model's trained context)")
      ->check(CLI::Range(0, 1 << 24));
  add_kv_options(app, o->kv);
  return [o] { return run(*o); };
}

}  // namespace kvtier::app
