// The README's commands (scripts/quickstart.sh, scripts/test.sh) must work in either order, and the test
// command must never pass having run no tests.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <fstream>
#include <regex>
#include <sstream>
#include <vector>
#include <string>

#include "common/test_util.h"

namespace {

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// Lines of a script that start a command (continuations joined).
std::vector<std::string> commands(const std::string& script) {
  std::vector<std::string> lines;
  std::string joined;
  std::istringstream in(slurp(script));
  for (std::string line; std::getline(in, line);) {
    if (!line.empty() && line.back() == '\\') {
      joined += line.substr(0, line.size() - 1);
      continue;
    }
    lines.push_back(joined + line);
    joined.clear();
  }
  return lines;
}

TEST(Scripts, TestShSetsItsBuildOptionsAndRefusesAnEmptySuite) {
  const std::string script = std::string(KVTIER_SOURCE_DIR) + "/scripts/test.sh";
  int configures = 0, ctests = 0;
  for (const std::string& line : commands(script)) {
    if (line.find("cmake -S . -B build") != std::string::npos) {
      ++configures;
      EXPECT_NE(line.find("-DKVTIER_BUILD_TESTS=ON"), std::string::npos) << line;
      EXPECT_NE(line.find("-DKVTIER_SANITIZE="), std::string::npos) << line;
    }
    if (std::regex_search(line, std::regex(R"(^\s*(\(cd \S+ && .*)?ctest )")) ||
        line.find("&& ctest ") != std::string::npos) {
      ++ctests;
      EXPECT_NE(line.find("--no-tests=error"), std::string::npos) << line;
    }
  }
  EXPECT_EQ(configures, 2) << "the sanitizer build and the Release build";
  EXPECT_GE(ctests, 2);
}

TEST(Scripts, CtestFailsOnAnEmptySuiteWithNoTestsError) {
  // What the flag does with the ctest on this machine: a directory without tests is an error.
  kvtier::testing::TempDir dir("kvtier-empty-suite");
  const std::string cmd = "cd " + dir.path() + " && ctest --no-tests=error >/dev/null 2>&1";
  const int status = std::system(cmd.c_str());
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_NE(WEXITSTATUS(status), 0);
}

}  // namespace
