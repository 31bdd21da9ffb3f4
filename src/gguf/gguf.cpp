// GGUF reader: maps a file read-only and validates every field before it is used.
// Every error names the field that was wrong (header field, metadata key, or
// tensor name and attribute) and the byte offset where it was read.
#include "kvtier/gguf.h"
#include "kvtier/file_io.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <unordered_set>

namespace kvtier::gguf {

namespace {

constexpr uint32_t kMagic = 0x46554747;  // "GGUF" read as a little-endian u32
constexpr uint64_t kDefaultAlignment = 32;
constexpr int kMaxDims = 4;
// Arrays of arrays are legal GGUF but nothing real uses more than one level;
// the limit bounds recursion on hostile input.
constexpr int kMaxArrayNesting = 4;

// Smallest encodings, used to reject counts that the remaining bytes could not hold
// before anything is allocated for them.
constexpr uint64_t kMinKvBytes = 8 + 1 + 4 + 1;           // key length, 1-byte key, type, u8 value
constexpr uint64_t kMinTensorInfoBytes = 8 + 1 + 4 + 4 + 8;  // name length, 1-byte name, n_dims, type, offset
constexpr uint64_t kMinArrayHeaderBytes = 4 + 8;          // element type + count

// Byte size of a fixed-size scalar type; 0 for STRING and ARRAY (variable) and for unknown values.
uint64_t scalar_size(uint32_t raw) {
  switch (static_cast<ValueType>(raw)) {
    case ValueType::UINT8: case ValueType::INT8: case ValueType::BOOL: return 1;
    case ValueType::UINT16: case ValueType::INT16: return 2;
    case ValueType::UINT32: case ValueType::INT32: case ValueType::FLOAT32: return 4;
    case ValueType::UINT64: case ValueType::INT64: case ValueType::FLOAT64: return 8;
    case ValueType::STRING: case ValueType::ARRAY: return 0;
  }
  return 0;
}

bool is_known_value_type(uint32_t raw) { return raw <= static_cast<uint32_t>(ValueType::FLOAT64); }

bool is_integer(ValueType t) {
  switch (t) {
    case ValueType::UINT8: case ValueType::INT8: case ValueType::UINT16: case ValueType::INT16:
    case ValueType::UINT32: case ValueType::INT32: case ValueType::UINT64: case ValueType::INT64:
      return true;
    default:
      return false;
  }
}

bool is_signed(ValueType t) {
  return t == ValueType::INT8 || t == ValueType::INT16 || t == ValueType::INT32 || t == ValueType::INT64;
}

template <class T>
T load(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof v);  // the file gives no alignment guarantee
  return v;
}

// A bounds-checked reader over the file image. Every read names its field so that
// the error says what could not be read.
class Cursor {
 public:
  Cursor(const uint8_t* base, size_t size, std::string prefix)
      : base_(base), size_(size), prefix_(std::move(prefix)) {}

  size_t pos() const { return pos_; }
  uint64_t remaining() const { return size_ - pos_; }
  const uint8_t* here() const { return base_ + pos_; }

  Status error(const std::string& field, const std::string& what) const {
    return Status::error(prefix_ + field + ": " + what);
  }
  Status error_at(const std::string& field, size_t at, const std::string& what) const {
    return Status::error(prefix_ + field + " (at byte " + std::to_string(at) + "): " + what);
  }

  template <class T>
  Status read(const std::string& field, T& out) {
    if (remaining() < sizeof(T)) {
      return error_at(field, pos_,
                      "needs " + std::to_string(sizeof(T)) + " bytes but the file ends after " +
                          std::to_string(remaining()) + " (file truncated?)");
    }
    out = load<T>(here());
    pos_ += sizeof(T);
    return Status();
  }

  Status skip(const std::string& field, uint64_t n) {
    if (n > remaining()) {
      return error_at(field, pos_,
                      std::to_string(n) + " bytes run past the end of the file (" + std::to_string(remaining()) +
                          " bytes left)");
    }
    pos_ += static_cast<size_t>(n);
    return Status();
  }

  // Reads a string; `field` is only called (to build the name for the message) on error,
  // so that vocabularies of 100k+ tokens do not build 100k+ field names.
  template <class FieldName>
  Status read_string(const FieldName& field, std::string_view& out) {
    const size_t start = pos_;
    if (remaining() < 8) {
      return error_at(field() + " length", pos_,
                      "needs 8 bytes but the file ends after " + std::to_string(remaining()) + " (file truncated?)");
    }
    const uint64_t length = load<uint64_t>(here());
    if (length > remaining() - 8) {
      return error_at(field(), start,
                      "string length " + std::to_string(length) + " is larger than the " +
                          std::to_string(remaining() - 8) + " bytes left in the file");
    }
    pos_ += 8;
    out = std::string_view(reinterpret_cast<const char*>(here()), static_cast<size_t>(length));
    pos_ += static_cast<size_t>(length);
    return Status();
  }

