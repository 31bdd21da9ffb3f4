// Session files: a sequence's token history and its KV cache on disk, so that a later run continues
// where this one stopped (or reuses a shared prompt prefix) without evaluating those tokens again.
// The layout is described in src/engine/session_file.h and docs/ARCHITECTURE.md ("Session files").
//
// Writes are atomic (temp file + fsync + rename + directory fsync): after a crash, a kill or a full
// disk the target is either the complete old file or the complete new one. Reads check everything
// (magic, version, length, checksum, model, cache policy, geometry, context) before trusting a byte,
// and refuse with one line naming the reason.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "kvtier/kv_cache.h"
#include "kvtier/status.h"

namespace kvtier {

class Model;

constexpr uint32_t kSessionFormatVersion = 1;

// What a session file says about itself (its header).
struct SessionFileHeader {
  uint32_t version = 0;
  uint64_t model_fingerprint = 0;  // gguf::File::header_hash() of the model it was saved with
  std::string model_name;          // general.name (for messages only)
  std::string policy;              // KvCache::policy() of the saved cache
  KvGeometry geometry;             // max_tokens = the n_ctx it was saved with
  std::vector<int32_t> tokens;     // the sequence the cache holds, position order
};

// Bytes moved and seconds taken by a save or restore (for --verbose).
struct SessionIoStats {
  uint64_t bytes = 0;
  double seconds = 0;
};

// Refuses a path that is a symlink (a session file is never followed out of its directory) or that has a
// ".." component, or whose directory does not exist or is not writable. Creates nothing.
Status check_session_path(const std::string& path);

// Writes `tokens` and the cache (which must hold exactly tokens.size() positions) atomically to path.
// Stale temp files of this name left by killed processes are removed first. On error the old file is
// untouched and no temp file is left.
Status write_session_file(const std::string& path, const Model& model, const std::vector<int32_t>& tokens,
                          KvCache& cache, SessionIoStats* stats = nullptr);

// Reads and validates a session file for `model` into `cache` (emptied first; left empty on error) and
// returns its header. Errors are one line: "session file PATH: REASON".
Result<SessionFileHeader> read_session_file(const std::string& path, const Model& model, KvCache& cache,
                                            SessionIoStats* stats = nullptr);

// Reads only a session file's header and token list, checking its frame (magic, version, end marker, length)
// but not its checksum: a quick look at what a file holds (the server's prefix cache lists its directory with
// it). read_session_file() still checks everything before a cache is restored from it.
Result<SessionFileHeader> read_session_file_header(const std::string& path);

}  // namespace kvtier
