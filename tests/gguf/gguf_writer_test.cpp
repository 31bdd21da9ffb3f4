// Writer -> reader round trips: every value type, arrays, tensors of several GGML
// types, custom alignment, v2 and v3, files on disk; and a real model rewritten
// through the writer comes out byte-identical.
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <numeric>

#include <gtest/gtest.h>

#include "common/shared_data.h"
#include "kvtier/gguf.h"
#include "kvtier/gguf_writer.h"

namespace kvtier::gguf {
namespace {

namespace fs = std::filesystem;

std::unique_ptr<File> read_back(const GgufWriter& w) {
  const std::vector<uint8_t> bytes = w.to_bytes();
  auto f = File::from_bytes(bytes.data(), bytes.size());
  EXPECT_TRUE(f.ok()) << f.error();
  return f.ok() ? std::move(f).value() : nullptr;
}

std::vector<uint8_t> pattern(size_t n, uint8_t seed) {
  std::vector<uint8_t> out(n);  // [n] deterministic filler
  for (size_t i = 0; i < n; ++i) out[i] = static_cast<uint8_t>(seed + i * 7);
  return out;
}

// A fresh, empty directory under the build tree for files the tests write.
fs::path scratch_dir(const std::string& name) {
  const fs::path dir = fs::path(KVTIER_BINARY_DIR) / "test_scratch" / ("gguf_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

TEST(GgufWriter, EveryScalarTypeRoundTrips) {
  GgufWriter w;
  w.set_u8("t.u8", 200);
  w.set_i8("t.i8", -100);
  w.set_u16("t.u16", 60000);
  w.set_i16("t.i16", -30000);
  w.set_u32("t.u32", 4000000000u);
  w.set_i32("t.i32", -2000000000);
  w.set_u64("t.u64", 18000000000000000000ull);
  w.set_i64("t.i64", -9000000000000000000ll);
  w.set_f32("t.f32", 1.5e-5f);
  w.set_f64("t.f64", 3.141592653589793);
  w.set_bool("t.true", true);
  w.set_bool("t.false", false);
  w.set_string("t.str", "hello\nworld");
  w.set_string("t.empty", "");
  auto f = read_back(w);
  ASSERT_NE(f, nullptr);
  EXPECT_EQ(f->version(), 3u);
  ASSERT_EQ(f->metadata().size(), 14u);
  EXPECT_EQ(f->metadata()[0].first, "t.u8");  // file order preserved
  EXPECT_EQ(f->find("t.u8")->type, ValueType::UINT8);
  EXPECT_EQ(f->find("t.u8")->u, 200u);
  EXPECT_EQ(f->find("t.i8")->i, -100);
  EXPECT_EQ(f->find("t.u16")->u, 60000u);
  EXPECT_EQ(f->find("t.i16")->i, -30000);
  EXPECT_EQ(f->get_u32("t.u32").value(), 4000000000u);
  EXPECT_EQ(f->find("t.i32")->i, -2000000000);
  EXPECT_EQ(f->get_u64("t.u64").value(), 18000000000000000000ull);
  EXPECT_EQ(f->find("t.i64")->i, -9000000000000000000ll);
  EXPECT_EQ(f->find("t.i64")->type, ValueType::INT64);
  EXPECT_FLOAT_EQ(f->get_f32("t.f32").value(), 1.5e-5f);
  EXPECT_EQ(f->find("t.f64")->f, 3.141592653589793);
  EXPECT_EQ(f->find("t.f64")->type, ValueType::FLOAT64);
  EXPECT_TRUE(f->get_bool("t.true").value());
  EXPECT_FALSE(f->get_bool("t.false").value());
  EXPECT_EQ(f->get_string("t.str").value(), "hello\nworld");
  EXPECT_EQ(f->get_string("t.empty").value(), "");
  EXPECT_TRUE(f->tensors().empty());
}

TEST(GgufWriter, ArraysRoundTrip) {
  GgufWriter w;
  const std::vector<std::string> strings = {"a", "", "<|begin_of_text|>", std::string("nul\0byte", 8)};
  const std::vector<int32_t> ints = {-1, 0, 7, std::numeric_limits<int32_t>::max()};
  const std::vector<uint32_t> uints = {1, 2, 3};
  const std::vector<float> floats = {0.5f, -2.25f, 1e30f};
  const std::vector<uint8_t> bytes = {1, 2, 255};
  const std::vector<int64_t> longs = {-5, 1ll << 40};
  const std::vector<double> doubles = {0.1, -0.2};
  const std::vector<uint16_t> shorts = {65535};
  w.set_array_str("a.str", strings);
  w.set_array_i32("a.i32", ints);
  w.set_array_u32("a.u32", uints);
  w.set_array_f32("a.f32", floats);
  w.set_array_u8("a.u8", bytes);
  w.set_array_i64("a.i64", longs);
  w.set_array_f64("a.f64", doubles);
  w.set_array_u16("a.u16", shorts);
  w.set_array_bool("a.bool", {true, false, true});
  w.set_array_str("a.empty", {});
  auto f = read_back(w);
  ASSERT_NE(f, nullptr);
  auto s = f->get_string_array("a.str", strings.size());
  ASSERT_TRUE(s.ok()) << s.error();
  for (size_t i = 0; i < strings.size(); ++i) EXPECT_EQ((*s)[i], strings[i]);
  EXPECT_EQ(f->get_i32_array("a.i32").value(), ints);
  auto u = f->get_i32_array("a.u32");  // UINT32 elements are accepted when they fit
  ASSERT_TRUE(u.ok()) << u.error();
  EXPECT_EQ(*u, (std::vector<int32_t>{1, 2, 3}));
  EXPECT_EQ(f->get_f32_array("a.f32", 3).value(), floats);
  const Value* v = f->find("a.u8");
  ASSERT_NE(v, nullptr);
  EXPECT_EQ(v->array_type, ValueType::UINT8);
  ASSERT_EQ(v->array_count, 3u);
  EXPECT_EQ(0, std::memcmp(v->array_data, bytes.data(), 3));
  v = f->find("a.i64");
  EXPECT_EQ(v->array_type, ValueType::INT64);
  int64_t second = 0;
  std::memcpy(&second, v->array_data + 8, 8);
  EXPECT_EQ(second, 1ll << 40);
  EXPECT_EQ(f->find("a.f64")->array_type, ValueType::FLOAT64);
  EXPECT_EQ(f->find("a.u16")->array_count, 1u);
  EXPECT_EQ(f->find("a.bool")->array_data[2], 1);
  EXPECT_EQ(f->get_string_array("a.empty").value().size(), 0u);
}

TEST(GgufWriter, SettingAKeyAgainReplacesIt) {
  GgufWriter w;
  w.set_u32("k", 1);
  w.set_string("other", "x");
  w.set_string("k", "now a string");
  EXPECT_TRUE(w.has_key("k"));
  auto f = read_back(w);
  ASSERT_NE(f, nullptr);
  ASSERT_EQ(f->metadata().size(), 2u);
  EXPECT_EQ(f->metadata()[0].first, "k");
  EXPECT_EQ(f->get_string("k").value(), "now a string");
  w.remove("k");
  EXPECT_FALSE(w.has_key("k"));
  EXPECT_EQ(read_back(w)->metadata().size(), 1u);
}

TEST(GgufWriter, TensorsRoundTripWithAlignment) {
  for (uint32_t alignment : {32u, 64u, 1u, 4096u}) {
    SCOPED_TRACE(alignment);
    GgufWriter w;
    if (alignment != 32) w.set_alignment(alignment);
    const std::vector<float> f32 = {1, 2, 3, 4, 5, 6};
    ASSERT_TRUE(w.add_tensor_f32("norm", {3, 2}, f32).ok());
    const auto q4 = pattern(2 * 4 * 18, 3);  // 2 blocks per row x 4 rows x 18 bytes
    ASSERT_TRUE(w.add_tensor("blk.0.attn_q.weight", GgmlType::Q4_0, {64, 4}, q4).ok());
    const auto f16 = pattern(5 * 2, 9);
    ASSERT_TRUE(w.add_tensor("odd", GgmlType::F16, {5}, f16).ok());
    const auto q8 = pattern(34 * 6, 1);
    ASSERT_TRUE(w.add_tensor("q8.4d", GgmlType::Q8_0, {32, 3, 1, 2}, q8).ok());
    const std::vector<uint8_t> bytes = w.to_bytes();
    auto rf = File::from_bytes(bytes.data(), bytes.size());
    ASSERT_TRUE(rf.ok()) << rf.error();
    const File& f = **rf;
    EXPECT_EQ(f.alignment(), alignment);
    EXPECT_EQ(f.data_offset() % alignment, 0u);
    EXPECT_EQ(bytes.size() % alignment, 0u);
    ASSERT_EQ(f.tensors().size(), 4u);
    const TensorInfo* norm = f.find_tensor("norm");
    ASSERT_NE(norm, nullptr);
    EXPECT_EQ(norm->type, GgmlType::F32);
    EXPECT_EQ(norm->n_dims, 2);
    EXPECT_EQ(norm->ne[0], 3);
    EXPECT_EQ(norm->ne[1], 2);
    EXPECT_EQ(norm->n_elements(), 6);
    EXPECT_EQ(0, std::memcmp(norm->data, f32.data(), 24));
    const TensorInfo* q = f.find_tensor("blk.0.attn_q.weight");
    ASSERT_NE(q, nullptr);
    EXPECT_EQ(q->type, GgmlType::Q4_0);
    EXPECT_EQ(q->n_bytes, q4.size());
    EXPECT_EQ(0, std::memcmp(q->data, q4.data(), q4.size()));
    EXPECT_EQ(f.find_tensor("odd")->n_bytes, 10u);
    EXPECT_EQ(0, std::memcmp(f.find_tensor("odd")->data, f16.data(), 10));
    const TensorInfo* q8t = f.find_tensor("q8.4d");
    EXPECT_EQ(q8t->n_dims, 4);
    EXPECT_EQ(q8t->ne[3], 2);
    EXPECT_EQ(0, std::memcmp(q8t->data, q8.data(), q8.size()));
    for (const TensorInfo& t : f.tensors()) {
      EXPECT_EQ(t.offset % alignment, 0u) << t.name;
    }
    EXPECT_EQ(f.find_tensor("missing"), nullptr);
  }
}

TEST(GgufWriter, VersionTwoRoundTrips) {
  GgufWriter w(2);
  w.set_string("general.architecture", "llama");
  ASSERT_TRUE(w.add_tensor_f32("x", {2}, std::vector<float>{1, 2}).ok());
  auto f = read_back(w);
  ASSERT_NE(f, nullptr);
  EXPECT_EQ(f->version(), 2u);
  EXPECT_EQ(f->get_string("general.architecture").value(), "llama");
}

TEST(GgufWriter, AddTensorRejectsBadInputNamingTheTensor) {
  GgufWriter w;
  const auto four = pattern(4, 0);
  Status s = w.add_tensor("short", GgmlType::F32, {2}, four);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("'short'"), std::string::npos) << s.message();
  s = w.add_tensor("blocks", GgmlType::Q4_0, {16}, pattern(9, 0));
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("block size"), std::string::npos) << s.message();
  s = w.add_tensor("five_dims", GgmlType::F32, {1, 1, 1, 1, 1}, four);
  EXPECT_FALSE(s.ok());
  s = w.add_tensor("zero", GgmlType::F32, {0}, {});
  EXPECT_FALSE(s.ok());
  ASSERT_TRUE(w.add_tensor("one", GgmlType::F32, {1}, four).ok());
  s = w.add_tensor("one", GgmlType::F32, {1}, four);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("duplicate"), std::string::npos) << s.message();
  EXPECT_EQ(w.n_tensors(), 1u);
}

TEST(GgufWriter, WriteFileIsReadableAndAtomic) {
  const fs::path dir = scratch_dir("write");
  const fs::path path = dir / "model.gguf";
  GgufWriter w;
  w.set_string("general.name", "first");
  ASSERT_TRUE(w.add_tensor_f32("w", {4}, std::vector<float>{1, 2, 3, 4}).ok());
  ASSERT_TRUE(w.write_file(path.string()).ok());
  {
    auto f = File::open(path.string());
    ASSERT_TRUE(f.ok()) << f.error();
    EXPECT_EQ((*f)->get_string("general.name").value(), "first");
    EXPECT_EQ((*f)->file_size(), w.to_bytes().size());
    std::ifstream in(path, std::ios::binary);
    std::vector<uint8_t> on_disk((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    EXPECT_EQ(on_disk, w.to_bytes());
  }
  // Overwriting replaces the file whole; no temporary file is left behind.
  w.set_string("general.name", "second");
  ASSERT_TRUE(w.write_file(path.string()).ok());
  auto f = File::open(path.string());
  ASSERT_TRUE(f.ok()) << f.error();
  EXPECT_EQ((*f)->get_string("general.name").value(), "second");
  size_t entries = 0;
  for ([[maybe_unused]] const auto& e : fs::directory_iterator(dir)) ++entries;
  EXPECT_EQ(entries, 1u);
  // A directory that does not exist: an error naming the path, nothing written.
  const std::string bad = (dir / "no_such_dir" / "x.gguf").string();
  Status s = w.write_file(bad);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find(bad), std::string::npos) << s.message();
  fs::remove_all(dir);
}

// Re-encodes one parsed metadata value through the writer's typed setters.
void copy_value(GgufWriter& w, const std::string& key, const Value& v) {
  switch (v.type) {
    case ValueType::UINT8: w.set_u8(key, static_cast<uint8_t>(v.u)); break;
    case ValueType::INT8: w.set_i8(key, static_cast<int8_t>(v.i)); break;
    case ValueType::UINT16: w.set_u16(key, static_cast<uint16_t>(v.u)); break;
    case ValueType::INT16: w.set_i16(key, static_cast<int16_t>(v.i)); break;
    case ValueType::UINT32: w.set_u32(key, static_cast<uint32_t>(v.u)); break;
    case ValueType::INT32: w.set_i32(key, static_cast<int32_t>(v.i)); break;
    case ValueType::UINT64: w.set_u64(key, v.u); break;
    case ValueType::INT64: w.set_i64(key, v.i); break;
    case ValueType::FLOAT32: w.set_f32(key, static_cast<float>(v.f)); break;
    case ValueType::FLOAT64: w.set_f64(key, v.f); break;
    case ValueType::BOOL: w.set_bool(key, v.b); break;
    case ValueType::STRING: w.set_string(key, v.str); break;
    case ValueType::ARRAY:
      if (v.array_type == ValueType::STRING) {
        w.set_array_str(key, std::vector<std::string>(v.array_strings.begin(), v.array_strings.end()));
      } else if (v.array_type == ValueType::INT32) {
        std::vector<int32_t> xs(v.array_count);
        std::memcpy(xs.data(), v.array_data, xs.size() * 4);
        w.set_array_i32(key, xs);
      } else if (v.array_type == ValueType::FLOAT32) {
        std::vector<float> xs(v.array_count);
        std::memcpy(xs.data(), v.array_data, xs.size() * 4);
        w.set_array_f32(key, xs);
      } else {
        ADD_FAILURE() << key << ": array of " << value_type_name(v.array_type) << " not covered by this test";
      }
      break;
  }
}

TEST(GgufWriter, RewritingARealModelIsByteIdentical) {
  KVTIER_REQUIRE_SHARED("models/tiny-llama-6m.Q4_0.gguf");
  auto rf = File::open(kvtier::testing::shared_path("models/tiny-llama-6m.Q4_0.gguf").string());
  ASSERT_TRUE(rf.ok()) << rf.error();
  const File& original = **rf;
  GgufWriter w(original.version());
  for (const auto& [key, value] : original.metadata()) copy_value(w, key, value);
  for (const TensorInfo& t : original.tensors()) {
    std::vector<int64_t> dims(t.ne, t.ne + t.n_dims);
    ASSERT_TRUE(w.add_tensor(t.name, t.type, dims, std::span<const uint8_t>(t.data, t.n_bytes)).ok());
  }
  const std::vector<uint8_t> bytes = w.to_bytes();
  ASSERT_EQ(bytes.size(), original.file_size());
  EXPECT_EQ(0, std::memcmp(bytes.data(), original.base(), bytes.size()));
}

}  // namespace
}  // namespace kvtier::gguf
