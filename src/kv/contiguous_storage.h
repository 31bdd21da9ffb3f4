// Plain contiguous KV storage: one K and one V buffer per layer, position-major.
//   k[layer]: [max_tokens, n_kv_heads, head_dim] in f16 (or f32)
//   v[layer]: same shape.
// f16 is the default, as in llama.cpp's default cache, so that results compare.
#pragma once

#include <cstdint>
#include <vector>

#include "kvtier/kv_cache.h"

namespace kvtier::kv {

enum class ElementType { F32, F16 };

class ContiguousStorage {
 public:
  ContiguousStorage(const KvGeometry& geometry, ElementType type);

  const KvGeometry& geometry() const { return geometry_; }
  ElementType element_type() const { return type_; }
  size_t element_bytes() const { return type_ == ElementType::F16 ? 2 : 4; }

  // Writes n positions starting at pos (src: [n, kv_dim] f32), converting.
  void write_keys(int layer, int pos, int n, const float* src);
  void write_values(int layer, int pos, int n, const float* src);

  // Row of position `pos` (kv_dim elements in element_type()).
  const void* key_row(int layer, int pos) const;
  const void* value_row(int layer, int pos) const;

  size_t bytes() const { return (keys_.size() + values_.size()) * sizeof(uint16_t); }

 private:
  void write(std::vector<uint16_t>& buf, int layer, int pos, int n, const float* src);
  size_t row_offset(int layer, int pos) const;  // in uint16 units

  KvGeometry geometry_;
  ElementType type_;
  std::vector<uint16_t> keys_;    // [n_layers, max_tokens, kv_dim] elements (f32 uses 2 slots each)
  std::vector<uint16_t> values_;  // same
};

}  // namespace kvtier::kv
