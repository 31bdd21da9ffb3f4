// kvtier: run GGUF models with a tiered, quantized KV cache.
#include "app/main_entry.h"

int main(int argc, char** argv) { return kvtier::app::cli_main(argc, argv); }
