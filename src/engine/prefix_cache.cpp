#include "kvtier/prefix_cache.h"

#include <dirent.h>
#include <signal.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>

#include "kv/page_format.h"
#include "kvtier/model.h"
#include "kvtier/session.h"
#include "kvtier/session_file.h"

namespace kvtier {

namespace {

constexpr const char* kEntrySuffix = ".kvpc";
constexpr size_t kHexDigits = 16;

std::string hex64(uint64_t v) {
  char buf[20];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

bool is_hex(const std::string& s) {
  return std::all_of(s.begin(), s.end(), [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

uint64_t mtime_ns(const struct stat& st) {
  return static_cast<uint64_t>(st.st_mtim.tv_sec) * 1000000000ull + static_cast<uint64_t>(st.st_mtim.tv_nsec);
}

}  // namespace

uint64_t prefix_cache_seed(uint64_t model_fingerprint, const std::string& cache_policy, int page_tokens) {
  std::string key(reinterpret_cast<const char*>(&model_fingerprint), sizeof model_fingerprint);
  key += cache_policy;
  key += "|page=" + std::to_string(page_tokens);
  return XXH3_64bits(key.data(), key.size());
}

PrefixIndex::PrefixIndex(uint64_t seed, int page_tokens) : seed_(seed), page_tokens_(page_tokens) {}

std::vector<uint64_t> PrefixIndex::page_hashes(std::span<const int32_t> tokens) const {
  const size_t pages = tokens.size() / static_cast<size_t>(page_tokens_);
  std::vector<uint64_t> hashes(pages);  // [pages]
  uint64_t previous = seed_;
  for (size_t i = 0; i < pages; ++i) {
    previous = XXH3_64bits_withSeed(tokens.data() + i * page_tokens_, page_tokens_ * sizeof(int32_t), previous);
    hashes[i] = previous;
  }
  return hashes;
}

void PrefixIndex::assign(uint64_t owner, std::span<const int32_t> tokens) {
  erase(owner);
  std::vector<uint64_t> hashes = page_hashes(tokens);
  if (hashes.empty()) return;
  for (uint64_t h : hashes) holders_[h].push_back(owner);
  owned_[owner] = std::move(hashes);
}

void PrefixIndex::erase(uint64_t owner) {
  auto it = owned_.find(owner);
  if (it == owned_.end()) return;
  for (uint64_t h : it->second) {
    auto holders = holders_.find(h);
    if (holders == holders_.end()) continue;
    std::erase(holders->second, owner);
    if (holders->second.empty()) holders_.erase(holders);
  }
  owned_.erase(it);
}

PrefixIndex::Match PrefixIndex::longest(std::span<const int32_t> tokens, int max_tokens,
                                        const std::function<bool(uint64_t)>& usable) const {
  const size_t limit = std::min(tokens.size(), static_cast<size_t>(std::max(max_tokens, 0)));
  const std::vector<uint64_t> hashes = page_hashes(tokens.first(limit));
  for (size_t i = hashes.size(); i-- > 0;) {
    auto it = holders_.find(hashes[i]);
    if (it == holders_.end()) continue;
    for (uint64_t owner : it->second) {
      if (!usable || usable(owner)) return {owner, static_cast<int>((i + 1) * page_tokens_)};
    }
  }
  return {};
}

int PrefixIndex::owner_pages(uint64_t owner) const {
  auto it = owned_.find(owner);
  return it == owned_.end() ? 0 : static_cast<int>(it->second.size());
}

PrefixDiskCache::PrefixDiskCache(std::string dir, uint64_t max_bytes, const Model& model, std::string policy,
                                 uint64_t seed, int max_tokens, Warn warn)
    : dir_(std::move(dir)),
      max_bytes_(max_bytes),
      model_(model),
      policy_(std::move(policy)),
      max_tokens_(max_tokens),
      warn_(std::move(warn)),
      index_(seed, kv::kTokensPerPage) {}

PrefixDiskCache::~PrefixDiskCache() = default;

Result<std::unique_ptr<PrefixDiskCache>> PrefixDiskCache::open(const std::string& dir, uint64_t max_bytes,
                                                               const Model& model, const std::string& cache_policy,
                                                               int max_tokens, Warn warn) {
  if (dir.empty()) return Status::error("--cache-dir: empty path");
  std::string clean = dir;
  while (clean.size() > 1 && clean.back() == '/') clean.pop_back();
  struct stat st;
  if (::stat(clean.c_str(), &st) != 0) {
    if (errno != ENOENT) return Status::error("--cache-dir " + dir + ": " + std::strerror(errno));
    if (::mkdir(clean.c_str(), 0700) != 0) {
      return Status::error("--cache-dir " + dir + ": cannot create it: " + std::strerror(errno));
    }
    if (::stat(clean.c_str(), &st) != 0) return Status::error("--cache-dir " + dir + ": " + std::strerror(errno));
  }
  if (!S_ISDIR(st.st_mode)) return Status::error("--cache-dir " + dir + ": not a directory");
  if (::access(clean.c_str(), W_OK | X_OK) != 0) {
    return Status::error("--cache-dir " + dir + ": not writable: " + std::strerror(errno));
  }
  const uint64_t seed = prefix_cache_seed(model.file().header_hash(), cache_policy, kv::kTokensPerPage);
  std::unique_ptr<PrefixDiskCache> cache(
      new PrefixDiskCache(clean, max_bytes, model, cache_policy, seed, max_tokens, std::move(warn)));
  cache->scan();
  cache->evict(UINT64_MAX);
  return cache;
}

void PrefixDiskCache::scan() {
  DIR* d = ::opendir(dir_.c_str());
  if (d == nullptr) return;
  const std::string prefix = hex64(index_.seed()) + "-";
  std::vector<std::string> names;
  while (const dirent* e = ::readdir(d)) names.emplace_back(e->d_name);
  ::closedir(d);
  std::sort(names.begin(), names.end());  // a deterministic order of ids
  const size_t name_size = prefix.size() + kHexDigits + std::strlen(kEntrySuffix);
  // The session writer's temporary files (".NAME.tmp.PID") of this seed whose process is gone: a write killed
  // half way. (The writer itself removes only those of the name it writes.)
  const std::string temp_prefix = "." + prefix;
  for (const std::string& name : names) {
    const size_t tmp = name.find(std::string(kEntrySuffix) + ".tmp.");
    if (name.compare(0, temp_prefix.size(), temp_prefix) != 0 || tmp == std::string::npos) continue;
    const std::string digits = name.substr(tmp + std::strlen(kEntrySuffix) + 5);
    const bool number = !digits.empty() && digits.size() <= 9 &&
                        std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; });
    if (!number) continue;
    const pid_t pid = static_cast<pid_t>(std::stol(digits));
    if (pid > 0 && pid != ::getpid() && ::kill(pid, 0) == -1 && errno == ESRCH) ::unlink((dir_ + "/" + name).c_str());
  }
  for (const std::string& name : names) {
    // Only this seed's entries: another model's or policy's are not ours to judge.
    if (name.size() != name_size || name.compare(0, prefix.size(), prefix) != 0 ||
        name.compare(name.size() - std::strlen(kEntrySuffix), std::string::npos, kEntrySuffix) != 0) {
      continue;
    }
    const std::string hash_hex = name.substr(prefix.size(), kHexDigits);
    if (!is_hex(hash_hex)) continue;
    const std::string file = dir_ + "/" + name;
    struct stat st;
    if (::lstat(file.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) {
      if (warn_) warn_("prefix cache: ignoring " + file + " (not a regular file)");
      continue;
    }
    const uint64_t id = next_id_++;
    entries_[id] = Entry{name, static_cast<uint64_t>(st.st_size), mtime_ns(st), 0, 0};
    stats_.bytes += static_cast<uint64_t>(st.st_size);
    ++stats_.entries;
    Result<SessionFileHeader> header = read_session_file_header(file);
    if (!header.ok()) {
      remove(id, true, header.error());
      continue;
    }
    if (header->model_fingerprint != model_.file().header_hash() || header->policy != policy_) {
      remove(id, true, "written for another model or cache policy ('" + header->model_name + "', '" +
                           header->policy + "') than its name says");
      continue;
    }
    const std::vector<uint64_t> hashes = index_.page_hashes(header->tokens);
    if (hashes.empty() || hex64(hashes.back()) != hash_hex) {
      remove(id, true, "its tokens do not hash to its name (damaged)");
      continue;
    }
    Entry& entry = entries_[id];
    entry.pages = static_cast<int>(hashes.size());
    entry.last_hash = hashes.back();
    clock_ = std::max(clock_, entry.last_used);
    // Too long for these caches' context (a restore would be refused): kept for a server with a larger -c.
    if (static_cast<int64_t>(header->tokens.size()) <= max_tokens_) index_.assign(id, header->tokens);
  }
}

void PrefixDiskCache::remove(uint64_t id, bool damaged, const std::string& why) {
  auto it = entries_.find(id);
  if (it == entries_.end()) return;
  const std::string file = path(it->second);
  ::unlink(file.c_str());
  stats_.bytes -= std::min(stats_.bytes, it->second.bytes);
  --stats_.entries;
  if (damaged) {
    ++stats_.dropped;
    if (warn_) warn_("prefix cache: dropped " + file + ": " + why);
  }
  index_.erase(id);
  entries_.erase(it);
}

void PrefixDiskCache::evict(uint64_t keep) {
  while (stats_.bytes > max_bytes_) {
    auto oldest = entries_.end();
    for (auto it = entries_.begin(); it != entries_.end(); ++it) {
      if (it->first == keep || it->second.pins > 0) continue;  // a pinned entry is being read
      if (oldest == entries_.end() || it->second.last_used < oldest->second.last_used) oldest = it;
    }
    if (oldest == entries_.end()) return;
    ++stats_.evicted;
    remove(oldest->first, false, "");
  }
}

PrefixDiskCache::Hit PrefixDiskCache::lookup(std::span<const int32_t> prompt, int max_tokens) const {
  const PrefixIndex::Match m = index_.longest(prompt, max_tokens);
  return Hit{m.owner, m.tokens};
}

Result<std::string> PrefixDiskCache::pin(const Hit& hit) {
  auto it = entries_.find(hit.entry);
  if (hit.tokens <= 0 || it == entries_.end()) return Status::error("prefix cache: no such entry");
  ++it->second.pins;
  return path(it->second);
}

Status PrefixDiskCache::read(const std::string& file, std::span<const int32_t> prompt, int tokens, Session& session) {
  Status status = session.restore(file);
  if (status.ok()) {
    const std::vector<int32_t>& held = session.tokens();
    if (static_cast<int>(held.size()) < tokens || static_cast<int>(prompt.size()) < tokens ||
        !std::equal(prompt.begin(), prompt.begin() + tokens, held.begin())) {
      status = Status::error("it does not hold the tokens its pages are named for (damaged)");
    }
  }
  if (!status.ok()) {
    session.clear();
    return status;
  }
  session.truncate(tokens);
  return Status();
}

Status PrefixDiskCache::unpin(const Hit& hit, const Status& read_status) {
  auto it = entries_.find(hit.entry);
  if (it == entries_.end()) return read_status;  // cannot happen: a pinned entry is never removed
  --it->second.pins;
  const std::string file = path(it->second);
  if (!read_status.ok()) {
    remove(hit.entry, true, read_status.message());
    return Status::error("prefix cache entry " + file + " dropped: " + read_status.message());
  }
  if (it->second.superseded && it->second.pins == 0) {
    remove(hit.entry, false, "");  // a longer entry holds all its pages
  } else {
    it->second.last_used = ++clock_;
    ::utimensat(AT_FDCWD, file.c_str(), nullptr, AT_SYMLINK_NOFOLLOW);  // LRU order across restarts
  }
  evict(UINT64_MAX);  // entries a store() kept over the bound while this one was pinned
  return Status();
}

Status PrefixDiskCache::load(const Hit& hit, std::span<const int32_t> prompt, Session& session) {
  Result<std::string> file = pin(hit);
  if (!file.ok()) return file.status();
  return unpin(hit, read(*file, prompt, hit.tokens, session));
}

Status PrefixDiskCache::store(Session& session) {
  const std::vector<int32_t>& tokens = session.tokens();
  const std::vector<uint64_t> hashes = index_.page_hashes(tokens);
  if (hashes.empty()) return Status();
  const int full = static_cast<int>(hashes.size()) * index_.page_tokens();
  const PrefixIndex::Match have = index_.longest(tokens, full);
  if (have.tokens == full) {  // every full page is stored already
    entries_[have.owner].last_used = ++clock_;
    return Status();
  }
  Entry entry;
  entry.name = hex64(index_.seed()) + "-" + hex64(hashes.back()) + kEntrySuffix;
  entry.pages = static_cast<int>(hashes.size());
  entry.last_hash = hashes.back();
  entry.last_used = ++clock_;
  const std::string file = path(entry);
  if (Status s = write_session_file(file, model_, tokens, session.cache()); !s.ok()) return s;
  struct stat st;
  if (::stat(file.c_str(), &st) != 0) return Status::error("prefix cache: " + file + ": " + std::strerror(errno));
  entry.bytes = static_cast<uint64_t>(st.st_size);
  // Entries whose pages this one holds all of (the same conversation's earlier turn) are no longer needed.
  std::vector<uint64_t> superseded;
  for (auto& [id, e] : entries_) {
    if (e.pages <= entry.pages && hashes[static_cast<size_t>(e.pages) - 1] == e.last_hash) {
      if (e.pins > 0) {
        e.superseded = true;  // being read: removed by its unpin()
      } else {
        superseded.push_back(id);
      }
    }
  }
  for (uint64_t id : superseded) remove(id, false, "");
  const uint64_t id = next_id_++;
  entries_[id] = entry;
  index_.assign(id, tokens);
  stats_.bytes += entry.bytes;
  ++stats_.entries;
  ++stats_.stored;
  evict(entry.bytes <= max_bytes_ ? id : UINT64_MAX);  // an entry larger than the bound is not kept either
  return Status();
}

}  // namespace kvtier
