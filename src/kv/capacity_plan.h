// What a ladder and a RAM budget hold: `kvtier plan`. Computed from the page formats and the same sizing
// rules the store uses (ring pages, cold-tier buffers and per-page summaries), without allocating anything.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "kv/tiered_store.h"

namespace kvtier::kv {

struct RungPlan {
  Precision precision = Precision::F16;
  int64_t tokens = -1;            // the rung's length (-1: unbounded)
  double bytes_per_token = 0;     // all layers, K and V, in the page format (scales included)
};

// One layer at the plan's context (layers of one window are alike).
struct LayerPlan {
  int window = 0;            // 0: a global layer
  int64_t positions = 0;     // positions held, in any tier (a windowed layer: at most window + a page + the front rungs)
  int64_t cold_tokens = 0;        // per layer, on average (windowed layers hold fewer, global ones more: layers)   // of them in the cold tier
  size_t ram_bytes = 0;      // its share of the rings, sinks and warm rungs + its last-rung pages in RAM + its cold index
  size_t disk_bytes = 0;     // its page file slots
};

struct CapacityPlan {
  std::vector<RungPlan> rungs;    // newest first (the f16 hot rung first)
  size_t ring_bytes = 0;          // hot rings of all layers
  size_t sink_bytes = 0;
  size_t cold_fixed_bytes = 0;    // staging and write buffers (0 without a budget)
  size_t cold_bytes_per_token = 0;  // RAM per cold token: index entry + key summary, all layers
  size_t warm_bytes = 0;          // pages of the bounded rungs below the hot one, when full
  size_t min_budget = 0;          // rings + sinks + cold buffers + warm rungs
  size_t budget_bytes = 0;        // the --kv-budget (0: none)
  int64_t tokens_in_ram = 0;      // tokens held before anything spills (-1: no budget, or windows bound every layer)
  int64_t tokens_with_cold = 0;   // tokens the budget supports once the last rung is all cold (-1: unbounded)
  double disk_bytes_per_token = 0;  // page file bytes per cold token (4 KiB slots)
  // At `context` tokens:
  int64_t context = 0;
  int64_t cold_tokens = 0;        // per layer, on average (windowed layers hold fewer, global ones more: layers)
  double exact_read_bytes = 0;    // per decode step: every cold page of every layer
  double sparse_read_bytes = 0;   // per decode step: min(step budget, cold bytes)
  bool fits = true;               // the budget (if any) holds `context` tokens, with the cold tier
  size_t ram_at_context = 0;      // RAM the store holds at `context`: min(budget, everything in RAM)
  size_t all_in_ram_bytes = 0;    // RAM to hold `context` tokens without a cold tier
  size_t budget_for_context = 0;  // the smallest budget that holds `context` with the cold tier
  // Sliding-window layers (KvGeometry::layer_windows): they keep about window + one page of positions (in RAM
  // or cold) and release the rest, which every count above leaves out.
  int windowed_layers = 0;
  int window = 0;
  size_t window_released_bytes = 0;
  std::vector<LayerPlan> layers;  // [n_layers] at `context`
  std::string describe() const;
  std::string describe_layers() const;  // one line per window (global layers: window 0)
};

Result<CapacityPlan> plan_capacity(const KvGeometry& geometry, const TieredKvOptions& options, int64_t context);

}  // namespace kvtier::kv
