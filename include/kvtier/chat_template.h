// Chat templates: a small interpreter of the Jinja subset that models' chat templates use
// (`tokenizer.chat_template` in GGUF files), rendering as Hugging Face transformers does with
// jinja2's ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True) plus the loopcontrols
// extension, `{% generation %}`, `tojson` as Python's json.dumps(ensure_ascii=False), and the globals
// raise_exception(msg) and strftime_now(fmt).
//
// Errors (a template that does not parse, an unknown filter, raise_exception, a limit reached) come back
// as one message naming the template position: "template:LINE:COLUMN: Kind: what was wrong".
#pragma once

#include <cstddef>
#include <ctime>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "kvtier/status.h"

namespace kvtier {

namespace jinja {
struct Program;  // the parsed template (src/template/ast.h)
}

struct TemplateRenderOptions {
  // The sandbox's bounds, so that a hostile template can neither hang nor exhaust memory.
  size_t max_steps = 1'000'000;           // loop iterations and macro calls, all together
  size_t max_depth = 256;                 // nested macro calls
  size_t max_output_bytes = 16u << 20;    // the rendered text, and any one string or list built on the way
  size_t max_built_bytes = 1u << 30;      // all strings and lists built during the render, together
  // strftime_now() formats this time; unset: the current local time (as transformers does).
  std::optional<std::tm> now;
};

class ChatTemplate {
 public:
  // Parses a template; errors name the line and column.
  static Result<ChatTemplate> parse(std::string_view source);

  // Renders with the variables of `context` (an object: messages, tools, add_generation_prompt,
  // bos_token, ...). ordered_json keeps the key order of objects, which `tojson` and `items` reproduce
  // as Python dicts do; a plain nlohmann::json object iterates its keys sorted.
  Result<std::string> render(const nlohmann::ordered_json& context, const TemplateRenderOptions& options = {}) const;
  Result<std::string> render(const nlohmann::json& context, const TemplateRenderOptions& options = {}) const;

 private:
  explicit ChatTemplate(std::shared_ptr<const jinja::Program> program) : program_(std::move(program)) {}
  std::shared_ptr<const jinja::Program> program_;
};

}  // namespace kvtier
