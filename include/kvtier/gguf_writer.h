// GGUF writer (format v3 by default, v2 on request): metadata of every value type,
// tensors as raw bytes, data aligned to `general.alignment` (default 32). Used by
// tests to handcraft files and by tools/ to generate synthetic models.
//
//   gguf::GgufWriter w;
//   w.set_string("general.architecture", "llama");
//   w.set_u32("llama.block_count", 2);
//   w.set_array_str("tokenizer.ggml.tokens", {"a", "b"});
//   Status s = w.add_tensor("token_embd.weight", GgmlType::F32, {ne0, ne1}, bytes);
//   Status s = w.write_file("model.gguf");   // temp file + rename: never a half-written file
//   std::vector<uint8_t> image = w.to_bytes();
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "kvtier/ggml_types.h"
#include "kvtier/gguf.h"
#include "kvtier/status.h"

namespace kvtier::gguf {

class GgufWriter {
 public:
  explicit GgufWriter(uint32_t version = 3) : version_(version) {}

  // Metadata, written in the order keys were first set. Setting a key again
  // replaces its value in place.
  void set_u8(std::string_view key, uint8_t v);
  void set_i8(std::string_view key, int8_t v);
  void set_u16(std::string_view key, uint16_t v);
  void set_i16(std::string_view key, int16_t v);
  void set_u32(std::string_view key, uint32_t v);
  void set_i32(std::string_view key, int32_t v);
  void set_u64(std::string_view key, uint64_t v);
  void set_i64(std::string_view key, int64_t v);
  void set_f32(std::string_view key, float v);
  void set_f64(std::string_view key, double v);
  void set_bool(std::string_view key, bool v);
  void set_string(std::string_view key, std::string_view v);

  void set_array_str(std::string_view key, const std::vector<std::string>& v);
  void set_array_u8(std::string_view key, std::span<const uint8_t> v);
  void set_array_i8(std::string_view key, std::span<const int8_t> v);
  void set_array_u16(std::string_view key, std::span<const uint16_t> v);
  void set_array_i16(std::string_view key, std::span<const int16_t> v);
  void set_array_u32(std::string_view key, std::span<const uint32_t> v);
  void set_array_i32(std::string_view key, std::span<const int32_t> v);
  void set_array_u64(std::string_view key, std::span<const uint64_t> v);
  void set_array_i64(std::string_view key, std::span<const int64_t> v);
  void set_array_f32(std::string_view key, std::span<const float> v);
  void set_array_f64(std::string_view key, std::span<const double> v);
  void set_array_bool(std::string_view key, const std::vector<bool>& v);

  // Escape hatch for tests: a value of `raw_type` whose encoding (everything after
  // the u32 type) is given verbatim, e.g. nested arrays or deliberately bad types.
  void set_raw(std::string_view key, uint32_t raw_type, std::vector<uint8_t> encoded_value);

  // Sets `general.alignment` (u32). Tensor data is laid out with it when it is a
  // power of two; otherwise with the default 32 (so that broken files can be made).
  void set_alignment(uint32_t alignment) { set_u32("general.alignment", alignment); }

  bool has_key(std::string_view key) const;
  void remove(std::string_view key);

  // A tensor of `dims` (ne[0] first, 1 to 4 of them) whose data is `bytes`, which
  // must be exactly the size GGML's layout gives. Errors name the tensor.
  Status add_tensor(std::string_view name, GgmlType type, std::vector<int64_t> dims,
                    std::span<const uint8_t> bytes);
  Status add_tensor_f32(std::string_view name, std::vector<int64_t> dims, std::span<const float> values);

  size_t n_tensors() const { return tensors_.size(); }

  // The whole file image.
  std::vector<uint8_t> to_bytes() const;
  // Writes atomically: to a temporary file beside `path`, fsync, then rename.
  Status write_file(const std::string& path) const;

 private:
  struct Entry {
    std::string key;
    uint32_t type;
    std::vector<uint8_t> encoded;  // the value's bytes after its u32 type
  };
  struct Tensor {
    std::string name;
    GgmlType type;
    std::vector<int64_t> dims;
    std::vector<uint8_t> data;  // [n_bytes] as laid out by GGML
  };
  void set(std::string_view key, ValueType type, std::vector<uint8_t> encoded);
  template <class T>
  void set_array_fixed(std::string_view key, ValueType elem, std::span<const T> v);
  uint64_t layout_alignment() const;
  // Header, metadata, tensor table and padding up to the data section; fills each tensor's offset.
  std::vector<uint8_t> header_bytes(std::vector<uint64_t>& offsets) const;

  uint32_t version_;
  std::vector<Entry> entries_;
  std::vector<Tensor> tensors_;
};

}  // namespace kvtier::gguf
