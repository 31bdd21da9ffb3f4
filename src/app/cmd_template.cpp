// kvtier template: renders a chat template for people debugging a model's prompt format. The rendered text
// goes to stdout exactly (no newline added); an error is one line on stderr and exit status 1.
#include <cstdio>
#include <ctime>
#include <string>

#include "app/commands.h"
#include "app/loading.h"
#include "kvtier/chat.h"
#include "kvtier/file_io.h"
#include "kvtier/gguf.h"
#include "kvtier/tokenizer.h"

namespace kvtier::app {

namespace {

struct TemplateOptions {
  std::string model_path;     // the template and special tokens of this GGUF
  std::string template_name;  // --chat-template NAME|FILE
  std::string template_file;  // --chat-template-file
  std::string context_path;   // a whole context: messages, tools, add_generation_prompt, special tokens
  std::string messages_path;  // messages only (add_generation_prompt: true)
  bool no_generation_prompt = false;
  std::string now;            // --now YYYY-MM-DDTHH:MM:SS: strftime_now's clock
};

Result<nlohmann::ordered_json> read_json(const std::string& path, const char* what) {
  auto text = read_bounded_file(path, 64u << 20, what);
  if (!text.ok()) return text.status();
  auto json = nlohmann::ordered_json::parse(*text, nullptr, false);
  if (json.is_discarded()) return Status::error(std::string(what) + " '" + path + "': not valid JSON");
  return json;
}

int run(const TemplateOptions& o) {
  std::unique_ptr<gguf::File> file;
  std::unique_ptr<Tokenizer> tokenizer;
  if (!o.model_path.empty()) {
    auto opened = gguf::File::open(o.model_path);
    if (!opened.ok()) return fail(opened.error());
    file = std::move(*opened);
    auto tok = Tokenizer::from_gguf(*file);
    if (!tok.ok()) return fail(o.model_path + ": " + tok.error());
    tokenizer = std::move(*tok);
  }
  // --chat-template-file is always a file; --chat-template a built-in name or a file; neither: the model's.
  const std::string& choice = o.template_file.empty() ? o.template_name : o.template_file;
  if (choice.empty() && !file) return fail("give -m MODEL, --chat-template NAME|FILE or --chat-template-file");
  Result<ChatFormatter> formatter = load_chat_formatter(file.get(), tokenizer.get(), choice, o.template_file.empty());
  if (!formatter.ok()) return fail(formatter.error());

  nlohmann::ordered_json context = nlohmann::ordered_json::object();
  if (!o.context_path.empty()) {
    auto json = read_json(o.context_path, "context file");
    if (!json.ok()) return fail(json.error());
    if (!json->is_object()) return fail("context file '" + o.context_path + "': must be a JSON object");
    context = std::move(*json);
  } else if (!o.messages_path.empty()) {
    auto json = read_json(o.messages_path, "messages file");
    if (!json.ok()) return fail(json.error());
    context["messages"] = std::move(*json);
    context["add_generation_prompt"] = !o.no_generation_prompt;
  } else {
    return fail("give --context CTX.json or --messages M.json");
  }
  TemplateRenderOptions options;
  if (!o.now.empty()) {
    std::tm tm{};
    const char* end = ::strptime(o.now.c_str(), "%Y-%m-%dT%H:%M:%S", &tm);
    if (end == nullptr || *end != '\0') return fail("--now " + o.now + ": expected YYYY-MM-DDTHH:MM:SS");
    options.now = tm;
  }
  auto text = formatter->render_context(std::move(context), options);
  if (!text.ok()) return fail(text.error());
  std::fwrite(text->data(), 1, text->size(), stdout);
  return std::fflush(stdout) == 0 ? 0 : 1;
}

}  // namespace

Command add_template_command(CLI::App& app) {
  auto o = std::make_shared<TemplateOptions>();
  app.add_option("-m,--model", o->model_path, "GGUF model: its tokenizer.chat_template and special tokens")
      ->check(CLI::ExistingFile);
  auto* name = app.add_option("--chat-template", o->template_name, "a built-in template name or a Jinja file");
  auto* file = app.add_option("--chat-template-file", o->template_file, "a Jinja template file");
  name->excludes(file);
  auto* context = app.add_option("--context", o->context_path,
                                 "JSON object: messages, tools, add_generation_prompt, bos_token, …");
  auto* messages = app.add_option("--messages", o->messages_path, "JSON array of messages");
  context->excludes(messages);
  app.add_option("--now", o->now, "the time strftime_now() sees, YYYY-MM-DDTHH:MM:SS (default: now)");
  app.add_flag("--no-generation-prompt", o->no_generation_prompt,
               "with --messages: render without the assistant's generation prompt");
  return [o] { return run(*o); };
}

}  // namespace kvtier::app
