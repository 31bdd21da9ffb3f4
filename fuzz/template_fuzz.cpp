// libFuzzer target for the chat-template interpreter: parse arbitrary bytes as a template and render it
// over a fixed conversation (messages with tool calls, tools, special tokens). If the input contains a NUL
// byte, what follows it is read as the JSON context instead, so the values are fuzzed too. The interpreter
// must never crash, hang, or exceed its bounds; errors must be one line naming a position.
// Build and run: scripts/fuzz_smoke.sh [seconds].
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "kvtier/chat_template.h"

namespace {

void require(bool ok, const char* what, const std::string& detail = {}) {
  if (!ok) {
    std::fprintf(stderr, "template_fuzz: invariant violated: %s %s\n", what, detail.c_str());
    std::abort();
  }
}

const nlohmann::ordered_json& fixed_context() {
  static const nlohmann::ordered_json context = nlohmann::ordered_json::parse(R"({
    "messages": [
      {"role": "system", "content": "You are helpful."},
      {"role": "user", "content": "Weather in Paris? \"quotes\" {{ x }} ünïcödé ✓"},
      {"role": "assistant", "content": "", "tool_calls": [{"id": "call_1", "type": "function",
        "function": {"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}}]},
      {"role": "tool", "tool_call_id": "call_1", "name": "get_weather", "content": "{\"temp\": 21}"},
      {"role": "user", "content": [{"type": "text", "text": "thanks"}, {"type": "image"}]}
    ],
    "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Get the weather",
      "parameters": {"type": "object", "properties": {"city": {"type": "string"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}}, "required": ["city"]}}}],
    "add_generation_prompt": true, "bos_token": "<s>", "eos_token": "</s>", "n": 3, "f": 2.5, "none": null
  })");
  return context;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view input(reinterpret_cast<const char*>(data), size);
  std::string_view source = input;
  nlohmann::ordered_json context = fixed_context();
  if (size_t nul = input.find('\0'); nul != std::string_view::npos) {
    source = input.substr(0, nul);
    auto parsed = nlohmann::ordered_json::parse(input.substr(nul + 1), nullptr, /*allow_exceptions=*/false);
    if (parsed.is_object()) context = std::move(parsed);
  }

  auto parsed = kvtier::ChatTemplate::parse(source);
  if (!parsed.ok()) {
    require(parsed.error().rfind("template", 0) == 0, "parse errors start with the position", parsed.error());
    return 0;
  }
  // Small bounds keep each run fast; they are what the sandbox enforces, whatever their size.
  kvtier::TemplateRenderOptions options;
  options.max_steps = 20000;
  options.max_depth = 64;
  options.max_output_bytes = 1u << 20;
  options.max_built_bytes = 32u << 20;
  std::tm now{};
  now.tm_year = 124;
  now.tm_mon = 6;
  now.tm_mday = 26;
  options.now = now;
  auto rendered = parsed->render(context, options);
  if (rendered.ok()) {
    require(rendered->size() <= options.max_output_bytes, "output within max_output_bytes");
  } else {
    require(rendered.error().rfind("template", 0) == 0, "render errors start with the position", rendered.error());
    require(rendered.error().find('\n') == std::string::npos, "errors are one line", rendered.error());
  }
  return 0;
}
