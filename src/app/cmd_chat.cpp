// kvtier chat: a conversation with an instruct model on a terminal (line editing, history, slash commands) or
// through a pipe (one message per line, or the whole input as one message; only answers on stdout). Each turn
// evaluates only the tokens the cache does not hold yet; past -c the oldest turns are dropped (docs/chat.md).
#include <editline/readline.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <string>

#include "app/commands.h"
#include "app/loading.h"
#include "app/options.h"
#include "app/progress.h"
#include "kvtier/chat.h"
#include "kvtier/file_io.h"
#include "kvtier/sampling.h"
#include "kvtier/session.h"
#include "kvtier/stop_strings.h"

namespace kvtier::app {

namespace {

struct ChatOptions {
  std::string model_path;
  ModelLoadOptions load;  // --mlock, --no-mmap
  std::string system;
  std::string chat_template;  // --chat-template NAME|FILE
  int n_ctx = 0;
  int n_predict = -1;         // per answer; -1: until an end of turn (or a quarter of the context)
  int threads = 0;
  bool whole_input = false;   // piped stdin: all of it is one message
  bool verbose = false;
  std::vector<std::string> stop_strings;
  SamplingParams sampling;
  KvCacheOptions kv;
};

volatile sig_atomic_t g_stop_answer = 0;
extern "C" void on_sigint(int) { g_stop_answer = 1; }

const char* kHelp =
    "/clear        forget the conversation (keeps the system prompt)\n"
    "/save FILE    save the conversation: FILE (the KV cache, a session file) and FILE.json (the messages)\n"
    "/load FILE    continue a conversation saved with /save\n"
    "/stats        the cache's tiers and bytes, tokens reused and evaluated\n"
    "/help         this text\n"
    "/exit         leave (also Ctrl-D)\n"
    "A line ending in \\ continues on the next line; \"\"\" starts and ends a block of several lines.\n"
    "Ctrl-C stops the answer being written.\n";

class Conversation {
 public:
  Conversation(const ChatOptions& o, Model& model, const Tokenizer& tokenizer, ChatFormatter formatter,
               std::unique_ptr<KvCache> cache, ThreadPool& pool, int n_ctx)
      : o_(o), tokenizer_(tokenizer), formatter_(std::move(formatter)), session_(model, std::move(cache), pool),
        sampler_(o.sampling), n_ctx_(n_ctx) {
    session_.set_warning_handler([](const std::string& w) { std::fprintf(stderr, "warning: %s\n", w.c_str()); });
    clear();
    stops_ = o.stop_strings;
    for (const std::string& s : formatter_.turn_end_strings()) stops_.push_back(s);
  }

  void clear() {
    messages_ = nlohmann::ordered_json::array();
    if (!o_.system.empty()) messages_.push_back({{"role", "system"}, {"content", o_.system}});
  }

