// GGUF writer. Layout as read by gguf.cpp: header, metadata, tensor table, zero
// padding to the alignment, then each tensor's data padded to the alignment.
// v2 and v3 share this little-endian layout (v3 only allows big-endian files too).
#include "kvtier/gguf_writer.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

namespace kvtier::gguf {

namespace {

constexpr uint32_t kMagic = 0x46554747;  // "GGUF"
constexpr uint64_t kDefaultAlignment = 32;

template <class T>
void put(std::vector<uint8_t>& out, T v) {
  uint8_t bytes[sizeof(T)];
  std::memcpy(bytes, &v, sizeof(T));
  out.insert(out.end(), bytes, bytes + sizeof(T));
}

void put_string(std::vector<uint8_t>& out, std::string_view s) {
  put<uint64_t>(out, s.size());
  out.insert(out.end(), s.begin(), s.end());
}

template <class T>
std::vector<uint8_t> scalar(T v) {
  std::vector<uint8_t> out;
  put(out, v);
  return out;
}

uint64_t align_up(uint64_t n, uint64_t alignment) { return (n + alignment - 1) / alignment * alignment; }

Status write_all(int fd, const uint8_t* data, size_t n, const std::string& path) {
  while (n > 0) {
    const ssize_t written = ::write(fd, data, n);
    if (written < 0) {
      if (errno == EINTR) continue;
      return Status::error("GGUF writer: writing '" + path + "' failed: " + std::strerror(errno));
    }
    data += written;
    n -= static_cast<size_t>(written);
  }
  return Status();
}

}  // namespace

void GgufWriter::set(std::string_view key, ValueType type, std::vector<uint8_t> encoded) {
  set_raw(key, static_cast<uint32_t>(type), std::move(encoded));
}

void GgufWriter::set_raw(std::string_view key, uint32_t raw_type, std::vector<uint8_t> encoded_value) {
  for (Entry& e : entries_) {
    if (e.key == key) {
      e.type = raw_type;
      e.encoded = std::move(encoded_value);
      return;
    }
  }
  entries_.push_back(Entry{std::string(key), raw_type, std::move(encoded_value)});
}

bool GgufWriter::has_key(std::string_view key) const {
  for (const Entry& e : entries_) {
    if (e.key == key) return true;
  }
  return false;
}

void GgufWriter::remove(std::string_view key) {
  std::erase_if(entries_, [&](const Entry& e) { return e.key == key; });
}

void GgufWriter::set_u8(std::string_view key, uint8_t v) { set(key, ValueType::UINT8, scalar(v)); }
void GgufWriter::set_i8(std::string_view key, int8_t v) { set(key, ValueType::INT8, scalar(v)); }
void GgufWriter::set_u16(std::string_view key, uint16_t v) { set(key, ValueType::UINT16, scalar(v)); }
void GgufWriter::set_i16(std::string_view key, int16_t v) { set(key, ValueType::INT16, scalar(v)); }
void GgufWriter::set_u32(std::string_view key, uint32_t v) { set(key, ValueType::UINT32, scalar(v)); }
void GgufWriter::set_i32(std::string_view key, int32_t v) { set(key, ValueType::INT32, scalar(v)); }
void GgufWriter::set_u64(std::string_view key, uint64_t v) { set(key, ValueType::UINT64, scalar(v)); }
void GgufWriter::set_i64(std::string_view key, int64_t v) { set(key, ValueType::INT64, scalar(v)); }
void GgufWriter::set_f32(std::string_view key, float v) { set(key, ValueType::FLOAT32, scalar(v)); }
void GgufWriter::set_f64(std::string_view key, double v) { set(key, ValueType::FLOAT64, scalar(v)); }
void GgufWriter::set_bool(std::string_view key, bool v) {
  set(key, ValueType::BOOL, scalar<uint8_t>(v ? 1 : 0));
}
void GgufWriter::set_string(std::string_view key, std::string_view v) {
  std::vector<uint8_t> out;
  put_string(out, v);
  set(key, ValueType::STRING, std::move(out));
}

void GgufWriter::set_array_str(std::string_view key, const std::vector<std::string>& v) {
  std::vector<uint8_t> out;
  put<uint32_t>(out, static_cast<uint32_t>(ValueType::STRING));
  put<uint64_t>(out, v.size());
  for (const std::string& s : v) put_string(out, s);
  set(key, ValueType::ARRAY, std::move(out));
}

template <class T>
void GgufWriter::set_array_fixed(std::string_view key, ValueType elem, std::span<const T> v) {
  std::vector<uint8_t> out;
  put<uint32_t>(out, static_cast<uint32_t>(elem));
  put<uint64_t>(out, v.size());
  const auto* bytes = reinterpret_cast<const uint8_t*>(v.data());
  out.insert(out.end(), bytes, bytes + v.size_bytes());
  set(key, ValueType::ARRAY, std::move(out));
}

void GgufWriter::set_array_u8(std::string_view key, std::span<const uint8_t> v) { set_array_fixed(key, ValueType::UINT8, v); }
void GgufWriter::set_array_i8(std::string_view key, std::span<const int8_t> v) { set_array_fixed(key, ValueType::INT8, v); }
void GgufWriter::set_array_u16(std::string_view key, std::span<const uint16_t> v) { set_array_fixed(key, ValueType::UINT16, v); }
void GgufWriter::set_array_i16(std::string_view key, std::span<const int16_t> v) { set_array_fixed(key, ValueType::INT16, v); }
void GgufWriter::set_array_u32(std::string_view key, std::span<const uint32_t> v) { set_array_fixed(key, ValueType::UINT32, v); }
void GgufWriter::set_array_i32(std::string_view key, std::span<const int32_t> v) { set_array_fixed(key, ValueType::INT32, v); }
void GgufWriter::set_array_u64(std::string_view key, std::span<const uint64_t> v) { set_array_fixed(key, ValueType::UINT64, v); }
void GgufWriter::set_array_i64(std::string_view key, std::span<const int64_t> v) { set_array_fixed(key, ValueType::INT64, v); }
void GgufWriter::set_array_f32(std::string_view key, std::span<const float> v) { set_array_fixed(key, ValueType::FLOAT32, v); }
void GgufWriter::set_array_f64(std::string_view key, std::span<const double> v) { set_array_fixed(key, ValueType::FLOAT64, v); }
void GgufWriter::set_array_bool(std::string_view key, const std::vector<bool>& v) {
  std::vector<uint8_t> as_bytes(v.begin(), v.end());  // [n] 0 or 1
  set_array_fixed(key, ValueType::BOOL, std::span<const uint8_t>(as_bytes));
}

Status GgufWriter::add_tensor(std::string_view name, GgmlType type, std::vector<int64_t> dims,
                              std::span<const uint8_t> bytes) {
  const std::string where = "GGUF writer: tensor '" + std::string(name) + "'";
  if (name.empty()) return Status::error("GGUF writer: empty tensor name");
  for (const Tensor& t : tensors_) {
    if (t.name == name) return Status::error(where + ": duplicate tensor name");
  }
  const GgmlTypeInfo* info = ggml_type_info(static_cast<uint32_t>(type));
  if (!info) return Status::error(where + ": unknown GGML type " + std::to_string(static_cast<uint32_t>(type)));
  if (dims.empty() || dims.size() > 4) {
    return Status::error(where + ": " + std::to_string(dims.size()) + " dimensions; must be 1 to 4");
  }
  uint64_t n_elements = 1;
  for (size_t d = 0; d < dims.size(); ++d) {
    if (dims[d] <= 0) return Status::error(where + ": ne[" + std::to_string(d) + "] must be positive");
    if (__builtin_mul_overflow(n_elements, static_cast<uint64_t>(dims[d]), &n_elements)) {
      return Status::error(where + ": element count overflows 64 bits");
    }
  }
  if (dims[0] % info->block_elems != 0) {
    return Status::error(where + ": ne[0] " + std::to_string(dims[0]) + " is not a multiple of the " + info->name +
                         " block size " + std::to_string(info->block_elems));
  }
  const uint64_t expected = n_elements / static_cast<uint64_t>(info->block_elems) *
                            static_cast<uint64_t>(info->block_bytes);
  if (bytes.size() != expected) {
    return Status::error(where + ": " + std::to_string(bytes.size()) + " bytes of data, " + info->name +
                         " of this shape needs " + std::to_string(expected));
  }
  tensors_.push_back(Tensor{std::string(name), type, std::move(dims), {bytes.begin(), bytes.end()}});
  return Status();
}

Status GgufWriter::add_tensor_f32(std::string_view name, std::vector<int64_t> dims, std::span<const float> values) {
  return add_tensor(name, GgmlType::F32, std::move(dims),
                    std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(values.data()), values.size_bytes()));
}

