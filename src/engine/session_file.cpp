// Session files: atomic writer and validating reader (layout in engine/session_file.h).
#include "kvtier/session_file.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "engine/session_file.h"
#include "kvtier/model.h"

namespace kvtier {

namespace {

namespace fmt_ = session_format;

std::string errno_text(int err) { return std::strerror(err); }

double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

std::string hex64(uint64_t v) {
  char buf[20];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

struct Fd {
  int fd = -1;
  explicit Fd(int f = -1) : fd(f) {}
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
  int release() {
    const int f = fd;
    fd = -1;
    return f;
  }
};

// Splits a path into its directory ("." when none) and its last component.
void split_path(const std::string& path, std::string* dir, std::string* base) {
  const size_t slash = path.find_last_of('/');
  if (slash == std::string::npos) {
    *dir = ".";
    *base = path;
  } else {
    *dir = slash == 0 ? "/" : path.substr(0, slash);
    *base = path.substr(slash + 1);
  }
}

std::string temp_prefix(const std::string& base) { return "." + base + ".tmp."; }

// Removes ".<base>.tmp.<pid>" files in dir whose process is gone (a save killed half way).
void remove_stale_temp_files(const std::string& dir, const std::string& base) {
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return;
  const std::string prefix = temp_prefix(base);
  while (const dirent* e = ::readdir(d)) {
    const std::string name = e->d_name;
    if (name.size() <= prefix.size() || name.compare(0, prefix.size(), prefix) != 0) continue;
    const std::string digits = name.substr(prefix.size());
    if (digits.size() > 9 || !std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; })) {
      continue;
    }
    const pid_t pid = static_cast<pid_t>(std::stol(digits));
    if (pid <= 0 || pid == ::getpid()) continue;
    if (::kill(pid, 0) == -1 && errno == ESRCH) ::unlinkat(::dirfd(d), name.c_str(), 0);
  }
  ::closedir(d);
}

// Buffered writer that checksums every byte it writes.
class HashingFileSink final : public ByteSink {
 public:
  HashingFileSink(int fd, std::string what) : fd_(fd), what_(std::move(what)), state_(XXH3_createState()) {
    XXH3_64bits_reset(state_);
    buffer_.reserve(kBufferBytes);
  }
  ~HashingFileSink() override { XXH3_freeState(state_); }

  Status write(const void* data, size_t bytes) override {
    const auto* p = static_cast<const uint8_t*>(data);
    XXH3_64bits_update(state_, p, bytes);
    written_ += bytes;
    while (bytes > 0) {
      const size_t take = std::min(bytes, kBufferBytes - buffer_.size());
      buffer_.insert(buffer_.end(), p, p + take);
      p += take;
      bytes -= take;
      if (buffer_.size() == kBufferBytes) {
        if (Status s = flush(); !s.ok()) return s;
      }
    }
    return Status();
  }
  // Writes raw bytes that the checksum does not cover (the checksum itself, the end marker).
  Status write_unhashed(const void* data, size_t bytes) {
    const auto* p = static_cast<const uint8_t*>(data);
    buffer_.insert(buffer_.end(), p, p + bytes);
    written_ += bytes;
    return Status();
  }
  Status flush() {
    size_t done = 0;
    while (done < buffer_.size()) {
      const ssize_t n = ::write(fd_, buffer_.data() + done, buffer_.size() - done);
      if (n < 0) {
        if (errno == EINTR) continue;
        return Status::error("writing " + what_ + ": " + errno_text(errno));
      }
      done += static_cast<size_t>(n);
    }
    buffer_.clear();
    return Status();
  }
  uint64_t digest() const { return XXH3_64bits_digest(state_); }
  uint64_t written() const { return written_; }

