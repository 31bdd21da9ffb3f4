// The kvtier executable end to end: output streams, exit codes, error lines.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>
#include <algorithm>

#include "common/shared_data.h"

namespace {

struct Outcome {
  int exit_code = -1;
  std::string out;
  std::string err;
};

// Runs build/kvtier with arguments (a shell-quoted string).
Outcome kvtier(const std::string& args) {
  // ctest runs tests in parallel processes: the files are named after this test and call.
  static int call = 0;
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  const std::string stem = ::testing::TempDir() + "/kvtier_cli_" + info->name() + "_" + std::to_string(++call);
  const std::string out_path = stem + ".out", err_path = stem + ".err";
  const std::string cmd = std::string(KVTIER_BINARY_DIR) + "/kvtier " + args + " >" + out_path + " 2>" + err_path;
  const int status = std::system(cmd.c_str());
  Outcome o;
  o.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  auto slurp = [](const std::string& p) {
    std::ifstream in(p, std::ios::binary);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
  };
  o.out = slurp(out_path);
  o.err = slurp(err_path);
  std::remove(out_path.c_str());
  std::remove(err_path.c_str());
  return o;
}

std::string demo_model() { return std::string(KVTIER_SOURCE_DIR) + "/models/tiny-llama-6m.Q4_0.gguf"; }

int count_lines(const std::string& s) { return static_cast<int>(std::count(s.begin(), s.end(), '\n')); }

TEST(Cli, RunStreamsOnlyTheContinuationToStdout) {
  Outcome o = kvtier("run -m " + demo_model() + " -p 'The Linux kernel' -n 24 --temp 0 -t 2");
  ASSERT_EQ(o.exit_code, 0) << o.err;
  EXPECT_GT(o.out.size(), 10u);
  EXPECT_EQ(o.out.find("tok/s"), std::string::npos) << "statistics belong on stderr";
  EXPECT_NE(o.err.find("tok/s"), std::string::npos);
  // Greedy is deterministic.
  Outcome again = kvtier("run -m " + demo_model() + " -p 'The Linux kernel' -n 24 --temp 0 -t 1");
  EXPECT_EQ(again.out, o.out);
}

// -v ends with where the background re-encoding ran: in the pool's gaps when -t fills every core, else on a
// thread of its own; the text is the same either way.
TEST(Cli, VerboseSaysWhereReencodingRan) {
  const unsigned cores = std::max(1u, std::thread::hardware_concurrency());
  const std::string args =
      "run -m " + demo_model() + " -p 'The Linux kernel' -n 160 --temp 0 -v --kv-ladder f16:64,q4:64,q2";
  auto last_summary = [](const std::string& err) {
    const size_t at = err.rfind("re-encoded ");
    return at == std::string::npos ? std::string() : err.substr(at, err.find('\n', at) - at);
  };
  Outcome one = kvtier(args + " -t 1");
  ASSERT_EQ(one.exit_code, 0) << one.err;
  const std::string s1 = last_summary(one.err);
  EXPECT_NE(s1.find("on a thread of its own"), std::string::npos) << s1;
  EXPECT_EQ(s1.find("re-encoded 0 pages"), std::string::npos) << s1;
  Outcome all = kvtier(args + " -t " + std::to_string(cores));
  ASSERT_EQ(all.exit_code, 0) << all.err;
  const std::string s2 = last_summary(all.err);
  EXPECT_NE(s2.find(cores > 1 ? "in the thread pool's gaps" : "on a thread of its own"), std::string::npos) << s2;
  EXPECT_EQ(all.out, one.out);
}

TEST(Cli, SamplingWithSeedIsReproducible) {
  Outcome a = kvtier("run -m " + demo_model() + " -p 'And God said' -n 16 --temp 0.9 --seed 5");
  Outcome b = kvtier("run -m " + demo_model() + " -p 'And God said' -n 16 --temp 0.9 --seed 5");
  ASSERT_EQ(a.exit_code, 0) << a.err;
  EXPECT_EQ(a.out, b.out);
}

TEST(Cli, BadArgumentsGiveOneErrorLineAndNonZeroExit) {
  const std::vector<std::string> cases = {"run -p hi", "run -m /nonexistent.gguf -p hi",
                                          "run -m " + demo_model() + " -p hi -n -3", "perplexity -m " + demo_model(),
                                          "frobnicate", "info"};
  for (const std::string& args : cases) {
    Outcome o = kvtier(args);
    EXPECT_NE(o.exit_code, 0) << args;
    EXPECT_EQ(count_lines(o.err), 1) << args << ": " << o.err;
    EXPECT_TRUE(o.out.empty()) << args;
  }
}

TEST(Cli, NotAGgufFileIsAClearError) {
  const std::string bogus = ::testing::TempDir() + "/not_a_model.gguf";
  std::ofstream(bogus) << "this is not a GGUF file at all";
  Outcome o = kvtier("run -m " + bogus + " -p hi");
  EXPECT_NE(o.exit_code, 0);
  EXPECT_EQ(count_lines(o.err), 1) << o.err;
  EXPECT_NE(o.err.find("magic"), std::string::npos) << o.err;
}

TEST(Cli, ContextTooSmallIsRefused) {
  Outcome o = kvtier("run -m " + demo_model() + " -p 'The Linux kernel' -n 50 -c 8");
  EXPECT_NE(o.exit_code, 0);
  EXPECT_NE(o.err.find("context"), std::string::npos) << o.err;
}

TEST(Cli, InfoSummarisesMetadataAndTensors) {
  Outcome o = kvtier("info -m " + demo_model());
  ASSERT_EQ(o.exit_code, 0) << o.err;
  EXPECT_NE(o.out.find("general.architecture"), std::string::npos);
  EXPECT_NE(o.out.find("token_embd.weight"), std::string::npos);
  EXPECT_NE(o.out.find("Q4_0"), std::string::npos);
  EXPECT_NE(o.out.find("4 layers"), std::string::npos);
}

TEST(Cli, PerplexityPrintsTheFinalEstimateLine) {
  KVTIER_REQUIRE_SHARED("eval/eval.txt");
  Outcome o = kvtier("perplexity -m " + demo_model() + " -f " + kvtier::testing::shared_path("eval/eval.txt").string() +
                     " -c 128 --chunks 2 -t 2");
  ASSERT_EQ(o.exit_code, 0) << o.err;
  EXPECT_NE(o.out.find("Final estimate: PPL = "), std::string::npos) << o.out;
}

}  // namespace
