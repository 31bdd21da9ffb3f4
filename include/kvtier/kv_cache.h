// The KV cache as the model sees it. The forward pass stores each layer's keys
// and values here and asks the cache for attention; it never touches the
// storage layout. The plain contiguous cache (model/kv_contiguous.h) and the
// tiered paged cache both implement this interface.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "kvtier/status.h"
#include "kvtier/thread_pool.h"

namespace kvtier {

struct KvGeometry {
  int n_layers = 0;
  int n_kv_heads = 0;
  int head_dim = 0;
  int max_tokens = 0;  // capacity in positions (the context size)
  int kv_dim() const { return n_kv_heads * head_dim; }
};

class KvCache {
 public:
  virtual ~KvCache() = default;
  virtual const KvGeometry& geometry() const = 0;

  // Stores keys and values (already RoPE-rotated) of tokens at positions
  // [pos, pos + n) of one layer.  k, v: [n, kv_dim] f32.
  // Errors: storage could not be allocated or (later tiers) written.
  virtual Status store(int layer, int pos, int n, const float* k, const float* v) = 0;

  // Causal attention of n query tokens at positions [pos, pos + n): query i
  // attends to cached positions [0, pos + i]. Heads are grouped: query head h
  // reads KV head h / (n_heads / n_kv_heads).
  // q: [n, n_heads * head_dim] f32; out: [n, n_heads * head_dim] f32.
  // scale multiplies q.k before the softmax.
  virtual Status attend(int layer, int pos, int n, int n_heads, const float* q, float* out, float scale,
                      ThreadPool& pool) = 0;

  // Number of positions currently valid (stores advance it; truncate lowers it).
  virtual int n_tokens() const = 0;
  virtual void truncate(int n_tokens) = 0;

  // Bytes of storage held, and a one-line description for --verbose output.
  virtual size_t resident_bytes() const = 0;
  virtual std::string describe() const = 0;
};

}  // namespace kvtier
