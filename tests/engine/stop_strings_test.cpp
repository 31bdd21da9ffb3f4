#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "kvtier/stop_strings.h"

namespace {

using kvtier::StopStringFilter;

// Feeds pieces; returns everything shown, flushing at the end if no stop string was found.
std::string feed(StopStringFilter& f, const std::vector<std::string>& pieces) {
  std::string shown;
  for (const std::string& p : pieces) shown += f.push(p);
  return shown + f.flush();
}

TEST(StopStrings, StopSplitAcrossPiecesNeverLeaks) {
  StopStringFilter f({"<|im_end|>"});
  std::string shown;
  shown += f.push("Hello <|");
  EXPECT_EQ(shown, "Hello ") << "the possible start of the stop string is held back";
  shown += f.push("im_");
  EXPECT_EQ(shown, "Hello ");
  shown += f.push("end|> and more");
  EXPECT_EQ(shown, "Hello ");
  EXPECT_TRUE(f.stopped());
  EXPECT_EQ(f.matched(), "<|im_end|>");
  EXPECT_EQ(f.push("later"), "");
  EXPECT_EQ(f.flush(), "");
}

TEST(StopStrings, AFalseStartIsReleased) {
  StopStringFilter f({"User:"});
  EXPECT_EQ(f.push("Use"), "");
  EXPECT_EQ(f.push("ful"), "Useful");
  EXPECT_EQ(f.push(" Us"), " ");
  EXPECT_EQ(f.flush(), "Us");
  EXPECT_FALSE(f.stopped());
}

TEST(StopStrings, EarliestStopWinsAndOverlapsAreFound) {
  StopStringFilter f({"abc", "bc", "xyz"});
  EXPECT_EQ(feed(f, {"12a", "bc3"}), "12");
  EXPECT_EQ(f.matched(), "abc");
  StopStringFilter g({"aab"});
  EXPECT_EQ(feed(g, {"a", "a", "a", "b"}), "a") << "the match starts at the second 'a'";
  StopStringFilter none({""});
  EXPECT_EQ(feed(none, {"text"}), "text");
}

TEST(StopStrings, RandomSplitsGiveTheSameOutputAsOnePiece) {
  std::mt19937 rng(7);
  const std::string alphabet = "ab<|>\n";
  for (int trial = 0; trial < 2000; ++trial) {
    std::string text;
    for (int i = 0; i < 30; ++i) text += alphabet[rng() % alphabet.size()];
    const std::vector<std::string> stops = {"<|a", "\n\n", "bb>"};
    StopStringFilter whole(stops);
    const std::string expected = feed(whole, {text});
    std::vector<std::string> pieces;
    for (size_t at = 0; at < text.size();) {
      const size_t n = 1 + rng() % 4;
      pieces.push_back(text.substr(at, n));
      at += n;
    }
    StopStringFilter split(stops);
    EXPECT_EQ(feed(split, pieces), expected) << text;
    EXPECT_EQ(split.stopped(), whole.stopped());
    // Never a partial stop string at the end of what was shown: either nothing matched, or the cut is exact.
    for (const std::string& s : stops) EXPECT_EQ(expected.find(s), std::string::npos);
  }
}

}  // namespace