 private:
  const uint8_t* base_;
  size_t size_;
  size_t pos_ = 0;
  std::string prefix_;
};

std::string quoted(std::string_view s) {
  // Keys and names come from the file: keep them printable in messages.
  std::string out = "'";
  for (char c : s.substr(0, 120)) out += (c >= 0x20 && c < 0x7f) ? c : '?';
  if (s.size() > 120) out += "...";
  return out + "'";
}

// Parses one value of `raw_type` at the cursor into `out`. `field` names it in errors.
Status parse_value(Cursor& cur, uint32_t raw_type, const std::string& field, int depth, Value& out) {
  if (!is_known_value_type(raw_type)) {
    return cur.error_at(field, cur.pos(), "unknown value type " + std::to_string(raw_type));
  }
  const ValueType type = static_cast<ValueType>(raw_type);
  out.type = type;
  const size_t at = cur.pos();
  switch (type) {
    case ValueType::UINT8: { uint8_t v{}; if (Status s = cur.read(field, v); !s.ok()) return s; out.u = v; return Status(); }
    case ValueType::UINT16: { uint16_t v{}; if (Status s = cur.read(field, v); !s.ok()) return s; out.u = v; return Status(); }
    case ValueType::UINT32: { uint32_t v{}; if (Status s = cur.read(field, v); !s.ok()) return s; out.u = v; return Status(); }
    case ValueType::UINT64: { uint64_t v{}; if (Status s = cur.read(field, v); !s.ok()) return s; out.u = v; return Status(); }
    case ValueType::INT8: { int8_t v{}; if (Status s = cur.read(field, v); !s.ok()) return s; out.i = v; return Status(); }
    case ValueType::INT16: { int16_t v{}; if (Status s = cur.read(field, v); !s.ok()) return s; out.i = v; return Status(); }
    case ValueType::INT32: { int32_t v{}; if (Status s = cur.read(field, v); !s.ok()) return s; out.i = v; return Status(); }
    case ValueType::INT64: { int64_t v{}; if (Status s = cur.read(field, v); !s.ok()) return s; out.i = v; return Status(); }
    case ValueType::FLOAT32: { float v{}; if (Status s = cur.read(field, v); !s.ok()) return s; out.f = v; return Status(); }
    case ValueType::FLOAT64: { double v{}; if (Status s = cur.read(field, v); !s.ok()) return s; out.f = v; return Status(); }
    case ValueType::BOOL: {
      uint8_t v = 0;
      if (Status s = cur.read(field, v); !s.ok()) return s;
      if (v > 1) return cur.error_at(field, at, "bool value " + std::to_string(v) + " is neither 0 nor 1");
      out.b = v != 0;
      return Status();
    }
    case ValueType::STRING:
      return cur.read_string([&] { return field; }, out.str);
    case ValueType::ARRAY: {
      if (depth >= kMaxArrayNesting) {
        return cur.error_at(field, at,
                            "arrays nested deeper than " + std::to_string(kMaxArrayNesting) + " levels");
      }
      uint32_t elem_raw = 0;
      uint64_t count = 0;
      if (Status s = cur.read(field + " array element type", elem_raw); !s.ok()) return s;
      if (!is_known_value_type(elem_raw)) {
        return cur.error_at(field, at, "unknown array element type " + std::to_string(elem_raw));
      }
      if (Status s = cur.read(field + " array length", count); !s.ok()) return s;
      out.array_type = static_cast<ValueType>(elem_raw);
      out.array_count = count;
      out.array_data = cur.here();
      const uint64_t elem_size = scalar_size(elem_raw);
      // Lower bound of the encoded size of one element: rejects absurd counts before any allocation.
      const uint64_t min_elem = elem_size ? elem_size
                                : out.array_type == ValueType::STRING ? 8 : kMinArrayHeaderBytes;
      if (count > cur.remaining() / min_elem) {
        return cur.error_at(field, at,
                            "array length " + std::to_string(count) + " of " + value_type_name(out.array_type) +
                                " is larger than the " + std::to_string(cur.remaining()) +
                                " bytes left in the file could hold");
      }
      if (elem_size) {
        if (out.array_type == ValueType::BOOL) {
          for (uint64_t k = 0; k < count; ++k) {
            if (cur.here()[k] > 1) {
              return cur.error(field + "[" + std::to_string(k) + "]",
                               "bool value " + std::to_string(cur.here()[k]) + " is neither 0 nor 1");
            }
          }
        }
        return cur.skip(field, count * elem_size);
      }
      if (out.array_type == ValueType::STRING) {
        out.array_strings.reserve(static_cast<size_t>(count));
        for (uint64_t k = 0; k < count; ++k) {
          std::string_view s;
          auto element = [&] { return field + "[" + std::to_string(k) + "]"; };
          if (Status st = cur.read_string(element, s); !st.ok()) return st;
          out.array_strings.push_back(s);
        }
        return Status();
      }
      // Array of arrays: validated and skipped; only the raw bytes are exposed.
      for (uint64_t k = 0; k < count; ++k) {
        Value nested;
        if (Status st = parse_value(cur, elem_raw, field + "[" + std::to_string(k) + "]", depth + 1, nested);
            !st.ok()) {
          return st;
        }
      }
      return Status();
    }
  }
  return cur.error_at(field, at, "unknown value type " + std::to_string(raw_type));
}

// Checks the tokenizer arrays that later layers index by token id: their types and
// that parallel arrays agree in length with the token list.
Status check_tokenizer(const File& file, const Cursor& cur) {
  const Value* tokens = file.find("tokenizer.ggml.tokens");
  auto expect_array_of = [&](const char* key, ValueType elem) -> Status {
    const Value* v = file.find(key);
    if (!v) return Status();
    if (v->type != ValueType::ARRAY || v->array_type != elem) {
      std::string got = v->type == ValueType::ARRAY
                            ? std::string("array of ") + value_type_name(v->array_type)
                            : value_type_name(v->type);
      return cur.error(std::string("metadata key '") + key + "'",
                       std::string("must be an array of ") + value_type_name(elem) + ", got " + got);
    }
    if (tokens && v != tokens && elem != ValueType::STRING && v->array_count != tokens->array_count) {
      return cur.error(std::string("metadata key '") + key + "'",
                       "has " + std::to_string(v->array_count) + " entries but tokenizer.ggml.tokens has " +
                           std::to_string(tokens->array_count));
    }
    return Status();
  };
  if (Status s = expect_array_of("tokenizer.ggml.tokens", ValueType::STRING); !s.ok()) return s;
  if (Status s = expect_array_of("tokenizer.ggml.scores", ValueType::FLOAT32); !s.ok()) return s;
  if (Status s = expect_array_of("tokenizer.ggml.token_type", ValueType::INT32); !s.ok()) return s;
  if (Status s = expect_array_of("tokenizer.ggml.merges", ValueType::STRING); !s.ok()) return s;
  return Status();
}

bool checked_mul(uint64_t a, uint64_t b, uint64_t& out) { return !__builtin_mul_overflow(a, b, &out); }

}  // namespace

