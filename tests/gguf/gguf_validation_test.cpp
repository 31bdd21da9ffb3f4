// Broken GGUF files, one per validation rule: each must be rejected with an error
// that names the field. Files are made with the writer, then bytes are poked where
// the writer (rightly) refuses to produce the defect.
#include <cstring>
#include <initializer_list>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "common/shared_data.h"
#include "kvtier/gguf.h"
#include "kvtier/gguf_writer.h"

namespace kvtier::gguf {
namespace {

using Bytes = std::vector<uint8_t>;

template <class T>
void poke(Bytes& bytes, size_t pos, T v) {
  ASSERT_LE(pos + sizeof(T), bytes.size());
  std::memcpy(bytes.data() + pos, &v, sizeof(T));
}

// Position of the string `s` as GGUF encodes it (u64 length + bytes): the position of the length.
size_t find_gguf_string(const Bytes& bytes, std::string_view s) {
  Bytes needle(8);
  const uint64_t n = s.size();
  std::memcpy(needle.data(), &n, 8);
  needle.insert(needle.end(), s.begin(), s.end());
  auto it = std::search(bytes.begin(), bytes.end(), needle.begin(), needle.end());
  EXPECT_NE(it, bytes.end()) << "string '" << s << "' not in the image";
  return static_cast<size_t>(it - bytes.begin());
}

// Positions of a tensor-table record's fields.
struct TensorRecord {
  size_t name_length, n_dims, dims, type, offset;
};
TensorRecord tensor_record(const Bytes& bytes, std::string_view name) {
  TensorRecord r{};
  r.name_length = find_gguf_string(bytes, name);
  r.n_dims = r.name_length + 8 + name.size();
  uint32_t n_dims = 0;
  std::memcpy(&n_dims, bytes.data() + r.n_dims, 4);
  r.dims = r.n_dims + 4;
  r.type = r.dims + 8 * n_dims;
  r.offset = r.type + 4;
  return r;
}

// Position of a metadata value (just after its u32 type).
size_t value_pos(const Bytes& bytes, std::string_view key) { return find_gguf_string(bytes, key) + 8 + key.size() + 4; }

// Parses `bytes` and expects an error that contains every one of `needles`.
void expect_error(const Bytes& bytes, std::initializer_list<std::string_view> needles) {
  auto f = File::from_bytes(bytes.data(), bytes.size());
  ASSERT_FALSE(f.ok()) << "a broken file was accepted; expected an error mentioning " << *needles.begin();
  for (std::string_view needle : needles) {
    EXPECT_NE(f.error().find(needle), std::string::npos) << "error \"" << f.error() << "\" lacks \"" << needle << "\"";
  }
}

void expect_ok(const Bytes& bytes) {
  auto f = File::from_bytes(bytes.data(), bytes.size());
  EXPECT_TRUE(f.ok()) << f.error();
}

// A small valid model-like file: metadata, a tokenizer, and three tensors.
GgufWriter base_writer() {
  GgufWriter w;
  w.set_string("general.architecture", "llama");
  w.set_string("general.name", "broken-on-purpose");
  w.set_u32("llama.block_count", 1);
  w.set_array_str("tokenizer.ggml.tokens", {"<s>", "a", "b", "ab"});
  w.set_array_f32("tokenizer.ggml.scores", std::vector<float>{0, -1, -2, -3});
  w.set_array_i32("tokenizer.ggml.token_type", std::vector<int32_t>{3, 1, 1, 1});
  w.set_array_str("tokenizer.ggml.merges", {"a b"});
  EXPECT_TRUE(w.add_tensor_f32("norm.weight", {4}, std::vector<float>{1, 1, 1, 1}).ok());
  EXPECT_TRUE(w.add_tensor("wq", GgmlType::Q4_0, {64, 2}, Bytes(4 * 18, 0x11)).ok());
  EXPECT_TRUE(w.add_tensor_f32("last", {2, 3}, std::vector<float>(6, 0.5f)).ok());
  return w;
}

Bytes base_bytes() { return base_writer().to_bytes(); }

TEST(GgufValidation, BaseFileIsValid) { expect_ok(base_bytes()); }

TEST(GgufValidation, TooSmallForTheHeader) {
  expect_error({}, {"header magic"});
  expect_error({'G', 'G', 'U'}, {"header magic", "truncated"});
  Bytes b = base_bytes();
  b.resize(20);
  expect_error(b, {"header n_kv"});
}

TEST(GgufValidation, BadMagic) {
  Bytes b = base_bytes();
  b[0] = 'X';
  expect_error(b, {"header magic", "XGUF"});
}

TEST(GgufValidation, UnsupportedVersion) {
  for (uint32_t version : {0u, 1u, 4u, 0x03000000u}) {
    Bytes b = base_bytes();
    poke<uint32_t>(b, 4, version);
    expect_error(b, {"header version", std::to_string(version)});
  }
}

TEST(GgufValidation, CountsLargerThanTheFile) {
  Bytes b = base_bytes();
  poke<uint64_t>(b, 8, 1ull << 40);
  expect_error(b, {"header n_tensors"});
  b = base_bytes();
  poke<uint64_t>(b, 16, std::numeric_limits<uint64_t>::max());
  expect_error(b, {"header n_kv"});
  // One more tensor than present: the fourth record is read from the padding.
  b = base_bytes();
  poke<uint64_t>(b, 8, 4);
  expect_error(b, {"tensor[3] name"});
  // Many more keys than present but fewer than the bound: fails while reading them.
  b = base_bytes();
  poke<uint64_t>(b, 16, 30);
  EXPECT_FALSE(File::from_bytes(b.data(), b.size()).ok());
}

TEST(GgufValidation, KeyLengthLargerThanTheFile) {
  Bytes b = base_bytes();
  poke<uint64_t>(b, 24, 1ull << 62);  // the first key's length
  expect_error(b, {"metadata[0] key", "string length"});
}

TEST(GgufValidation, StringValueLengthLargerThanTheFile) {
  Bytes b = base_bytes();
  poke<uint64_t>(b, value_pos(b, "general.name"), b.size());
  expect_error(b, {"metadata key 'general.name'", "string length"});
}

TEST(GgufValidation, TensorNameLengthLargerThanTheFile) {
  Bytes b = base_bytes();
  poke<uint64_t>(b, tensor_record(b, "norm.weight").name_length, 1ull << 50);
  expect_error(b, {"tensor[0] name", "string length"});
}

TEST(GgufValidation, ArrayLengthsLargerThanTheFile) {
  Bytes b = base_bytes();
  poke<uint64_t>(b, value_pos(b, "tokenizer.ggml.scores") + 4, 1ull << 61);
  expect_error(b, {"metadata key 'tokenizer.ggml.scores'", "array length"});
  b = base_bytes();
  poke<uint64_t>(b, value_pos(b, "tokenizer.ggml.tokens") + 4, std::numeric_limits<uint64_t>::max());
  expect_error(b, {"metadata key 'tokenizer.ggml.tokens'", "array length"});
  // An element of a string array whose length runs past the end.
  b = base_bytes();
  const size_t first_token = value_pos(b, "tokenizer.ggml.tokens") + 12;
  const size_t second_token = first_token + 8 + 3;  // after "<s>"
  poke<uint64_t>(b, second_token, 1ull << 40);
  expect_error(b, {"metadata key 'tokenizer.ggml.tokens'[1]", "string length"});
}

TEST(GgufValidation, UnknownValueTypes) {
  GgufWriter w = base_writer();
  w.set_raw("custom.key", 13, {0, 0, 0, 0});
  expect_error(w.to_bytes(), {"metadata key 'custom.key'", "unknown value type 13"});
  w = base_writer();
  Bytes array_of_unknown(12, 0);  // u32 element type + u64 count
  array_of_unknown[0] = 99;
  w.set_raw("custom.array", static_cast<uint32_t>(ValueType::ARRAY), array_of_unknown);
  expect_error(w.to_bytes(), {"metadata key 'custom.array'", "unknown array element type 99"});
}

TEST(GgufValidation, BoolOtherThanZeroOrOne) {
  GgufWriter w = base_writer();
  w.set_raw("custom.flag", static_cast<uint32_t>(ValueType::BOOL), {2});
  expect_error(w.to_bytes(), {"metadata key 'custom.flag'", "bool"});
  w = base_writer();
  w.set_raw("custom.flags", static_cast<uint32_t>(ValueType::ARRAY), {7, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 1, 5});
  expect_error(w.to_bytes(), {"metadata key 'custom.flags'[1]", "bool"});
}

// An array nested `depth` levels deep, innermost an array of one u8.
Bytes nested_array(int depth) {
  Bytes out = {static_cast<uint8_t>(ValueType::UINT8), 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 42};
  for (int level = 1; level < depth; ++level) {
    Bytes outer = {static_cast<uint8_t>(ValueType::ARRAY), 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0};
    outer.insert(outer.end(), out.begin(), out.end());
    out = std::move(outer);
  }
  return out;
}

TEST(GgufValidation, ArrayNestingDepthIsLimited) {
  GgufWriter w = base_writer();
  w.set_raw("custom.nested", static_cast<uint32_t>(ValueType::ARRAY), nested_array(4));
  const Bytes ok = w.to_bytes();
  auto f = File::from_bytes(ok.data(), ok.size());
  ASSERT_TRUE(f.ok()) << f.error();
  EXPECT_EQ((*f)->find("custom.nested")->array_type, ValueType::ARRAY);
  EXPECT_EQ((*f)->find("custom.nested")->array_count, 1u);
  w.set_raw("custom.nested", static_cast<uint32_t>(ValueType::ARRAY), nested_array(5));
  expect_error(w.to_bytes(), {"metadata key 'custom.nested'", "nested deeper"});
}

TEST(GgufValidation, UnknownTensorType) {
  for (uint32_t bad : {4u, 5u, 31u, 1000u}) {  // 4 and 5 were removed from GGML (Q4_2, Q4_3)
    Bytes b = base_bytes();
    poke<uint32_t>(b, tensor_record(b, "wq").type, bad);
    expect_error(b, {"tensor[1] 'wq' type", "unknown GGML type " + std::to_string(bad)});
  }
}

TEST(GgufValidation, TooManyDimensions) {
  Bytes b = base_bytes();
  poke<uint32_t>(b, tensor_record(b, "norm.weight").n_dims, 5);
  expect_error(b, {"tensor[0] 'norm.weight' n_dims", "5"});
  poke<uint32_t>(b, tensor_record(b, "norm.weight").n_dims, 0xffffffffu);
  expect_error(b, {"tensor[0] 'norm.weight' n_dims"});
}

TEST(GgufValidation, ZeroOrNegativeDimensions) {
  Bytes b = base_bytes();
  poke<int64_t>(b, tensor_record(b, "wq").dims + 8, 0);
  expect_error(b, {"tensor[1] 'wq' ne[1]", "positive"});
  b = base_bytes();
  poke<int64_t>(b, tensor_record(b, "wq").dims, -64);
  expect_error(b, {"tensor[1] 'wq' ne[0]", "positive"});
}

TEST(GgufValidation, SizeProductsThatOverflow) {
  Bytes b = base_bytes();
  const TensorRecord r = tensor_record(b, "last");
  poke<int64_t>(b, r.dims, 1ll << 32);
  poke<int64_t>(b, r.dims + 8, 1ll << 32);
  expect_error(b, {"tensor[2] 'last' ne[1]", "overflows"});
  // Elements fit in 64 bits but bytes do not: 2^62 F32 elements.
  b = base_bytes();
  poke<int64_t>(b, r.dims, 1ll << 31);
  poke<int64_t>(b, r.dims + 8, 1ll << 31);
  expect_error(b, {"tensor[2] 'last' size", "overflows"});
  // Large but representable: fails only because the data is not in the file.
  b = base_bytes();
  poke<int64_t>(b, r.dims, 1ll << 20);
  poke<int64_t>(b, r.dims + 8, 1ll << 20);
  expect_error(b, {"tensor[2] 'last' offset", "past the end"});
}

TEST(GgufValidation, RowNotAMultipleOfTheBlockSize) {
  Bytes b = base_bytes();
  poke<int64_t>(b, tensor_record(b, "wq").dims, 48);
  expect_error(b, {"tensor[1] 'wq' ne[0]", "block size 32"});
}

TEST(GgufValidation, TensorDataPastTheEndOfTheFile) {
  Bytes b = base_bytes();
  poke<uint64_t>(b, tensor_record(b, "last").offset, 1ull << 20);
  expect_error(b, {"tensor[2] 'last' offset", "past the end"});
  b = base_bytes();
  poke<uint64_t>(b, tensor_record(b, "last").offset, std::numeric_limits<uint64_t>::max() - 31);
  expect_error(b, {"tensor[2] 'last' offset"});
  // The file cut inside the last tensor's data.
  b = base_bytes();
  b.resize(b.size() - 32);
  expect_error(b, {"tensor[2] 'last' offset", "truncated"});
}

TEST(GgufValidation, MisalignedTensorOffset) {
  Bytes b = base_bytes();
  const size_t at = tensor_record(b, "wq").offset;
  uint64_t offset = 0;
  std::memcpy(&offset, b.data() + at, 8);
  poke<uint64_t>(b, at, offset + 4);
  expect_error(b, {"tensor[1] 'wq' offset", "alignment 32"});
}

TEST(GgufValidation, OverlappingTensorData) {
  Bytes b = base_bytes();
  uint64_t wq_offset = 0;
  std::memcpy(&wq_offset, b.data() + tensor_record(b, "wq").offset, 8);
  poke<uint64_t>(b, tensor_record(b, "last").offset, wq_offset + 32);  // inside wq's 72 bytes
  expect_error(b, {"tensor[2] 'last' offset", "overlaps tensor 'wq'"});
  // Two zero-distance tensors: the same offset.
  b = base_bytes();
  poke<uint64_t>(b, tensor_record(b, "wq").offset, 0);
  expect_error(b, {"offset", "overlaps"});
}

TEST(GgufValidation, DuplicateTensorNames) {
  GgufWriter w;
  ASSERT_TRUE(w.add_tensor_f32("wa", {1}, std::vector<float>{1}).ok());
  ASSERT_TRUE(w.add_tensor_f32("wb", {1}, std::vector<float>{2}).ok());
  Bytes b = w.to_bytes();
  b[find_gguf_string(b, "wb") + 9] = 'a';
  expect_error(b, {"tensor[1] 'wa'", "duplicate tensor name"});
}

TEST(GgufValidation, DuplicateKeys) {
  GgufWriter w;
  w.set_u32("k.a", 1);
  w.set_string("k.b", "x");
  Bytes b = w.to_bytes();
  b[find_gguf_string(b, "k.b") + 10] = 'a';
  expect_error(b, {"metadata key 'k.a'", "duplicate key"});
}

TEST(GgufValidation, EmptyKeyAndEmptyTensorName) {
  GgufWriter w;
  w.set_u32("", 1);
  expect_error(w.to_bytes(), {"metadata[0] key", "empty"});
  // An empty tensor name: the writer refuses one, so drop the name byte of "x".
  GgufWriter t;
  ASSERT_TRUE(t.add_tensor_f32("x", {1}, std::vector<float>{1}).ok());
  Bytes b = t.to_bytes();
  const size_t at = find_gguf_string(b, "x");
  poke<uint64_t>(b, at, 0);
  b.erase(b.begin() + static_cast<long>(at + 8));  // drop the name byte; the data moves by one
  expect_error(b, {"tensor[0] name", "empty"});
}

TEST(GgufValidation, AlignmentZeroOrNotAPowerOfTwo) {
  for (uint32_t alignment : {0u, 48u, 3u}) {
    GgufWriter w = base_writer();
    w.set_alignment(alignment);
    expect_error(w.to_bytes(), {"general.alignment", "power of two"});
  }
  GgufWriter w = base_writer();
  w.set_string("general.alignment", "32");
  expect_error(w.to_bytes(), {"general.alignment", "unsigned integer"});
  w.set_i32("general.alignment", -32);
  expect_error(w.to_bytes(), {"general.alignment"});
}

// A power-of-two alignment below 4 may place f32 data where it cannot be read in place: refused, naming
// the tensor (fuzzing found general.alignment = 2 reaching a misaligned f32 load in the forward pass).
TEST(GgufValidation, SmallAlignmentMustStillAlignEachTensorToItsType) {
  GgufWriter bad;
  bad.set_string("general.architecture", "llama");
  bad.set_alignment(2);
  ASSERT_TRUE(bad.add_tensor("h", GgmlType::F16, {1}, Bytes(2, 0)).ok());
  ASSERT_TRUE(bad.add_tensor_f32("f", {1}, std::vector<float>{1}).ok());  // at offset 2
  expect_error(bad.to_bytes(), {"tensor[1] 'f'", "F32 data at offset 2", "4-byte aligned"});

  GgufWriter good;  // alignment 4 keeps f32 aligned: accepted
  good.set_string("general.architecture", "llama");
  good.set_alignment(4);
  ASSERT_TRUE(good.add_tensor("h", GgmlType::F16, {1}, Bytes(2, 0)).ok());
  ASSERT_TRUE(good.add_tensor_f32("f", {1}, std::vector<float>{1.5f}).ok());
  const Bytes b = good.to_bytes();
  auto f = File::from_bytes(b.data(), b.size());
  ASSERT_TRUE(f.ok()) << f.error();
  float v;
  std::memcpy(&v, (*f)->find_tensor("f")->data, 4);
  EXPECT_EQ(v, 1.5f);
}

TEST(GgufValidation, TokenizerArraysOfTheWrongType) {
  struct Case {
    const char* key;
    void (*break_it)(GgufWriter&);
    const char* expected;
  };
  const Case cases[] = {
      {"tokenizer.ggml.tokens", [](GgufWriter& w) { w.set_array_i32("tokenizer.ggml.tokens", std::vector<int32_t>{1, 2, 3, 4}); }, "array of STRING"},
      {"tokenizer.ggml.tokens", [](GgufWriter& w) { w.set_string("tokenizer.ggml.tokens", "a b"); }, "array of STRING"},
      {"tokenizer.ggml.scores", [](GgufWriter& w) { w.set_array_f64("tokenizer.ggml.scores", std::vector<double>{0, 0, 0, 0}); }, "array of FLOAT32"},
      {"tokenizer.ggml.token_type", [](GgufWriter& w) { w.set_array_u8("tokenizer.ggml.token_type", std::vector<uint8_t>{1, 1, 1, 1}); }, "array of INT32"},
      {"tokenizer.ggml.merges", [](GgufWriter& w) { w.set_array_i32("tokenizer.ggml.merges", std::vector<int32_t>{1}); }, "array of STRING"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.key);
    GgufWriter w = base_writer();
    c.break_it(w);
    expect_error(w.to_bytes(), {std::string("'") + c.key + "'", c.expected});
  }
}

TEST(GgufValidation, TokenizerArraysOfTheWrongLength) {
  GgufWriter w = base_writer();
  w.set_array_f32("tokenizer.ggml.scores", std::vector<float>{0, 0, 0});
  expect_error(w.to_bytes(), {"'tokenizer.ggml.scores'", "3 entries", "tokenizer.ggml.tokens has 4"});
  w = base_writer();
  w.set_array_i32("tokenizer.ggml.token_type", std::vector<int32_t>{1, 1, 1, 1, 1});
  expect_error(w.to_bytes(), {"'tokenizer.ggml.token_type'", "5 entries"});
  // Scores without tokens are checked for type only (nothing to compare against).
  w = base_writer();
  w.remove("tokenizer.ggml.tokens");
  w.remove("tokenizer.ggml.token_type");
  expect_ok(w.to_bytes());
}

TEST(GgufValidation, DataSectionPastTheEndOfTheFile) {
  Bytes b = base_bytes();
  auto f = File::from_bytes(b.data(), b.size());
  ASSERT_TRUE(f.ok());
  const size_t table_end = tensor_record(b, "last").offset + 8;
  b.resize(table_end + 1);
  expect_error(b, {"data section", "past the end"});
}

TEST(GgufValidation, AccessorsNameMissingKeys) {
  Bytes b = base_bytes();
  auto rf = File::from_bytes(b.data(), b.size());
  ASSERT_TRUE(rf.ok());
  const File& f = **rf;
  const std::string key = "llama.context_length";
  auto has_key = [&](const std::string& error) { return error.find("'" + key + "'") != std::string::npos; };
  EXPECT_TRUE(has_key(f.get_string(key).error()));
  EXPECT_TRUE(has_key(f.get_u64(key).error()));
  EXPECT_TRUE(has_key(f.get_u32(key).error()));
  EXPECT_TRUE(has_key(f.get_f32(key).error()));
  EXPECT_TRUE(has_key(f.get_bool(key).error()));
  EXPECT_TRUE(has_key(f.get_string_array(key).error()));
  EXPECT_TRUE(has_key(f.get_f32_array(key).error()));
  EXPECT_TRUE(has_key(f.get_i32_array(key).error()));
  EXPECT_NE(f.get_u32(key).error().find("missing"), std::string::npos);
  EXPECT_EQ(f.find(key), nullptr);
}

TEST(GgufValidation, AccessorsRejectIncompatibleTypes) {
  GgufWriter w;
  w.set_string("s", "text");
  w.set_i32("neg", -1);
  w.set_u64("big", 1ull << 40);
  w.set_u8("small", 7);
  w.set_f32("f", 2.5f);
  w.set_array_u32("u32s", std::vector<uint32_t>{1, 0x80000000u});
  w.set_array_str("strs", {"x"});
  const Bytes b = w.to_bytes();
  auto rf = File::from_bytes(b.data(), b.size());
  ASSERT_TRUE(rf.ok()) << rf.error();
  const File& f = **rf;
  auto expect_fail = [](const auto& result, std::string_view needle) {
    ASSERT_FALSE(result.ok());
    EXPECT_NE(result.error().find(needle), std::string::npos) << result.error();
  };
  expect_fail(f.get_u32("s"), "'s' is STRING");
  expect_fail(f.get_string("f"), "'f' is FLOAT32");
  expect_fail(f.get_u64("neg"), "'neg' is negative");
  expect_fail(f.get_u32("big"), "'big'");
  EXPECT_EQ(f.get_u64("big").value(), 1ull << 40);
  EXPECT_EQ(f.get_u32("small").value(), 7u);  // any integer type that fits
  expect_fail(f.get_bool("small"), "'small' is UINT8");
  expect_fail(f.get_f32("s"), "'s'");
  expect_fail(f.get_string_array("s"), "'s' is STRING");
  expect_fail(f.get_f32_array("strs"), "'strs' is array of STRING");
  expect_fail(f.get_i32_array("u32s"), "'u32s'[1]");
  expect_fail(f.get_string_array("strs", 2), "'strs' has 1 entries, expected 2");
  EXPECT_TRUE(f.get_string_array("strs", 1).ok());
}

// Every single-byte corruption of a small file's header region: an error or a
// valid parse, never a crash (run under ASan/UBSan to make that meaningful).
TEST(GgufValidation, EveryHeaderByteCorruptedParsesOrFailsCleanly) {
  const Bytes good = base_bytes();
  auto rf = File::from_bytes(good.data(), good.size());
  ASSERT_TRUE(rf.ok());
  const size_t header_end = (*rf)->data_offset();
  size_t rejected = 0;
  for (size_t pos = 0; pos < header_end; ++pos) {
    for (uint8_t value : {uint8_t{0x00}, uint8_t{0xff}, uint8_t{0x80}, static_cast<uint8_t>(good[pos] + 1)}) {
      Bytes b = good;
      b[pos] = value;
      auto f = File::from_bytes(b.data(), b.size());
      if (!f.ok()) {
        ++rejected;
        EXPECT_FALSE(f.error().empty());
        continue;
      }
      for (const TensorInfo& t : (*f)->tensors()) {  // what parses must be in bounds
        ASSERT_LE(t.data + t.n_bytes, (*f)->base() + (*f)->file_size());
      }
    }
  }
  EXPECT_GT(rejected, header_end);  // most corruptions are caught
}

// Truncating a real model anywhere must give an error (or, past the last tensor's
// data, a valid file): never a crash.
TEST(GgufValidation, TruncatedRealModelFailsCleanly) {
  KVTIER_REQUIRE_SHARED("models/tiny-llama-6m.Q4_0.gguf");
  auto rf = File::open(kvtier::testing::shared_path("models/tiny-llama-6m.Q4_0.gguf").string());
  ASSERT_TRUE(rf.ok()) << rf.error();
  const File& full = **rf;
  size_t needed = full.data_offset();  // bytes a parse needs: up to the end of the last tensor
  for (const TensorInfo& t : full.tensors()) {
    needed = std::max<size_t>(needed, full.data_offset() + t.offset + t.n_bytes);
  }
  std::vector<size_t> cuts;
  // The header region with a stride (every byte of the first 4 KiB), then random cuts anywhere.
  for (size_t cut = 0; cut < 4096; ++cut) cuts.push_back(cut);
  for (size_t cut = 4096; cut < full.data_offset(); cut += 397) cuts.push_back(cut);
  std::mt19937_64 rng(1234);
  for (int i = 0; i < 300; ++i) cuts.push_back(rng() % full.file_size());
  cuts.push_back(full.data_offset());
  cuts.push_back(needed - 1);
  cuts.push_back(needed);
  for (size_t cut : cuts) {
    auto f = File::from_bytes(full.base(), cut);
    if (cut >= needed) {
      EXPECT_TRUE(f.ok()) << "cut at " << cut << ": " << f.error();
    } else {
      ASSERT_FALSE(f.ok()) << "a file truncated to " << cut << " bytes was accepted";
      EXPECT_FALSE(f.error().empty());
    }
  }
}

}  // namespace
}  // namespace kvtier::gguf
