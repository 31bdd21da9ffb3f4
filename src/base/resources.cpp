#include "kvtier/resources.h"

#include <sched.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <limits>
#include <sstream>
#include <thread>

namespace kvtier {

namespace {

// "Key:   1234 kB" lines of /proc/meminfo and /proc/self/status; `key` includes the colon.
bool read_kb_field(const char* file, const std::string& key, uint64_t* bytes) {
  std::ifstream in(file);
  std::string line;
  while (std::getline(in, line)) {
    if (line.compare(0, key.size(), key) != 0) continue;
    std::istringstream fields(line.substr(key.size()));
    uint64_t kb = 0;
    if (!(fields >> kb)) return false;
    *bytes = kb * 1024;
    return true;
  }
  return false;
}

bool read_number_file(const std::string& path, uint64_t* value) {
  std::ifstream in(path);
  std::string text;
  if (!(in >> text) || text == "max") return false;
  try {
    *value = std::stoull(text);
  } catch (...) {
    return false;
  }
  return true;
}

// The process's cgroup v2 directory ("0::/path" in /proc/self/cgroup), or "".
std::string cgroup_dir() {
  std::ifstream in("/proc/self/cgroup");
  std::string line;
  while (std::getline(in, line)) {
    if (line.compare(0, 3, "0::") == 0) return "/sys/fs/cgroup" + line.substr(3);
  }
  return "";
}

void tighten(MemoryAvailability& a, uint64_t bytes, const char* bound) {
  if (bytes < a.bytes) {
    a.bytes = bytes;
    a.bound = bound;
  }
}

}  // namespace

MemoryAvailability available_memory() {
  MemoryAvailability a{std::numeric_limits<uint64_t>::max(), "unbounded"};
  uint64_t bytes = 0;
  if (read_kb_field("/proc/meminfo", "MemAvailable:", &bytes)) tighten(a, bytes, "MemAvailable");
  // cgroup v2: the limit of the process's group and of each group above it.
  for (std::string dir = cgroup_dir(); dir.size() > std::string("/sys/fs/cgroup").size();
       dir = dir.substr(0, dir.find_last_of('/'))) {
    uint64_t max = 0, current = 0;
    if (read_number_file(dir + "/memory.max", &max) && read_number_file(dir + "/memory.current", &current)) {
      tighten(a, max > current ? max - current : 0, "cgroup memory.max");
    }
  }
  struct rlimit limit {};
  if (::getrlimit(RLIMIT_AS, &limit) == 0 && limit.rlim_cur != RLIM_INFINITY) {
    uint64_t mapped = 0;
    read_kb_field("/proc/self/status", "VmSize:", &mapped);
    tighten(a, limit.rlim_cur > mapped ? limit.rlim_cur - mapped : 0, "ulimit -v");
  }
  if (::getrlimit(RLIMIT_DATA, &limit) == 0 && limit.rlim_cur != RLIM_INFINITY) {
    uint64_t data = 0;
    read_kb_field("/proc/self/status", "VmData:", &data);
    tighten(a, limit.rlim_cur > data ? limit.rlim_cur - data : 0, "ulimit -d");
  }
  return a;
}

Status check_memory(const std::vector<MemoryItem>& items, const MemoryAvailability& available, uint64_t headroom) {
  uint64_t total = 0;
  std::string parts;
  for (const MemoryItem& item : items) {
    if (item.bytes == 0) continue;
    total = item.bytes > std::numeric_limits<uint64_t>::max() - total ? std::numeric_limits<uint64_t>::max()
                                                                      : total + item.bytes;
    parts += (parts.empty() ? "" : " + ") + item.what + " " + format_bytes(item.bytes);
  }
  const uint64_t usable = available.bytes > headroom ? available.bytes - headroom : 0;
  if (total <= usable) return Status();
  return Status::error("needs " + format_bytes(total) + " of memory (" + parts + "), but only " +
                       format_bytes(available.bytes) + " is available (" + available.bound + ")");
}

std::string format_bytes(uint64_t bytes) {
  char text[64];
  if (bytes < 1024) {
    std::snprintf(text, sizeof text, "%llu B", static_cast<unsigned long long>(bytes));
  } else if (bytes < (1ull << 20)) {
    std::snprintf(text, sizeof text, "%.1f KiB", bytes / 1024.0);
  } else if (bytes < (1ull << 30)) {
    std::snprintf(text, sizeof text, "%.1f MiB", bytes / 1048576.0);
  } else if (bytes < (1ull << 40)) {
    std::snprintf(text, sizeof text, "%.2f GiB", bytes / 1073741824.0);
  } else {
    std::snprintf(text, sizeof text, "%.2f TiB", bytes / 1099511627776.0);
  }
  return text;
}

int hardware_threads() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (::sched_getaffinity(0, sizeof set, &set) == 0) return std::max(1, CPU_COUNT(&set));
  return std::max(1u, std::thread::hardware_concurrency());
}

}  // namespace kvtier
