// Opening and reading the files a user names (-m, -f, --session …) without trusting them: the type is checked
// before anything blocks (a FIFO or a device never hangs open() or read()), and reads are bounded.
#pragma once

#include <cstdint>
#include <string>

#include "kvtier/status.h"

namespace kvtier {

// Opens `path` read-only if it is a regular file; returns the descriptor (the caller closes it). The open is
// non-blocking (a FIFO without a writer does not hang it) and the type is checked with fstat on the opened
// descriptor before it is used. `what` names the file in errors: "GGUF file", "text file" …
Result<int> open_regular_file(const std::string& path, const std::string& what);

// The whole content of a regular file, or of standard input when `path` is "-", if it is at most `max_bytes`
// long; a larger one is refused before it is read (stdin: once the limit is passed).
Result<std::string> read_bounded_file(const std::string& path, uint64_t max_bytes, const std::string& what);

// Default bound of read_bounded_file for text inputs (-f): 1 GiB.
inline constexpr uint64_t kMaxTextFileBytes = 1ull << 30;

}  // namespace kvtier
