// Locating ../shared (real models, vocabularies, llama.cpp reference outputs).
// Tests that need it skip with a clear reason when it is absent (a fresh clone).
#pragma once

#include <cstdlib>
#include <filesystem>
#include <string>

#include <gtest/gtest.h>

namespace kvtier::testing {

// $KVTIER_SHARED if set, else <source>/../shared.
inline std::filesystem::path shared_dir() {
  if (const char* env = std::getenv("KVTIER_SHARED")) return env;
  return std::filesystem::path(KVTIER_SOURCE_DIR) / ".." / "shared";
}

inline std::filesystem::path shared_path(const std::string& relative) { return shared_dir() / relative; }

}  // namespace kvtier::testing

// Skips the current test unless ../shared/<relative> exists.
#define KVTIER_REQUIRE_SHARED(relative)                                                      \
  do {                                                                                       \
    if (!std::filesystem::exists(::kvtier::testing::shared_path(relative)))                  \
      GTEST_SKIP() << "needs ../shared/" << (relative)                                       \
                   << " (test data beside the checkout; absent in a fresh clone)";          \
  } while (0)
