#include "kv/budget_arbiter.h"

#include <algorithm>
#include <numeric>

namespace kvtier::kv {

BudgetPlan BudgetArbiter::plan(std::span<const BudgetClaim> claims) const {
  const size_t n = claims.size();
  BudgetPlan plan;
  plan.shares.resize(n);
  std::vector<size_t> floor(n);  // [n] each cache's floor, empty_bytes once dropped
  for (size_t i = 0; i < n; ++i) floor[i] = std::max(claims[i].floor_bytes, claims[i].empty_bytes);
  size_t committed = std::accumulate(floor.begin(), floor.end(), size_t{0});

  // Idle caches, least recently used first: the order they are dropped in, and the reverse of the order in
  // which they keep what they hold.
  std::vector<size_t> idle;  // [idle caches] indices into claims
  for (size_t i = 0; i < n; ++i) {
    if (!claims[i].active) idle.push_back(i);
  }
  std::stable_sort(idle.begin(), idle.end(),
                   [&](size_t a, size_t b) { return claims[a].last_used < claims[b].last_used; });
  size_t next_drop = 0;
  // Drops idle conversations until `committed + extra` fits the budget or none is left that would give bytes back.
  auto drop_until_fits = [&](size_t extra) {
    while (committed + extra > budget_bytes_ && next_drop < idle.size()) {
      const size_t i = idle[next_drop++];
      const size_t empty = claims[i].empty_bytes;
      if (floor[i] <= empty) continue;  // nothing to give back but the pages that may spill anyway
      committed -= floor[i] - empty;
      floor[i] = empty;
      plan.shares[i].dropped = true;
    }
  };

  std::vector<size_t> active;  // [active caches] smallest need first
  for (size_t i = 0; i < n; ++i) {
    if (claims[i].active) active.push_back(i);
  }
  std::stable_sort(active.begin(), active.end(), [&](size_t a, size_t b) {
    if (claims[a].need_bytes != claims[b].need_bytes) return claims[a].need_bytes < claims[b].need_bytes;
    return claims[a].waited > claims[b].waited;
  });
  for (size_t i : active) {
    drop_until_fits(claims[i].need_bytes);
    if (committed + claims[i].need_bytes > budget_bytes_) continue;  // waits for room
    committed += claims[i].need_bytes;
    plan.shares[i].runs = true;
  }
  drop_until_fits(0);
  plan.committed_bytes = committed;
  for (size_t i = 0; i < n; ++i) {
    plan.shares[i].bytes = floor[i] + (plan.shares[i].runs ? claims[i].need_bytes : 0);
  }
  if (committed > budget_bytes_) {
    plan.fits = false;
    for (BudgetShare& share : plan.shares) share.runs = false;
    return plan;
  }

  // What the caches hold above their floors, kept in order while the budget lasts: running, waiting, then idle
  // from the most recently used.
  size_t left = budget_bytes_ - committed;
  std::vector<size_t> keep_order;  // [n]
  for (size_t i : active) {
    if (plan.shares[i].runs) keep_order.push_back(i);
  }
  for (size_t i : active) {
    if (!plan.shares[i].runs) keep_order.push_back(i);
  }
  keep_order.insert(keep_order.end(), idle.rbegin(), idle.rend());
  for (size_t i : keep_order) {
    if (plan.shares[i].dropped || claims[i].resident_bytes <= floor[i]) continue;
    const size_t kept = std::min(claims[i].resident_bytes - floor[i], left);
    plan.shares[i].bytes += kept;
    left -= kept;
  }
  const size_t running = static_cast<size_t>(
      std::count_if(plan.shares.begin(), plan.shares.end(), [](const BudgetShare& s) { return s.runs; }));
  if (running > 0) {
    size_t first_extra = left % running;  // the remainder goes to the first running cache
    for (size_t i : active) {
      if (!plan.shares[i].runs) continue;
      plan.shares[i].bytes += left / running + first_extra;
      first_extra = 0;
    }
  }
  return plan;
}

}  // namespace kvtier::kv
