// The chat-template fixtures: real templates rendered by the reference engine (Python jinja2 set up as
// transformers sets it up). Every `expected` must come out byte for byte; every `error` case must fail.
// ../shared/templates/*.json (52 templates x 7 conversations) and tests/template/fixtures/*.json (templates
// written for this project, rendered by the same script) — one test per template.
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "common/shared_data.h"
#include "kvtier/chat_template.h"

namespace {

namespace fs = std::filesystem;
using kvtier::ChatTemplate;
using kvtier::TemplateRenderOptions;

struct FixtureFile {
  std::string name;  // test name: the template's name with non-identifier characters replaced
  fs::path path;
};

void PrintTo(const FixtureFile& f, std::ostream* os) { *os << f.path.filename().string(); }

std::string test_name(const std::string& stem) {
  std::string name;
  for (char c : stem) name += std::isalnum(static_cast<unsigned char>(c)) ? c : '_';
  return name;
}

std::vector<FixtureFile> list_fixtures(const fs::path& dir) {
  std::vector<FixtureFile> files;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return files;
  for (const auto& entry : fs::directory_iterator(dir)) {
    if (entry.path().extension() != ".json") continue;
    files.push_back({test_name(entry.path().stem().string()), entry.path()});
  }
  std::sort(files.begin(), files.end(), [](const auto& a, const auto& b) { return a.name < b.name; });
  return files;
}

// The reference pins strftime_now() to this time.
std::tm fixed_now() {
  std::tm t{};
  t.tm_year = 2024 - 1900;
  t.tm_mon = 6;
  t.tm_mday = 26;
  t.tm_hour = 12;
  t.tm_wday = 5;  // a Friday
  t.tm_yday = 207;
  return t;
}

void check_fixture(const fs::path& path) {
  std::ifstream in(path);
  ASSERT_TRUE(in) << path;
  nlohmann::ordered_json record = nlohmann::ordered_json::parse(in);
  auto parsed = ChatTemplate::parse(record["source"].get<std::string>());
  if (record.contains("parse_error")) {
    EXPECT_FALSE(parsed.ok()) << "the reference refused to parse it: " << record["parse_error"];
    return;
  }
  ASSERT_TRUE(parsed.ok()) << parsed.error();
  TemplateRenderOptions options;
  options.now = fixed_now();
  for (const auto& c : record["cases"]) {
    std::string conversation = c["conversation"].get<std::string>();
    auto rendered = parsed->render(c["context"], options);
    if (c.contains("error")) {
      EXPECT_FALSE(rendered.ok()) << conversation << ": the reference failed with " << c["error"]
                                  << " but this rendered:\n" << *rendered;
      continue;
    }
    ASSERT_TRUE(rendered.ok()) << conversation << ": " << rendered.error();
    EXPECT_EQ(*rendered, c["expected"].get<std::string>()) << conversation;
  }
}

class SharedTemplateFixture : public ::testing::TestWithParam<FixtureFile> {};

TEST_P(SharedTemplateFixture, RendersLikeTheReference) {
  if (GetParam().path.empty())
    GTEST_SKIP() << "needs ../shared/templates (test data beside the checkout; absent in a fresh clone)";
  check_fixture(GetParam().path);
}

std::vector<FixtureFile> shared_fixtures() {
  auto files = list_fixtures(kvtier::testing::shared_path("templates"));
  if (files.empty()) files.push_back({"absent", {}});  // one test that skips
  return files;
}

INSTANTIATE_TEST_SUITE_P(Shared, SharedTemplateFixture, ::testing::ValuesIn(shared_fixtures()),
                         [](const auto& info) { return info.param.name; });

class ProjectTemplateFixture : public ::testing::TestWithParam<FixtureFile> {};

TEST_P(ProjectTemplateFixture, RendersLikeTheReference) { check_fixture(GetParam().path); }

INSTANTIATE_TEST_SUITE_P(Project, ProjectTemplateFixture,
                         ::testing::ValuesIn(list_fixtures(fs::path(KVTIER_SOURCE_DIR) / "tests/template/fixtures")),
                         [](const auto& info) { return info.param.name; });
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(ProjectTemplateFixture);

}  // namespace
