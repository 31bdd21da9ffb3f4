// One RAM budget shared by several KV caches (`kvtier serve`'s slots, one cache each). Before each turn of the
// scheduler the arbiter decides how many bytes each cache may keep in RAM this turn, so that together they hold
// at most the budget. A cache gives RAM back by writing its oldest pages to its cold tier
// (TieredKvStore::set_budget); what it cannot write out (hot rings, sinks, pages above the ladder's last rung,
// cold-tier buffers and index) is its floor.
//
// Claims are served in this order, each from what the ones before left:
//   1. every cache's floor;
//   2. each active cache's need for this turn (the most its tokens can add), smallest need first, so that the
//      decode steps go before the prompt chunks (equal needs: the one that waited longest first, so that no
//      prompt waits forever behind others of its size). An active cache whose need does not fit waits this turn. When an
//      idle cache's floor stands in the way of an active need, or the floors alone exceed the budget, idle
//      conversations are dropped, least recently used first (their caches emptied down to empty_bytes): a
//      conversation lost to RAM pressure is recomputed later, never a budget overrun;
//   3. what the caches hold now above their floors: running caches first, then waiting ones, then idle ones
//      from the most recently used, so the least recently used give their RAM back (spill) first;
//   4. the rest, evenly over the running caches (room for what a need estimate missed).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

namespace kvtier::kv {

// A cache as the arbiter sees it, in the bytes the budget counts (TieredKvStore::budget_resident_bytes).
struct BudgetClaim {
  size_t resident_bytes = 0;  // held now
  size_t floor_bytes = 0;     // the most it holds once every page that may go to disk went there
  size_t empty_bytes = 0;     // held with no conversation at all (<= floor_bytes)
  size_t need_bytes = 0;      // active: the most this turn's tokens can add; ignored when idle
  bool active = false;        // its request runs (decodes or prefills) this turn
  uint64_t last_used = 0;     // idle: when its last request ended; smaller = less recently used
  uint64_t waited = 0;        // active: turns its step has waited so far; among equal needs the longest first
};

struct BudgetShare {
  size_t bytes = 0;      // what the cache may hold in RAM this turn (its budget)
  bool runs = false;     // active: its step runs this turn; false: it waits for room
  bool dropped = false;  // idle: its conversation must be emptied first (bytes counts it empty)
};

struct BudgetPlan {
  std::vector<BudgetShare> shares;  // [claims.size()]
  size_t committed_bytes = 0;       // sum of the shares' floors and granted needs (<= the budget when fits)
  bool fits = true;                 // false: the floors of the active caches alone exceed the budget
};

class BudgetArbiter {
 public:
  explicit BudgetArbiter(size_t budget_bytes) : budget_bytes_(budget_bytes) {}
  size_t budget_bytes() const { return budget_bytes_; }

  // The shares of one turn. When plan.fits, the shares add up to at most budget_bytes(), every share is at
  // least its cache's floor (empty_bytes when dropped), and a running cache's share is at least floor + need.
  BudgetPlan plan(std::span<const BudgetClaim> claims) const;

 private:
  size_t budget_bytes_;
};

}  // namespace kvtier::kv
