#include "kvtier/chat.h"

#include <utility>

namespace kvtier {

namespace {

struct Builtin {
  const char* name;
  const char* source;
};

// Written for kvtier from each family's documented prompt format.
const Builtin kBuiltins[] = {
    {"chatml",
     "{%- for message in messages -%}"
     "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' -}}"
     "{%- endfor -%}"
     "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"},
    {"llama3",
     "{{- bos_token -}}"
     "{%- for message in messages -%}"
     "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim + "
     "'<|eot_id|>' -}}"
     "{%- endfor -%}"
     "{%- if add_generation_prompt -%}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' -}}{%- endif -%}"},
    {"llama2",
     "{%- set system = namespace(text='') -%}"
     "{{- bos_token -}}"
     "{%- for message in messages -%}"
     "{%- if message['role'] == 'system' -%}{%- set system.text = message['content'] | trim + '\\n\\n' -%}"
     "{%- elif message['role'] == 'user' -%}"
     "{{- '[INST] ' + system.text + message['content'] | trim + ' [/INST]' -}}{%- set system.text = '' -%}"
     "{%- elif message['role'] == 'assistant' -%}{{- ' ' + message['content'] | trim + eos_token -}}"
     "{%- endif -%}"
     "{%- endfor -%}"},
    {"gemma",
     "{%- set system = namespace(text='') -%}"
     "{{- bos_token -}}"
     "{%- for message in messages -%}"
     "{%- if message['role'] == 'system' -%}{%- set system.text = message['content'] | trim + '\\n\\n' -%}"
     "{%- else -%}"
     "{%- set role = 'model' if message['role'] == 'assistant' else 'user' -%}"
     "{{- '<start_of_turn>' + role + '\\n' + (system.text if role == 'user' else '') + message['content'] | trim + "
     "'<end_of_turn>\\n' -}}"
     "{%- if role == 'user' -%}{%- set system.text = '' -%}{%- endif -%}"
     "{%- endif -%}"
     "{%- endfor -%}"
     "{%- if add_generation_prompt -%}{{- '<start_of_turn>model\\n' -}}{%- endif -%}"},
    {"phi3",
     "{%- for message in messages -%}"
     "{{- '<|' + message['role'] + '|>\\n' + message['content'] + '<|end|>\\n' -}}"
     "{%- endfor -%}"
     "{%- if add_generation_prompt -%}{{- '<|assistant|>\\n' -}}{%- else -%}{{- eos_token -}}{%- endif -%}"},
};

// Texts that end a turn in some family's format.
const char* const kTurnEndMarkers[] = {"<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>", "<|endoftext|>",
                                       "</s>"};

std::string token_text_or_empty(const Tokenizer& tokenizer, int32_t id) {
  return id >= 0 ? std::string(tokenizer.token_text(id)) : std::string();
}

// Content as templates expect it: a string. An array of parts keeps its text parts, joined by newlines.
Result<nlohmann::ordered_json> normalize_messages(const nlohmann::ordered_json& messages) {
  if (!messages.is_array()) return Status::error("messages must be an array");
  nlohmann::ordered_json out = nlohmann::ordered_json::array();
  for (size_t i = 0; i < messages.size(); ++i) {
    const auto& m = messages[i];
    const std::string where = "messages[" + std::to_string(i) + "]";
    if (!m.is_object()) return Status::error(where + " must be an object");
    if (!m.contains("role") || !m["role"].is_string()) return Status::error(where + ".role must be a string");
    nlohmann::ordered_json copy = m;
    if (m.contains("content") && m["content"].is_array()) {
      std::string text;
      for (const auto& part : m["content"]) {
        if (!part.is_object() || part.value("type", "") != "text" || !part.contains("text") ||
            !part["text"].is_string()) {
          return Status::error(where + ".content: only parts of type \"text\" are supported");
        }
        text += (text.empty() ? "" : "\n") + part["text"].get<std::string>();
      }
      copy["content"] = text;
    } else if (m.contains("content") && !m["content"].is_string() && !m["content"].is_null()) {
      return Status::error(where + ".content must be a string, null or an array of text parts");
    } else if (!m.contains("content")) {
      copy["content"] = "";
    }
    out.push_back(std::move(copy));
  }
  return out;
}

}  // namespace

const std::vector<std::string>& builtin_chat_template_names() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> n;
    for (const Builtin& b : kBuiltins) n.push_back(b.name);
    return n;
  }();
  return names;
}

