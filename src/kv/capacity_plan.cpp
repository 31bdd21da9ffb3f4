// `kvtier plan`: what a ladder and a budget hold (see kv/capacity_plan.h).
#include "kv/capacity_plan.h"

#include <algorithm>
#include <cstdio>

namespace kvtier::kv {

namespace {
size_t align_up(size_t n, size_t a) { return (n + a - 1) / a * a; }
std::string mib(double bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, bytes >= 1 << 20 ? "%.2f MiB" : "%.1f KiB", bytes >= 1 << 20 ? bytes / 1048576.0 : bytes / 1024.0);
  return buf;
}
}  // namespace

Result<CapacityPlan> plan_capacity(const KvGeometry& g, const TieredKvOptions& options, int64_t context) {
  if (options.ladder.rungs.empty()) return Status::error("plan: the ladder has no rungs");
  const LadderSpec rungs = with_hot_rung(options.ladder);
  CapacityPlan plan;
  plan.context = context;
  std::string error;
  auto page_bytes = [&](Precision p, int tokens) -> Result<size_t> {
    PageFormat f;
    if (!make_page_format(p, options.key_mode, tokens, g.n_kv_heads, g.head_dim, options.group, &f, &error)) {
      return Status::error("plan: " + error);
    }
    return f.page_bytes;
  };
  const int L = g.n_layers;
  for (const Rung& r : rungs.rungs) {
    Result<size_t> bytes = page_bytes(r.precision, kTokensPerPage);
    if (!bytes.ok()) return bytes.status();
    plan.rungs.push_back({r.precision, r.tokens, static_cast<double>(*bytes) * L / kTokensPerPage});
  }
  Result<size_t> ring_page = page_bytes(rungs.rungs.front().precision, kTokensPerPage);
  Result<size_t> last_page = page_bytes(rungs.rungs.back().precision, kTokensPerPage);
  if (!ring_page.ok() || !last_page.ok()) return Status::error("plan: " + error);
  const int ring_pages = TieredKvStore::ring_pages_for(options.ladder);
  plan.ring_bytes = align_up(ring_pages * *ring_page, 64) * L;
  if (rungs.n_sinks > 0) {
    Result<size_t> sink = page_bytes(Precision::F16, rungs.n_sinks);
    if (!sink.ok()) return sink.status();
    plan.sink_bytes = align_up(*sink, 64) * L;
  }
  // The hot rung lives in the ring; bounded rungs below it hold about tokens/P + 1 pages each (a page moves
  // on once wholly past its rung); the last rung takes the rest.
  const int64_t hot_tokens = static_cast<int64_t>(ring_pages - 1) * kTokensPerPage;  // full ring pages, at least
  int64_t warm_tokens = 0;
  const size_t last = rungs.rungs.size() - 1;
  for (size_t i = 1; i < last; ++i) {
    const int64_t pages = (rungs.rungs[i].tokens + kTokensPerPage - 1) / kTokensPerPage + 1;
    plan.warm_bytes += static_cast<size_t>(pages * plan.rungs[i].bytes_per_token * kTokensPerPage);
    warm_tokens += rungs.rungs[i].tokens;
  }
  const double last_per_token = plan.rungs[last].bytes_per_token;
  plan.disk_bytes_per_token = static_cast<double>(PageFile::slot_bytes(*last_page)) * L / kTokensPerPage;
  const bool budgeted = options.budget_bytes > 0;
  if (budgeted) {
    plan.cold_fixed_bytes = ColdTier::fixed_ram_bytes(g, options.cold, *last_page);
    plan.cold_bytes_per_token = ColdTier::ram_bytes_per_page(g) * L / kTokensPerPage;
  }
  plan.min_budget = plan.ring_bytes + plan.sink_bytes + plan.cold_fixed_bytes + plan.warm_bytes;
  const int64_t front_tokens = rungs.n_sinks + hot_tokens + warm_tokens;
  const double avail = budgeted ? static_cast<double>(options.budget_bytes) - static_cast<double>(plan.min_budget) : 0;
  if (!budgeted) {
    plan.tokens_in_ram = -1;
    plan.tokens_with_cold = -1;
  } else if (avail < 0) {
    plan.tokens_in_ram = 0;
    plan.tokens_with_cold = 0;
  } else {
    plan.tokens_in_ram = front_tokens + static_cast<int64_t>(avail / last_per_token);
    plan.tokens_with_cold = front_tokens + static_cast<int64_t>(avail / std::max<double>(plan.cold_bytes_per_token, 1e-9));
  }
  // At `context`: the last rung's tokens, of which those the budget cannot hold are cold
  // (resident r and cold c with r + c = T and r * last_per_token + c * cold_per_token <= avail).
  const int64_t last_tokens = std::max<int64_t>(0, context - front_tokens);
  if (budgeted && avail >= 0 && last_tokens * last_per_token > avail) {
    const double c = (last_tokens * last_per_token - avail) / (last_per_token - plan.cold_bytes_per_token);
    plan.cold_tokens = std::clamp<int64_t>(static_cast<int64_t>(c + 0.999), 0, last_tokens);
  } else if (budgeted && avail < 0) {
    plan.cold_tokens = last_tokens;
  }
  const size_t fixed_without_cold = plan.ring_bytes + plan.sink_bytes + plan.warm_bytes;
  plan.all_in_ram_bytes = fixed_without_cold + static_cast<size_t>(last_tokens * last_per_token);
  if (!budgeted) {  // (with a cold tier windowed layers spill like the others: kv/tiered_store.h)
    for (int l = 0; l < L; ++l) {
      const int window = g.window(l);
      if (window <= 0) continue;
      ++plan.windowed_layers;
      plan.window = window;
      // Pages are released once wholly behind the window: a layer holds at most window + one page.
      const int64_t held = std::min<int64_t>(context, window + kTokensPerPage);
      const int64_t held_last = std::max<int64_t>(0, held - front_tokens);
      plan.window_released_bytes += static_cast<size_t>((last_tokens - held_last) * last_per_token / L);
    }
    plan.all_in_ram_bytes -= plan.window_released_bytes;
  }
  // With the cold tier every last-rung token may be cold (only its index entry and key summary stay).
  plan.budget_for_context = fixed_without_cold + ColdTier::fixed_ram_bytes(g, options.cold, *last_page) +
                            static_cast<size_t>(last_tokens * ColdTier::ram_bytes_per_page(g) * L / kTokensPerPage);
  plan.fits = !budgeted || (avail >= 0 && (plan.tokens_with_cold < 0 || context <= plan.tokens_with_cold));
  plan.ram_at_context = budgeted ? std::min(options.budget_bytes, plan.all_in_ram_bytes) : plan.all_in_ram_bytes;
  const double slot = static_cast<double>(PageFile::slot_bytes(*last_page));
  const int64_t cold_pages_per_layer = (plan.cold_tokens + kTokensPerPage - 1) / kTokensPerPage;
  plan.exact_read_bytes = static_cast<double>(cold_pages_per_layer) * slot * L;
  const int64_t staging = static_cast<int64_t>((ColdTier::fixed_ram_bytes(g, options.cold, *last_page) - 8 * PageFile::slot_bytes(*last_page)) / 2 /
                                               PageFile::slot_bytes(*last_page));
  const int64_t sparse_pages = std::min({cold_pages_per_layer, staging,
                                         std::max<int64_t>(1, static_cast<int64_t>(options.cold.sparse_step_bytes / L / slot))});
  plan.sparse_read_bytes = cold_pages_per_layer > 0 ? static_cast<double>(sparse_pages) * slot * L : 0;
  return plan;
}

