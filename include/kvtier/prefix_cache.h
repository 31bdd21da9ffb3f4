// Prefix caching for `kvtier serve` (docs/server.md, "Prefix cache"): a prompt's full KV pages are found by a
// hash of their whole token prefix, as vLLM's automatic prefix caching does, in another slot's cache or in a
// directory that keeps them across restarts.
//
// Page i of a sequence (tokens [i * P, (i + 1) * P), P = kv::kTokensPerPage) is named by
//   hash_i = XXH3-64(hash_{i-1} || its P token ids),   hash_{-1} = the namespace seed,
// so one hash stands for the whole prefix up to the end of its page, and the seed binds it to the model file
// (gguf::File::header_hash) and the cache policy (KvCache::policy(): ladder, sinks, key layout, page size):
// pages never match across models or policies. Only full pages are named; a partial last page is never shared.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "kvtier/status.h"

namespace kvtier {

class Model;
class Session;

// The namespace seed of a model file and cache policy (page size included).
uint64_t prefix_cache_seed(uint64_t model_fingerprint, const std::string& cache_policy, int page_tokens);

// Which owners (slots, files) hold which full pages. Not thread-safe; the scheduler's worker owns it.
class PrefixIndex {
 public:
  PrefixIndex(uint64_t seed, int page_tokens);
  uint64_t seed() const { return seed_; }
  int page_tokens() const { return page_tokens_; }

  // [tokens.size() / page_tokens] the chain hash of each full page.
  std::vector<uint64_t> page_hashes(std::span<const int32_t> tokens) const;
  // `owner` now holds the full pages of `tokens` (and nothing else it held before).
  void assign(uint64_t owner, std::span<const int32_t> tokens);
  void erase(uint64_t owner);

  struct Match {
    uint64_t owner = 0;
    int tokens = 0;  // a multiple of page_tokens; 0 when nothing matched
  };
  // The owner holding the longest run of full pages of `tokens` that ends at or before max_tokens, among the
  // owners `usable` accepts (all without it). Among equal runs, the owner that was assigned first.
  Match longest(std::span<const int32_t> tokens, int max_tokens,
                const std::function<bool(uint64_t)>& usable = {}) const;

  int owner_pages(uint64_t owner) const;  // full pages `owner` holds (0 when unknown)
  size_t n_owners() const { return owned_.size(); }

 private:
  uint64_t seed_;
  int page_tokens_;
  std::unordered_map<uint64_t, std::vector<uint64_t>> holders_;  // page hash -> owners, in assignment order
  std::unordered_map<uint64_t, std::vector<uint64_t>> owned_;    // owner -> its page hashes, page order
};

// Counters of a PrefixDiskCache.
struct PrefixDiskStats {
  uint64_t entries = 0, bytes = 0;     // now
  uint64_t stored = 0, evicted = 0;    // entries written / removed to stay within the size bound, since open
  uint64_t dropped = 0;                // entries removed as damaged or mismatched (each with a warning)
};

// --cache-dir: full prefix pages kept across restarts. Each entry is a session file (include/kvtier/
// session_file.h: the model fingerprint, the cache policy, the token list, the cache in its page format and an
// XXH3 checksum over all of it), named "<seed>-<hash of its last full page>.kvpc" in the directory. Entries of
// other seeds (another model or policy) are left alone; an entry of this seed that fails any check is removed
// with a warning and never used. The entries of this seed stay within max_bytes: the least recently used
// (written or read; the file's mtime across restarts) go first. Nothing is written outside the directory.
// Not thread-safe; the scheduler's worker owns it (read() alone may run on another thread: it touches no state).
class PrefixDiskCache {
 public:
  using Warn = std::function<void(const std::string&)>;
  // Creates the directory when missing (its parent must exist). Errors (one line, naming the directory): the
  // path is not a directory, cannot be created, or is not writable. Entries longer than max_tokens (the caches'
  // context) are kept and count toward the bound, but are not used (a server started with a larger -c may).
  static Result<std::unique_ptr<PrefixDiskCache>> open(const std::string& dir, uint64_t max_bytes,
                                                      const Model& model, const std::string& cache_policy,
                                                      int max_tokens, Warn warn);
  ~PrefixDiskCache();

  // The longest stored run of full pages of `prompt` ending at or before max_tokens (tokens 0: none).
  struct Hit {
    uint64_t entry = 0;
    int tokens = 0;
  };
  Hit lookup(std::span<const int32_t> prompt, int max_tokens) const;
  // Restores a hit into `session` (the first hit.tokens of `prompt`). An entry that fails (damaged, changed,
  // unreadable, or not holding those tokens) is removed with a warning, and the session is left empty.
  // pin() + read() + unpin() in one.
  Status load(const Hit& hit, std::span<const int32_t> prompt, Session& session);
  // The same in three parts, so that the reading (the file's bytes and checksum: the slow part) can run on another
  // thread than the owner's: pin() (owner thread) keeps the entry from being removed by store() or the size bound
  // while it is read, and returns its path; read() (any thread: it touches nothing of the cache) restores and checks
  // the entry into `session`, leaving it empty on failure; unpin() (owner thread) records read()'s outcome: a failed
  // entry is removed with a warning (the error returned says so), a good one becomes the most recently used.
  Result<std::string> pin(const Hit& hit);
  static Status read(const std::string& file, std::span<const int32_t> prompt, int tokens, Session& session);
  Status unpin(const Hit& hit, const Status& read_status);
  // Writes the session's sequence as an entry when it holds full pages that no entry holds yet; entries whose
  // pages it all holds are removed (a conversation's next turn replaces its last). Then evicts down to the bound.
  Status store(Session& session);

  const PrefixDiskStats& stats() const { return stats_; }
  const std::string& dir() const { return dir_; }
  uint64_t seed() const { return index_.seed(); }

 private:
  struct Entry {
    std::string name;   // file name in dir_
    uint64_t bytes = 0;
    uint64_t last_used = 0;  // larger = more recent (mtime in ns at open, then a counter above it)
    int pages = 0;           // full pages
    uint64_t last_hash = 0;  // the chain hash of its last full page (its name)
    int pins = 0;            // reads in progress (pin() .. unpin()): not removed meanwhile
    bool superseded = false; // a store() while pinned made it redundant: the last unpin() removes it
  };
  PrefixDiskCache(std::string dir, uint64_t max_bytes, const Model& model, std::string policy, uint64_t seed,
                  int max_tokens, Warn warn);
  void scan();
  void remove(uint64_t id, bool damaged, const std::string& why);
  void evict(uint64_t keep);
  std::string path(const Entry& e) const { return dir_ + "/" + e.name; }

  std::string dir_;
  uint64_t max_bytes_;
  const Model& model_;
  std::string policy_;
  int max_tokens_;
  Warn warn_;
  PrefixIndex index_;
  std::unordered_map<uint64_t, Entry> entries_;  // id -> entry (ids are the index's owners)
  uint64_t next_id_ = 0;
  uint64_t clock_ = 0;  // last_used of the most recent use
  PrefixDiskStats stats_;
};

}  // namespace kvtier