Result<std::string> builtin_chat_template(const std::string& name) {
  std::string names;
  for (const Builtin& b : kBuiltins) {
    if (name == b.name) return std::string(b.source);
    names += (names.empty() ? "" : ", ") + std::string(b.name);
  }
  return Status::error("unknown chat template '" + name + "' (built-in: " + names + ", or a file)");
}

Result<ChatFormatter> ChatFormatter::from_model(const gguf::File& file, const Tokenizer& tokenizer,
                                                const std::string& name) {
  const std::string key = name.empty() ? "tokenizer.chat_template" : "tokenizer.chat_template." + name;
  if (file.find(key)) {
    auto source = file.get_string(key);
    if (!source.ok()) return Status::error(key + ": " + source.error());
    return from_source(std::string(*source), key, &tokenizer);
  }
  if (!name.empty()) return Status::error("the model has no " + key);
  return from_source(*builtin_chat_template("chatml"), "chatml (built-in; the model has no tokenizer.chat_template)",
                     &tokenizer);
}

Result<ChatFormatter> ChatFormatter::from_source(const std::string& source, const std::string& origin,
                                                 const Tokenizer* tokenizer) {
  auto parsed = ChatTemplate::parse(source);
  if (!parsed.ok()) return Status::error("chat template " + origin + ": " + parsed.error());
  ChatFormatter f(std::move(*parsed), origin, tokenizer);
  for (const char* marker : kTurnEndMarkers) {
    if (source.find(marker) != std::string::npos) f.turn_ends_.push_back(marker);
  }
  return f;
}

void ChatFormatter::add_special_tokens(nlohmann::ordered_json& context) const {
  if (tokenizer_ == nullptr) return;
  const std::pair<const char*, int32_t> specials[] = {
      {"bos_token", tokenizer_->bos_id()}, {"eos_token", tokenizer_->eos_id()}, {"unk_token", tokenizer_->unk_id()}};
  for (const auto& [key, id] : specials) {
    if (!context.contains(key)) context[key] = token_text_or_empty(*tokenizer_, id);
  }
}

Result<std::string> ChatFormatter::render(const nlohmann::ordered_json& messages, bool add_generation_prompt,
                                          const nlohmann::ordered_json& tools) const {
  auto normalized = normalize_messages(messages);
  if (!normalized.ok()) return normalized.status();
  nlohmann::ordered_json context = nlohmann::ordered_json::object();
  context["messages"] = std::move(*normalized);
  if (!tools.is_null()) context["tools"] = tools;
  context["add_generation_prompt"] = add_generation_prompt;
  add_special_tokens(context);
  auto text = template_.render(context);
  if (!text.ok()) return Status::error("chat template " + origin_ + ": " + text.error());
  return std::move(*text);
}

Result<std::string> ChatFormatter::render_context(nlohmann::ordered_json context,
                                                  const TemplateRenderOptions& options) const {
  if (!context.is_object()) return Status::error("the template context must be a JSON object");
  if (context.contains("messages")) {
    auto normalized = normalize_messages(context["messages"]);
    if (!normalized.ok()) return normalized.status();
    context["messages"] = std::move(*normalized);
  }
  add_special_tokens(context);
  auto text = template_.render(context, options);
  if (!text.ok()) return Status::error("chat template " + origin_ + ": " + text.error());
  return std::move(*text);
}

std::vector<int32_t> ChatFormatter::tokenize(const std::string& prompt) const {
  const std::string bos = token_text_or_empty(*tokenizer_, tokenizer_->bos_id());
  const bool has_bos = !bos.empty() && prompt.compare(0, bos.size(), bos) == 0;
  return tokenizer_->encode(prompt, tokenizer_->add_bos_default() && !has_bos, true);
}

}  // namespace kvtier
