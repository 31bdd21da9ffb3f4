// The reader on the real files in ../shared: every model and vocabulary opens,
// its tensors lie inside the file, and the metadata the model layer needs reads back.
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <filesystem>
#include <string>

#include <gtest/gtest.h>

#include "common/shared_data.h"
#include "kvtier/gguf.h"

namespace kvtier::gguf {
namespace {

namespace fs = std::filesystem;

std::vector<fs::path> gguf_files_in(const std::string& dir) {
  std::vector<fs::path> out;
  const fs::path root = kvtier::testing::shared_path(dir);
  for (const auto& entry : fs::directory_iterator(root)) {
    if (entry.path().extension() == ".gguf") out.push_back(entry.path());
  }
  std::sort(out.begin(), out.end());
  return out;
}

void expect_consistent(const File& f) {
  EXPECT_TRUE(f.version() == 2 || f.version() == 3);
  EXPECT_EQ(f.data_offset() % f.alignment() == 0 || f.tensors().empty(), true);
  for (const TensorInfo& t : f.tensors()) {
    SCOPED_TRACE(t.name);
    ASSERT_NE(t.data, nullptr);
    EXPECT_GE(t.data, f.base() + f.data_offset());
    EXPECT_LE(t.data + t.n_bytes, f.base() + f.file_size());
    EXPECT_EQ(t.offset % f.alignment(), 0u);
    EXPECT_EQ(t.n_bytes, ggml_row_bytes(t.type, t.ne[0]) * static_cast<uint64_t>(t.ne[1] * t.ne[2] * t.ne[3]));
    EXPECT_EQ(f.find_tensor(t.name), &t);
  }
}

TEST(GgufSharedFiles, EveryModelOpens) {
  KVTIER_REQUIRE_SHARED("models");
  auto files = gguf_files_in("models");
  ASSERT_FALSE(files.empty());
  for (const fs::path& path : files) {
    SCOPED_TRACE(path.string());
    auto f = File::open(path.string());
    ASSERT_TRUE(f.ok()) << f.error();
    const File& file = **f;
    EXPECT_EQ(file.version(), 3u);
    EXPECT_FALSE(file.tensors().empty());
    expect_consistent(file);
    EXPECT_EQ(file.get_string("general.architecture").value(), "llama");
    EXPECT_EQ(file.get_string("tokenizer.ggml.model").value(), "gpt2");
    auto tokens = file.get_string_array("tokenizer.ggml.tokens", 8192);
    ASSERT_TRUE(tokens.ok()) << tokens.error();
    EXPECT_EQ((*tokens)[8190], "<|begin_of_text|>");
    EXPECT_EQ((*tokens)[8191], "<|end_of_text|>");
    EXPECT_EQ(file.get_u32("tokenizer.ggml.bos_token_id").value(), 8190u);
    EXPECT_EQ(file.get_u32("tokenizer.ggml.eos_token_id").value(), 8191u);
    auto types = file.get_i32_array("tokenizer.ggml.token_type", 8192);
    EXPECT_TRUE(types.ok()) << types.error();
    auto eps = file.get_f32("llama.attention.layer_norm_rms_epsilon");
    ASSERT_TRUE(eps.ok()) << eps.error();
    EXPECT_FLOAT_EQ(*eps, 1e-5f);
    const TensorInfo* embd = file.find_tensor("token_embd.weight");
    ASSERT_NE(embd, nullptr);
    EXPECT_EQ(embd->n_dims, 2);
    EXPECT_EQ(embd->ne[1], 8192);
    EXPECT_NE(file.header_hash(), 0u);
  }
}

TEST(GgufSharedFiles, EveryVocabularyOpens) {
  KVTIER_REQUIRE_SHARED("vocab");
  auto files = gguf_files_in("vocab");
  ASSERT_FALSE(files.empty());
  for (const fs::path& path : files) {
    SCOPED_TRACE(path.string());
    auto f = File::open(path.string());
    ASSERT_TRUE(f.ok()) << f.error();
    const File& file = **f;
    expect_consistent(file);
    auto tokens = file.get_string_array("tokenizer.ggml.tokens");
    ASSERT_TRUE(tokens.ok()) << tokens.error();
    EXPECT_GT(tokens->size(), 1000u);
    EXPECT_TRUE(file.get_string("tokenizer.ggml.model").ok());
  }
}

TEST(GgufSharedFiles, HeaderHashDistinguishesFilesAndIsStable) {
  KVTIER_REQUIRE_SHARED("models/tiny-llama-6m.Q4_0.gguf");
  KVTIER_REQUIRE_SHARED("models/tiny-llama-6m.f16.gguf");
  auto a = File::open(kvtier::testing::shared_path("models/tiny-llama-6m.Q4_0.gguf").string());
  auto a2 = File::open(kvtier::testing::shared_path("models/tiny-llama-6m.Q4_0.gguf").string());
  auto b = File::open(kvtier::testing::shared_path("models/tiny-llama-6m.f16.gguf").string());
  ASSERT_TRUE(a.ok() && a2.ok() && b.ok());
  EXPECT_EQ((*a)->header_hash(), (*a2)->header_hash());
  EXPECT_NE((*a)->header_hash(), (*b)->header_hash());
}

TEST(GgufSharedFiles, FromBytesMatchesOpen) {
  KVTIER_REQUIRE_SHARED("models/tiny-llama-6m.Q4_0.gguf");
  const std::string path = kvtier::testing::shared_path("models/tiny-llama-6m.Q4_0.gguf").string();
  auto mapped = File::open(path);
  ASSERT_TRUE(mapped.ok()) << mapped.error();
  auto copy = File::from_bytes((*mapped)->base(), (*mapped)->file_size());
  ASSERT_TRUE(copy.ok()) << copy.error();
  EXPECT_EQ((*copy)->header_hash(), (*mapped)->header_hash());
  EXPECT_EQ((*copy)->data_offset(), (*mapped)->data_offset());
  ASSERT_EQ((*copy)->tensors().size(), (*mapped)->tensors().size());
  for (size_t i = 0; i < (*copy)->tensors().size(); ++i) {
    const TensorInfo& x = (*copy)->tensors()[i];
    const TensorInfo& y = (*mapped)->tensors()[i];
    EXPECT_EQ(x.name, y.name);
    EXPECT_EQ(x.offset, y.offset);
    EXPECT_EQ(0, std::memcmp(x.data, y.data, x.n_bytes));
  }
}

// Resident KiB of the mapping that contains `address`, from /proc/self/smaps (-1 if not found).
long mapping_rss_kib(const void* address) {
  std::ifstream smaps("/proc/self/smaps");
  const auto target = reinterpret_cast<uintptr_t>(address);
  std::string line;
  bool inside = false;
  while (std::getline(smaps, line)) {
    unsigned long start = 0, end = 0;
    if (std::sscanf(line.c_str(), "%lx-%lx ", &start, &end) == 2 && line.find(':') > line.find(' ')) {
      inside = target >= start && target < end;
    } else if (inside && line.rfind("Rss:", 0) == 0) {
      return std::stol(line.substr(4));
    }
  }
  return -1;
}

TEST(GgufSharedFiles, ReleasedMetadataPagesLeaveTheResidentSetAndReadBack) {
  KVTIER_REQUIRE_SHARED("models/tiny-llama-31m.Q4_K_M.gguf");
  auto f = File::open(kvtier::testing::shared_path("models/tiny-llama-31m.Q4_K_M.gguf").string());
  ASSERT_TRUE(f.ok()) << f.error();
  const File& file = **f;
  ASSERT_GT(file.data_offset(), 64u * 1024) << "the test needs metadata spanning several pages";
  auto tokens = file.get_string_array("tokenizer.ggml.tokens");  // touches the metadata pages
  ASSERT_TRUE(tokens.ok()) << tokens.error();
  const std::vector<std::string> before(tokens->begin(), tokens->end());
  const uint64_t hash = file.header_hash();
  const long resident = mapping_rss_kib(file.base());
  ASSERT_GT(resident, 0);

  file.release_metadata_pages();
  const long released = mapping_rss_kib(file.base());
  EXPECT_LT(released, resident - 32) << "metadata pages should have left the resident set";

  auto again = file.get_string_array("tokenizer.ggml.tokens");  // read back from the file
  ASSERT_TRUE(again.ok()) << again.error();
  ASSERT_EQ(again->size(), before.size());
  for (size_t i = 0; i < before.size(); ++i) ASSERT_EQ((*again)[i], before[i]) << "token " << i;
  EXPECT_EQ(file.header_hash(), hash);
}

TEST(GgufSharedFiles, MissingFileNamesThePath) {
  auto f = File::open("/nonexistent/kvtier/model.gguf");
  ASSERT_FALSE(f.ok());
  EXPECT_NE(f.error().find("/nonexistent/kvtier/model.gguf"), std::string::npos) << f.error();
}

}  // namespace
}  // namespace kvtier::gguf
