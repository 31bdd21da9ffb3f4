#include "kv/contiguous_storage.h"

#include <cassert>
#include <cstring>

#include "kvtier/f16.h"

namespace kvtier::kv {

ContiguousStorage::ContiguousStorage(const KvGeometry& geometry, ElementType type)
    : geometry_(geometry), type_(type) {
  const size_t slots_per_element = type == ElementType::F16 ? 1 : 2;
  const size_t n = static_cast<size_t>(geometry.n_layers) * geometry.max_tokens * geometry.kv_dim() *
                   slots_per_element;
  keys_.assign(n, 0);
  values_.assign(n, 0);
}

size_t ContiguousStorage::row_offset(int layer, int pos) const {
  const size_t slots_per_element = type_ == ElementType::F16 ? 1 : 2;
  return (static_cast<size_t>(layer) * geometry_.max_tokens + pos) * geometry_.kv_dim() * slots_per_element;
}

void ContiguousStorage::write(std::vector<uint16_t>& buf, int layer, int pos, int n, const float* src) {
  assert(layer >= 0 && layer < geometry_.n_layers);
  assert(pos >= 0 && pos + n <= geometry_.max_tokens);
  const int kv_dim = geometry_.kv_dim();
  uint16_t* dst = buf.data() + row_offset(layer, pos);
  if (type_ == ElementType::F32) {
    std::memcpy(dst, src, sizeof(float) * kv_dim * n);
    return;
  }
  for (int64_t i = 0; i < static_cast<int64_t>(kv_dim) * n; ++i) dst[i] = f32_to_f16(src[i]);
}

void ContiguousStorage::write_keys(int layer, int pos, int n, const float* src) { write(keys_, layer, pos, n, src); }
void ContiguousStorage::write_values(int layer, int pos, int n, const float* src) {
  write(values_, layer, pos, n, src);
}
const void* ContiguousStorage::key_row(int layer, int pos) const { return keys_.data() + row_offset(layer, pos); }
const void* ContiguousStorage::value_row(int layer, int pos) const {
  return values_.data() + row_offset(layer, pos);
}

}  // namespace kvtier::kv
