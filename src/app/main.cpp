// kvtier: run GGUF models with a tiered, quantized KV cache.
#include <cstdio>
#include <string>
#include <vector>

#include "app/commands.h"

namespace kvtier::app {
int fail(const std::string& message) {
  std::fprintf(stderr, "kvtier: error: %s\n", message.c_str());
  return 1;
}
}  // namespace kvtier::app

int main(int argc, char** argv) {
  using namespace kvtier::app;
  CLI::App app{"kvtier: local LLM inference with a tiered, quantized KV cache"};
  app.require_subcommand(1);
  std::vector<std::pair<CLI::App*, Command>> commands;
  commands.emplace_back(app.add_subcommand("run", "generate text from a prompt"), Command());
  commands.back().second = add_run_command(*commands.back().first);
  commands.emplace_back(app.add_subcommand("perplexity", "perplexity of a text file (llama.cpp protocol)"),
                        Command());
  commands.back().second = add_perplexity_command(*commands.back().first);
  commands.emplace_back(app.add_subcommand("info", "summarise a GGUF file's metadata and tensors"), Command());
  commands.back().second = add_info_command(*commands.back().first);
  commands.emplace_back(app.add_subcommand("bench", "prefill and decode speed (like llama-bench)"), Command());
  commands.back().second = add_bench_command(*commands.back().first);
  commands.emplace_back(app.add_subcommand("recall", "long-range retrieval: a repeated span's NLL, f16 vs a quantized KV cache"),
                        Command());
  commands.back().second = add_recall_command(*commands.back().first);
  commands.emplace_back(app.add_subcommand("plan", "how many tokens a KV ladder and budget hold in RAM and on disk"),
                        Command());
  commands.back().second = add_plan_command(*commands.back().first);
  // CLI11 reports an unknown first word as "A subcommand is required"; name it instead.
  if (argc > 1 && argv[1][0] != '-') {
    const std::string word = argv[1];
    bool known = false;
    std::string names;
    for (auto& [sub, run] : commands) {
      known = known || sub->get_name() == word;
      names += (names.empty() ? "" : ", ") + sub->get_name();
    }
    if (!known) {
      std::fprintf(stderr, "kvtier: error: unknown command '%s' (commands: %s; see kvtier --help)\n", word.c_str(),
                   names.c_str());
      return 2;
    }
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "kvtier: error: %s (see kvtier --help)\n", e.what());
    return 2;
  }
  for (auto& [sub, run] : commands) {
    if (sub->parsed()) return run();
  }
  return fail("no subcommand given");
}