const char* value_type_name(ValueType t) {
  switch (t) {
    case ValueType::UINT8: return "UINT8";
    case ValueType::INT8: return "INT8";
    case ValueType::UINT16: return "UINT16";
    case ValueType::INT16: return "INT16";
    case ValueType::UINT32: return "UINT32";
    case ValueType::INT32: return "INT32";
    case ValueType::FLOAT32: return "FLOAT32";
    case ValueType::BOOL: return "BOOL";
    case ValueType::STRING: return "STRING";
    case ValueType::ARRAY: return "ARRAY";
    case ValueType::UINT64: return "UINT64";
    case ValueType::INT64: return "INT64";
    case ValueType::FLOAT64: return "FLOAT64";
  }
  return "UNKNOWN";
}

Result<std::unique_ptr<File>> File::open(const std::string& path) {
  std::unique_ptr<File> file(new File());
  file->path_ = path;
  auto opened = open_regular_file(path, "GGUF file");
  if (!opened.ok()) return opened.status();
  const int fd = *opened;
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    return Status::error("GGUF file '" + path + "': cannot stat: " + std::strerror(err));
  }
  file->size_ = static_cast<size_t>(st.st_size);
  if (file->size_ > 0) {
    void* map = ::mmap(nullptr, file->size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (map == MAP_FAILED) {
      const int err = errno;
      ::close(fd);
      return Status::error("GGUF file '" + path + "': mmap failed: " + std::strerror(err));
    }
    file->base_ = static_cast<const uint8_t*>(map);
    file->mapped_ = true;
  }
  ::close(fd);  // the mapping keeps the file contents alive
  if (Status s = file->parse(); !s.ok()) return s;
  return file;
}

