// Copies a GGUF file through GgufWriter with an edit applied in between: the way tests make a real model
// with one bad field (a key changed or removed, a tensor cut short) without shipping extra files.
#pragma once

#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "kvtier/ggml_types.h"
#include "kvtier/gguf.h"
#include "kvtier/gguf_writer.h"
#include "kvtier/status.h"

namespace kvtier::testing {

// Edits see the writer after every key was copied and before tensors are added; `tensor_bytes` may shorten a
// tensor (return its new dims and byte count) — by default every tensor is copied as it is.
struct GgufEdit {
  std::function<void(gguf::GgufWriter&)> metadata;
  std::function<void(const gguf::TensorInfo&, std::vector<int64_t>& dims, uint64_t& n_bytes)> tensor;
  std::function<bool(const gguf::TensorInfo&)> keep;  // tensors it returns false for are left out
};

inline Status copy_gguf(const std::string& from, const std::string& to, const GgufEdit& edit) {
  auto file = gguf::File::open(from);
  if (!file.ok()) return file.status();
  gguf::GgufWriter w;
  for (const auto& [key, v] : (*file)->metadata()) {
    using gguf::ValueType;
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
        } else {  // raw: element type, count, element bytes
          const size_t element = v.array_type == ValueType::UINT8 || v.array_type == ValueType::INT8 ||
                                         v.array_type == ValueType::BOOL ? 1
                                 : v.array_type == ValueType::UINT16 || v.array_type == ValueType::INT16 ? 2
                                 : v.array_type == ValueType::UINT64 || v.array_type == ValueType::INT64 ||
                                         v.array_type == ValueType::FLOAT64 ? 8
                                                                            : 4;
          std::vector<uint8_t> encoded(12 + element * v.array_count);
          const uint32_t type = static_cast<uint32_t>(v.array_type);
          std::memcpy(encoded.data(), &type, 4);
          std::memcpy(encoded.data() + 4, &v.array_count, 8);
          if (v.array_count > 0) std::memcpy(encoded.data() + 12, v.array_data, element * v.array_count);
          w.set_raw(key, static_cast<uint32_t>(ValueType::ARRAY), std::move(encoded));
        }
        break;
    }
  }
  if (edit.metadata) edit.metadata(w);
  for (const gguf::TensorInfo& t : (*file)->tensors()) {
    if (edit.keep && !edit.keep(t)) continue;
    std::vector<int64_t> dims(t.ne, t.ne + t.n_dims);
    uint64_t n_bytes = t.n_bytes;
    if (edit.tensor) edit.tensor(t, dims, n_bytes);
    if (Status s = w.add_tensor(t.name, t.type, dims, std::span<const uint8_t>(t.data, n_bytes)); !s.ok()) return s;
  }
  return w.write_file(to);
}

}  // namespace kvtier::testing
