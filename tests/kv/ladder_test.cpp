// Precision ladder: parsing, presets, errors, rung by age, move planning.
#include <gtest/gtest.h>

#include "kv/ladder.h"

namespace kvtier::kv {
namespace {

TEST(Ladder, ParsesTheIssueExample) {
  Result<LadderSpec> l = parse_ladder("f16:128,q8:512,q4:4096,q2");
  ASSERT_TRUE(l.ok()) << l.error();
  ASSERT_EQ(l->rungs.size(), 4u);
  EXPECT_EQ(l->rungs[0].precision, Precision::F16);
  EXPECT_EQ(l->rungs[0].tokens, 128);
  EXPECT_EQ(l->rungs[2].precision, Precision::Q4);
  EXPECT_EQ(l->rungs[2].tokens, 4096);
  EXPECT_EQ(l->rungs[3].tokens, -1);
  EXPECT_EQ(l->n_sinks, 4);
  EXPECT_EQ(l->describe(), "f16:128,q8:512,q4:4096,q2 +4 sinks");
  // Counts are lengths: f16 ages [0,128), q8 [128,640), q4 [640,4736), q2 beyond.
  EXPECT_EQ(l->rung_for_age(0), 0);
  EXPECT_EQ(l->rung_for_age(127), 0);
  EXPECT_EQ(l->rung_for_age(128), 1);
  EXPECT_EQ(l->rung_for_age(639), 1);
  EXPECT_EQ(l->rung_for_age(640), 2);
  EXPECT_EQ(l->rung_for_age(4735), 2);
  EXPECT_EQ(l->rung_for_age(4736), 3);
  EXPECT_EQ(l->rung_for_age(1000000), 3);
}

TEST(Ladder, PresetsSpacesAndSuffix) {
  for (const char* p : {"f16", "q8", "q4", "q3", "q2"}) {
    Result<LadderSpec> l = parse_ladder(p, 0);
    ASSERT_TRUE(l.ok()) << l.error();
    ASSERT_EQ(l->rungs.size(), 1u);
    EXPECT_EQ(l->rungs[0].tokens, -1);
    EXPECT_EQ(precision_name(l->rungs[0].precision), std::string(p));
    EXPECT_EQ(l->rung_for_age(123456), 0);
  }
  Result<LadderSpec> l = parse_ladder(" f16:64 , q4:4k ,q2 ", 8);
  ASSERT_TRUE(l.ok()) << l.error();
  EXPECT_EQ(l->rungs[1].tokens, 4096);
  EXPECT_EQ(l->n_sinks, 8);
}

void expect_error(const char* spec, const char* fragment, int sinks = 4) {
  Result<LadderSpec> l = parse_ladder(spec, sinks);
  ASSERT_FALSE(l.ok()) << spec;
  EXPECT_NE(l.error().find(fragment), std::string::npos) << "spec \"" << spec << "\": " << l.error();
  EXPECT_NE(l.error().find("KV ladder"), std::string::npos) << l.error();
}

TEST(Ladder, ClearErrors) {
  expect_error("", "empty");
  expect_error("q5", "unknown precision \"q5\"");
  expect_error("f16:128,q5:3,q2", "rung 2");
  expect_error("f16:abc,q2", "positive integer");
  expect_error("f16:0,q2", "positive integer");
  expect_error("f16:-5,q2", "positive integer");
  expect_error("f16,q2", "needs a token count");
  expect_error("f16:128,q2:64", "takes no count");
  expect_error("q2:64,q8", "must not rise");
  expect_error("f16:128,,q2", "rung 2 is empty");
  expect_error("q4", "sink", -1);
  // Split widths: neither the key nor the value width may rise with age; kXvX is spelled qX.
  expect_error("k4v2:64,q3", "must not rise");   // values 2 -> 3
  expect_error("q3:64,k4v2", "must not rise");   // keys 3 -> 4
  expect_error("k4v4:64,q2", "unknown precision \"k4v4\"");
  expect_error("k5v2", "unknown precision");
}

TEST(Ladder, SplitPrecisions) {
  Result<LadderSpec> l = parse_ladder("q4:256,k4v2:512,k3v2:1k,q2");
  ASSERT_TRUE(l.ok()) << l.error();
  ASSERT_EQ(l->rungs.size(), 4u);
  EXPECT_EQ(l->rungs[1].precision, Precision::K4V2);
  EXPECT_EQ(key_bits(l->rungs[2].precision), 3);
  EXPECT_EQ(value_bits(l->rungs[2].precision), 2);
  EXPECT_EQ(l->describe(), "q4:256,k4v2:512,k3v2:1024,q2 +4 sinks");
}

TEST(Ladder, HotRungOfAQuantizedLadderHoldsItsValueWidth) {
  // k16vY is the tail page's format, not a rung a user can ask for.
  Result<LadderSpec> bad = parse_ladder("k16v4:64,q2");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.error().find("unknown precision"), std::string::npos) << bad.error();
  const LadderSpec hot = with_hot_rung(*parse_ladder("k4v2:64,q2", 1));
  ASSERT_EQ(hot.rungs.size(), 3u);
  EXPECT_EQ(hot.rungs[0].precision, Precision::K16V2);
  EXPECT_EQ(hot.rungs[0].tokens, 0);
  EXPECT_EQ(hot.rungs[1].precision, Precision::K4V2);
  EXPECT_EQ(hot.n_sinks, 1);
  EXPECT_EQ(with_hot_rung(*parse_ladder("q3")).rungs[0].precision, Precision::K16V3);
  const LadderSpec f16 = with_hot_rung(*parse_ladder("f16:128,q4"));
  EXPECT_EQ(f16.describe(), "f16:128,q4 +4 sinks");  // an f16 rung is the hot rung already
}

TEST(Ladder, PlanMovesWholePagesOnly) {
  const LadderSpec l = *parse_ladder("f16:64,q8:128,q2", 0);
  // Pages of 64 tokens from position 0; 320 tokens: page 4 holds [256, 320), newest age 0.
  // Page 3's newest token (319 - 255 = age 64) has left f16 -> q8; page 1 (newest age 192) -> q2.
  std::vector<uint8_t> rungs = {0, 0, 0, 0, 0};
  std::vector<PageMove> moves = plan_moves(l, rungs, 0, 64, 320);
  ASSERT_EQ(moves.size(), 4u);
  EXPECT_EQ(moves[0].page, 0);
  EXPECT_EQ(moves[0].to_rung, 2);
  EXPECT_EQ(moves[1].to_rung, 2);  // page 1: newest age 192 >= 64 + 128
  EXPECT_EQ(moves[2].to_rung, 1);  // page 2: newest age 128
  EXPECT_EQ(moves[3].to_rung, 1);  // page 3: newest age 64
  // Already-moved pages are not moved again; a partial page never moves.
  rungs = {2, 2, 1, 1, 0};
  EXPECT_TRUE(plan_moves(l, rungs, 0, 64, 320).empty());
  EXPECT_TRUE(plan_moves(l, {0}, 0, 64, 63).empty());
  // One more token: page 2's newest token (age 129) is still q8, nothing moves until age 192.
  EXPECT_TRUE(plan_moves(l, rungs, 0, 64, 383).empty());
  moves = plan_moves(l, rungs, 0, 64, 384);
  ASSERT_EQ(moves.size(), 2u);
  EXPECT_EQ(moves[0].page, 2);
  EXPECT_EQ(moves[0].from_rung, 1);
  EXPECT_EQ(moves[0].to_rung, 2);
  EXPECT_EQ(moves[1].page, 4);
  EXPECT_EQ(moves[1].to_rung, 1);
}

}  // namespace
}  // namespace kvtier::kv
