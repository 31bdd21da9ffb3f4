// Bounded, type-checked file reads and the memory check (kvtier/file_io.h, kvtier/resources.h).
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <string>

#include "common/test_util.h"
#include "kvtier/file_io.h"
#include "kvtier/resources.h"

namespace {

TEST(FileIo, ReadsARegularFileWithinItsBound) {
  kvtier::testing::TempDir dir("kvtier-file-io");
  const std::string path = dir.path() + "/text.txt";
  std::ofstream(path) << "hello\nworld";
  auto text = kvtier::read_bounded_file(path, 64, "text file");
  ASSERT_TRUE(text.ok()) << text.error();
  EXPECT_EQ(*text, "hello\nworld");
  auto exact = kvtier::read_bounded_file(path, 11, "text file");
  ASSERT_TRUE(exact.ok()) << exact.error();
  auto over = kvtier::read_bounded_file(path, 10, "text file");
  ASSERT_FALSE(over.ok());
  EXPECT_NE(over.error().find("text file '" + path + "' is 11 B, more than the 10 B this command reads"),
            std::string::npos)
      << over.error();
}

TEST(FileIo, RefusesEveryKindOfNonRegularFileWithoutBlocking) {
  kvtier::testing::TempDir dir("kvtier-file-io");
  const std::string fifo = dir.path() + "/fifo";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  const std::pair<std::string, std::string> cases[] = {
      {fifo, "is a FIFO"},
      {"/dev/zero", "is a character device"},
      {dir.path(), "is a directory"},
      {dir.path() + "/missing", "cannot open: No such file or directory"},
  };
  for (const auto& [path, why] : cases) {
    auto opened = kvtier::open_regular_file(path, "model");
    ASSERT_FALSE(opened.ok()) << path;
    EXPECT_NE(opened.error().find("model '" + path + "': " + why), std::string::npos) << opened.error();
    auto read = kvtier::read_bounded_file(path, 1 << 20, "model");
    EXPECT_FALSE(read.ok()) << path;
  }
}

TEST(FileIo, StandardInputIsBoundedWhileItIsRead) {
  kvtier::testing::TempDir dir("kvtier-file-io");
  const std::string path = dir.path() + "/in.txt";
  std::ofstream(path) << std::string(1000, 'x');
  // Read stdin from the file through a duplicated descriptor, then put stdin back.
  const int saved = ::dup(STDIN_FILENO);
  FILE* in = std::fopen(path.c_str(), "rb");
  ASSERT_NE(in, nullptr);
  ::dup2(fileno(in), STDIN_FILENO);
  auto over = kvtier::read_bounded_file("-", 999, "prompt");
  ::lseek(STDIN_FILENO, 0, SEEK_SET);
  auto whole = kvtier::read_bounded_file("-", 1000, "prompt");
  ::dup2(saved, STDIN_FILENO);
  ::close(saved);
  std::fclose(in);
  ASSERT_FALSE(over.ok());
  EXPECT_NE(over.error().find("prompt on standard input is longer than"), std::string::npos) << over.error();
  ASSERT_TRUE(whole.ok()) << whole.error();
  EXPECT_EQ(whole->size(), 1000u);
}

TEST(Resources, CheckMemoryListsWhatWasAskedAndWhatIsThere) {
  const kvtier::MemoryAvailability available{1ull << 30, "ulimit -v"};
  EXPECT_TRUE(kvtier::check_memory({{"KV cache", 512ull << 20}, {"logits", 256ull << 20}}, available).ok());
  kvtier::Status s = kvtier::check_memory({{"KV cache", 1ull << 30}, {"logits", 0}, {"tokens", 3 << 10}}, available);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.message(), "needs 1.00 GiB of memory (KV cache 1.00 GiB + tokens 3.0 KiB), but only 1.00 GiB is "
                         "available (ulimit -v)");
  // The headroom is kept free: exactly the available bytes do not fit.
  EXPECT_FALSE(kvtier::check_memory({{"x", 1ull << 30}}, available, 1).ok());
  EXPECT_TRUE(kvtier::check_memory({{"x", (1ull << 30) - 1}}, available, 1).ok());
  // Overflowing totals saturate instead of wrapping to a small number.
  EXPECT_FALSE(kvtier::check_memory({{"a", ~0ull}, {"b", ~0ull}}, available).ok());
}

TEST(Resources, AvailableMemoryIsBoundedByTheMachine) {
  const kvtier::MemoryAvailability a = kvtier::available_memory();
  EXPECT_GT(a.bytes, 0u);
  EXPECT_FALSE(a.bound.empty());
  EXPECT_GE(kvtier::hardware_threads(), 1);
  EXPECT_EQ(kvtier::format_bytes(512), "512 B");
  EXPECT_EQ(kvtier::format_bytes(1536), "1.5 KiB");
  EXPECT_EQ(kvtier::format_bytes(3ull << 30), "3.00 GiB");
}

}  // namespace