std::string CapacityPlan::describe() const {
  std::string s;
  char buf[256];
  s += "bytes per token (all layers, K and V, page format with scales):";
  for (const RungPlan& r : rungs) {
    // A zero-length first rung is the hot tail page of a ladder that starts quantized (kv::with_hot_rung).
    std::snprintf(buf, sizeof buf, " %s%s %.0f", precision_name(r.precision), r.tokens == 0 ? " (tail page)" : "",
                  r.bytes_per_token);
    s += buf;
  }
  s += "\nfixed RAM: hot rings " + mib(ring_bytes) + ", sinks " + mib(sink_bytes);
  if (cold_fixed_bytes > 0) s += ", cold-tier buffers " + mib(cold_fixed_bytes);
  s += "; warm rungs when full " + mib(warm_bytes) + "; smallest budget " + mib(min_budget) + "\n";
  if (windowed_layers > 0) {
    std::snprintf(buf, sizeof buf,
                  "sliding window %d on %d layers: each keeps at most %d positions (window + a page) besides its hot "
                  "ring; at %lld tokens that releases %s\n",
                  window, windowed_layers, window + kTokensPerPage, static_cast<long long>(context),
                  mib(window_released_bytes).c_str());
    s += buf;
  }
  if (tokens_in_ram < 0) {
    s += "no budget: every token stays in RAM\n";
  } else if (tokens_in_ram == 0) {
    s += "the budget is below the smallest budget: raise --kv-budget or shorten the ladder's upper rungs\n";
  } else {
    std::snprintf(buf, sizeof buf, "fits in RAM: %lld tokens before anything spills\n", static_cast<long long>(tokens_in_ram));
    s += buf;
    std::snprintf(buf, sizeof buf,
                  "with the cold tier: up to %lld tokens (each cold token keeps %zu bytes of index and key summary in RAM) "
                  "and %.0f bytes per token on disk\n",
                  static_cast<long long>(tokens_with_cold), cold_bytes_per_token, disk_bytes_per_token);
    s += buf;
  }
  if (!fits) {
    std::snprintf(buf, sizeof buf,
                  "at %lld tokens: does NOT fit the budget (it holds up to %lld tokens with the cold tier); "
                  "%lld tokens need --kv-budget %s or more\n",
                  static_cast<long long>(context), static_cast<long long>(std::max<int64_t>(tokens_with_cold, 0)),
                  static_cast<long long>(context), mib(budget_for_context).c_str());
    s += buf;
    return s;
  }
  std::snprintf(buf, sizeof buf, "at %lld tokens: fits; RAM %s, %lld tokens cold; read per decode step: exact %s, sparse %s\n",
                static_cast<long long>(context), mib(ram_at_context).c_str(), static_cast<long long>(cold_tokens),
                mib(exact_read_bytes).c_str(), mib(sparse_read_bytes).c_str());
  s += buf;
  return s;
}

}  // namespace kvtier::kv
