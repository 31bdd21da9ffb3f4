#include "kvtier/file_io.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "kvtier/resources.h"

namespace kvtier {

namespace {

const char* file_kind(mode_t mode) {
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISFIFO(mode)) return "a FIFO";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  if (S_ISSOCK(mode)) return "a socket";
  return "not a regular file";
}

}  // namespace

Result<int> open_regular_file(const std::string& path, const std::string& what) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
  if (fd < 0) return Status::error(what + " '" + path + "': cannot open: " + std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    return Status::error(what + " '" + path + "': cannot stat: " + std::strerror(err));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return Status::error(what + " '" + path + "': is " + file_kind(st.st_mode) + ", not a regular file");
  }
  // Regular files ignore O_NONBLOCK, but clear it so that the descriptor behaves as a plain one.
  const int flags = ::fcntl(fd, F_GETFL);
  if (flags >= 0) ::fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
  return fd;
}

Result<std::string> read_bounded_file(const std::string& path, uint64_t max_bytes, const std::string& what) {
  const bool from_stdin = path == "-";
  const std::string name = from_stdin ? what + " on standard input" : what + " '" + path + "'";
  int fd = STDIN_FILENO;
  if (!from_stdin) {
    auto opened = open_regular_file(path, what);
    if (!opened.ok()) return opened.status();
    fd = *opened;
    struct stat st {};
    if (::fstat(fd, &st) == 0 && static_cast<uint64_t>(st.st_size) > max_bytes) {
      ::close(fd);
      return Status::error(name + " is " + format_bytes(st.st_size) + ", more than the " + format_bytes(max_bytes) +
                           " this command reads");
    }
  }
  std::string text;
  char buffer[1 << 16];
  Status status;
  for (;;) {
    const ssize_t n = ::read(fd, buffer, sizeof buffer);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      status = Status::error(name + ": read failed: " + std::strerror(errno));
      break;
    }
    if (n == 0) break;
    if (text.size() + static_cast<uint64_t>(n) > max_bytes) {
      status = Status::error(name + " is longer than the " + format_bytes(max_bytes) + " this command reads");
      break;
    }
    text.append(buffer, static_cast<size_t>(n));
  }
  if (!from_stdin) ::close(fd);
  if (!status.ok()) return status;
  return text;
}

}  // namespace kvtier