  // One user message and the streamed answer. Errors of the turn (a message too long for -c) are reported
  // and the conversation goes on; a failure of the model or cache ends the program.
  Status turn(const std::string& user_text) {
    messages_.push_back({{"role", "user"}, {"content", user_text}});
    auto prompt = fitted_prompt();
    if (!prompt.ok()) {
      messages_.erase(messages_.end() - 1);
      std::fprintf(stderr, "kvtier: %s\n", prompt.error().c_str());
      return Status();
    }
    const auto start = std::chrono::steady_clock::now();
    const std::vector<int32_t> to_evaluate = session_.reuse_prefix(*prompt);
    last_reused_ = static_cast<int>(prompt->size() - to_evaluate.size());
    last_evaluated_ = static_cast<int>(to_evaluate.size());
    total_reused_ += last_reused_;
    total_evaluated_ += last_evaluated_;
    for (int32_t t : to_evaluate) sampler_.accept(t);
    if (Status s = session_.append(to_evaluate); !s.ok()) return s;
    const double prompt_seconds = seconds_since(start);
    if (o_.verbose) {
      std::fprintf(stderr, "[reused %d tokens, evaluated %d in %.3f s]\n", last_reused_, last_evaluated_,
                   prompt_seconds);
    }

    StreamingDetokenizer detok(tokenizer_);
    StopStringFilter stops(stops_);
    std::string answer;
    const int limit = o_.n_predict > 0 ? o_.n_predict : 1 << 30;
    const auto decode_start = std::chrono::steady_clock::now();
    int generated = 0;
    g_stop_answer = 0;
    bool output_ok = true;
    for (; generated < limit && !g_stop_answer && !stops.stopped(); ++generated) {
      const int32_t next = sampler_.sample(session_.last_logits().data(), session_.model().config().n_vocab);
      if (tokenizer_.is_end_of_generation(next)) break;
      const std::string text = stops.push(detok.push(next));
      answer += text;
      output_ok = output_ok && write(text);
      if (stops.stopped() || !output_ok) break;
      if (session_.n_past() >= n_ctx_) {
        if (Status s = shift(); !s.ok()) return s;
      }
      if (Status s = session_.append({next}); !s.ok()) return s;
    }
    const std::string rest = stops.push(detok.flush()) + stops.flush();
    answer += rest;
    output_ok = output_ok && write(rest + "\n");
    if (g_stop_answer) std::fprintf(stderr, "[stopped]\n");
    g_stop_answer = 0;
    messages_.push_back({{"role", "assistant"}, {"content", answer}});
    const double decode_seconds = seconds_since(decode_start);
    if (o_.verbose) {
      std::fprintf(stderr, "[generated %d tokens in %.3f s, %.1f tok/s; %d of %d positions in use]\n", generated,
                   decode_seconds, generated > 0 ? generated / decode_seconds : 0.0, session_.n_past(), n_ctx_);
    }
    if (!output_ok) return Status::error("stdout was closed");
    return Status();
  }

  void print_stats() {
    std::fprintf(stderr,
                 "conversation: %zu messages, %d of %d positions in use; last turn reused %d tokens and evaluated %d; "
                 "in all reused %lld, evaluated %lld; %d context shifts\n%s\n",
                 messages_.size(), session_.n_past(), n_ctx_, last_reused_, last_evaluated_,
                 static_cast<long long>(total_reused_), static_cast<long long>(total_evaluated_), shifts_,
                 session_.cache().describe().c_str());
  }

  Status save(const std::string& path) {
    if (Status s = check_session_path(path); !s.ok()) return s;
    if (Status s = session_.save(path); !s.ok()) return s;
    std::ofstream out(path + ".json", std::ios::binary | std::ios::trunc);
    out << messages_.dump(1);
    if (!out) return Status::error("cannot write " + path + ".json");
    return Status();
  }

  Status load(const std::string& path) {
    auto text = read_bounded_file(path + ".json", 256u << 20, "conversation file");
    if (!text.ok()) return text.status();
    auto messages = nlohmann::ordered_json::parse(*text, nullptr, false);
    if (messages.is_discarded() || !messages.is_array()) {
      return Status::error(path + ".json: not a JSON array of messages");
    }
    if (Status s = check_session_path(path); !s.ok()) return s;
    if (Status s = session_.restore(path); !s.ok()) return s;
    messages_ = std::move(messages);
    return Status();
  }

 private:
  // The conversation's prompt tokens, oldest turns dropped (the system prompt kept) until it leaves room for an
  // answer: a quarter of the context, or -n when it is smaller.
  Result<std::vector<int32_t>> fitted_prompt() {
    const int reserve = o_.n_predict > 0 ? std::min(o_.n_predict, n_ctx_ / 2) : n_ctx_ / 4;
    for (;;) {
      auto text = formatter_.render(messages_, true);
      if (!text.ok()) return text.status();
      std::vector<int32_t> tokens = formatter_.tokenize(*text);
      if (static_cast<int>(tokens.size()) + reserve <= n_ctx_) return tokens;
      // Drop the oldest turn: the first non-system message and what follows it up to the next user message.
      size_t first = 0;
      while (first < messages_.size() && messages_[first]["role"] == "system") ++first;
      size_t end = first + 1;
      while (end < messages_.size() && messages_[end]["role"] != "user") ++end;
      if (end >= messages_.size()) {  // only the new message is left
        return Status::error("the message (" + std::to_string(tokens.size()) +
                             " tokens with the template) leaves no room for an answer in -c " +
                             std::to_string(n_ctx_) + "; raise -c");
      }
      messages_.erase(messages_.begin() + static_cast<std::ptrdiff_t>(first),
                      messages_.begin() + static_cast<std::ptrdiff_t>(end));
      ++dropped_turns_;
      if (o_.verbose) std::fprintf(stderr, "[context: dropped the oldest turn]\n");
    }
  }

