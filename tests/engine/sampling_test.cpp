#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <limits>
#include <map>

#include "kvtier/sampling.h"

namespace kvtier {
namespace {

SamplingParams plain(float temperature) {
  SamplingParams p;
  p.temperature = temperature;
  p.top_k = 0;
  p.top_p = 1.0f;
  p.min_p = 0.0f;
  p.repeat_penalty = 1.0f;
  return p;
}

TEST(Sampling, GreedyPicksTheLargestLogit) {
  const std::vector<float> logits = {0.1f, 2.5f, -1.0f, 2.4f};
  Sampler s(plain(0.0f));
  EXPECT_EQ(s.sample(logits.data(), 4), 1);
  EXPECT_EQ(argmax(logits.data(), 4), 1);
}

TEST(Sampling, TopKOfOneIsGreedyAtAnyTemperature) {
  const std::vector<float> logits = {0.1f, 0.2f, 3.0f, 0.3f};
  SamplingParams p = plain(5.0f);
  p.top_k = 1;
  Sampler s(p);
  for (int i = 0; i < 50; ++i) EXPECT_EQ(s.sample(logits.data(), 4), 2);
}

TEST(Sampling, SameSeedSameSequenceDifferentSeedDifferentSequence) {
  std::vector<float> logits(50);
  for (int i = 0; i < 50; ++i) logits[i] = std::sin(i * 0.7f);
  auto draw = [&](uint64_t seed) {
    SamplingParams p = plain(1.0f);
    p.seed = seed;
    Sampler s(p);
    std::vector<int32_t> out;
    for (int i = 0; i < 40; ++i) out.push_back(s.sample(logits.data(), 50));
    return out;
  };
  EXPECT_EQ(draw(7), draw(7));
  EXPECT_NE(draw(7), draw(8));
}

TEST(Sampling, FrequenciesFollowSoftmaxAtTemperatureOne) {
  const std::vector<float> logits = {0.0f, std::log(2.0f), std::log(7.0f)};  // probabilities 0.1, 0.2, 0.7
  Sampler s(plain(1.0f));
  std::map<int, int> counts;
  const int n = 20000;
  for (int i = 0; i < n; ++i) ++counts[s.sample(logits.data(), 3)];
  EXPECT_NEAR(counts[0] / double(n), 0.1, 0.015);
  EXPECT_NEAR(counts[1] / double(n), 0.2, 0.015);
  EXPECT_NEAR(counts[2] / double(n), 0.7, 0.015);
}

TEST(Sampling, MinPAndTopPRemoveTheTail) {
  // probabilities ~ 0.6, 0.3, 0.06, 0.04
  const std::vector<float> logits = {std::log(0.6f), std::log(0.3f), std::log(0.06f), std::log(0.04f)};
  SamplingParams min_p = plain(1.0f);
  min_p.min_p = 0.2f;  // keeps tokens with p >= 0.12
  Sampler a(min_p);
  SamplingParams top_p = plain(1.0f);
  top_p.top_p = 0.85f;  // 0.6 + 0.3 reaches it
  Sampler b(top_p);
  for (int i = 0; i < 2000; ++i) {
    EXPECT_LT(a.sample(logits.data(), 4), 2);
    EXPECT_LT(b.sample(logits.data(), 4), 2);
  }
}

TEST(Sampling, RepetitionPenaltyDemotesRecentTokens) {
  const std::vector<float> logits = {2.0f, 1.8f, 0.0f};
  SamplingParams p = plain(0.0f);
  p.repeat_penalty = 1.5f;
  Sampler s(p);
  s.accept(0);
  EXPECT_EQ(s.sample(logits.data(), 3), 1);  // 2.0 / 1.5 < 1.8
  Sampler fresh(p);
  EXPECT_EQ(fresh.sample(logits.data(), 3), 0);
}

}  // namespace
}  // namespace kvtier

TEST(SamplingParams, OutOfRangeValuesAreRefusedByName) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  auto with = [](auto set) {
    kvtier::SamplingParams p;
    set(p);
    return kvtier::validate_sampling_params(p);
  };
  EXPECT_TRUE(kvtier::validate_sampling_params(kvtier::SamplingParams{}).ok());
  EXPECT_TRUE(with([](auto& p) { p.temperature = 0; }).ok());
  EXPECT_TRUE(with([](auto& p) { p.min_p = 0; p.top_p = 1; p.top_k = 0; }).ok());
  const std::pair<std::function<void(kvtier::SamplingParams&)>, const char*> bad[] = {
      {[&](auto& p) { p.temperature = nan; }, "temperature"},
      {[&](auto& p) { p.temperature = -1; }, "temperature"},
      {[&](auto& p) { p.temperature = inf; }, "temperature"},
      {[&](auto& p) { p.top_p = 0; }, "top_p"},
      {[&](auto& p) { p.top_p = nan; }, "top_p"},
      {[&](auto& p) { p.top_p = 1.5f; }, "top_p"},
      {[&](auto& p) { p.min_p = -1; }, "min_p"},
      {[&](auto& p) { p.min_p = nan; }, "min_p"},
      {[&](auto& p) { p.repeat_penalty = 0; }, "repeat_penalty"},
      {[&](auto& p) { p.repeat_penalty = nan; }, "repeat_penalty"},
      {[&](auto& p) { p.repeat_penalty = inf; }, "repeat_penalty"},
      {[&](auto& p) { p.top_k = -1; }, "top_k"},
      {[&](auto& p) { p.repeat_last_n = -1; }, "repeat_last_n"},
  };
  for (const auto& [set, name] : bad) {
    kvtier::Status s = with(set);
    ASSERT_FALSE(s.ok()) << name;
    EXPECT_EQ(s.message().rfind(name, 0), 0u) << s.message();
  }
}

TEST(SamplingParams, SeedsAreWholeNumbersThatNeverWrapOrSaturate) {
  EXPECT_EQ(*kvtier::parse_seed("0"), 0u);
  EXPECT_EQ(*kvtier::parse_seed("42"), 42u);
  EXPECT_EQ(*kvtier::parse_seed("18446744073709551615"), UINT64_MAX);
  for (const char* bad : {"", "-5", "+5", "1e23", "0x10", "4.0", " 7", "18446744073709551616", "99999999999999999999"}) {
    EXPECT_FALSE(kvtier::parse_seed(bad).ok()) << bad;
  }
}
