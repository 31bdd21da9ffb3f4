// `kvtier plan`: what a ladder and a budget hold (see kv/capacity_plan.h).
#include "kv/capacity_plan.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>

namespace kvtier::kv {

namespace {
size_t align_up(size_t n, size_t a) { return (n + a - 1) / a * a; }
std::string mib(double bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, bytes >= 1 << 20 ? "%.2f MiB" : "%.1f KiB", bytes >= 1 << 20 ? bytes / 1048576.0 : bytes / 1024.0);
  return buf;
}
constexpr int64_t kNoCap = std::numeric_limits<int64_t>::max();

// The most tokens t (per layer) such that sum_l min(t, caps[l]) * cost <= avail, for layers capped at caps[l]
// tokens (kNoCap: never); -1 when every layer is capped and all of it fits.
int64_t fill_layers(std::vector<int64_t> caps, double cost, double avail) {
  std::sort(caps.begin(), caps.end());
  double used = 0;
  int64_t t = 0;
  int64_t growing = static_cast<int64_t>(caps.size());
  for (int64_t cap : caps) {
    if (growing == 0 || cost <= 0) return -1;
    const double step = cap == kNoCap ? INFINITY : static_cast<double>(cap - t) * cost * static_cast<double>(growing);
    if (used + step > avail) return t + static_cast<int64_t>((avail - used) / (cost * static_cast<double>(growing)));
    used += step;
    t = cap;
    --growing;
  }
  return -1;
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
  plan.budget_bytes = options.budget_bytes;
  if (budgeted) {
    plan.cold_fixed_bytes = ColdTier::fixed_ram_bytes(g, options.cold, *last_page);
    plan.cold_bytes_per_token = ColdTier::ram_bytes_per_page(g) * L / kTokensPerPage;
  }
  plan.min_budget = plan.ring_bytes + plan.sink_bytes + plan.cold_fixed_bytes + plan.warm_bytes;
  const int64_t front_tokens = rungs.n_sinks + hot_tokens + warm_tokens;
  const double avail = budgeted ? static_cast<double>(options.budget_bytes) - static_cast<double>(plan.min_budget) : 0;
  // Per layer, the last rung's tokens at `context`: all of them in a global layer; a sliding-window layer
  // releases pages once wholly behind its window and holds at most window + one page (in any tier).
  const int64_t last_tokens = std::max<int64_t>(0, context - front_tokens);
  std::vector<int64_t> caps(L, kNoCap);  // [L] most last-rung tokens a layer ever holds
  std::vector<int64_t> held(L);          // [L] at `context`
  for (int l = 0; l < L; ++l) {
    const int window = g.window(l);
    if (window > 0) {
      ++plan.windowed_layers;
      plan.window = window;
      caps[l] = std::max<int64_t>(0, window + kTokensPerPage - front_tokens);
    }
    held[l] = std::min(last_tokens, caps[l]);
    plan.window_released_bytes += static_cast<size_t>((last_tokens - held[l]) * last_per_token / L);
  }
  const double resident_per_layer = last_per_token / L;                       // per last-rung token
  const double cold_per_layer = static_cast<double>(plan.cold_bytes_per_token) / L;  // per cold token (index, summary)
  int64_t held_all = 0;
  for (int64_t h : held) held_all += h;
  if (!budgeted) {
    plan.tokens_in_ram = -1;
    plan.tokens_with_cold = -1;
  } else if (avail < 0) {
    plan.tokens_in_ram = 0;
    plan.tokens_with_cold = 0;
  } else {
    const int64_t in_ram = fill_layers(caps, resident_per_layer, avail);
    const int64_t with_cold = fill_layers(caps, cold_per_layer, avail);
    plan.tokens_in_ram = in_ram < 0 ? -1 : front_tokens + in_ram;  // -1: the windows bound every layer
    plan.tokens_with_cold = with_cold < 0 ? -1 : front_tokens + with_cold;
  }
  // At `context`: the store spills from the layer with the most resident last-rung pages, so each layer keeps
  // the same number r of them (or all it holds): the largest r whose RAM fits,
  //   sum_l min(held_l, r) * resident + (held_l - min(held_l, r)) * cold <= avail.
  std::vector<int64_t> cold(L, 0);  // [L] cold tokens at `context`
  if (budgeted) {
    const double left = avail - static_cast<double>(held_all) * cold_per_layer;
    const int64_t r = left < 0 ? 0 : fill_layers(held, resident_per_layer - cold_per_layer, left);
    for (int l = 0; l < L; ++l) cold[l] = r < 0 ? 0 : held[l] - std::min(held[l], r);
    int64_t cold_all = 0;
    for (int64_t c : cold) cold_all += c;
    plan.cold_tokens = (cold_all + L - 1) / L;
  }
  const size_t fixed_without_cold = plan.ring_bytes + plan.sink_bytes + plan.warm_bytes;
  plan.all_in_ram_bytes = fixed_without_cold + static_cast<size_t>(static_cast<double>(held_all) * resident_per_layer);
  // With the cold tier every last-rung token may be cold (only its index entry and key summary stay).
  const size_t cold_fixed = ColdTier::fixed_ram_bytes(g, options.cold, *last_page);
  plan.budget_for_context = fixed_without_cold + cold_fixed + static_cast<size_t>(static_cast<double>(held_all) * cold_per_layer);
  plan.fits = !budgeted || (avail >= 0 && static_cast<double>(held_all) * cold_per_layer <= avail);
  plan.ram_at_context = budgeted ? std::min(options.budget_bytes, plan.all_in_ram_bytes) : plan.all_in_ram_bytes;
  const double slot = static_cast<double>(PageFile::slot_bytes(*last_page));
  const int64_t staging = static_cast<int64_t>((cold_fixed - 8 * PageFile::slot_bytes(*last_page)) / 2 /
                                               PageFile::slot_bytes(*last_page));
  const int64_t step_pages = std::max<int64_t>(1, static_cast<int64_t>(options.cold.sparse_step_bytes / L / slot));
  for (int l = 0; l < L; ++l) {
    const int64_t cold_pages = (cold[l] + kTokensPerPage - 1) / kTokensPerPage;
    plan.exact_read_bytes += static_cast<double>(cold_pages) * slot;
    plan.sparse_read_bytes += static_cast<double>(std::min({cold_pages, staging, step_pages})) * slot;
    LayerPlan lp;
    lp.window = g.window(l);
    lp.positions = std::min<int64_t>(context, front_tokens + held[l]);
    lp.cold_tokens = cold[l];
    lp.ram_bytes = static_cast<size_t>(static_cast<double>(held[l] - cold[l]) * resident_per_layer +
                                       static_cast<double>(cold[l]) * cold_per_layer) +
                   (plan.ring_bytes + plan.sink_bytes + plan.warm_bytes) / L;
    lp.disk_bytes = static_cast<size_t>(cold_pages * slot);
    plan.layers.push_back(lp);
  }
  return plan;
}

// Layers of the same window alike, in one line each: "global layers (4): 4096 positions, RAM 1.2 MiB, 3000 cold".
std::string CapacityPlan::describe_layers() const {
  std::string s;
  char buf[256];
  std::vector<int> windows;
  for (const LayerPlan& l : layers) {
    if (std::find(windows.begin(), windows.end(), l.window) == windows.end()) windows.push_back(l.window);
  }
  for (int w : windows) {
    int n = 0;
    const LayerPlan* first = nullptr;
    for (const LayerPlan& l : layers) {
      if (l.window != w) continue;
      ++n;
      if (first == nullptr) first = &l;
    }
    const std::string what = w > 0 ? "window " + std::to_string(w) + " layers" : std::string("global layers");
    std::snprintf(buf, sizeof buf, "  %s (%d): each %lld positions, RAM %s, %lld tokens cold (%s on disk)\n", what.c_str(), n,
                  static_cast<long long>(first->positions), mib(static_cast<double>(first->ram_bytes)).c_str(),
                  static_cast<long long>(first->cold_tokens), mib(static_cast<double>(first->disk_bytes)).c_str());
    s += buf;
  }
  return s;
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
  if (budget_bytes == 0) {
    s += "no budget: every token stays in RAM\n";
  } else if (tokens_in_ram < 0) {
    s += "every layer is windowed: the budget holds them at any length without spilling\n";
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
  std::snprintf(buf, sizeof buf, "at %lld tokens: fits; RAM %s, %lld tokens cold per layer on average; read per decode step: exact %s, sparse %s\n",
                static_cast<long long>(context), mib(ram_at_context).c_str(), static_cast<long long>(cold_tokens),
                mib(exact_read_bytes).c_str(), mib(sparse_read_bytes).c_str());
  s += buf;
  if (windowed_layers > 0) s += describe_layers();
  return s;
}

}  // namespace kvtier::kv
