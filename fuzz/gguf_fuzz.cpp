// libFuzzer target for the GGUF reader: parse arbitrary bytes, then touch every
// metadata value, accessor and tensor so that anything the reader accepted is
// safe to use. Build and run: scripts/fuzz_smoke.sh [seconds].
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "kvtier/gguf.h"

namespace {

using kvtier::gguf::File;
using kvtier::gguf::TensorInfo;
using kvtier::gguf::Value;
using kvtier::gguf::ValueType;

// An invariant the reader promises; violating it is a bug the fuzzer must report.
void require(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "gguf_fuzz: invariant violated: %s\n", what);
    std::abort();
  }
}

// Reads `n` bytes at `p` so that ASan checks them; returns a checksum to keep the reads alive.
uint64_t touch(const void* p, size_t n) {
  const auto* bytes = static_cast<const uint8_t*>(p);
  uint64_t sum = 0;
  for (size_t i = 0; i < n; ++i) sum = sum * 31 + bytes[i];
  return sum;
}

bool inside(const File& f, const void* p, size_t n) {
  const auto* q = static_cast<const uint8_t*>(p);
  return q >= f.base() && q <= f.base() + f.file_size() && n <= static_cast<size_t>(f.base() + f.file_size() - q);
}

uint64_t touch_value(const File& f, const std::string& key, const Value& v) {
  uint64_t sum = v.u + static_cast<uint64_t>(v.i) + (v.b ? 1 : 0);
  // Every accessor on every key: each must return a value or an error, never crash.
  if (auto r = f.get_string(key); r.ok()) sum += r->size();
  if (auto r = f.get_u64(key); r.ok()) sum += *r;
  if (auto r = f.get_u32(key); r.ok()) sum += *r;
  if (auto r = f.get_f32(key); r.ok()) sum += static_cast<uint64_t>(*r != 0);
  if (auto r = f.get_bool(key); r.ok()) sum += *r;
  if (auto r = f.get_string_array(key); r.ok()) sum += r->size();
  if (auto r = f.get_f32_array(key); r.ok()) sum += r->size();
  if (auto r = f.get_i32_array(key, 3); r.ok()) sum += r->size();
  if (v.type == ValueType::STRING) {
    require(v.str.empty() || inside(f, v.str.data(), v.str.size()), "string value inside the file");
    sum += touch(v.str.data(), v.str.size());
  }
  if (v.type == ValueType::ARRAY) {
    require(v.array_data != nullptr && inside(f, v.array_data, 0), "array data inside the file");
    if (v.array_type == ValueType::STRING) {
      require(v.array_strings.size() == v.array_count, "one view per string element");
      for (std::string_view s : v.array_strings) {
        require(s.empty() || inside(f, s.data(), s.size()), "string element inside the file");
        sum += touch(s.data(), s.size());
      }
    }
  }
  return sum;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto parsed = File::from_bytes(data, size);
  if (!parsed.ok()) {
    require(!parsed.error().empty(), "errors carry a message");
    return 0;
  }
  const File& f = **parsed;
  require(f.version() == 2 || f.version() == 3, "version 2 or 3");
  require(f.alignment() != 0 && (f.alignment() & (f.alignment() - 1)) == 0, "alignment a power of two");
  require(f.data_offset() <= f.file_size(), "data section inside the file");
  uint64_t sum = f.header_hash();
  for (const auto& [key, value] : f.metadata()) {
    require(f.find(key) == &value, "keys are unique");
    sum += touch_value(f, key, value);
  }
  for (const TensorInfo& t : f.tensors()) {
    require(f.find_tensor(t.name) == &t, "tensor names are unique");
    require(t.n_dims >= 0 && t.n_dims <= 4, "at most 4 dimensions");
    require(t.ne[0] > 0 && t.ne[1] > 0 && t.ne[2] > 0 && t.ne[3] > 0, "positive dimensions");
    require(t.offset % f.alignment() == 0, "aligned tensor offset");
    require(inside(f, t.data, t.n_bytes), "tensor data inside the file");
    require(t.n_bytes == kvtier::ggml_row_bytes(t.type, t.ne[0]) * static_cast<uint64_t>(t.ne[1] * t.ne[2] * t.ne[3]),
            "tensor byte size matches its shape");
    sum += static_cast<uint64_t>(t.n_elements());
    if (t.n_bytes) sum += t.data[0] + t.data[t.n_bytes - 1];
  }
  volatile uint64_t sink = sum;  // keeps the reads from being optimized away
  (void)sink;
  return 0;
}
