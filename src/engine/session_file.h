// Session file layout (format version 1; little-endian; API in include/kvtier/session_file.h).
//
//   offset  bytes  field
//   0       8      magic "KVTSESS\n"
//   8       4      u32 format version (1)
//   12      4      u32 flags (0; reserved)
//   16      8      u64 model fingerprint: XXH64 of the GGUF header, metadata and tensor table
//   24      4+n    u32 n, model name (general.name, UTF-8, n <= 1024)
//   ..      4+n    u32 n, cache policy (KvCache::policy(), n <= 4096)
//   ..      16     u32 n_layers, u32 n_kv_heads, u32 head_dim, u32 n_ctx (the context it was saved with)
//   ..      4+4t   u32 t, i32 token ids [t] (t <= n_ctx): the sequence whose positions the cache holds
//   ..      ..     the cache stream (KvCache::save: "KVTS" paged or "KVCT" contiguous, each self-describing)
//   end-24  8      u64 total length of the file, trailer included
//   end-16  8      u64 XXH3-64 of every byte before it (header, tokens, stream and the length field)
//   end-8   8      end marker "KVTSEND\n"
//
// A reader checks, in this order: magic, version, the end marker and length (a truncated or unfinished file
// has neither), the checksum, then the header's fields against the model and cache it restores into; only
// then does the cache's own load() read the stream (which validates every count again).
#pragma once

#include <cstddef>
#include <cstdint>

namespace kvtier::session_format {

constexpr char kMagic[8] = {'K', 'V', 'T', 'S', 'E', 'S', 'S', '\n'};
constexpr char kEndMarker[8] = {'K', 'V', 'T', 'S', 'E', 'N', 'D', '\n'};
constexpr size_t kVersionOffset = 8;
constexpr size_t kFingerprintOffset = 16;
constexpr size_t kNameOffset = 24;
constexpr size_t kTrailerBytes = 24;  // length, checksum, end marker
constexpr uint32_t kMaxNameBytes = 1024;
constexpr uint32_t kMaxPolicyBytes = 4096;
constexpr uint32_t kMaxDimension = 1u << 24;  // bound on layers, heads, head_dim, n_ctx read from a file

}  // namespace kvtier::session_format
