// What this machine lets a run have: memory (physical, cgroup and rlimit bounds) and cores. Every command
// that allocates in proportion to a user's request (context size, text length) checks the request against
// available_memory() first, so that too large a request is one clear error instead of bad_alloc or an OOM kill.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "kvtier/status.h"

namespace kvtier {

struct MemoryAvailability {
  uint64_t bytes = 0;  // the tightest of the bounds below
  std::string bound;   // which bound it is, for messages: "MemAvailable", "cgroup memory.max", "ulimit -v" …
};

// The memory a new allocation can take now: min(MemAvailable, cgroup v2 memory.max − memory.current,
// RLIMIT_AS − the process's mapped size, RLIMIT_DATA − its data size). Bounds that cannot be read are skipped.
MemoryAvailability available_memory();

// One line item of what a run will allocate.
struct MemoryItem {
  std::string what;  // "KV cache at -c 8192", "logits (8192 × 32000 f32)"
  uint64_t bytes = 0;
};

// The total of `items` against `available`: OK, or an error that lists what was asked and what is there,
// e.g. "needs 6.1 GiB (KV cache 6.0 GiB + logits 128 MiB), but only 3.9 GiB is available (ulimit -v)".
// `headroom` is memory left for everything not listed (code, stacks, small buffers).
Status check_memory(const std::vector<MemoryItem>& items, const MemoryAvailability& available,
                    uint64_t headroom = 64ull << 20);

// "512 B", "3.5 KiB", "12.0 MiB", "6.10 GiB".
std::string format_bytes(uint64_t bytes);

// Logical CPUs the process may run on (sched_getaffinity; at least 1).
int hardware_threads();

}  // namespace kvtier
