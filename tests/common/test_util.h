// Small helpers shared by the tests: a temporary directory removed with its contents, random KV rows, and
// an in-memory byte stream for KvCache/TieredKvStore save and load.
#pragma once

#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "kvtier/kv_cache.h"

namespace kvtier::testing {

// mkdtemp under `parent` (default: the system temp directory); removed, contents and all, on destruction.
class TempDir {
 public:
  explicit TempDir(const std::string& prefix = "kvtier-test",
                   const std::filesystem::path& parent = std::filesystem::temp_directory_path()) {
    std::string pattern = (parent / (prefix + "-XXXXXX")).string();
    path_ = ::mkdtemp(pattern.data());
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// [n, kv_dim] standard-normal rows.
inline std::vector<float> random_rows(int n, int kv_dim, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  std::vector<float> x(static_cast<size_t>(n) * kv_dim);
  for (auto& v : x) v = normal(rng);
  return x;
}

// Bytes written, then read back from the start (read_at); a read past the end is an error.
struct MemoryStream final : ByteSink, ByteSource {
  std::vector<uint8_t> bytes;
  size_t read_at = 0;
  Status write(const void* data, size_t n) override {
    bytes.insert(bytes.end(), static_cast<const uint8_t*>(data), static_cast<const uint8_t*>(data) + n);
    return Status();
  }
  Status read(void* data, size_t n) override {
    if (read_at + n > bytes.size()) return Status::error("truncated");
    std::memcpy(data, bytes.data() + read_at, n);
    read_at += n;
    return Status();
  }
};

}  // namespace kvtier::testing
