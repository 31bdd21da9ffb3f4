// Small helpers shared by the tests: a temporary directory removed with its contents (and one per running test),
// random KV rows, and an in-memory byte stream for KvCache/TieredKvStore save and load.
#pragma once

#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "kvtier/kv_cache.h"

namespace kvtier::testing {

// mkdtemp under `parent` (default: the system temp directory); removed, contents and all, on destruction.
class TempDir {
 public:
  explicit TempDir(const std::string& prefix = "kvtier-test",
                   const std::filesystem::path& parent = std::filesystem::temp_directory_path()) {
    std::string pattern = (parent / (prefix + "-XXXXXX")).string();
    const char* made = ::mkdtemp(pattern.data());
    path_ = made != nullptr ? made : "";  // empty: the test fails on its first file operation
  }
  ~TempDir() {
    std::error_code ec;
    if (!path_.empty()) std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// A fresh directory for the running test under gtest's temporary directory, named after the test. The
// directories a test asked for are removed, contents and all, when a later test asks for one, and the last ones
// at exit: repeated runs used to leave every session file behind (3.5 GB in /tmp on the development machine).
inline std::filesystem::path fresh_test_dir(const std::string& prefix) {
  static std::vector<std::unique_ptr<TempDir>> dirs;  // the current test's
  static const ::testing::TestInfo* owner = nullptr;
  const ::testing::TestInfo* info = ::testing::UnitTest::GetInstance()->current_test_info();
  if (info != owner) {
    dirs.clear();
    owner = info;
  }
  std::string name = prefix + (info != nullptr ? info->name() : "none");
  for (char& c : name) {
    if (c == '/') c = '_';  // parametrized tests: "Name/0"
  }
  dirs.push_back(std::make_unique<TempDir>(name, ::testing::TempDir()));
  return dirs.back()->path();
}

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