uint64_t GgufWriter::layout_alignment() const {
  for (const Entry& e : entries_) {
    if (e.key == "general.alignment" && e.type == static_cast<uint32_t>(ValueType::UINT32) && e.encoded.size() == 4) {
      uint32_t a = 0;
      std::memcpy(&a, e.encoded.data(), 4);
      if (a != 0 && (a & (a - 1)) == 0) return a;
    }
  }
  return kDefaultAlignment;
}

std::vector<uint8_t> GgufWriter::header_bytes(std::vector<uint64_t>& offsets) const {
  const uint64_t alignment = layout_alignment();
  std::vector<uint8_t> out;
  put<uint32_t>(out, kMagic);
  put<uint32_t>(out, version_);
  put<uint64_t>(out, tensors_.size());
  put<uint64_t>(out, entries_.size());
  for (const Entry& e : entries_) {
    put_string(out, e.key);
    put<uint32_t>(out, e.type);
    out.insert(out.end(), e.encoded.begin(), e.encoded.end());
  }
  offsets.clear();
  uint64_t offset = 0;
  for (const Tensor& t : tensors_) {
    put_string(out, t.name);
    put<uint32_t>(out, static_cast<uint32_t>(t.dims.size()));
    for (int64_t ne : t.dims) put<uint64_t>(out, static_cast<uint64_t>(ne));
    put<uint32_t>(out, static_cast<uint32_t>(t.type));
    put<uint64_t>(out, offset);
    offsets.push_back(offset);
    offset = align_up(offset + t.data.size(), alignment);
  }
  out.resize(align_up(out.size(), alignment), 0);
  return out;
}

