// The shared-budget arbiter (kv/budget_arbiter.h): active caches first, by need; idle caches give their RAM back
// least recently used first; the shares never add up to more than the budget.
#include <gtest/gtest.h>

#include <numeric>
#include <random>
#include <vector>

#include "kv/budget_arbiter.h"

namespace kvtier::kv {
namespace {

BudgetClaim idle(size_t resident, size_t floor, uint64_t last_used, size_t empty = 0) {
  return BudgetClaim{.resident_bytes = resident, .floor_bytes = floor, .empty_bytes = empty,
                     .need_bytes = 0, .active = false, .last_used = last_used};
}
BudgetClaim active(size_t resident, size_t floor, size_t need, size_t empty = 0) {
  return BudgetClaim{.resident_bytes = resident, .floor_bytes = floor, .empty_bytes = empty,
                     .need_bytes = need, .active = true, .last_used = 0};
}
size_t total(const BudgetPlan& plan) {
  size_t sum = 0;
  for (const BudgetShare& s : plan.shares) sum += s.bytes;
  return sum;
}

TEST(BudgetArbiter, EveryoneKeepsWhatItHoldsWhenTheBudgetAllows) {
  const std::vector<BudgetClaim> claims = {idle(300, 100, 1), active(200, 100, 50), idle(250, 100, 2)};
  const BudgetPlan plan = BudgetArbiter(1000).plan(claims);
  ASSERT_TRUE(plan.fits);
  EXPECT_EQ(plan.shares[0].bytes, 300u);
  EXPECT_EQ(plan.shares[2].bytes, 250u);
  // The running cache gets what it holds, its need, and the rest of the budget.
  EXPECT_TRUE(plan.shares[1].runs);
  EXPECT_EQ(plan.shares[1].bytes, 1000u - 300 - 250);
  EXPECT_EQ(total(plan), 1000u);
}

TEST(BudgetArbiter, IdleCachesSpillLeastRecentlyUsedFirst) {
  // Floors 400 + need 100 leave 500 of the 1000 for what the caches hold above their floors (200 each): the
  // active cache keeps its 200, the most recent idle cache (last_used 9) its 200, the next (5) the last 100,
  // and the least recently used one (2) goes down to its floor.
  const std::vector<BudgetClaim> claims = {idle(300, 100, 5), idle(300, 100, 2), active(300, 100, 100),
                                           idle(300, 100, 9)};
  const BudgetPlan plan = BudgetArbiter(1000).plan(claims);
  ASSERT_TRUE(plan.fits);
  EXPECT_EQ(plan.shares[1].bytes, 100u);  // least recently used: all of its spillable pages go to disk
  EXPECT_EQ(plan.shares[0].bytes, 200u);  // next: half of them
  EXPECT_EQ(plan.shares[3].bytes, 300u);  // most recent: keeps everything
  EXPECT_EQ(plan.shares[2].bytes, 400u);  // active: keeps everything, plus its need
  EXPECT_TRUE(plan.shares[2].runs);
  EXPECT_EQ(total(plan), 1000u);
  for (const BudgetShare& s : plan.shares) EXPECT_FALSE(s.dropped);
}

TEST(BudgetArbiter, ActiveNeedsComeBeforeIdleRam) {
  // The idle cache holds 500 above its floor; the active one needs 400 more: the idle one spills 400 of it.
  const std::vector<BudgetClaim> claims = {idle(600, 100, 1), active(100, 100, 400)};
  const BudgetPlan plan = BudgetArbiter(800).plan(claims);
  ASSERT_TRUE(plan.fits);
  EXPECT_TRUE(plan.shares[1].runs);
  EXPECT_EQ(plan.shares[1].bytes, 500u);
  EXPECT_EQ(plan.shares[0].bytes, 300u);
}

TEST(BudgetArbiter, ActiveCachesSpillTheirOwnPagesAfterTheIdleOnes) {
  // Floors 300, needs 200: 500 left for what the caches hold above their floors (300 + 300 + 300). The two
  // running caches keep 300 and 200; the idle one spills everything it can.
  const std::vector<BudgetClaim> claims = {active(400, 100, 100), idle(400, 100, 1), active(400, 100, 100)};
  const BudgetPlan plan = BudgetArbiter(1000).plan(claims);
  ASSERT_TRUE(plan.fits);
  EXPECT_EQ(plan.shares[1].bytes, 100u);
  EXPECT_EQ(plan.shares[0].bytes + plan.shares[2].bytes, 900u);
  EXPECT_GE(plan.shares[0].bytes, 200u);
  EXPECT_GE(plan.shares[2].bytes, 200u);
}

TEST(BudgetArbiter, AStepWhoseNeedDoesNotFitWaitsSmallestNeedsFirst) {
  // 300 of floors leaves 250: the decode step (need 50) runs, the prompt chunk (need 300) waits (the idle
  // cache holds nothing it could give back, even dropped).
  const std::vector<BudgetClaim> claims = {active(100, 100, 300), active(100, 100, 50), idle(100, 100, 1, 100)};
  const BudgetPlan plan = BudgetArbiter(550).plan(claims);
  ASSERT_TRUE(plan.fits);
  EXPECT_FALSE(plan.shares[0].runs);
  EXPECT_TRUE(plan.shares[1].runs);
  EXPECT_EQ(plan.shares[0].bytes, 100u);  // a waiting cache keeps its floor and gets no need
  EXPECT_LE(total(plan), 550u);
  EXPECT_GE(plan.shares[1].bytes, 150u);
}

TEST(BudgetArbiter, AmongEqualNeedsTheLongestWaitingStepGoesFirst) {
  // Room for one of two equal prompt chunks: the one that waited runs, whatever its place.
  std::vector<BudgetClaim> claims = {active(100, 100, 300), active(100, 100, 300)};
  claims[1].waited = 2;
  BudgetPlan plan = BudgetArbiter(500).plan(claims);
  EXPECT_FALSE(plan.shares[0].runs);
  EXPECT_TRUE(plan.shares[1].runs);
  claims[1].waited = 0;
  claims[0].waited = 1;
  plan = BudgetArbiter(500).plan(claims);
  EXPECT_TRUE(plan.shares[0].runs);
  EXPECT_FALSE(plan.shares[1].runs);
}

TEST(BudgetArbiter, IdleConversationsAreDroppedLeastRecentlyUsedFirstWhenTheirFloorsBlockAnActiveStep) {
  // Floors that cannot spill (warm rungs): 300 each, 40 once emptied. The active step needs 200 of the 1000.
  const std::vector<BudgetClaim> claims = {idle(300, 300, 7, 40), idle(300, 300, 3, 40),
                                           active(300, 300, 200, 40)};
  const BudgetPlan plan = BudgetArbiter(1000).plan(claims);
  ASSERT_TRUE(plan.fits);
  EXPECT_TRUE(plan.shares[2].runs);
  EXPECT_TRUE(plan.shares[1].dropped);   // least recently used
  EXPECT_FALSE(plan.shares[0].dropped);  // one drop was enough
  EXPECT_EQ(plan.shares[1].bytes, 40u);
  EXPECT_EQ(plan.shares[0].bytes, 300u);
  EXPECT_LE(total(plan), 1000u);
}

TEST(BudgetArbiter, FloorsOverTheBudgetAreReportedAndNothingRuns) {
  // Two active caches whose floors alone exceed the budget: nothing may run, and the plan says so.
  const std::vector<BudgetClaim> claims = {active(600, 600, 10), active(500, 500, 10), idle(200, 200, 1, 50)};
  const BudgetPlan plan = BudgetArbiter(1000).plan(claims);
  EXPECT_FALSE(plan.fits);
  EXPECT_TRUE(plan.shares[2].dropped);  // the idle one was dropped trying
  for (const BudgetShare& s : plan.shares) EXPECT_FALSE(s.runs);
}

TEST(BudgetArbiter, RandomClaimsNeverExceedTheBudget) {
  std::mt19937_64 rng(16);
  for (int round = 0; round < 2000; ++round) {
    const size_t n = 1 + rng() % 6;
    std::vector<BudgetClaim> claims(n);
    for (BudgetClaim& c : claims) {
      c.empty_bytes = rng() % 50;
      c.floor_bytes = c.empty_bytes + rng() % 200;
      c.resident_bytes = c.floor_bytes / 2 + rng() % 400;  // may be below a (conservative) floor
      c.active = rng() % 2 == 0;
      c.need_bytes = c.active ? rng() % 300 : 0;
      c.last_used = rng() % 10;
    }
    const size_t budget = rng() % 2000;
    const BudgetPlan plan = BudgetArbiter(budget).plan(claims);
    if (!plan.fits) {
      for (const BudgetShare& s : plan.shares) EXPECT_FALSE(s.runs);
      // Only active floors (and idle ones that cannot shrink) can stand in the way.
      size_t fixed = 0;
      for (const BudgetClaim& c : claims) fixed += c.active ? c.floor_bytes : c.empty_bytes;
      EXPECT_GT(fixed, budget);
      continue;
    }
    ASSERT_LE(total(plan), budget) << "round " << round;
    for (size_t i = 0; i < n; ++i) {
      const BudgetClaim& c = claims[i];
      const BudgetShare& s = plan.shares[i];
      EXPECT_GE(s.bytes, s.dropped ? c.empty_bytes : c.floor_bytes);
      if (s.runs) EXPECT_GE(s.bytes, c.floor_bytes + c.need_bytes);
      EXPECT_FALSE(s.dropped && c.active);
      EXPECT_FALSE(s.runs && !c.active);
    }
  }
}

}  // namespace
}  // namespace kvtier::kv