  // The answer reached -c: keep the system prompt's tokens, drop half of the rest, evaluate the kept tail again.
  Status shift() {
    nlohmann::ordered_json system = nlohmann::ordered_json::array();
    for (const auto& m : messages_) {
      if (m["role"] == "system") system.push_back(m);
    }
    int n_keep = 0;
    if (!system.empty()) {
      auto text = formatter_.render(system, false);
      if (text.ok()) {
        const std::vector<int32_t> prefix = formatter_.tokenize(*text);
        while (n_keep < static_cast<int>(prefix.size()) && n_keep < session_.n_past() &&
               prefix[n_keep] == session_.tokens()[n_keep]) {
          ++n_keep;
        }
      }
    } else if (!session_.tokens().empty() && session_.tokens()[0] == tokenizer_.bos_id()) {
      n_keep = 1;
    }
    const int discard = (session_.n_past() - n_keep) / 2;
    auto redone = session_.shift_context(n_keep, discard);
    if (!redone.ok()) return redone.status();
    ++shifts_;
    if (o_.verbose) {
      std::fprintf(stderr, "\n[context shift: dropped %d tokens, evaluated %d again]\n", discard, *redone);
    }
    return Status();
  }

  static bool write(const std::string& text) {
    if (text.empty()) return true;
    return std::fwrite(text.data(), 1, text.size(), stdout) == text.size() && std::fflush(stdout) == 0;
  }

