// kvtier: run GGUF models with a tiered, quantized KV cache.
#include "app/cli.h"

int main(int argc, char** argv) {
  auto cli = kvtier::app::make_cli();
  if (const int code = kvtier::app::parse_cli(*cli, argc, argv); code >= 0) return code;
  return kvtier::app::run_parsed(*cli);
}