Result<std::unique_ptr<File>> File::from_bytes(const uint8_t* data, size_t size) {
  std::unique_ptr<File> file(new File());
  file->owned_.assign(data, data + size);
  file->base_ = file->owned_.data();
  file->size_ = size;
  if (Status s = file->parse(); !s.ok()) return s;
  return file;
}

void File::release_metadata_pages() const {
  if (!mapped_) return;
  const size_t page = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
  const size_t end = std::min<size_t>(data_offset_, size_) / page * page;  // whole pages before the data
  if (end > 0) ::madvise(const_cast<uint8_t*>(base_), end, MADV_DONTNEED);  // advisory: failure changes nothing
}

std::vector<std::pair<uint64_t, uint64_t>> File::tensor_byte_ranges() const {
  std::vector<std::pair<uint64_t, uint64_t>> ranges;  // [n_tensors] then merged in place
  for (const TensorInfo& t : tensors_) {
    if (t.n_bytes > 0) ranges.emplace_back(t.offset, t.offset + t.n_bytes);
  }
  std::sort(ranges.begin(), ranges.end());
  std::vector<std::pair<uint64_t, uint64_t>> merged;
  for (const auto& r : ranges) {
    if (!merged.empty() && r.first <= merged.back().second) {
      merged.back().second = std::max(merged.back().second, r.second);
    } else {
      merged.push_back(r);
    }
  }
  return merged;
}

uint64_t File::tensor_bytes() const {
  uint64_t total = 0;
  for (const auto& [begin, end] : tensor_byte_ranges()) total += end - begin;
  return total;
}

namespace {
constexpr uint64_t kIoChunk = 64ull << 20;  // bytes per mlock/pread call: progress moves, one call stays short

size_t page_size() { return static_cast<size_t>(::sysconf(_SC_PAGESIZE)); }
}  // namespace

void File::advise_will_need(const TensorInfo& tensor) const {
  if (!mapped_ || tensor_copy_ || tensor.n_bytes == 0) return;
  const uintptr_t page = page_size();
  const uintptr_t begin = reinterpret_cast<uintptr_t>(tensor.data) / page * page;
  const uintptr_t end = reinterpret_cast<uintptr_t>(tensor.data) + tensor.n_bytes;
  ::madvise(reinterpret_cast<void*>(begin), end - begin, MADV_WILLNEED);  // advisory: failure changes nothing
}

Status File::lock_tensors(const ProgressFn& progress) {
  const uint8_t* data = tensor_copy_ ? tensor_copy_ : base_ + data_offset_;
  const uintptr_t page = page_size();
  const uint64_t total = tensor_bytes();
  uint64_t done = 0;
  for (const auto& [begin, end] : tensor_byte_ranges()) {
    for (uint64_t at = begin; at < end; at += kIoChunk) {
      const uint64_t stop = std::min(end, at + kIoChunk);
      const uintptr_t first = reinterpret_cast<uintptr_t>(data + at) / page * page;
      const uintptr_t last = reinterpret_cast<uintptr_t>(data + stop);
      if (::mlock(reinterpret_cast<const void*>(first), last - first) != 0) {
        const int err = errno;
        struct rlimit limit {};
        ::getrlimit(RLIMIT_MEMLOCK, &limit);
        const std::string limit_text =
            limit.rlim_cur == RLIM_INFINITY ? "unlimited" : std::to_string(limit.rlim_cur >> 10) + " KiB";
        return Status::error("could not lock the weights in RAM after " + std::to_string(done >> 20) + " of " +
                             std::to_string(total >> 20) + " MiB (mlock: " + std::strerror(err) +
                             "; the locked-memory limit RLIMIT_MEMLOCK is " + limit_text + ")");
      }
      done += stop - at;
      if (progress) progress(done, total);
    }
  }
  return {};
}