 private:
  static constexpr size_t kBufferBytes = 1 << 20;
  int fd_;
  std::string what_;
  XXH3_state_t* state_;
  std::vector<uint8_t> buffer_;  // [<= kBufferBytes] bytes not yet written
  uint64_t written_ = 0;
};

template <class T>
Status put(ByteSink& out, T value) {
  return out.write(&value, sizeof value);
}
Status put_string(ByteSink& out, const std::string& s) {
  if (Status st = put(out, static_cast<uint32_t>(s.size())); !st.ok()) return st;
  return out.write(s.data(), s.size());
}

Status write_body(HashingFileSink& out, const Model& model, const std::vector<int32_t>& tokens, KvCache& cache) {
  const KvGeometry& g = cache.geometry();
  std::string name = model.config().name.substr(0, fmt_::kMaxNameBytes);
  const std::string policy = cache.policy();
  if (policy.size() > fmt_::kMaxPolicyBytes) return Status::error("cache policy string too long");
#define KVTIER_TRY(expr)              \
  if (Status s_ = (expr); !s_.ok()) { \
    return s_;                        \
  }
  KVTIER_TRY(out.write(fmt_::kMagic, sizeof fmt_::kMagic));
  KVTIER_TRY(put(out, kSessionFormatVersion));
  KVTIER_TRY(put(out, uint32_t{0}));
  KVTIER_TRY(put(out, model.file().header_hash()));
  KVTIER_TRY(put_string(out, name));
  KVTIER_TRY(put_string(out, policy));
  for (int v : {g.n_layers, g.n_kv_heads, g.head_dim, g.max_tokens}) KVTIER_TRY(put(out, static_cast<uint32_t>(v)));
  KVTIER_TRY(put(out, static_cast<uint32_t>(tokens.size())));
  KVTIER_TRY(out.write(tokens.data(), tokens.size() * sizeof(int32_t)));
  KVTIER_TRY(cache.save(out));
  const uint64_t total = out.written() + fmt_::kTrailerBytes;
  KVTIER_TRY(put(out, total));
  const uint64_t checksum = out.digest();
  KVTIER_TRY(out.write_unhashed(&checksum, sizeof checksum));
  KVTIER_TRY(out.write_unhashed(fmt_::kEndMarker, sizeof fmt_::kEndMarker));
  KVTIER_TRY(out.flush());
#undef KVTIER_TRY
  return Status();
}

// Reads [0, limit) of a file in order, checksumming what it reads.
class HashingFileSource final : public ByteSource {
 public:
  HashingFileSource(int fd, uint64_t limit) : fd_(fd), limit_(limit), state_(XXH3_createState()) {
    XXH3_64bits_reset(state_);
  }
  ~HashingFileSource() override { XXH3_freeState(state_); }

  Status read(void* data, size_t bytes) override {
    if (bytes > limit_ - pos_) {
      return Status::error("the data ends " + std::to_string(bytes - (limit_ - pos_)) +
                           " bytes early (truncated or damaged)");
    }
    auto* p = static_cast<uint8_t*>(data);
    size_t done = 0;
    while (done < bytes) {
      const ssize_t n = ::pread(fd_, p + done, bytes - done, static_cast<off_t>(pos_ + done));
      if (n < 0) {
        if (errno == EINTR) continue;
        return Status::error("read error: " + errno_text(errno));
      }
      if (n == 0) return Status::error("the file shrank while it was read");
      done += static_cast<size_t>(n);
    }
    XXH3_64bits_update(state_, p, bytes);
    pos_ += bytes;
    return Status();
  }
  // Checksums [pos, limit) without keeping it (pass 1).
  Status hash_rest() {
    std::vector<uint8_t> chunk(1 << 20);  // [1 MiB] read window
    while (pos_ < limit_) {
      const size_t take = static_cast<size_t>(std::min<uint64_t>(chunk.size(), limit_ - pos_));
      if (Status s = read(chunk.data(), take); !s.ok()) return s;
    }
    return Status();
  }
  uint64_t pos() const { return pos_; }
  uint64_t digest() const { return XXH3_64bits_digest(state_); }

