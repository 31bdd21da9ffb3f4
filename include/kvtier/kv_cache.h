// The KV cache as the model sees it. The forward pass stores each layer's keys
// and values here and asks the cache for attention; it never touches the
// storage layout. The plain contiguous cache (model/kv_contiguous.h) and the
// tiered paged cache both implement this interface.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "kvtier/status.h"
#include "kvtier/thread_pool.h"

namespace kvtier {

class DeviceForward;  // kvtier/model.h

struct KvGeometry {
  int n_layers = 0;
  int n_kv_heads = 0;
  int head_dim = 0;
  int max_tokens = 0;  // capacity in positions (the context size)
  // Sliding window of each layer (0: global), or empty when no layer has one. A windowed layer's queries
  // never look further back than their window, so a cache may drop what lies behind it.
  std::vector<int> layer_windows{};
  int kv_dim() const { return n_kv_heads * head_dim; }
  int window(int layer) const { return layer_windows.empty() ? 0 : layer_windows[layer]; }
};

// Byte streams for saving and restoring a cache (session files). Implementations report I/O errors
// and short reads as errors.
class ByteSink {
 public:
  virtual ~ByteSink() = default;
  virtual Status write(const void* data, size_t bytes) = 0;
};
class ByteSource {
 public:
  virtual ~ByteSource() = default;
  virtual Status read(void* data, size_t bytes) = 0;
};

// Disk traffic of a cache with a cold tier (all zero without one).
struct KvIoStats {
  uint64_t pages_read = 0, bytes_read = 0;
  uint64_t pages_written = 0, bytes_written = 0;
  double stall_seconds = 0;  // time the forward pass waited for reads
};

// What a cache holds, in RAM and on disk, for /metrics and for a RAM budget shared by several caches (kvtier
// serve's slots, kv/budget_arbiter.h). The budget fields count what a budget counts: live pages, hot rings,
// sinks and the cold tier's index and buffers (free slots of the page pool's slabs come on top: less than a
// slab per page format once a store compacts). A cache without a cold tier reports its RAM in every field.
struct KvUsage {
  size_t ram_bytes = 0;       // everything held in RAM, free pool slots included (resident_bytes())
  size_t budget_bytes = 0;    // its budget now (0: none)
  size_t budgeted_bytes = 0;  // counted against the budget now
  size_t floor_bytes = 0;     // the most budgeted_bytes is once every page that may go to disk went there
  size_t empty_bytes = 0;     // budgeted_bytes once emptied (truncate(0))
  uint64_t cold_pages = 0;    // pages on disk, all layers
  uint64_t cold_bytes = 0;    // their bytes in the page file
  struct Pages {
    const char* precision = "";  // "f16", "q8", ... (kv/page_format.h)
    uint64_t pages = 0, bytes = 0;
  };
  std::vector<Pages> ram_pages;  // live pages in RAM by precision (the page pool's; not the hot rings)
};

// How a layer attends (the forward pass sets one per layer).
struct AttentionParams {
  float scale = 1.0f;    // multiplies q.k before the softmax
  int window = 0;        // > 0: sliding window, query at p sees cached positions p' with p - p' < window (llama.cpp's
                         // LLAMA_SWA_TYPE_STANDARD mask); 0: all of [0, p]
  float softcap = 0.0f;  // > 0: scores become softcap * tanh(score / softcap) before the softmax (Gemma 2)
  // First position a query at p can see.
  int first_visible(int p) const { return window > 0 && p - window + 1 > 0 ? p - window + 1 : 0; }
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
  // attends to cached positions [params.first_visible(pos + i), pos + i]. Heads are grouped: query head h
  // reads KV head h / (n_heads / n_kv_heads).
  // q: [n, n_heads * head_dim] f32; out: [n, n_heads * head_dim] f32.
  virtual Status attend(int layer, int pos, int n, int n_heads, const float* q, float* out,
                        const AttentionParams& params, ThreadPool& pool) = 0;

  // Number of positions currently valid (stores advance it; truncate lowers it).
  virtual int n_tokens() const = 0;
  virtual void truncate(int n_tokens) = 0;

  // Bytes of storage held, and a one-line description for --verbose output.
  virtual size_t resident_bytes() const = 0;
  virtual std::string describe() const = 0;

  // Sessions. policy(): the storage policy a saved cache can only be restored into (e.g. "paged
  // f16:128,q4 +4 sinks keys=channel"). save() writes every position the cache holds, in its storage
  // format; load() reads it back into an empty cache of the same geometry and policy (errors leave the
  // cache empty).
  virtual std::string policy() const = 0;
  virtual Status save(ByteSink& out) = 0;
  virtual Status load(ByteSource& in) = 0;

  // Set when a stored range turned out damaged (a cold page failed its checksum or could not be read):
  // the first position whose data cannot be trusted, or -1. The caller recomputes from there
  // (truncate, then evaluate the tokens again); truncate() clears it.
  virtual int first_bad_position() const { return -1; }

  virtual KvIoStats io_stats() const { return {}; }

  // RAM and disk held now (see KvUsage).
  virtual KvUsage usage() const {
    KvUsage u;
    u.ram_bytes = u.budgeted_bytes = u.floor_bytes = u.empty_bytes = resident_bytes();
    return u;
  }
  // A budget changed at run time (a cache made with a budget, hence a cold tier): the oldest pages go to disk
  // until the cache holds at most `bytes`. Errors, changing nothing, below usage().floor_bytes.
  virtual Status set_budget(size_t bytes) {
    (void)bytes;
    return Status::error("this KV cache has no cold tier (it needs --kv-budget and --kv-spill to spill pages)");
  }
  // The most storing n_tokens more positions can add to usage().budgeted_bytes.
  virtual size_t budget_growth_bytes(int n_tokens) const {
    (void)n_tokens;
    return 0;
  }
  // A cache in a GPU's memory (kvtier/device.h) runs the whole forward pass on that GPU: Model::forward hands
  // its calls over this cache to the object returned here. Null for the caches in host memory.
  virtual DeviceForward* device_forward() { return nullptr; }

  // A condition the user should hear about once, or empty: the RAM budget cannot be kept, or spilling to
  // disk stopped after a write error (the cache then keeps running in RAM).
  virtual std::string warning() const { return {}; }
};

}  // namespace kvtier
