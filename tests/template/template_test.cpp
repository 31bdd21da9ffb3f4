// The ChatTemplate API: error positions, the sandbox's bounds against hostile templates, the JSON context,
// and strftime_now's injected time. (The language itself is checked against the reference engine in
// language_cases_test.cpp and fixtures_test.cpp.)
#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "kvtier/chat_template.h"

namespace {

using kvtier::ChatTemplate;
using kvtier::TemplateRenderOptions;
using Json = nlohmann::ordered_json;

// Renders `source` with `context`; returns the text, or "ERROR: <message>".
std::string render(const std::string& source, const Json& context = Json::object(),
                   const TemplateRenderOptions& options = {}) {
  auto parsed = ChatTemplate::parse(source);
  if (!parsed.ok()) return "ERROR: " + parsed.error();
  auto rendered = parsed->render(context, options);
  if (!rendered.ok()) return "ERROR: " + rendered.error();
  return *rendered;
}

bool starts_with(const std::string& s, const std::string& prefix) { return s.rfind(prefix, 0) == 0; }

TEST(ChatTemplate, RendersAConversation) {
  Json context = {{"messages", Json::array({{{"role", "user"}, {"content", "Hi"}}})},
                  {"bos_token", "<s>"},
                  {"add_generation_prompt", true}};
  EXPECT_EQ(render("{{ bos_token }}{% for m in messages %}[{{ m.role }}]{{ m.content }}{% endfor %}"
                   "{% if add_generation_prompt %}[assistant]{% endif %}",
                   context),
            "<s>[user]Hi[assistant]");
}

TEST(ChatTemplate, ParseErrorsNameLineAndColumn) {
  EXPECT_EQ(render("line one\n{% if x %}\n  {{ 1 + }}\n{% endif %}"),
            "ERROR: template:3:10: TemplateSyntaxError: unexpected 'end of print statement'");
  EXPECT_EQ(render("{% for x in xs %}no end"),
            "ERROR: template:1:24: TemplateSyntaxError: Unexpected end of template. Jinja was looking for the "
            "following tags: 'endfor' or 'else'");
  EXPECT_EQ(render("ok\n\n   {% frobnicate %}"), "ERROR: template:3:7: TemplateSyntaxError: Encountered unknown tag 'frobnicate'.");
  EXPECT_TRUE(starts_with(render("{{ 'unterminated }}"), "ERROR: template:1:4: TemplateSyntaxError: unterminated string"));
  EXPECT_TRUE(starts_with(render("{# open comment"), "ERROR: template:1:1: TemplateSyntaxError: Missing end of comment"));
  EXPECT_TRUE(starts_with(render("{% break %}"), "ERROR: template:1:4: TemplateSyntaxError: 'break' outside of a loop"));
}

TEST(ChatTemplate, RenderErrorsNameTheNode) {
  EXPECT_EQ(render("a\n  {{ 'x' | no_such_filter }}"),
            "ERROR: template:2:12: TemplateAssertionError: No filter named 'no_such_filter'.");
  EXPECT_EQ(render("{% if true %}\n{{ raise_exception('System role not supported') }}{% endif %}"),
            "ERROR: template:2:4: TemplateError: System role not supported");
  EXPECT_EQ(render("{% set l = [] %}{{ l.append(1) }}"),
            "ERROR: template:1:21: SecurityError: access to attribute 'append' of 'list' object is unsafe.");
  EXPECT_EQ(render("{{ '' + functions }}"), "ERROR: template:1:7: UndefinedError: 'functions' is undefined");
  // An error inside a macro names the position inside the macro's body.
  EXPECT_EQ(render("{% macro m() %}\n  {{ 1 // 0 }}\n{% endmacro %}{{ m() }}"),
            "ERROR: template:2:8: ZeroDivisionError: integer division or modulo by zero");
}

TEST(ChatTemplate, UndefinedFollowsJinja2Default) {
  EXPECT_EQ(render("[{{ missing }}][{{ missing | default('d') }}][{{ missing | length }}][{{ missing is defined }}]"),
            "[][d][0][False]");
  EXPECT_EQ(render("{% for x in missing %}x{% else %}none{% endfor %}"), "none");
  Json context = {{"m", {{"role", "user"}}}};
  EXPECT_EQ(render("[{{ m.content }}][{{ m['content'] }}][{{ m.content is defined }}]", context), "[][][False]");
  // An attribute of an undefined value is an error, as with jinja2's default Undefined.
  EXPECT_EQ(render("{{ m.content.text }}", context),
            "ERROR: template:1:13: UndefinedError: 'dict object' has no attribute 'content'");
}

TEST(ChatTemplate, StrftimeNowUsesTheInjectedTime) {
  TemplateRenderOptions options;
  std::tm now{};
  now.tm_year = 2024 - 1900;
  now.tm_mon = 6;
  now.tm_mday = 26;
  now.tm_hour = 12;
  now.tm_wday = 5;
  options.now = now;
  EXPECT_EQ(render("{{ strftime_now('%Y-%m-%d %H:%M %A %B') }}", Json::object(), options),
            "2024-07-26 12:00 Friday July");
  // Without one, the current time: a four-digit year from this century.
  std::string year = render("{{ strftime_now('%Y') }}");
  ASSERT_EQ(year.size(), 4u);
  EXPECT_EQ(year.substr(0, 2), "20");
}

TEST(ChatTemplate, JsonContextKeepsKeyOrder) {
  Json ordered = Json::parse(R"({"tool": {"type": "function", "name": "f", "args": {"z": 1, "a": [1.5, null, true]}}})");
  EXPECT_EQ(render("{{ tool | tojson }}", ordered), R"({"type": "function", "name": "f", "args": {"z": 1, "a": [1.5, null, true]}})");
  // A plain nlohmann::json object iterates its keys sorted; the overload accepts it.
  nlohmann::json sorted = nlohmann::json::parse(R"({"b": 1, "a": 2})");
  auto parsed = ChatTemplate::parse("{{ b }}{{ a }}");
  ASSERT_TRUE(parsed.ok());
  auto rendered = parsed->render(sorted);
  ASSERT_TRUE(rendered.ok()) << rendered.error();
  EXPECT_EQ(*rendered, "12");
  EXPECT_EQ(render("{{ big }}|{{ neg }}|{{ f }}", Json::parse(R"({"big": 18446744073709551615, "neg": -5, "f": 0.5})")),
            "1.8446744073709552e+19|-5|0.5");
}

TEST(ChatTemplate, ContextMustBeAnObject) {
  auto parsed = ChatTemplate::parse("x");
  ASSERT_TRUE(parsed.ok());
  auto rendered = parsed->render(Json::array());
  ASSERT_FALSE(rendered.ok());
  EXPECT_NE(rendered.error().find("object"), std::string::npos);
}

// ---- the sandbox's bounds ----

TEST(ChatTemplateSandbox, LoopIterationsAreBounded) {
  TemplateRenderOptions options;
  options.max_steps = 10;
  EXPECT_EQ(render("{% for i in range(10) %}{{ i }}{% endfor %}", Json::object(), options), "0123456789");
  EXPECT_EQ(render("{% for i in range(11) %}{{ i }}{% endfor %}", Json::object(), options),
            "ERROR: template:1:4: LimitError: more than 10 loop iterations and macro calls (max_steps)");
  // Nested loops that would run 10^10 times stop at the bound.
  options.max_steps = 10000;
  std::string nested = render("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
                              Json::object(), options);
  EXPECT_TRUE(starts_with(nested, "ERROR: template:1:") && nested.find("LimitError") != std::string::npos) << nested;
}

TEST(ChatTemplateSandbox, RecursionIsBounded) {
  std::string infinite = render("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}");
  EXPECT_NE(infinite.find("LimitError"), std::string::npos) << infinite;
  TemplateRenderOptions options;
  options.max_depth = 5;
  const std::string countdown = "{% macro f(n) %}{{ n }}{% if n > 0 %}{{ f(n - 1) }}{% endif %}{% endmacro %}";
  EXPECT_EQ(render(countdown + "{{ f(4) }}", Json::object(), options), "43210");
  EXPECT_EQ(render(countdown + "{{ f(5) }}", Json::object(), options),
            "ERROR: template:1:41: LimitError: macro calls nested deeper than 5 (max_depth)");
  // A macro that calls itself twice per level: 2^depth calls, stopped by max_steps.
  options = {};
  options.max_steps = 10000;
  std::string exponential = render("{% macro f(n) %}{% if n < 60 %}{{ f(n + 1) }}{{ f(n + 1) }}{% endif %}{% endmacro %}{{ f(0) }}",
                                   Json::object(), options);
  EXPECT_NE(exponential.find("max_steps"), std::string::npos) << exponential;
}

TEST(ChatTemplateSandbox, OutputAndStringSizesAreBounded) {
  TemplateRenderOptions options;
  options.max_output_bytes = 1000;
  EXPECT_EQ(render("{% for i in range(100) %}{{ 'x' * 10 }}{% endfor %}", Json::object(), options).size(), 1000u);
  std::string too_long = render("{% for i in range(101) %}{{ 'x' * 10 }}{% endfor %}", Json::object(), options);
  EXPECT_TRUE(starts_with(too_long, "ERROR: template:1:") && too_long.find("max_output_bytes") != std::string::npos)
      << too_long;
  // Doubling a string never gets past the bound, even when nothing is printed.
  std::string doubling = render("{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}");
  EXPECT_NE(doubling.find("LimitError"), std::string::npos) << doubling;
  EXPECT_NE(render("{{ 'x' * 10000000000 }}").find("LimitError"), std::string::npos);
  EXPECT_NE(render("{{ [1, 2] * 10000000000 }}").find("LimitError"), std::string::npos);
  // Building ever longer lists in a loop is bounded by the bytes built in total.
  options = {};
  options.max_built_bytes = 1u << 20;
  std::string lists = render("{% set ns = namespace(l=[]) %}{% for i in range(100000) %}{% set ns.l = ns.l + [i] %}{% endfor %}",
                             Json::object(), options);
  EXPECT_NE(lists.find("max_built_bytes"), std::string::npos) << lists;
}

TEST(ChatTemplateSandbox, HostileInputsFailCleanly) {
  // Nesting deep enough to exhaust a recursive parser's stack.
  EXPECT_NE(render("{{ " + std::string(5000, '(') + "1" + std::string(5000, ')') + " }}").find("nested too deeply"),
            std::string::npos);
  EXPECT_NE(render("{{ " + std::string(5000, '-') + "1 }}").find("nested too deeply"), std::string::npos);
  std::string deep_blocks;
  for (int i = 0; i < 5000; ++i) deep_blocks += "{% if true %}";
  EXPECT_NE(render(deep_blocks).find("nested too deeply"), std::string::npos);
  // Long operator and filter chains build deep trees too.
  std::string chain = "{{ 1";
  for (int i = 0; i < 5000; ++i) chain += " + 1";
  EXPECT_NE(render(chain + " }}").find("nested too deeply"), std::string::npos);
  std::string filters = "{{ 'x'";
  for (int i = 0; i < 5000; ++i) filters += "|trim";
  EXPECT_NE(render(filters + " }}").find("nested too deeply"), std::string::npos);
  // Values nested ever deeper in a loop stop at the bound (printing or destroying them must not recurse
  // without end), also through bound methods that hold their object.
  EXPECT_NE(render("{% set ns = namespace(x=[]) %}{% for i in range(20000) %}{% set ns.x = [ns.x] %}{% endfor %}")
                .find("nested too deeply"),
            std::string::npos);
  EXPECT_NE(render("{% set ns = namespace(x=[]) %}{% for i in range(20000) %}{% set ns.x = [ns.x.count] %}{% endfor %}")
                .find("nested too deeply"),
            std::string::npos);
  // A namespace that holds itself cannot be printed or serialized forever.
  EXPECT_NE(render("{% set ns = namespace() %}{% set ns.me = ns %}{{ ns }}").find("LimitError"), std::string::npos);
  EXPECT_NE(render("{% set ns = namespace() %}{% set ns.l = [ns] %}{{ ns.l == ns.l }}{{ ns.l | tojson }}").find("Error"),
            std::string::npos);
  // Deeply nested JSON in the context.
  Json deep = 1;
  for (int i = 0; i < 1000; ++i) deep = Json::array({deep});
  EXPECT_NE(render("{{ x }}", Json{{"x", deep}}).find("nested too deeply"), std::string::npos);
  // A macro smuggled out of the loop that defined it.
  EXPECT_NE(render("{% set ns = namespace() %}{% for i in [1] %}{% macro m() %}x{% endmacro %}{% set ns.m = m %}"
                   "{% endfor %}{{ ns.m() }}")
                .find("after its scope ended"),
            std::string::npos);
  // Huge format widths and precisions.
  EXPECT_NE(render("{{ '%999999999d' % 1 }}").find("Error"), std::string::npos);
  EXPECT_NE(render("{{ '{:999999999}'.format(1) }}").find("Error"), std::string::npos);
  EXPECT_EQ(render("{{ 9223372036854775807 + 1 }}"), "ERROR: template:1:24: OverflowError: integer result too large");
}

TEST(ChatTemplate, TemplateIsReusableAndConst) {
  auto parsed = ChatTemplate::parse("{% set ns = namespace(n=0) %}{% for x in xs %}{% set ns.n = ns.n + x %}{% endfor %}{{ ns.n }}");
  ASSERT_TRUE(parsed.ok());
  const ChatTemplate& t = *parsed;
  EXPECT_EQ(*t.render(Json{{"xs", {1, 2, 3}}}), "6");
  EXPECT_EQ(*t.render(Json{{"xs", {10}}}), "10");  // nothing carried over from the first render
}

}  // namespace
