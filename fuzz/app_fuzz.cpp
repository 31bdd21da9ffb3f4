// libFuzzer target for the command line: arbitrary argument lists through the CLI11 parser of every subcommand
// (nothing is run), and each argument through the option parsers behind it (byte sizes, KV ladders, seeds, the
// resolved KV options). Any outcome but a crash, a sanitizer report or a hang is fine: a bad argument must be
// an error. Build and run: scripts/fuzz_smoke.sh [seconds].
#include <cstdint>
#include <string>
#include <vector>

#include "app/cli.h"
#include "kv/ladder.h"
#include "kv/tiered_store.h"
#include "kvtier/kv_options.h"
#include "kvtier/sampling.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > 2048) return 0;
  // Arguments are separated by newlines; at most 32 of them.
  std::vector<std::string> args = {"kvtier"};
  std::string current;
  for (size_t i = 0; i < size && args.size() < 33; ++i) {
    if (data[i] == '\n') {
      args.push_back(current);
      current.clear();
    } else {
      current += static_cast<char>(data[i]);
    }
  }
  if (!current.empty() && args.size() < 33) args.push_back(current);

  for (size_t i = 1; i < args.size(); ++i) {
    (void)kvtier::parse_byte_size(args[i]);
    (void)kvtier::parse_seed(args[i]);
    (void)kvtier::kv::parse_ladder(args[i], static_cast<int>(i % 8));
    kvtier::KvCacheOptions kv;
    kv.ladder = args[i];
    kv.sinks = static_cast<int>(i) - 2;
    (void)kvtier::resolve_tiered_kv_options(kv);
  }
  // Help and errors print; parsing must never run a command, so a parsed one is simply dropped.
  std::vector<const char*> argv;
  for (const std::string& a : args) argv.push_back(a.c_str());
  auto cli = kvtier::app::make_cli();
  (void)kvtier::app::parse_cli(*cli, static_cast<int>(argv.size()), argv.data());
  return 0;
}