std::vector<uint8_t> GgufWriter::to_bytes() const {
  std::vector<uint64_t> offsets;
  std::vector<uint8_t> out = header_bytes(offsets);  // [file size] once the data is appended
  const size_t data_start = out.size();
  for (size_t i = 0; i < tensors_.size(); ++i) {
    out.resize(data_start + offsets[i], 0);
    out.insert(out.end(), tensors_[i].data.begin(), tensors_[i].data.end());
  }
  // Pad the last tensor too, as GGML does, so the file size is a multiple of the alignment.
  if (!tensors_.empty()) out.resize(data_start + align_up(out.size() - data_start, layout_alignment()), 0);
  return out;
}

Status GgufWriter::write_file(const std::string& path) const {
  namespace fs = std::filesystem;
  const fs::path target(path);
  const fs::path dir = target.has_parent_path() ? target.parent_path() : fs::path(".");
  std::string tmp_name = ".";  // hidden, beside the target so that rename() stays on one filesystem
  tmp_name.append(target.filename().string()).append(".tmp-XXXXXX");
  std::string tmp = (dir / tmp_name).string();
  const int fd = ::mkstemp(tmp.data());
  if (fd < 0) {
    return Status::error("GGUF writer: cannot create a temporary file beside '" + path + "': " + std::strerror(errno));
  }
  auto fail = [&](Status s) {
    ::close(fd);
    ::unlink(tmp.c_str());
    return s;
  };
  std::vector<uint64_t> offsets;
  const std::vector<uint8_t> header = header_bytes(offsets);
  if (Status s = write_all(fd, header.data(), header.size(), path); !s.ok()) return fail(s);
  const uint64_t alignment = layout_alignment();
  const std::vector<uint8_t> zeros(static_cast<size_t>(alignment), 0);  // [alignment] padding source
  uint64_t written = 0;  // bytes of the data section so far
  for (size_t i = 0; i < tensors_.size(); ++i) {
    const uint64_t pad = offsets[i] - written;
    if (Status s = write_all(fd, zeros.data(), pad, path); !s.ok()) return fail(s);
    const std::vector<uint8_t>& data = tensors_[i].data;
    if (Status s = write_all(fd, data.data(), data.size(), path); !s.ok()) return fail(s);
    written = offsets[i] + data.size();
  }
  if (!tensors_.empty()) {
    const uint64_t pad = align_up(written, alignment) - written;
    if (Status s = write_all(fd, zeros.data(), pad, path); !s.ok()) return fail(s);
  }
  if (::fchmod(fd, 0644) != 0 || ::fsync(fd) != 0) {
    return fail(Status::error("GGUF writer: cannot finish '" + path + "': " + std::strerror(errno)));
  }
  if (::close(fd) != 0) {
    ::unlink(tmp.c_str());
    return Status::error("GGUF writer: closing '" + path + "' failed: " + std::strerror(errno));
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    return Status::error("GGUF writer: cannot rename onto '" + path + "': " + std::strerror(err));
  }
  return Status();
}

}  // namespace kvtier::gguf