Status File::copy_tensors_into_memory(const ProgressFn& progress) {
  if (!mapped_ || tensor_copy_) return {};  // in-memory images are copies already
  const size_t data_size = size_ - data_offset_;
  if (data_size == 0) return {};
  auto opened = open_regular_file(path_, "GGUF file");
  if (!opened.ok()) return opened.status();
  const int fd = *opened;
  struct stat st {};
  if (::fstat(fd, &st) != 0 || static_cast<size_t>(st.st_size) != size_) {
    ::close(fd);
    return Status::error("GGUF file '" + path_ + "' changed size while it was being loaded");
  }
  void* copy = ::mmap(nullptr, data_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (copy == MAP_FAILED) {
    const int err = errno;
    ::close(fd);
    return Status::error("GGUF file '" + path_ + "': cannot allocate " + std::to_string(data_size >> 20) +
                         " MiB for the weights: " + std::strerror(err));
  }
  auto* bytes = static_cast<uint8_t*>(copy);
  const uint64_t total = tensor_bytes();
  uint64_t done = 0;
  for (const auto& [begin, end] : tensor_byte_ranges()) {
    for (uint64_t at = begin; at < end;) {
      const size_t want = static_cast<size_t>(std::min(end - at, kIoChunk));
      const ssize_t got = ::pread(fd, bytes + at, want, static_cast<off_t>(data_offset_ + at));
      if (got < 0 && errno == EINTR) continue;
      if (got <= 0) {
        const std::string why = got < 0 ? std::strerror(errno) : "the file ended early (truncated while loading?)";
        ::close(fd);
        ::munmap(copy, data_size);
        return Status::error("GGUF file '" + path_ + "': reading the weights at byte " +
                             std::to_string(data_offset_ + at) + " failed: " + why);
      }
      at += static_cast<uint64_t>(got);
      done += static_cast<uint64_t>(got);
      if (progress) progress(done, total);
    }
  }
  ::close(fd);
  ::mprotect(copy, data_size, PROT_READ);  // the weights are read-only, as in the mapping
  tensor_copy_ = bytes;
  tensor_copy_size_ = data_size;
  for (TensorInfo& t : tensors_) t.data = tensor_copy_ + t.offset;
  // The mapped tensor pages are never touched again; drop any the parse or a caller faulted in.
  const uintptr_t page = page_size();
  const uintptr_t first = (reinterpret_cast<uintptr_t>(base_ + data_offset_) + page - 1) / page * page;
  const uintptr_t last = reinterpret_cast<uintptr_t>(base_ + size_);
  if (last > first) ::madvise(reinterpret_cast<void*>(first), last - first, MADV_DONTNEED);
  return {};
}

File::~File() {
  if (tensor_copy_) ::munmap(tensor_copy_, tensor_copy_size_);
  if (mapped_) ::munmap(const_cast<uint8_t*>(base_), size_);
}

Status File::parse() {
  Cursor cur(base_, size_, path_.empty() ? "GGUF (in memory): " : "GGUF file '" + path_ + "': ");

  uint32_t magic = 0;
  if (Status s = cur.read("header magic", magic); !s.ok()) return s;
  if (magic != kMagic) {
    char shown[5] = {};
    std::memcpy(shown, &magic, 4);
    for (char& c : shown) {
      if (c && (c < 0x20 || c > 0x7e)) c = '?';
    }
    return cur.error("header magic", std::string("expected \"GGUF\", found \"") + shown + "\" (not a GGUF file)");
  }
  if (Status s = cur.read("header version", version_); !s.ok()) return s;
  if (version_ != 2 && version_ != 3) {
    return cur.error("header version",
                     "version " + std::to_string(version_) + " is not supported (only GGUF v2 and v3)");
  }
  uint64_t n_tensors = 0, n_kv = 0;
  if (Status s = cur.read("header n_tensors", n_tensors); !s.ok()) return s;
  if (Status s = cur.read("header n_kv", n_kv); !s.ok()) return s;
  if (n_kv > cur.remaining() / kMinKvBytes) {
    return cur.error("header n_kv", "metadata count " + std::to_string(n_kv) + " is larger than the " +
                                        std::to_string(cur.remaining()) + " bytes left in the file could hold");
  }
  if (n_tensors > cur.remaining() / kMinTensorInfoBytes) {
    return cur.error("header n_tensors",
                     "tensor count " + std::to_string(n_tensors) + " is larger than the " +
                         std::to_string(cur.remaining()) + " bytes left in the file could hold");
  }

  // Metadata.
  kv_.reserve(static_cast<size_t>(n_kv));
  std::unordered_set<std::string_view> seen_keys;
  for (uint64_t k = 0; k < n_kv; ++k) {
    const std::string index = "metadata[" + std::to_string(k) + "]";
    const size_t key_at = cur.pos();
    std::string_view key;
    if (Status s = cur.read_string([&] { return index + " key"; }, key); !s.ok()) return s;
    if (key.empty()) return cur.error_at(index + " key", key_at, "empty key");
    const std::string field = "metadata key " + quoted(key);
    if (!seen_keys.insert(key).second) return cur.error_at(field, key_at, "duplicate key");
    uint32_t raw_type = 0;
    if (Status s = cur.read(field + " value type", raw_type); !s.ok()) return s;
    Value value;
    if (Status s = parse_value(cur, raw_type, field, 0, value); !s.ok()) return s;
    kv_.emplace_back(std::string(key), std::move(value));
  }

  // general.alignment: where tensor data starts and how tensor offsets are aligned.
  if (const Value* a = find("general.alignment")) {
    if (!is_integer(a->type) || (is_signed(a->type) && a->i < 0)) {
      return cur.error("metadata key 'general.alignment'",
                       std::string("must be an unsigned integer, got ") + value_type_name(a->type));
    }
    const uint64_t alignment = is_signed(a->type) ? static_cast<uint64_t>(a->i) : a->u;
    if (alignment == 0 || (alignment & (alignment - 1)) != 0) {
      return cur.error("metadata key 'general.alignment'",
                       "alignment " + std::to_string(alignment) + " is not a power of two");
    }
    alignment_ = alignment;
  } else {
    alignment_ = kDefaultAlignment;
  }
  if (Status s = check_tokenizer(*this, cur); !s.ok()) return s;

  // Tensor table.
  tensors_.reserve(static_cast<size_t>(n_tensors));
  std::unordered_set<std::string_view> seen_names;
  for (uint64_t t = 0; t < n_tensors; ++t) {
    const std::string index = "tensor[" + std::to_string(t) + "]";
    const size_t name_at = cur.pos();
    std::string_view name;
    if (Status s = cur.read_string([&] { return index + " name"; }, name); !s.ok()) return s;
    if (name.empty()) return cur.error_at(index + " name", name_at, "empty tensor name");
    const std::string field = index + " " + quoted(name);
    if (!seen_names.insert(name).second) return cur.error_at(field + " name", name_at, "duplicate tensor name");

    TensorInfo info;
    info.name = std::string(name);
    uint32_t n_dims = 0;
    const size_t dims_at = cur.pos();
    if (Status s = cur.read(field + " n_dims", n_dims); !s.ok()) return s;
    // n_dims 0 (a scalar) is legal in GGUF: ne stays {1,1,1,1}.
    if (n_dims > kMaxDims) {
      return cur.error_at(field + " n_dims", dims_at,
                          std::to_string(n_dims) + " dimensions; at most " + std::to_string(kMaxDims) + " allowed");
    }
    info.n_dims = static_cast<int>(n_dims);
    uint64_t n_elements = 1;
    for (uint32_t d = 0; d < n_dims; ++d) {
      const std::string dim_field = field + " ne[" + std::to_string(d) + "]";
      const size_t at = cur.pos();
      uint64_t ne = 0;
      if (Status s = cur.read(dim_field, ne); !s.ok()) return s;
      if (ne == 0 || ne > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        return cur.error_at(dim_field, at,
                            "dimension " + std::to_string(static_cast<int64_t>(ne)) + " must be positive");
      }
      if (!checked_mul(n_elements, ne, n_elements) ||
          n_elements > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        return cur.error_at(dim_field, at, "element count overflows 64 bits");
      }
      info.ne[d] = static_cast<int64_t>(ne);
    }
    uint32_t raw_type = 0;
    const size_t type_at = cur.pos();
    if (Status s = cur.read(field + " type", raw_type); !s.ok()) return s;
    const GgmlTypeInfo* type_info = ggml_type_info(raw_type);
    if (!type_info) return cur.error_at(field + " type", type_at, "unknown GGML type " + std::to_string(raw_type));
    info.type = static_cast<GgmlType>(raw_type);
    if (info.ne[0] % type_info->block_elems != 0) {
      return cur.error_at(field + " ne[0]", dims_at,
                          "row length " + std::to_string(info.ne[0]) + " is not a multiple of the " +
                              type_info->name + " block size " + std::to_string(type_info->block_elems));
    }
    // Blocks never straddle rows, so the byte count is blocks-per-row x bytes-per-block x rows.
    uint64_t n_bytes = 0;
    if (!checked_mul(n_elements / static_cast<uint64_t>(type_info->block_elems),
                     static_cast<uint64_t>(type_info->block_bytes), n_bytes)) {
      return cur.error_at(field + " size", dims_at, "byte size overflows 64 bits");
    }
    info.n_bytes = n_bytes;
    if (Status s = cur.read(field + " offset", info.offset); !s.ok()) return s;
    tensors_.push_back(std::move(info));
  }

  // Data section: starts at the next multiple of the alignment after the tensor table.
  const uint64_t table_end = cur.pos();
  uint64_t data_offset = table_end + (alignment_ - table_end % alignment_) % alignment_;
  if (data_offset < table_end) return cur.error("metadata key 'general.alignment'", "data offset overflows");
  if (data_offset > size_) {
    if (!tensors_.empty()) {
      return cur.error("data section", "starts at byte " + std::to_string(data_offset) +
                                           ", past the end of the file (" + std::to_string(size_) +
                                           " bytes; file truncated?)");
    }
    // A tensor-less (vocab-only) file may omit the trailing padding.
    data_offset = size_;
  }
  data_offset_ = data_offset;
  const uint64_t data_size = size_ - data_offset_;
  for (size_t t = 0; t < tensors_.size(); ++t) {
    TensorInfo& info = tensors_[t];
    const std::string field = "tensor[" + std::to_string(t) + "] " + quoted(info.name) + " offset";
    if (info.offset % alignment_ != 0) {
      return cur.error(field, "data offset " + std::to_string(info.offset) + " is not a multiple of the alignment " +
                                  std::to_string(alignment_));
    }
    // Kernels read f32 (and block scales) in place, so a small general.alignment must still leave
    // each tensor at its element alignment.
    // Both parts must be aligned: the data section may be copied to its own (page-aligned) memory.
    if (const size_t need = ggml_data_alignment(info.type); info.offset % need != 0 || data_offset_ % need != 0) {
      return cur.error(field, std::string(ggml_type_name(info.type)) + " data at offset " +
                                  std::to_string(info.offset) + " of a data section at byte " +
                                  std::to_string(data_offset_) + " is not " + std::to_string(need) +
                                  "-byte aligned (general.alignment " + std::to_string(alignment_) + ")");
    }
    if (info.offset > data_size || info.n_bytes > data_size - info.offset) {
      return cur.error(field, "data [" + std::to_string(info.offset) + ", +" + std::to_string(info.n_bytes) +
                                  ") runs past the end of the data section (" + std::to_string(data_size) +
                                  " bytes; file truncated?)");
    }
    info.data = base_ + data_offset_ + info.offset;
  }
  // Tensors must not share bytes: overlapping data means a corrupt table, and
  // writing into one tensor's buffer would silently change another.
  std::vector<size_t> by_offset(tensors_.size());  // [n_tensors] indices sorted by data offset
  for (size_t t = 0; t < by_offset.size(); ++t) by_offset[t] = t;
  std::sort(by_offset.begin(), by_offset.end(),
            [&](size_t a, size_t b) { return tensors_[a].offset < tensors_[b].offset; });
  for (size_t k = 1; k < by_offset.size(); ++k) {
    const TensorInfo& prev = tensors_[by_offset[k - 1]];
    const TensorInfo& next = tensors_[by_offset[k]];
    if (prev.offset + prev.n_bytes > next.offset) {
      return cur.error("tensor[" + std::to_string(by_offset[k]) + "] " + quoted(next.name) + " offset",
                       "data at " + std::to_string(next.offset) + " overlaps tensor " + quoted(prev.name) + " [" +
                           std::to_string(prev.offset) + ", +" + std::to_string(prev.n_bytes) + ")");
    }
  }
  header_hash_ = XXH64(base_, static_cast<size_t>(data_offset_), 0);
  return Status();
}

const Value* File::find(std::string_view key) const {
  for (const auto& [k, v] : kv_) {
    if (k == key) return &v;
  }
  return nullptr;
}

const TensorInfo* File::find_tensor(std::string_view name) const {
  for (const TensorInfo& t : tensors_) {
    if (t.name == name) return &t;
  }
  return nullptr;
}

uint64_t File::header_hash() const { return header_hash_; }

namespace {

// "GGUF file 'model.gguf': metadata key 'k'" -- the start of every accessor error.
std::string key_field(const File& file, std::string_view key) {
  std::string out = file.path().empty() ? "GGUF (in memory): " : "GGUF file '" + file.path() + "': ";
  return out + "metadata key '" + std::string(key) + "'";
}

Status missing(const File& file, std::string_view key) { return Status::error(key_field(file, key) + " is missing"); }

Status wrong_type(const File& file, std::string_view key, const Value& v, const char* wanted) {
  std::string got = v.type == ValueType::ARRAY ? std::string("array of ") + value_type_name(v.array_type)
                                               : value_type_name(v.type);
  return Status::error(key_field(file, key) + " is " + got + ", expected " + wanted);
}

// Any integer type as uint64_t, so that range checks are uniform; false for non-integers and negatives.
bool as_unsigned(const Value& v, uint64_t& out) {
  if (!is_integer(v.type)) return false;
  if (is_signed(v.type)) {
    if (v.i < 0) return false;
    out = static_cast<uint64_t>(v.i);
  } else {
    out = v.u;
  }
  return true;
}

Status check_count(const File& file, std::string_view key, const Value& v, std::optional<uint64_t> expected) {
  if (expected && v.array_count != *expected) {
    return Status::error(key_field(file, key) + " has " + std::to_string(v.array_count) +
                         " entries, expected " + std::to_string(*expected));
  }
  return Status();
}

}  // namespace

Result<std::string> File::get_string(std::string_view key) const {
  const Value* v = find(key);
  if (!v) return missing(*this, key);
  if (v->type != ValueType::STRING) return wrong_type(*this, key, *v, "STRING");
  return std::string(v->str);
}

Result<uint64_t> File::get_u64(std::string_view key) const {
  const Value* v = find(key);
  if (!v) return missing(*this, key);
  uint64_t out = 0;
  if (!as_unsigned(*v, out)) {
    if (is_integer(v->type)) {
      return Status::error(key_field(*this, key) + " is negative (" + std::to_string(v->i) + ")");
    }
    return wrong_type(*this, key, *v, "an unsigned integer");
  }
  return out;
}

Result<uint32_t> File::get_u32(std::string_view key) const {
  auto wide = get_u64(key);
  if (!wide.ok()) return wide.status();
  if (*wide > std::numeric_limits<uint32_t>::max()) {
    return Status::error(key_field(*this, key) + " value " + std::to_string(*wide) +
                         " does not fit in 32 bits");
  }
  return static_cast<uint32_t>(*wide);
}

Result<float> File::get_f32(std::string_view key) const {
  const Value* v = find(key);
  if (!v) return missing(*this, key);
  if (v->type == ValueType::FLOAT32 || v->type == ValueType::FLOAT64) return static_cast<float>(v->f);
  if (is_integer(v->type)) return is_signed(v->type) ? static_cast<float>(v->i) : static_cast<float>(v->u);
  return wrong_type(*this, key, *v, "FLOAT32");
}

Result<bool> File::get_bool(std::string_view key) const {
  const Value* v = find(key);
  if (!v) return missing(*this, key);
  if (v->type != ValueType::BOOL) return wrong_type(*this, key, *v, "BOOL");
  return v->b;
}

Result<std::vector<std::string_view>> File::get_string_array(std::string_view key,
                                                             std::optional<uint64_t> expected_count) const {
  const Value* v = find(key);
  if (!v) return missing(*this, key);
  if (v->type != ValueType::ARRAY || v->array_type != ValueType::STRING) return wrong_type(*this, key, *v, "array of STRING");
  if (Status s = check_count(*this, key, *v, expected_count); !s.ok()) return s;
  return v->array_strings;
}

Result<std::vector<float>> File::get_f32_array(std::string_view key, std::optional<uint64_t> expected_count) const {
  const Value* v = find(key);
  if (!v) return missing(*this, key);
  if (v->type != ValueType::ARRAY || v->array_type != ValueType::FLOAT32) {
    return wrong_type(*this, key, *v, "array of FLOAT32");
  }
  if (Status s = check_count(*this, key, *v, expected_count); !s.ok()) return s;
  std::vector<float> out(static_cast<size_t>(v->array_count));  // [array_count]
  if (!out.empty()) std::memcpy(out.data(), v->array_data, out.size() * sizeof(float));
  return out;
}

Result<std::vector<int32_t>> File::get_i32_array(std::string_view key,
                                                 std::optional<uint64_t> expected_count) const {
  const Value* v = find(key);
  if (!v) return missing(*this, key);
  if (v->type != ValueType::ARRAY || (v->array_type != ValueType::INT32 && v->array_type != ValueType::UINT32)) {
    return wrong_type(*this, key, *v, "array of INT32");
  }
  if (Status s = check_count(*this, key, *v, expected_count); !s.ok()) return s;
  std::vector<int32_t> out(static_cast<size_t>(v->array_count));  // [array_count]
  if (!out.empty()) std::memcpy(out.data(), v->array_data, out.size() * sizeof(int32_t));
  if (v->array_type == ValueType::UINT32) {
    for (size_t k = 0; k < out.size(); ++k) {
      if (out[k] < 0) {
        return Status::error(key_field(*this, key) + "[" + std::to_string(k) + "] value " +
                             std::to_string(static_cast<uint32_t>(out[k])) + " does not fit in INT32");
      }
    }
  }
  return out;
}

}  // namespace kvtier::gguf