 private:
  int fd_;
  uint64_t limit_;
  uint64_t pos_ = 0;
  XXH3_state_t* state_;
};

template <class T>
Status get(ByteSource& in, T* value) {
  return in.read(value, sizeof *value);
}
Status get_string(ByteSource& in, uint32_t max_bytes, const char* what, std::string* s) {
  uint32_t n = 0;
  if (Status st = get(in, &n); !st.ok()) return st;
  if (n > max_bytes) return Status::error(std::string(what) + " of " + std::to_string(n) + " bytes (damaged header)");
  s->resize(n);
  return in.read(s->data(), n);
}

Status pread_exact(int fd, void* data, size_t bytes, uint64_t offset) {
  size_t done = 0;
  while (done < bytes) {
    const ssize_t n = ::pread(fd, static_cast<uint8_t*>(data) + done, bytes - done, static_cast<off_t>(offset + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return Status::error("read error: " + errno_text(errno));
    }
    if (n == 0) return Status::error("the file shrank while it was read");
    done += static_cast<size_t>(n);
  }
  return Status();
}

// The frame of a file: magic, size, version, end marker and length. Fills h->version and the trailer.
struct Trailer {
  uint64_t total;
  uint64_t checksum;
  char end[8];
};
static_assert(sizeof(Trailer) == fmt_::kTrailerBytes);

Status check_frame(int fd, uint64_t size, SessionFileHeader* h, Trailer* trailer) {
  const uint64_t magic_bytes = sizeof fmt_::kMagic;
  char magic[8] = {};
  const size_t have = static_cast<size_t>(std::min<uint64_t>(size, magic_bytes));
  if (Status s = pread_exact(fd, magic, have, 0); !s.ok()) return s;
  if (std::memcmp(magic, fmt_::kMagic, have) != 0) return Status::error("not a kvtier session file (bad magic)");
  if (size < fmt_::kNameOffset + fmt_::kTrailerBytes) {
    return Status::error("truncated (" + std::to_string(size) + " bytes, shorter than any session file)");
  }
  if (Status s = pread_exact(fd, &h->version, sizeof h->version, fmt_::kVersionOffset); !s.ok()) return s;
  if (h->version != kSessionFormatVersion) {
    return Status::error("format version " + std::to_string(h->version) + ", this build reads version " +
                         std::to_string(kSessionFormatVersion));
  }
  if (Status s = pread_exact(fd, trailer, sizeof *trailer, size - sizeof *trailer); !s.ok()) return s;
  if (std::memcmp(trailer->end, fmt_::kEndMarker, sizeof trailer->end) != 0) {
    return Status::error("truncated or unfinished (" + std::to_string(size) + " bytes and no end marker)");
  }
  if (trailer->total != size) {
    return Status::error(std::string(trailer->total > size ? "truncated" : "damaged") + " (" + std::to_string(size) +
                         " bytes where the trailer says " + std::to_string(trailer->total) + ")");
  }
  return Status();
}

// The header's fields and the token list, from `in` positioned at the start of the file.
Status read_fields(HashingFileSource& in, SessionFileHeader* h) {
  char skip[16];
  uint32_t flags = 0;
  if (Status s = in.read(skip, 12); !s.ok()) return s;  // magic + version, checked by check_frame
  if (Status s = get(in, &flags); !s.ok()) return s;
  if (Status s = get(in, &h->model_fingerprint); !s.ok()) return s;
  if (Status s = get_string(in, fmt_::kMaxNameBytes, "model name", &h->model_name); !s.ok()) return s;
  if (Status s = get_string(in, fmt_::kMaxPolicyBytes, "cache policy", &h->policy); !s.ok()) return s;
  uint32_t dims[4];
  if (Status s = in.read(dims, sizeof dims); !s.ok()) return s;
  for (uint32_t d : dims) {
    if (d == 0 || d > fmt_::kMaxDimension) return Status::error("damaged header (KV geometry out of range)");
  }
  h->geometry = {static_cast<int>(dims[0]), static_cast<int>(dims[1]), static_cast<int>(dims[2]),
                 static_cast<int>(dims[3])};
  uint32_t n_tokens = 0;
  if (Status s = get(in, &n_tokens); !s.ok()) return s;
  if (n_tokens > dims[3]) return Status::error("damaged header (more tokens than its context)");
  h->tokens.resize(n_tokens);
  return in.read(h->tokens.data(), n_tokens * sizeof(int32_t));
}

// Everything before the cache stream is read; returns the reason the file cannot be restored, or OK.
Status read_and_check(int fd, uint64_t size, const Model& model, KvCache& cache, SessionFileHeader* h) {
  Trailer trailer;
  if (Status s = check_frame(fd, size, h, &trailer); !s.ok()) return s;
  {  // pass 1: the checksum, before any field is trusted
    HashingFileSource all(fd, size - 16);
    if (Status s = all.hash_rest(); !s.ok()) return s;
    if (all.digest() != trailer.checksum) {
      return Status::error("bad checksum (the file is damaged: XXH3 " + hex64(all.digest()) + ", expected " +
                           hex64(trailer.checksum) + ")");
    }
  }
  // Pass 2: the fields, checksummed again in case the file changed since pass 1.
  const uint64_t body_end = size - fmt_::kTrailerBytes;
  HashingFileSource in(fd, size - 16);  // through the length field, which the checksum covers
  if (Status s = read_fields(in, h); !s.ok()) return s;
  const size_t n_tokens = h->tokens.size();

  const uint64_t fingerprint = model.file().header_hash();
  if (h->model_fingerprint != fingerprint) {
    return Status::error("saved with another model ('" + h->model_name + "', fingerprint " +
                         hex64(h->model_fingerprint) + "; this model is '" + model.config().name + "', " +
                         hex64(fingerprint) + ")");
  }
  const std::string policy = cache.policy();
  if (h->policy != policy) {
    return Status::error("saved with KV cache policy '" + h->policy + "', this cache is '" + policy +
                         "' (use the same --kv/--kv-ladder/--kv-sinks/--kv-keys)");
  }
  const KvGeometry& g = cache.geometry();
  if (h->geometry.n_layers != g.n_layers || h->geometry.n_kv_heads != g.n_kv_heads ||
      h->geometry.head_dim != g.head_dim) {
    return Status::error("saved with another KV geometry");
  }
  if (static_cast<int64_t>(n_tokens) > g.max_tokens) {
    return Status::error("holds " + std::to_string(n_tokens) + " tokens, more than the context size " +
                         std::to_string(g.max_tokens) + " (raise -c)");
  }
  for (int32_t t : h->tokens) {
    if (t < 0 || t >= model.config().n_vocab) return Status::error("damaged token list (id " + std::to_string(t) + ")");
  }

  if (Status s = cache.load(in); !s.ok()) return Status::error("cache stream: " + s.message());
  auto refuse = [&](const std::string& why) {
    cache.truncate(0);
    return Status::error(why);
  };
  if (in.pos() != body_end) {
    return refuse("cache stream: " + std::to_string(body_end - in.pos()) + " bytes left over (damaged)");
  }
  if (cache.n_tokens() != static_cast<int>(n_tokens)) {
    return refuse("the cache holds " + std::to_string(cache.n_tokens()) + " positions but the file lists " +
                  std::to_string(n_tokens) + " tokens");
  }
  uint64_t total = 0;
  if (Status s = get(in, &total); !s.ok()) return refuse(s.message());
  if (in.digest() != trailer.checksum) return refuse("the file changed while it was read");
  return Status();
}

}  // namespace

Status check_session_path(const std::string& path) {
  if (path.empty()) return Status::error("session file: empty path");
  size_t start = 0;
  while (start <= path.size()) {
    const size_t end = std::min(path.find('/', start), path.size());
    if (path.compare(start, end - start, "..") == 0 && end - start == 2) {
      return Status::error("session file " + path + ": refused (a '..' component leads out of its directory)");
    }
    start = end + 1;
  }
  if (path.back() == '/') return Status::error("session file " + path + ": is a directory");
  struct stat st;
  if (::lstat(path.c_str(), &st) == 0) {
    if (S_ISLNK(st.st_mode)) {
      return Status::error("session file " + path + ": refused (a symlink; session files are never followed)");
    }
    if (!S_ISREG(st.st_mode)) return Status::error("session file " + path + ": not a regular file");
  }
  // Saves write a temporary file beside it and rename: its directory must exist and be writable.
  std::string dir, base;
  split_path(path, &dir, &base);
  if (::stat(dir.c_str(), &st) != 0) {
    return Status::error("session file " + path + ": its directory " + dir + " does not exist");
  }
  if (!S_ISDIR(st.st_mode)) return Status::error("session file " + path + ": " + dir + " is not a directory");
  if (::access(dir.c_str(), W_OK | X_OK) != 0) {
    return Status::error("session file " + path + ": cannot write in its directory " + dir + ": " + errno_text(errno));
  }
  return Status();
}

Status write_session_file(const std::string& path, const Model& model, const std::vector<int32_t>& tokens,
                          KvCache& cache, SessionIoStats* stats) {
  const auto start = std::chrono::steady_clock::now();
  if (Status s = check_session_path(path); !s.ok()) return s;
  if (cache.n_tokens() != static_cast<int>(tokens.size())) {
    return Status::error("session file " + path + ": the cache holds " + std::to_string(cache.n_tokens()) +
                         " positions but the session lists " + std::to_string(tokens.size()) + " tokens");
  }
  std::string dir, base;
  split_path(path, &dir, &base);
  remove_stale_temp_files(dir, base);
  const std::string temp = (dir == "/" ? "" : dir) + "/" + temp_prefix(base) + std::to_string(::getpid());
  const auto fail = [&](const std::string& why) { return Status::error("session file " + path + ": " + why); };

  const int flags = O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW;
  Fd fd(::open(temp.c_str(), flags, 0600));
  if (fd.fd < 0 && errno == EEXIST) {  // left by a killed process that had our pid
    ::unlink(temp.c_str());
    fd.fd = ::open(temp.c_str(), flags, 0600);
  }
  if (fd.fd < 0) return fail("cannot create " + temp + ": " + errno_text(errno));

  Status status = [&]() -> Status {
    HashingFileSink out(fd.fd, temp);
    if (Status s = write_body(out, model, tokens, cache); !s.ok()) return s;
    if (stats) stats->bytes = out.written();
    if (::fsync(fd.fd) != 0) return Status::error("fsync " + temp + ": " + errno_text(errno));
    if (::close(fd.release()) != 0) return Status::error("closing " + temp + ": " + errno_text(errno));
    if (::rename(temp.c_str(), path.c_str()) != 0) {
      return Status::error("renaming " + temp + " to " + path + ": " + errno_text(errno));
    }
    return Status();
  }();
  if (!status.ok()) {
    ::unlink(temp.c_str());
    return fail(status.message());
  }
  // The rename is durable once the directory is.
  Fd dfd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (dfd.fd < 0 || ::fsync(dfd.fd) != 0) return fail("fsync of directory " + dir + ": " + errno_text(errno));
  if (stats) stats->seconds = seconds_since(start);
  return Status();
}

Result<SessionFileHeader> read_session_file(const std::string& path, const Model& model, KvCache& cache,
                                            SessionIoStats* stats) {
  const auto start = std::chrono::steady_clock::now();
  if (Status s = check_session_path(path); !s.ok()) return s;
  cache.truncate(0);
  const auto fail = [&](const std::string& why) { return Status::error("session file " + path + ": " + why); };
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (fd.fd < 0) {
    if (errno == ELOOP) return fail("refused (a symlink; session files are never followed)");
    return fail(errno_text(errno));
  }
  struct stat st;
  if (::fstat(fd.fd, &st) != 0) return fail(errno_text(errno));
  if (!S_ISREG(st.st_mode)) return fail("not a regular file");
  SessionFileHeader header;
  if (Status s = read_and_check(fd.fd, static_cast<uint64_t>(st.st_size), model, cache, &header); !s.ok()) {
    cache.truncate(0);
    return fail(s.message());
  }
  if (stats) {
    stats->bytes = static_cast<uint64_t>(st.st_size);
    stats->seconds = seconds_since(start);
  }
  return header;
}

Result<SessionFileHeader> read_session_file_header(const std::string& path) {
  if (Status s = check_session_path(path); !s.ok()) return s;
  const auto fail = [&](const std::string& why) { return Status::error("session file " + path + ": " + why); };
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (fd.fd < 0) {
    return fail(errno == ELOOP ? "refused (a symlink; session files are never followed)" : errno_text(errno));
  }
  struct stat st;
  if (::fstat(fd.fd, &st) != 0) return fail(errno_text(errno));
  if (!S_ISREG(st.st_mode)) return fail("not a regular file");
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  SessionFileHeader header;
  Trailer trailer;
  if (Status s = check_frame(fd.fd, size, &header, &trailer); !s.ok()) return fail(s.message());
  HashingFileSource in(fd.fd, size - fmt_::kTrailerBytes);
  if (Status s = read_fields(in, &header); !s.ok()) return fail(s.message());
  return header;
}

}  // namespace kvtier