  const ChatOptions& o_;
  const Tokenizer& tokenizer_;
  ChatFormatter formatter_;
  Session session_;
  Sampler sampler_;
  const int n_ctx_;
  nlohmann::ordered_json messages_;
  std::vector<std::string> stops_;
  int last_reused_ = 0, last_evaluated_ = 0, shifts_ = 0, dropped_turns_ = 0;
  int64_t total_reused_ = 0, total_evaluated_ = 0;
};

// Reads the next message from a terminal with line editing: continuation lines ("\" at the end) and """
// blocks. Returns false at end of input.
bool read_terminal_message(std::string& message) {
  message.clear();
  bool in_block = false;
  const char* prompt = "> ";
  for (;;) {
    char* line = ::readline(prompt);
    if (line == nullptr) return !message.empty();
    std::string text(line);
    std::free(line);
    if (text == "\"\"\"") {
      if (in_block) break;
      in_block = true;
      prompt = ". ";
      continue;
    }
    if (in_block) {
      message += text + "\n";
      continue;
    }
    if (!text.empty() && text.back() == '\\') {
      message += text.substr(0, text.size() - 1) + "\n";
      prompt = ". ";
      continue;
    }
    message += text;
    break;
  }
  if (in_block && !message.empty() && message.back() == '\n') message.pop_back();
  if (!message.empty()) ::add_history(message.c_str());
  return true;
}

// A slash command; returns false when the conversation should end.
bool run_command(const std::string& line, Conversation& chat) {
  const size_t space = line.find(' ');
  const std::string name = line.substr(0, space);
  const std::string arg = space == std::string::npos ? "" : line.substr(line.find_first_not_of(' ', space));
  if (name == "/exit" || name == "/quit") return false;
  if (name == "/help") {
    std::fputs(kHelp, stderr);
  } else if (name == "/clear") {
    chat.clear();
    std::fprintf(stderr, "[conversation cleared]\n");
  } else if (name == "/stats") {
    chat.print_stats();
  } else if ((name == "/save" || name == "/load") && !arg.empty()) {
    const Status s = name == "/save" ? chat.save(arg) : chat.load(arg);
    if (s.ok()) {
      std::fprintf(stderr, "[%s %s]\n", name == "/save" ? "saved" : "loaded", arg.c_str());
    } else {
      std::fprintf(stderr, "kvtier: %s\n", s.message().c_str());
    }
  } else {
    std::fprintf(stderr, "unknown command %s (/help lists them)\n", line.c_str());
  }
  return true;
}

int run(const ChatOptions& o) {
  if (Status s = validate_sampling_params(o.sampling); !s.ok()) return fail(s.message());
  ::signal(SIGPIPE, SIG_IGN);
  auto loaded = load_model_and_tokenizer(o.model_path, o.load);
  if (!loaded.ok()) return fail(loaded.error());
  Model& model = *loaded->model;
  const Tokenizer& tokenizer = *loaded->tokenizer;
  const ModelConfig& c = model.config();

  Result<ChatFormatter> formatter = load_chat_formatter(&model.file(), &tokenizer, o.chat_template);
  if (!formatter.ok()) return fail(formatter.error());

  const int n_ctx = o.n_ctx > 0 ? o.n_ctx : std::min(c.n_ctx_train, 4096);
  if (Status s = check_run_memory(c, o.kv, RunMemoryRequest{.n_ctx = n_ctx}); !s.ok()) return fail(s.message());
  ThreadPool pool(o.threads);
  auto cache = make_kv_cache(c, n_ctx, o.kv, &pool);
  if (!cache.ok()) return fail(cache.error());
  const bool terminal = ::isatty(STDIN_FILENO) != 0;
  if (terminal || o.verbose) {
    std::fprintf(stderr, "kvtier chat: %s, template %s, context %d; /help for commands, Ctrl-D to leave\n",
                 c.name.c_str(), formatter->origin().c_str(), n_ctx);
  }
  Conversation chat(o, model, tokenizer, std::move(*formatter), std::move(*cache), pool, n_ctx);

  struct sigaction sa = {};
  sa.sa_handler = on_sigint;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  sigaction(SIGINT, &sa, nullptr);

  auto handle = [&](const std::string& message) -> int {  // -1: go on; else the exit code
    if (message.empty()) return -1;
    if (message[0] == '/') return run_command(message, chat) ? -1 : 0;
    if (Status s = chat.turn(message); !s.ok()) return fail(s.message());
    return -1;
  };
  if (terminal) {
    std::string message;
    while (read_terminal_message(message)) {
      if (const int code = handle(message); code >= 0) return code;
    }
    std::fputc('\n', stderr);
    return 0;
  }
  if (o.whole_input) {
    auto text = read_bounded_file("-", kMaxTextFileBytes, "message");
    if (!text.ok()) return fail(text.error());
    std::string message = *text;
    while (!message.empty() && message.back() == '\n') message.pop_back();
    const int code = handle(message);
    return code >= 0 ? code : 0;
  }
  for (std::string line; std::getline(std::cin, line);) {
    if (const int code = handle(line); code >= 0) return code;
  }
  return 0;
}

}  // namespace

Command add_chat_command(CLI::App& app) {
  auto o = std::make_shared<ChatOptions>();
  app.add_option("-m,--model", o->model_path, "GGUF model file")->required()->check(CLI::ExistingFile);
  app.add_option("--system", o->system, "system prompt");
  app.add_option("--chat-template", o->chat_template,
                 "template: a built-in name (chatml, llama3, llama2, gemma, phi3) or a Jinja file "
                 "(default: the model's tokenizer.chat_template, else chatml)");
  app.add_option("-c,--ctx-size", o->n_ctx, "context size in tokens (default: min(trained, 4096))")
      ->check(CLI::Range(0, 1 << 24));
  app.add_option("-n,--n-predict", o->n_predict, "most tokens per answer (default: until the end of the turn)")
      ->check(CLI::Range(1, 1 << 24));
  add_threads_option(app, o->threads);
  add_weight_options(app, o->load);
  add_kv_options(app, o->kv);
  add_sampling_options(app, o->sampling);
  app.add_option("--stop", o->stop_strings, "end the answer when it would contain STR (repeatable; never printed)")
      ->allow_extra_args(false);
  app.add_flag("--whole-input", o->whole_input,
               "piped standard input is one message (default: one message per line)");
  app.add_flag("-v,--verbose", o->verbose, "print tokens reused and evaluated per turn, speeds, context shifts");
  return [o] { return run(*o); };
}

}  // namespace kvtier::app
