// The kvtier command line: every subcommand registered on one CLI11 app. Parsing is separate from running so
// that the option parser can be fuzzed (fuzz/app_fuzz.cpp) without running anything.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "app/commands.h"

namespace kvtier::app {

struct Cli {
  CLI::App app{"kvtier: local LLM inference with a tiered, quantized KV cache"};
  std::vector<std::pair<CLI::App*, Command>> commands;  // each subcommand and what runs it
};

std::unique_ptr<Cli> make_cli();

// Parses argv. Returns the exit code to end with when parsing decided it (help: 0, a bad argument: 2 after one
// "kvtier: error: …" line), or -1 when a subcommand was parsed and should run.
int parse_cli(Cli& cli, int argc, const char* const* argv);

// The parsed subcommand's exit code.
int run_parsed(Cli& cli);

}  // namespace kvtier::app
