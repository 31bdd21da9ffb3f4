// Subcommands of the kvtier CLI. Each registers its options on a CLI11 app and
// returns the process exit code when run.
#pragma once

#include <CLI/CLI.hpp>
#include <functional>

namespace kvtier::app {

using Command = std::function<int()>;

Command add_run_command(CLI::App& app);
Command add_perplexity_command(CLI::App& app);
Command add_info_command(CLI::App& app);
Command add_bench_command(CLI::App& app);
Command add_recall_command(CLI::App& app);
Command add_plan_command(CLI::App& app);
Command add_chat_command(CLI::App& app);
Command add_template_command(CLI::App& app);
Command add_serve_command(CLI::App& app);

// Prints "kvtier: error: <message>" on stderr and returns the exit code 1.
int fail(const std::string& message);

}  // namespace kvtier::app
