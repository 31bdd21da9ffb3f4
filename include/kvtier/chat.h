// Chat: OpenAI-style messages -> the model's prompt text (its Jinja chat template, kvtier/chat_template.h) ->
// tokens, with the GGUF's special tokens in the template's context. Used by `kvtier chat`, `kvtier template`
// and the server.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "kvtier/chat_template.h"
#include "kvtier/gguf.h"
#include "kvtier/status.h"
#include "kvtier/tokenizer.h"

namespace kvtier {

// The built-in templates `--chat-template NAME` selects: chatml (llama.cpp's fallback when a GGUF has none),
// llama3, llama2 (also Mistral's [INST] format), gemma, phi3.
const std::vector<std::string>& builtin_chat_template_names();
// The Jinja source of a built-in, or an error listing the names.
Result<std::string> builtin_chat_template(const std::string& name);

class ChatFormatter {
 public:
  // The template a model asks for: its GGUF's tokenizer.chat_template, or ChatML when it has none
  // (as llama.cpp does). `name` picks tokenizer.chat_template.<name> instead (e.g. "tool_use").
  static Result<ChatFormatter> from_model(const gguf::File& file, const Tokenizer& tokenizer,
                                          const std::string& name = "");
  // A template given as text (a built-in's, or a file's); `origin` names it in messages.
  // `tokenizer` may be null (`kvtier template` without a model): special tokens then come from the context
  // alone, and tokenize() must not be called.
  static Result<ChatFormatter> from_source(const std::string& source, const std::string& origin,
                                           const Tokenizer* tokenizer);

  // The prompt text for `messages` (an array of {role, content, [tool_calls], [tool_call_id], [name]}; content
  // a string or an array of {"type": "text", "text": …} parts, joined), with the generation prompt of the
  // assistant's turn when `add_generation_prompt`; `tools` (an array, or null) goes to templates that use it.
  Result<std::string> render(const nlohmann::ordered_json& messages, bool add_generation_prompt,
                             const nlohmann::ordered_json& tools = nullptr) const;
  // Renders a whole template context as given (`kvtier template --context`): special tokens are added only
  // where the context lacks them.
  // `options` can pin strftime_now's clock (`kvtier template --now`).
  Result<std::string> render_context(nlohmann::ordered_json context, const TemplateRenderOptions& options = {}) const;

  // Tokens of a rendered prompt: special-token texts become their ids; BOS is added when the tokenizer adds
  // one and the text does not already start with it (templates that write {{ bos_token }} themselves must
  // not get a second one).
  std::vector<int32_t> tokenize(const std::string& prompt) const;

  // Texts that end an assistant turn in this template and are not single tokens of the vocabulary (e.g.
  // "<|im_end|>" under ChatML on a model without it): generation stops on them as on a stop string.
  const std::vector<std::string>& turn_end_strings() const { return turn_ends_; }
  const std::string& origin() const { return origin_; }

 private:
  ChatFormatter(ChatTemplate tmpl, std::string origin, const Tokenizer* tokenizer)
      : template_(std::move(tmpl)), origin_(std::move(origin)), tokenizer_(tokenizer) {}
  void add_special_tokens(nlohmann::ordered_json& context) const;

  ChatTemplate template_;
  std::string origin_;
  const Tokenizer* tokenizer_;  // may be null
  std::vector<std::string> turn_ends_;
};

}  // namespace kvtier
