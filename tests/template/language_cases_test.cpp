// The language cases: small templates, one construct, filter, test or whitespace rule each, rendered by
// the reference engine (tests/template/make_language_cases.py writes language_cases.json). Each case is
// its own test; an `expected` must come out byte for byte, an `error` case must fail with a message that
// names the template position.
#include <fstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "kvtier/chat_template.h"

namespace {

using kvtier::ChatTemplate;
using kvtier::TemplateRenderOptions;

struct LanguageCase {
  std::string name;
  std::string source;
  nlohmann::ordered_json expected_or_error;  // a string: expected output; an object {"error": ...}
  bool expects_error = false;
};

void PrintTo(const LanguageCase& c, std::ostream* os) { *os << c.name; }

const nlohmann::ordered_json& cases_file() {
  static const nlohmann::ordered_json file = [] {
    std::ifstream in(std::string(KVTIER_SOURCE_DIR) + "/tests/template/language_cases.json");
    return in ? nlohmann::ordered_json::parse(in) : nlohmann::ordered_json::object();
  }();
  return file;
}

std::vector<LanguageCase> load_cases() {
  std::vector<LanguageCase> cases;
  const auto& file = cases_file();
  if (!file.contains("cases")) return cases;
  for (const auto& c : file["cases"]) {
    LanguageCase lc;
    lc.name = c["name"].get<std::string>();
    lc.source = c["source"].get<std::string>();
    lc.expects_error = c.contains("error");
    lc.expected_or_error = lc.expects_error ? c["error"] : c["expected"];
    cases.push_back(std::move(lc));
  }
  return cases;
}

class LanguageCaseTest : public ::testing::TestWithParam<LanguageCase> {};

TEST_P(LanguageCaseTest, RendersLikeTheReference) {
  const LanguageCase& c = GetParam();
  TemplateRenderOptions options;
  std::tm now{};
  now.tm_year = 2024 - 1900;
  now.tm_mon = 6;
  now.tm_mday = 26;
  now.tm_hour = 12;
  now.tm_wday = 5;
  now.tm_yday = 207;
  options.now = now;
  auto parsed = ChatTemplate::parse(c.source);
  if (c.expects_error) {
    std::string error = parsed.ok() ? std::string() : parsed.error();
    if (parsed.ok()) {
      auto rendered = parsed->render(cases_file()["context"], options);
      ASSERT_FALSE(rendered.ok()) << "the reference failed with " << c.expected_or_error << " but this rendered:\n"
                                  << *rendered;
      error = rendered.error();
    }
    // One line naming the position: "template:LINE:COLUMN: Kind: message".
    EXPECT_EQ(error.rfind("template:", 0), 0u) << error;
    EXPECT_EQ(error.find('\n'), std::string::npos) << error;
    return;
  }
  ASSERT_TRUE(parsed.ok()) << parsed.error();
  auto rendered = parsed->render(cases_file()["context"], options);
  ASSERT_TRUE(rendered.ok()) << rendered.error();
  EXPECT_EQ(*rendered, c.expected_or_error.get<std::string>());
}

INSTANTIATE_TEST_SUITE_P(Language, LanguageCaseTest, ::testing::ValuesIn(load_cases()),
                         [](const auto& info) { return info.param.name; });

TEST(LanguageCases, FileIsPresent) { EXPECT_GT(load_cases().size(), 100u); }

}  // namespace
