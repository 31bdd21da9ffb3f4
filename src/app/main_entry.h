// The whole `kvtier` program behind main(): parse the command line (app/cli.h), then run the subcommand.
// A header of its own so that main.cpp does not compile CLI11.
#pragma once

namespace kvtier::app {

// The process exit code.
int cli_main(int argc, const char* const* argv);

}  // namespace kvtier::app
