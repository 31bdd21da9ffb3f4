// Shared steps of the computing subcommands: load a model (with a progress bar)
// and its tokenizer.
#pragma once

#include <memory>
#include <string>

#include "kvtier/model.h"
#include "kvtier/status.h"
#include "kvtier/tokenizer.h"

#include <CLI/CLI.hpp>

namespace kvtier::app {

struct LoadedModel {
  std::unique_ptr<Model> model;
  std::unique_ptr<Tokenizer> tokenizer;
};

Result<LoadedModel> load_model_and_tokenizer(const std::string& path);

// Threads option shared by every computing subcommand (-t; 0 = all cores).
inline void add_threads_option(CLI::App& app, int& threads) {
  app.add_option("-t,--threads", threads, "worker threads (default: all cores)")->check(CLI::Range(0, 4096));
}

}  // namespace kvtier::app
