// GGUF reader (format versions 2 and 3): memory-mapped, every field validated
// before use. See https://github.com/ggml-org/ggml/blob/master/docs/gguf.md
//
// File layout (little-endian):
//   u32 magic "GGUF" | u32 version | u64 n_tensors | u64 n_kv
//   n_kv   x { string key | u32 value_type | value }
//   n_tensors x { string name | u32 n_dims | u64 ne[n_dims] | u32 ggml_type | u64 offset }
//   padding to `general.alignment` (default 32) | tensor data
//   string = u64 length + bytes (no NUL); array = u32 elem_type + u64 count + elems
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "kvtier/ggml_types.h"
#include "kvtier/status.h"

namespace kvtier::gguf {

enum class ValueType : uint32_t {
  UINT8 = 0, INT8 = 1, UINT16 = 2, INT16 = 3, UINT32 = 4, INT32 = 5, FLOAT32 = 6,
  BOOL = 7, STRING = 8, ARRAY = 9, UINT64 = 10, INT64 = 11, FLOAT64 = 12,
};
const char* value_type_name(ValueType t);

// One metadata value. Scalars are widened on parse; strings and arrays point into
// the mapped file (valid while the File lives).
struct Value {
  ValueType type = ValueType::UINT8;
  // Scalar payloads (the one matching `type` is meaningful).
  uint64_t u = 0;
  int64_t i = 0;
  double f = 0;
  bool b = false;
  std::string_view str;  // STRING
  // ARRAY: element type, count, and the raw bytes of the elements.
  ValueType array_type = ValueType::UINT8;
  uint64_t array_count = 0;
  const uint8_t* array_data = nullptr;
  // For arrays of strings: views of each element (filled at parse time).
  std::vector<std::string_view> array_strings;
};

struct TensorInfo {
  std::string name;
  GgmlType type = GgmlType::F32;
  int n_dims = 0;
  int64_t ne[4] = {1, 1, 1, 1};  // ne[0] is the contiguous (row) dimension
  uint64_t offset = 0;           // relative to the data section
  uint64_t n_bytes = 0;
  const uint8_t* data = nullptr;  // into the mapping (or the copy of copy_tensors_into_memory)
  int64_t n_elements() const { return ne[0] * ne[1] * ne[2] * ne[3]; }
};

class File {
 public:
  // Maps and validates a file. Errors name the field that was wrong.
  static Result<std::unique_ptr<File>> open(const std::string& path);
  // Parses an in-memory image (copied); used by tests and the fuzzer.
  static Result<std::unique_ptr<File>> from_bytes(const uint8_t* data, size_t size);
  ~File();
  File(const File&) = delete;
  File& operator=(const File&) = delete;

  uint32_t version() const { return version_; }
  uint64_t alignment() const { return alignment_; }
  uint64_t data_offset() const { return data_offset_; }
  size_t file_size() const { return size_; }
  const uint8_t* base() const { return base_; }
  const std::string& path() const { return path_; }

  // Metadata in file order.
  const std::vector<std::pair<std::string, Value>>& metadata() const { return kv_; }
  const Value* find(std::string_view key) const;

  // Typed accessors. They return an error naming the key when it is missing or
  // has an incompatible type. Integer getters accept any integer type whose
  // value fits.
  Result<std::string> get_string(std::string_view key) const;
  Result<uint64_t> get_u64(std::string_view key) const;
  Result<uint32_t> get_u32(std::string_view key) const;
  Result<float> get_f32(std::string_view key) const;
  Result<bool> get_bool(std::string_view key) const;
  // Arrays. get_string_array fails unless the element type is STRING;
  // get_f32_array fails unless it is FLOAT32; get_i32_array accepts INT32/UINT32.
  // expected_count (if given) must match exactly.
  Result<std::vector<std::string_view>> get_string_array(std::string_view key,
                                                         std::optional<uint64_t> expected_count = {}) const;
  Result<std::vector<float>> get_f32_array(std::string_view key,
                                           std::optional<uint64_t> expected_count = {}) const;
  Result<std::vector<int32_t>> get_i32_array(std::string_view key,
                                             std::optional<uint64_t> expected_count = {}) const;

  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  const TensorInfo* find_tensor(std::string_view name) const;

  // xxHash64 of the header and tensor table (everything before the data section).
  uint64_t header_hash() const;

  // Tensor bytes: [begin, end) offsets into the data section that tensors occupy, sorted, adjacent ones merged
  // (padding between tensors and anything after the last one are not in them), and their total.
  std::vector<std::pair<uint64_t, uint64_t>> tensor_byte_ranges() const;
  uint64_t tensor_bytes() const;

  // Where the tensors' bytes live. By default they stay in the file's mapping and are read from disk (or the
  // page cache) on first use; these three change that, as llama.cpp's default, --mlock and --no-mmap do.
  //   advise_will_need: asks the kernel to start reading a tensor in the background (madvise WILLNEED);
  //     returns at once. No effect on copies and in-memory images.
  //   lock_tensors: locks the tensor bytes in RAM (mlock), which reads them now; errors say how far it got
  //     and the RLIMIT_MEMLOCK limit (the bytes locked so far stay locked).
  //   copy_tensors_into_memory: reads the tensor bytes into anonymous memory (pread, read-only afterwards)
  //     and points every TensorInfo::data there: the weights then no longer depend on the file or the page
  //     cache (the header and metadata stay mapped). A file that changed size since open() is refused.
  // progress: bytes done and total, called every few MiB.
  using ProgressFn = std::function<void(uint64_t done, uint64_t total)>;
  void advise_will_need(const TensorInfo& tensor) const;
  Status lock_tensors(const ProgressFn& progress = {});
  Status copy_tensors_into_memory(const ProgressFn& progress = {});

  // Drops the mapped pages before the data section (header, metadata, tensor table) from the process's
  // resident set once the model and tokenizer have been built from them: a large vocabulary's token and merge
  // arrays are several MiB. Pages touched again are read back from the file, so every accessor stays valid.
  // No effect on from_bytes images.
  void release_metadata_pages() const;

 private:
  File() = default;
  Status parse();

  std::string path_;
  const uint8_t* base_ = nullptr;
  size_t size_ = 0;
  bool mapped_ = false;
  std::vector<uint8_t> owned_;  // from_bytes copies here
  uint8_t* tensor_copy_ = nullptr;  // [size_ - data_offset_] anonymous copy of the data section, or null
  size_t tensor_copy_size_ = 0;
  uint32_t version_ = 0;
  uint64_t alignment_ = 32;
  uint64_t data_offset_ = 0;
  std::vector<std::pair<std::string, Value>> kv_;
  std::vector<TensorInfo> tensors_;
  uint64_t header_hash_ = 0;  // computed once in parse()
};

}  // namespace kvtier::gguf
