#include "app/cli.h"
#include "app/main_entry.h"

#include <cstdio>

namespace kvtier::app {

int fail(const std::string& message) {
  std::fprintf(stderr, "kvtier: error: %s\n", message.c_str());
  return 1;
}

std::unique_ptr<Cli> make_cli() {
  auto cli = std::make_unique<Cli>();
  cli->app.require_subcommand(1);
  auto add = [&](const char* name, const char* description, Command (*registrar)(CLI::App&)) {
    CLI::App* sub = cli->app.add_subcommand(name, description);
    cli->commands.emplace_back(sub, registrar(*sub));
  };
  add("run", "generate text from a prompt", add_run_command);
  add("chat", "a conversation with an instruct model (terminal or pipe)", add_chat_command);
  add("template", "render a model's chat template (for debugging prompts)", add_template_command);
  add("perplexity", "perplexity of a text file (llama.cpp protocol)", add_perplexity_command);
  add("info", "summarise a GGUF file's metadata and tensors", add_info_command);
  add("bench", "prefill and decode speed (like llama-bench)", add_bench_command);
  add("recall", "long-range retrieval: a repeated span's NLL, f16 vs a quantized KV cache", add_recall_command);
  add("plan", "how many tokens a KV ladder and budget hold in RAM and on disk", add_plan_command);
  add("serve", "an OpenAI-compatible HTTP server (docs/server.md)", add_serve_command);
  return cli;
}

int parse_cli(Cli& cli, int argc, const char* const* argv) {
  // CLI11 reports an unknown first word as "A subcommand is required"; name it instead.
  if (argc > 1 && argv[1][0] != '-') {
    const std::string word = argv[1];
    bool known = false;
    std::string names;
    for (auto& [sub, run] : cli.commands) {
      known = known || sub->get_name() == word;
      names += (names.empty() ? "" : ", ") + sub->get_name();
    }
    if (!known) {
      std::fprintf(stderr, "kvtier: error: unknown command '%s' (commands: %s; see kvtier --help)\n", word.c_str(),
                   names.c_str());
      return 2;
    }
  }
  // llama-server spells the slot count "-np"; CLI11 takes one letter after a single dash.
  std::vector<std::string> args(argv, argv + argc);
  for (std::string& a : args) {
    if (a == "-np") a = "--parallel";
  }
  std::vector<const char*> rewritten;
  for (const std::string& a : args) rewritten.push_back(a.c_str());
  try {
    cli.app.parse(argc, rewritten.data());
  } catch (const CLI::CallForHelp& e) {
    return cli.app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return cli.app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "kvtier: error: %s (see kvtier --help)\n", e.what());
    return 2;
  }
  return -1;
}

int run_parsed(Cli& cli) {
  for (auto& [sub, run] : cli.commands) {
    if (sub->parsed()) return run();
  }
  return fail("no subcommand given");
}

int cli_main(int argc, const char* const* argv) {
  auto cli = make_cli();
  if (const int code = parse_cli(*cli, argc, argv); code >= 0) return code;
  return run_parsed(*cli);
}

}  // namespace kvtier::app
