#include "model/vulkan/vulkan_forward.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cassert>
#include <cmath>
#include <cstring>
#include <optional>
#include <vector>

#include "kernels/vulkan/context.h"
#include "kernels/vulkan/vulkan_kernels.h"
#include "kv/page_format.h"
#include "kv/tiered_store.h"
#include "model/rope_table.h"
#include "model/vulkan/device_kv_pages.h"

namespace kvtier {
namespace {

using vulkan::Buffer;
using vulkan::BufferRange;
using vulkan::CommandBatch;
using vulkan::MemoryKind;

// Split-K of decode attention: at most this many splits per layer and step (partial buffers are sized for it).
constexpr uint32_t kMaxSplits = 64;
// Rows of logits one command batch computes (the prefill's logits device and mapped buffers hold this many).
constexpr int kLogitRows = 64;
// A software device (lavapipe) runs a few hundred million multiply-adds a second on a loaded machine, and a
// batch must finish within the context's deadline (ContextOptions::timeout_ms): there a chunk is at most
// kSoftwareChunk tokens, submitted layer by layer, with kSoftwareLogitRows logits rows per batch computed by the
// matvec shader (a matmul tile is 64 tokens wide: 8 rows would pay for 64). It gains nothing from larger
// batches: it computes, it does not wait for memory.
constexpr int kSoftwareChunk = 64;
constexpr int kSoftwareLogitRows = 8;

size_t align_up(size_t n, size_t a) { return (n + a - 1) / a * a; }

// A weight matrix in device memory, as stored in the GGUF file.
struct DeviceMatrix {
  Buffer buffer;  // [rows][ggml_row_bytes(type, cols)]
  GgmlType type = GgmlType::F32;
  int64_t rows = 0;
  int64_t cols = 0;
};

struct DeviceLayer {
  Buffer attn_norm, ffn_norm;  // [n_embd] f32
  Buffer bq, bk, bv;           // [q_dim], [kv_dim], [kv_dim] f32 (qwen2), or empty
  DeviceMatrix wq, wk, wv, wo, gate, up, down;
};

class VulkanKvCache;

// The activations of a prefill chunk (VulkanModel::prefill), allocated on the first chunk and grown with the
// chunk size: a run that only decodes never allocates them. Logits rows of x are bound logit_rows_ at a time
// from any row, so a row's bytes must be a multiple of the device's storage-offset alignment (checked at open).
struct ChunkBuffers {
  int rows = 0;               // capacity in tokens
  Buffer x, xn, proj;         // [rows][n_embd] f32
  Buffer q, attn;             // [rows][n_heads][head_dim] f32
  Buffer k, v;                // [rows][n_kv_heads][head_dim] f32
  Buffer gate, up;            // [rows][n_ff] f32
  Buffer rope;                // [rows][rope_dims] f32, (cos, sin) pairs
  // Mapped: embedding rows [rows][n_embd] f32 at 0, RoPE rows [rows][rope_dims] f32 at rope_offset.
  Buffer in;
  size_t rope_offset = 0;
  Buffer logits;              // [logit_rows_][n_vocab] f32
  Buffer logits_out;          // mapped, the same
};

class VulkanModel final : public DeviceModel {
 public:
  VulkanModel(const Model& model, std::unique_ptr<vulkan::Context> context)
      : model_(model), context_(std::move(context)), kernels_(*context_) {}

  Status init(const ProgressFn& progress);
  Result<std::unique_ptr<KvCache>> make_cache(int max_tokens, const KvCacheOptions& kv) override;
  std::string describe() const override {
    return fmt::format("Vulkan device {} ({}): weights {:.1f} MiB in device memory", context_->info().index,
                       context_->info().name, weight_bytes_ / 1048576.0);
  }
  std::vector<std::string> take_validation_messages() override { return context_->take_validation_messages(); }
  DeviceStepCounts last_step_counts() const override { return step_counts_; }

  vulkan::Context& context() { return *context_; }
  const kv::PageFormat& page_format() const { return page_format_; }
  // One token at `pos` of `cache` (which holds exactly pos positions); logits: [n_vocab], or null for none.
  Status step(VulkanKvCache& cache, int32_t token, int pos, float* logits);
  // n tokens (at most prefill_chunk()) at positions [pos, pos + n) of `cache` in one command batch (and one more
  // per logit_rows_ logits rows past the first); logits of rows [logits_from, n): [n - logits_from]
  // [n_vocab], or null for none.
  Status prefill(VulkanKvCache& cache, const int32_t* tokens, int n, int pos, int logits_from, float* logits);
  // Tokens per prefill chunk; 1 when the prompt runs token by token (asked for, or the device's storage-offset
  // alignment does not divide a row of x).
  int prefill_chunk() const { return prefill_chunk_; }
  void set_prefill_chunk(int n) { prefill_chunk_ = n; }

 private:
  Status upload_matrix(const kernels::WeightMatrix& w, const std::string& name, DeviceMatrix* out);
  Status upload_vector(const float* data, size_t n, Buffer* out);
  Status allocate_activations();
  Status ensure_chunk_buffers(int rows);
  // The final RMSNorm and output product of chunk rows [from, from + count) (count <= logit_rows_) into
  // chunk_.logits, copied to chunk_.logits_out.
  Status record_logits(CommandBatch& b, int from, int count);
  Result<Buffer> device_buffer(size_t bytes) { return context_->create_buffer(bytes, MemoryKind::DeviceLocal); }

  const Model& model_;
  std::unique_ptr<vulkan::Context> context_;
  vulkan::Kernels kernels_;
  kv::PageFormat page_format_;  // f16 pages of one layer's KV heads
  vulkan::MatvecTuning tuning_;
  std::vector<DeviceLayer> layers_;
  DeviceMatrix output_;
  Buffer output_norm_;  // [n_embd] f32
  uint64_t weight_bytes_ = 0;
  uint64_t uploaded_ = 0, upload_total_ = 0;
  ProgressFn progress_;

  // Activations of one token (f32).
  Buffer x_;           // [n_embd] residual stream
  Buffer q_;           // [n_heads][head_dim]
  Buffer k_, v_;       // [n_kv_heads][head_dim]
  Buffer attn_;        // [n_heads][head_dim]
  Buffer gate_, up_;   // [n_ff]: silu(gate) and up
  Buffer rope_;        // [rope_dims] (cos, sin) pairs of the step's position
  Buffer partial_o_;   // [kMaxSplits][n_heads][head_dim]
  Buffer partial_ml_;  // [kMaxSplits][n_heads][2]
  Buffer lse_;         // [n_heads]
  Buffer logits_;      // [n_vocab]
  // Mapped host memory: the step's inputs (embedding row at 0, RoPE row at rope_offset_) and the logits read
  // back.
  Buffer step_in_;     // [n_embd] f32, [rope_dims] f32
  Buffer logits_out_;  // [n_vocab] f32
  size_t rope_offset_ = 0;

  int prefill_chunk_ = 1;
  int logit_rows_ = kLogitRows;  // logits rows per command batch of the prefill
  bool software_device_ = false;  // prefill chunks submitted layer by layer, logits by matvec
  ChunkBuffers chunk_;
  DeviceStepCounts step_counts_;  // what the last decode step recorded
};

// The KV cache in device memory: the pages of every layer in one buffer, each layer's range laid out alike
// (DeviceKvPages: one region of slots per format of the ladder), layer l's range at l * layer_bytes. One page
// list per format serves all layers (the attention shader binds one layer's range of the pool): entry =
// (byte offset within a layer's range, valid rows). An f16 cache is one region of f16 pages, position t in row
// t % 64 of page t / 64.
class VulkanKvCache final : public KvCache, public DeviceForward {
 public:
  VulkanKvCache(VulkanModel& owner, KvGeometry geometry, DeviceKvPages pages, Buffer pool, Buffer page_list,
                Buffer list_staging)
      : owner_(owner),
        geometry_(std::move(geometry)),
        pages_(std::move(pages)),
        pool_(std::move(pool)),
        page_list_(std::move(page_list)),
        list_staging_(std::move(list_staging)) {}

  const KvGeometry& geometry() const override { return geometry_; }
  Status store(int, int, int, const float*, const float*) override { return host_access_error(); }
  Status attend(int, int, int, int, const float*, float*, const AttentionParams&, ThreadPool&) override {
    return host_access_error();
  }
  int n_tokens() const override { return n_tokens_; }
  // Rows past n_tokens keep stale keys and values: attention reads only each page's valid rows.
  void truncate(int n) override {
    n_tokens_ = std::clamp(n, 0, n_tokens_);
    pages_.truncate(n_tokens_);
  }
  size_t resident_bytes() const override { return pool_.size() + page_list_.size() + list_staging_.size(); }
  std::string describe() const override {
    return fmt::format("KV cache on the Vulkan device: {}, {} layers, {:.1f} MiB of device memory ({})", policy(),
                       geometry_.n_layers, resident_bytes() / 1048576.0, pages_.describe_usage());
  }
  std::string policy() const override {
    if (pages_.single_format()) return "vulkan f16";
    return "vulkan " + pages_.ladder().describe();
  }
  Status save(ByteSink&) override { return Status::error("sessions are not saved from the Vulkan KV cache yet"); }
  Status load(ByteSource&) override { return Status::error("sessions are not restored into the Vulkan KV cache yet"); }
  DeviceForward* device_forward() override { return this; }

  // Chunks of up to prefill_chunk() tokens through VulkanModel::prefill; single tokens (decode) through step.
  // A ladder's chunks (begin_ladder_chunk) start past the sinks, whose rows go in steps; chunks end at the same
  // multiples of the chunk size either way.
  Status forward(const int32_t* tokens, int n, int pos, int logits_from, float* logits,
                 const ProgressFn& progress) override {
    const size_t vocab = static_cast<size_t>(vocab_);
    const int chunk = owner_.prefill_chunk();
    for (int start = 0; start < n;) {
      // Chunks end at multiples of the chunk size from the call's first token, whatever runs in steps.
      int count = std::min(chunk - start % chunk, n - start);
      if (!pages_.single_format() && pos + start < pages_.n_sinks()) count = 1;
      // Logits rows of this chunk: [local_from, count), at row start + local_from - logits_from of `logits`.
      const int local_from = std::clamp(logits_from - start, 0, count);
      float* rows = logits && local_from < count
                        ? logits + static_cast<size_t>(start + local_from - logits_from) * vocab
                        : nullptr;
      Status s = count == 1 ? owner_.step(*this, tokens[start], pos + start, rows)
                            : owner_.prefill(*this, tokens + start, count, pos + start, local_from, rows);
      if (!s.ok()) return s;
      n_tokens_ += count;
      start += count;
      if (progress && (count > 1 || start % 64 == 0 || start == n)) progress(start, n);
    }
    return {};
  }

  // Records the KV work a step at position pos does before its layers: the ladder's page moves (re-encoded in
  // every layer), the new page zeroed, the page lists uploaded; ends with a barrier. Returns where the step's
  // row goes (an f16 page).
  Result<DeviceKvPages::StepPlan> begin_step(CommandBatch& b, vulkan::Kernels& k, int pos);
  // Decode attention of one layer (pool: its range) over the pages of every format, each format's pages one
  // dispatch into its own range of splits. Returns the number of splits to merge.
  Result<uint32_t> attend_pages(CommandBatch& b, vulkan::Kernels& k, BufferRange pool, const Buffer& q, int n_heads,
                                float scale, const Buffer& partial_o, const Buffer& partial_ml);

  // The KV work before a prefill chunk of positions [pos, pos + n) of an all-f16 cache (single_format: no sink
  // page, page i of the sequence is entry i of the list): every position's step planned in the table (pages
  // allocated, new pages zeroed), the page list uploaded; ends with a barrier. Returns the f16 region's list.
  Result<BufferRange> begin_chunk(CommandBatch& b, int pos, int n);

  // The KV work before a prefill chunk of positions [pos, pos + n) of a ladder's cache (DeviceKvPages::plan_chunk:
  // the CPU store's batch rule): new pages zeroed, the moves planned with pos cached re-encoded in every layer,
  // the chunk's page lists uploaded; ends with a barrier.
  Status begin_ladder_chunk(CommandBatch& b, vulkan::Kernels& k, int pos, int n, int n_heads);
  // One layer of that chunk (pool: its range): the chunk's rows written, the ring pages the chunk pushed out
  // re-encoded, then causal attention over each format's pages, merged into out; ends with a barrier.
  //   k_rows, v_rows: [n][n_kv_heads][head_dim] f32 (keys rotated);  q, out: [n][n_heads][head_dim] f32
  Status attend_ladder_chunk(CommandBatch& b, vulkan::Kernels& k, BufferRange pool, const Buffer& k_rows,
                             const Buffer& v_rows, const Buffer& q, int n_heads, float scale, const Buffer& out);
  bool single_format() const { return pages_.single_format(); }

  const Buffer& pool() const { return pool_; }
  size_t layer_bytes() const { return pages_.layer_bytes(); }
  void set_vocab(int n_vocab) { vocab_ = n_vocab; }

 private:
  static Status host_access_error() {
    return Status::error("the Vulkan KV cache is read and written by the Vulkan forward pass only");
  }
  VulkanModel& owner_;
  KvGeometry geometry_;
  DeviceKvPages pages_;
  Buffer pool_;          // [n_layers][layer_bytes]: per layer, DeviceKvPages::regions()
  Buffer page_list_;     // [list_entries] uvec2: region r's list from entry regions()[r].list_base
  Buffer list_staging_;  // mapped: the same, written by the host each step
  std::vector<uint32_t> list_pages_;  // pages in each region's list this step
  int n_tokens_ = 0;
  int vocab_ = 0;
  // A ladder's prefill chunk (begin_ladder_chunk), allocated on the first one and grown with the chunk:
  DeviceKvPages::ChunkPlan chunk_plan_;
  int chunk_pos_ = 0, chunk_n_ = 0, chunk_rows_ = 0;
  // [ring pages] uvec2 at 0 (the rows' pages), then region r's attention list ([capacity] uvec4) at
  // chunk_list_at_[r]; chunk_list_staging_: mapped, the same, written by the host each chunk.
  Buffer chunk_list_, chunk_list_staging_;
  std::vector<size_t> chunk_list_at_;
  Buffer chunk_part_o_;   // [regions][chunk_rows_][n_heads][head_dim] f32
  Buffer chunk_part_ml_;  // [regions][chunk_rows_][n_heads] (m, l) f32
  Buffer chunk_lse_;      // [chunk_rows_][n_heads] f32
};

Result<DeviceKvPages::StepPlan> VulkanKvCache::begin_step(CommandBatch& b, vulkan::Kernels& k, int pos) {
  Result<DeviceKvPages::StepPlan> plan = pages_.plan_step(pos);
  if (!plan.ok()) return plan.status();
  std::vector<std::vector<uint32_t>> lists;
  pages_.page_lists(pos, &lists);
  const std::vector<DeviceKvPages::Region>& regions = pages_.regions();
  list_pages_.assign(regions.size(), 0);
  auto* staging = static_cast<uint8_t*>(list_staging_.mapped());
  for (size_t r = 0; r < regions.size(); ++r) {
    const size_t at = static_cast<size_t>(regions[r].list_base) * 2 * sizeof(uint32_t);
    const size_t bytes = lists[r].size() * sizeof(uint32_t);
    list_pages_[r] = static_cast<uint32_t>(lists[r].size() / 2);
    if (bytes == 0) continue;
    std::memcpy(staging + at, lists[r].data(), bytes);  // the previous step's submit has finished with it
    b.copy(list_staging_, at, page_list_, at, bytes);
  }
  const size_t layer = pages_.layer_bytes();
  Status s;
  if (plan->zero_bytes > 0) {
    for (int l = 0; l < geometry_.n_layers; ++l) {
      b.fill(pool_, static_cast<size_t>(l) * layer + plan->zero_offset, plan->zero_bytes, 0);
    }
    // The transcodes bind each layer's whole range, the zeroed page included (disjoint bytes, but one binding).
    if (!plan->transcodes.empty()) b.barrier();
  }
  // Each layer's moves in its own range; a barrier between two moves of one step (they bind the same range).
  for (size_t i = 0; i < plan->transcodes.size() && s.ok(); ++i) {
    const DeviceKvPages::Transcode& t = plan->transcodes[i];
    if (i > 0) b.barrier();
    for (int l = 0; l < geometry_.n_layers && s.ok(); ++l) {
      s = k.transcode_page(b, regions[t.from].format, regions[t.to].format,
                           BufferRange(pool_, static_cast<size_t>(l) * layer, layer), t.src, t.dst, t.n_tokens);
    }
  }
  if (!s.ok()) return s;
  b.barrier();
  return plan;
}

Result<BufferRange> VulkanKvCache::begin_chunk(CommandBatch& b, int pos, int n) {
  if (!pages_.single_format()) return Status::error("Vulkan KV cache: a prefill chunk needs the all-f16 cache");
  const size_t layer = pages_.layer_bytes();
  for (int p = pos; p < pos + n; ++p) {
    Result<DeviceKvPages::StepPlan> plan = pages_.plan_step(p);
    if (!plan.ok()) return plan.status();
    assert(plan->transcodes.empty());  // one format: nothing moves
    if (plan->zero_bytes == 0) continue;
    for (int l = 0; l < geometry_.n_layers; ++l) {
      b.fill(pool_, static_cast<size_t>(l) * layer + plan->zero_offset, plan->zero_bytes, 0);
    }
  }
  std::vector<std::vector<uint32_t>> lists;
  pages_.page_lists(pos + n - 1, &lists);
  const DeviceKvPages::Region& f16 = pages_.regions()[0];
  const size_t at = static_cast<size_t>(f16.list_base) * 2 * sizeof(uint32_t);
  const size_t bytes = lists[0].size() * sizeof(uint32_t);
  std::memcpy(static_cast<uint8_t*>(list_staging_.mapped()) + at, lists[0].data(), bytes);  // the last submit is done
  b.copy(list_staging_, at, page_list_, at, bytes);
  b.barrier();
  return BufferRange(page_list_, at, bytes);
}

Status VulkanKvCache::begin_ladder_chunk(CommandBatch& b, vulkan::Kernels& k, int pos, int n, int n_heads) {
  vulkan::Context& context = owner_.context();
  const std::vector<DeviceKvPages::Region>& regions = pages_.regions();
  constexpr size_t kAlign = 256;  // any device's storage-buffer offset alignment
  if (chunk_list_.size() == 0) {
    size_t bytes = align_up((kMaxDeviceChunk / kv::kTokensPerPage + 2) * 2 * sizeof(uint32_t), kAlign);
    chunk_list_at_.clear();
    for (const DeviceKvPages::Region& r : regions) {
      chunk_list_at_.push_back(bytes);
      bytes += align_up(static_cast<size_t>(r.capacity) * 4 * sizeof(uint32_t), kAlign);
    }
    Result<Buffer> list = context.create_buffer(bytes, MemoryKind::DeviceLocal);
    if (!list.ok()) return list.status();
    Result<Buffer> staging = context.create_buffer(bytes, MemoryKind::HostVisible);
    if (!staging.ok()) return staging.status();
    chunk_list_ = std::move(*list);
    chunk_list_staging_ = std::move(*staging);
  }
  if (chunk_rows_ < n) {
    const size_t vectors = static_cast<size_t>(n) * n_heads, head_dim = static_cast<size_t>(geometry_.head_dim);
    Result<Buffer> o =
        context.create_buffer(regions.size() * vectors * head_dim * sizeof(float), MemoryKind::DeviceLocal);
    if (!o.ok()) return Status::error("--device vulkan: ladder prefill buffers: " + o.error());
    Result<Buffer> ml = context.create_buffer(regions.size() * vectors * 2 * sizeof(float), MemoryKind::DeviceLocal);
    if (!ml.ok()) return ml.status();
    Result<Buffer> lse = context.create_buffer(vectors * sizeof(float), MemoryKind::DeviceLocal);
    if (!lse.ok()) return lse.status();
    chunk_part_o_ = std::move(*o);
    chunk_part_ml_ = std::move(*ml);
    chunk_lse_ = std::move(*lse);
    chunk_rows_ = n;
  }
  Result<DeviceKvPages::ChunkPlan> plan = pages_.plan_chunk(pos, n);
  if (!plan.ok()) return plan.status();
  chunk_plan_ = std::move(*plan);
  chunk_pos_ = pos;
  chunk_n_ = n;
  const size_t layer = pages_.layer_bytes();
  // The moves first: the new pages may take the slots they read (plan_chunk frees those at once).
  for (size_t i = 0; i < chunk_plan_.before.size(); ++i) {
    const DeviceKvPages::Transcode& t = chunk_plan_.before[i];
    if (i > 0) b.barrier();  // two moves bind the same range
    for (int l = 0; l < geometry_.n_layers; ++l) {
      const BufferRange range(pool_, static_cast<size_t>(l) * layer, layer);
      if (Status s = k.transcode_page(b, regions[t.from].format, regions[t.to].format, range, t.src, t.dst, t.n_tokens);
          !s.ok()) {
        return s;
      }
    }
  }
  if (!chunk_plan_.before.empty() && !chunk_plan_.zero.empty()) b.barrier();
  for (const std::array<uint32_t, 2>& z : chunk_plan_.zero) {
    for (int l = 0; l < geometry_.n_layers; ++l) b.fill(pool_, static_cast<size_t>(l) * layer + z[0], z[1], 0);
  }
  // The lists, through mapped memory (the last submit is done with it).
  auto* staging = static_cast<uint8_t*>(chunk_list_staging_.mapped());
  std::vector<uint32_t> rows;  // [ring pages] (byte offset, 0)
  for (uint32_t offset : chunk_plan_.ring_offsets) rows.insert(rows.end(), {offset, 0});
  std::memcpy(staging, rows.data(), rows.size() * sizeof(uint32_t));
  b.copy(chunk_list_staging_, 0, chunk_list_, 0, rows.size() * sizeof(uint32_t));
  for (size_t r = 0; r < regions.size(); ++r) {
    const std::vector<DeviceKvPages::ChunkEntry>& list = chunk_plan_.lists[r];
    if (list.empty()) continue;
    const size_t bytes = list.size() * sizeof(DeviceKvPages::ChunkEntry);
    std::memcpy(staging + chunk_list_at_[r], list.data(), bytes);
    b.copy(chunk_list_staging_, chunk_list_at_[r], chunk_list_, chunk_list_at_[r], bytes);
  }
  b.barrier();
  return b.error();
}

Status VulkanKvCache::attend_ladder_chunk(CommandBatch& b, vulkan::Kernels& k, BufferRange pool,
                                          const Buffer& k_rows, const Buffer& v_rows, const Buffer& q, int n_heads,
                                          float scale, const Buffer& out) {
  const std::vector<DeviceKvPages::Region>& regions = pages_.regions();
  const DeviceKvPages::ChunkPlan& plan = chunk_plan_;
  const uint32_t n = static_cast<uint32_t>(chunk_n_);
  // The rows, at positions relative to the first ring page the chunk writes.
  const uint32_t first =
      static_cast<uint32_t>(chunk_pos_ - pages_.n_sinks()) - plan.first_ring_page * kv::kTokensPerPage;
  const BufferRange row_pages(chunk_list_, 0, plan.ring_offsets.size() * 2 * sizeof(uint32_t));
  const kv::PageFormat& tail = regions[pages_.hot_region()].format;  // f16, or k16vY where the ladder starts quantized
  if (Status s = tail.value_bits == 16 ? k.write_kv_rows_f16(b, tail, pool, row_pages, first, n, k_rows, v_rows)
                                       : k.write_kv_rows_tail(b, tail, pool, row_pages, first, n, k_rows, v_rows);
      !s.ok()) {
    return s;
  }
  b.barrier();
  // Ring pages the chunk pushed out, at their rung before the chunk's attention (the CPU store's rule).
  for (const DeviceKvPages::Transcode& t : plan.after_write) {
    if (Status s = k.transcode_page(b, regions[t.from].format, regions[t.to].format, pool, t.src, t.dst, t.n_tokens);
        !s.ok()) {
      return s;
    }
    b.barrier();
  }
  uint32_t splits = 0;
  for (size_t r = 0; r < regions.size(); ++r) {
    const uint32_t entries = static_cast<uint32_t>(plan.lists[r].size());
    if (entries == 0) continue;
    const BufferRange list(chunk_list_, chunk_list_at_[r], entries * sizeof(DeviceKvPages::ChunkEntry));
    if (Status s = k.prefill_attention_pages(b, regions[r].format, pool, list, entries,
                                             static_cast<uint32_t>(chunk_pos_), n, q, n_heads, scale, chunk_part_o_,
                                             chunk_part_ml_, splits++);
        !s.ok()) {
      return s;
    }
  }
  b.barrier();
  // The formats' splits merged per (row, head): the merge's "heads" are the chunk's n x n_heads vectors.
  if (Status s = k.merge_attention(b, chunk_part_o_, chunk_part_ml_, splits, static_cast<int>(n) * n_heads,
                                   geometry_.head_dim, out, chunk_lse_);
      !s.ok()) {
    return s;
  }
  b.barrier();
  return b.error();
}

Result<uint32_t> VulkanKvCache::attend_pages(CommandBatch& b, vulkan::Kernels& k, BufferRange pool, const Buffer& q,
                                             int n_heads, float scale, const Buffer& partial_o,
                                             const Buffer& partial_ml) {
  const std::vector<DeviceKvPages::Region>& regions = pages_.regions();
  uint32_t total = 0;
  for (uint32_t n : list_pages_) total += n;
  // The fewest pages per split that keep every format's splits within the partial buffers.
  uint32_t pages_per_split = std::max<uint32_t>(1, (total + kMaxSplits - 1) / kMaxSplits);
  auto splits_at = [&](uint32_t per) {
    uint32_t splits = 0;
    for (uint32_t n : list_pages_) splits += n > 0 ? vulkan::Kernels::attention_splits(n, per) : 0;
    return splits;
  };
  while (splits_at(pages_per_split) > kMaxSplits) ++pages_per_split;
  uint32_t split_base = 0;
  for (size_t r = 0; r < regions.size(); ++r) {
    const uint32_t n = list_pages_[r];
    if (n == 0) continue;
    const BufferRange list(page_list_, static_cast<size_t>(regions[r].list_base) * 2 * sizeof(uint32_t),
                           static_cast<size_t>(n) * 2 * sizeof(uint32_t));
    if (Status s = k.decode_attention(b, regions[r].format, pool, list, n, q, n_heads, scale, partial_o, partial_ml,
                                      split_base, pages_per_split);
        !s.ok()) {
      return s;
    }
    split_base += vulkan::Kernels::attention_splits(n, pages_per_split);
  }
  return split_base;
}

Status VulkanModel::upload_matrix(const kernels::WeightMatrix& w, const std::string& name, DeviceMatrix* out) {
  if (!vulkan::Kernels::supports_matvec(w.type)) {
    return Status::error(fmt::format("--device vulkan: tensor {} is {}, which the Vulkan backend has no shader for "
                                     "(it runs F16, Q8_0, Q4_0, Q4_K, Q5_K and Q6_K weights)",
                                     name, ggml_type_name(w.type)));
  }
  const size_t bytes = static_cast<size_t>(w.rows) * w.row_bytes;
  Result<Buffer> b = device_buffer(bytes);
  if (!b.ok()) return Status::error(fmt::format("--device vulkan: tensor {}: {}", name, b.error()));
  if (Status s = context_->upload(*b, 0, w.data, bytes); !s.ok()) return s;
  out->buffer = std::move(*b);
  out->type = w.type;
  out->rows = w.rows;
  out->cols = w.cols;
  weight_bytes_ += bytes;
  uploaded_ += bytes;
  if (progress_) progress_(uploaded_, upload_total_);
  return {};
}

Status VulkanModel::upload_vector(const float* data, size_t n, Buffer* out) {
  Result<Buffer> b = device_buffer(n * sizeof(float));
  if (!b.ok()) return b.status();
  if (Status s = context_->upload(*b, 0, data, n * sizeof(float)); !s.ok()) return s;
  *out = std::move(*b);
  weight_bytes_ += n * sizeof(float);
  return {};
}

Status VulkanModel::allocate_activations() {
  const ModelConfig& c = model_.config();
  const size_t q_dim = static_cast<size_t>(c.n_heads) * c.head_dim, kv_dim = static_cast<size_t>(c.n_kv_heads) * c.head_dim;
  struct Want {
    Buffer* buffer;
    size_t floats;
  };
  const Want wants[] = {{&x_, static_cast<size_t>(c.n_embd)},
                        {&q_, q_dim},
                        {&k_, kv_dim},
                        {&v_, kv_dim},
                        {&attn_, q_dim},
                        {&gate_, static_cast<size_t>(c.n_ff)},
                        {&up_, static_cast<size_t>(c.n_ff)},
                        {&rope_, static_cast<size_t>(c.rope_dims)},
                        {&partial_o_, kMaxSplits * q_dim},
                        {&partial_ml_, kMaxSplits * static_cast<size_t>(c.n_heads) * 2},
                        {&lse_, static_cast<size_t>(c.n_heads)},
                        {&logits_, static_cast<size_t>(c.n_vocab)}};
  for (const Want& w : wants) {
    Result<Buffer> b = device_buffer(w.floats * sizeof(float));
    if (!b.ok()) return b.status();
    *w.buffer = std::move(*b);
  }
  rope_offset_ = align_up(static_cast<size_t>(c.n_embd) * sizeof(float), 16);
  Result<Buffer> in =
      context_->create_buffer(rope_offset_ + static_cast<size_t>(c.rope_dims) * sizeof(float), MemoryKind::HostVisible);
  if (!in.ok()) return in.status();
  step_in_ = std::move(*in);
  Result<Buffer> out = context_->create_buffer(static_cast<size_t>(c.n_vocab) * sizeof(float), MemoryKind::HostVisible);
  if (!out.ok()) return out.status();
  logits_out_ = std::move(*out);
  return {};
}

// What the step does not do: refused at open, naming the feature.
Status check_supported(const ModelConfig& c) {
  if (c.architecture != "llama" && c.architecture != "qwen2") {
    return Status::error("--device vulkan: architecture '" + c.architecture +
                         "' is not supported on the Vulkan backend yet (it runs llama and qwen2)");
  }
  std::string feature;
  if (c.n_expert > 0) feature = "routed experts (MoE)";
  else if (c.gemma || c.sliding_window > 0) feature = "sliding-window attention";
  else if (c.has_qk_norm) feature = "q/k norms";
  else if (c.no_rope_layer_step > 0) feature = "layers without RoPE";
  else if (c.fused_gate_up) feature = "a fused gate/up matrix";
  else if (c.attn_softcap > 0 || c.final_softcap > 0) feature = "soft-capped logits";
  else if (c.has_longrope_factors) feature = "LongRoPE";
  else if (c.attn_scale > 0 && std::fabs(c.attn_scale - 1.0f / std::sqrt(static_cast<float>(c.head_dim))) > 1e-7f) {
    feature = "a custom attention scale";
  }
  if (!feature.empty()) {
    return Status::error("--device vulkan: this " + c.architecture + " model uses " + feature +
                         ", which the Vulkan backend does not run yet");
  }
  if (c.head_dim % 8 != 0 || c.head_dim > 256 || c.n_heads % c.n_kv_heads != 0 || c.n_heads / c.n_kv_heads > 8) {
    return Status::error(fmt::format("--device vulkan: head_dim {} with {} query heads over {} KV heads is not "
                                     "supported (head_dim a multiple of 8 up to 256, at most 8 query heads per KV head)",
                                     c.head_dim, c.n_heads, c.n_kv_heads));
  }
  return {};
}

Status VulkanModel::init(const ProgressFn& progress) {
  const ModelConfig& c = model_.config();
  if (Status s = check_supported(c); !s.ok()) return s;
  std::string error;
  if (!kv::make_page_format(kv::Precision::F16, kv::KeyMode::PerChannel, kv::kTokensPerPage, c.n_kv_heads,
                            c.head_dim, kv::default_group(c.head_dim), &page_format_, &error)) {
    return Status::error("--device vulkan: " + error);
  }
  const std::vector<LayerWeights>& weights = model_.layer_weights();
  // Check every matrix's type before uploading any, so a model that cannot run fails at once.
  auto matrices = [&](const LayerWeights& w) {
    return std::array<std::pair<const kernels::WeightMatrix*, const char*>, 7>{
        {{&w.wq, "attn_q"}, {&w.wk, "attn_k"}, {&w.wv, "attn_v"}, {&w.wo, "attn_output"},
         {&w.w_gate, "ffn_gate"}, {&w.w_up, "ffn_up"}, {&w.w_down, "ffn_down"}}};
  };
  upload_total_ = static_cast<uint64_t>(model_.output_weights().rows) * model_.output_weights().row_bytes;
  if (!vulkan::Kernels::supports_matvec(model_.output_weights().type)) {
    return upload_matrix(model_.output_weights(), "output.weight", &output_);  // the error naming it
  }
  for (int l = 0; l < c.n_layers; ++l) {
    for (const auto& [m, name] : matrices(weights[l])) {
      if (!vulkan::Kernels::supports_matvec(m->type)) {
        DeviceMatrix unused;
        return upload_matrix(*m, fmt::format("blk.{}.{}.weight", l, name), &unused);
      }
      upload_total_ += static_cast<uint64_t>(m->rows) * m->row_bytes;
    }
  }
  // A software device (lavapipe) runs each workgroup as a task of its own: fewer, larger ones cost far less.
  if (context_->info().is_cpu) {
    tuning_ = vulkan::MatvecTuning{64, 8};
    logit_rows_ = kSoftwareLogitRows;
    software_device_ = true;
  }
  progress_ = progress;
  layers_.resize(c.n_layers);
  for (int l = 0; l < c.n_layers; ++l) {
    const LayerWeights& w = weights[l];
    DeviceLayer& d = layers_[l];
    DeviceMatrix* targets[] = {&d.wq, &d.wk, &d.wv, &d.wo, &d.gate, &d.up, &d.down};
    int i = 0;
    for (const auto& [m, name] : matrices(w)) {
      if (Status s = upload_matrix(*m, fmt::format("blk.{}.{}.weight", l, name), targets[i++]); !s.ok()) return s;
    }
    if (Status s = upload_vector(w.attn_norm, c.n_embd, &d.attn_norm); !s.ok()) return s;
    if (Status s = upload_vector(w.ffn_norm, c.n_embd, &d.ffn_norm); !s.ok()) return s;
    const size_t q_dim = static_cast<size_t>(c.n_heads) * c.head_dim, kv_dim = static_cast<size_t>(c.n_kv_heads) * c.head_dim;
    if (w.bq) {
      if (Status s = upload_vector(w.bq, q_dim, &d.bq); !s.ok()) return s;
    }
    if (w.bk) {
      if (Status s = upload_vector(w.bk, kv_dim, &d.bk); !s.ok()) return s;
    }
    if (w.bv) {
      if (Status s = upload_vector(w.bv, kv_dim, &d.bv); !s.ok()) return s;
    }
  }
  if (Status s = upload_matrix(model_.output_weights(), "output.weight", &output_); !s.ok()) return s;
  if (Status s = upload_vector(model_.output_norm(), c.n_embd, &output_norm_); !s.ok()) return s;
  progress_ = {};
  return allocate_activations();
}

Result<std::unique_ptr<KvCache>> VulkanModel::make_cache(int max_tokens, const KvCacheOptions& kv) {
  const ModelConfig& c = model_.config();
  if (max_tokens <= 0) return Status::error("Vulkan KV cache: the context size must be positive");
  if (kv.budget_bytes > 0 || !kv.spill_dir.empty()) {
    return Status::error("--device vulkan: --kv-budget and --kv-spill (the cold tier) do not run on the GPU yet");
  }
  Result<kv::TieredKvOptions> tiered = resolve_tiered_kv_options(kv);
  if (!tiered.ok()) return Status::error("--device vulkan: " + tiered.error());
  Result<DeviceKvPages> pages =
      DeviceKvPages::create(tiered->ladder, tiered->key_mode, c.n_kv_heads, c.head_dim, tiered->group, max_tokens,
                            prefill_chunk_);
  if (!pages.ok()) return pages.status();
  const size_t layer_bytes = pages->layer_bytes();
  if (layer_bytes > context_->info().max_storage_buffer_range) {
    return Status::error(fmt::format("--device vulkan: a layer's KV pages at {} tokens ({:.1f} MiB) exceed what one "
                                     "shader binding of this device can address; lower -c",
                                     max_tokens, layer_bytes / 1048576.0));
  }
  Result<Buffer> pool = device_buffer(layer_bytes * c.n_layers);
  if (!pool.ok()) return Status::error("--device vulkan: KV cache of " + std::to_string(max_tokens) + " tokens: " + pool.error());
  const size_t list_bytes = static_cast<size_t>(pages->list_entries()) * 2 * sizeof(uint32_t);
  Result<Buffer> list = device_buffer(list_bytes);
  if (!list.ok()) return list.status();
  Result<Buffer> staging = context_->create_buffer(list_bytes, MemoryKind::HostVisible);
  if (!staging.ok()) return staging.status();
  // Zeroed pages: rows not yet written hold f16 zeros, as the page format says.
  Result<CommandBatch> batch = context_->begin();
  if (!batch.ok()) return batch.status();
  batch->fill(*pool, 0, pool->size(), 0);
  batch->fill(*list, 0, list->size(), 0);
  if (Status s = context_->submit(*batch); !s.ok()) return s;
  auto cache = std::make_unique<VulkanKvCache>(*this, c.kv_geometry(max_tokens), std::move(*pages), std::move(*pool),
                                               std::move(*list), std::move(*staging));
  cache->set_vocab(c.n_vocab);
  return std::unique_ptr<KvCache>(std::move(cache));
}

// The decode step: one command batch per token. Elementwise work is fused into the products beside it (each
// fused kernel has its CPU reference test in tests/vulkan/), so a layer of an f16 cache records 10 dispatches and 7
// barriers (tests/vulkan/model_test.cpp counts them):
//   Q, K, V (RMSNorm fused) | RoPE + KV write | attention | merge | wo (+ residual) |
//   gate (RMSNorm, SiLU fused), up (RMSNorm fused) | down (x gate product, + residual) |
// Independent dispatches (Q/K/V; gate/up) share one barrier. A ladder's k16vY hot pages take RoPE and the row
// write as two dispatches; qwen2's biases are added after the products.
Status VulkanModel::step(VulkanKvCache& cache, int32_t token, int pos, float* logits) {
  const ModelConfig& c = model_.config();
  const int q_dim = c.n_heads * c.head_dim, kv_dim = c.n_kv_heads * c.head_dim;
  const float scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));

  // The step's inputs, written into mapped memory (the previous step's submit has finished with it).
  auto* in = static_cast<uint8_t*>(step_in_.mapped());
  kernels::get_row(model_.token_embedding(), token, reinterpret_cast<float*>(in));
  rope_table(c, model_.rope_freq_factors(), 1, pos, reinterpret_cast<float*>(in + rope_offset_));

  Result<CommandBatch> begun = context_->begin();
  if (!begun.ok()) return begun.status();
  CommandBatch& b = *begun;
  vulkan::Kernels& k = kernels_;
  b.copy(step_in_, 0, x_, 0, x_.size());
  b.copy(step_in_, rope_offset_, rope_, 0, rope_.size());
  Result<DeviceKvPages::StepPlan> kv_step = cache.begin_step(b, kernels_, pos);  // ladder moves, page lists
  if (!kv_step.ok()) return kv_step.status();
  const size_t layer_bytes = cache.layer_bytes();
  const bool neox = c.rope_mode == RopeMode::kNeox;
  const bool f16_row = kv_step->write_format->value_bits == 16;
  Status s;
  auto record = [&s](Status r) {
    if (s.ok() && !r.ok()) s = std::move(r);
  };
  using vulkan::MatvecFusion;
  // y (op)= W x with `bits` fused; aux: the norm's weight (kNorm) or the multiplier (kMul), else unread.
  auto matvec = [&](const DeviceMatrix& m, const Buffer& x, const Buffer& aux, const Buffer& y, uint32_t bits) {
    return k.matvec_fused(b, m.type, m.buffer, x, aux, y, m.rows, m.cols, 1, MatvecFusion{bits, c.rms_eps}, tuning_);
  };
  for (int l = 0; l < c.n_layers && s.ok(); ++l) {
    const DeviceLayer& w = layers_[l];
    const BufferRange pool(cache.pool(), static_cast<size_t>(l) * layer_bytes, layer_bytes);
    record(matvec(w.wq, x_, w.attn_norm, q_, MatvecFusion::kNorm));
    record(matvec(w.wk, x_, w.attn_norm, k_, MatvecFusion::kNorm));
    record(matvec(w.wv, x_, w.attn_norm, v_, MatvecFusion::kNorm));
    b.barrier();
    if (w.bq.size() > 0) record(k.add(b, q_, w.bq, q_dim, q_dim));
    if (w.bk.size() > 0) record(k.add(b, k_, w.bk, kv_dim, kv_dim));
    if (w.bv.size() > 0) record(k.add(b, v_, w.bv, kv_dim, kv_dim));
    if (w.bq.size() > 0 || w.bk.size() > 0 || w.bv.size() > 0) b.barrier();
    if (f16_row) {
      record(k.rope_write_kv_f16(b, *kv_step->write_format, pool, kv_step->write_offset, kv_step->write_slot, q_,
                                 c.n_heads, k_, v_, rope_, c.rope_dims, neox));
    } else {
      record(k.rope(b, q_, rope_, 1, c.n_heads, c.head_dim, c.rope_dims, neox));
      record(k.rope(b, k_, rope_, 1, c.n_kv_heads, c.head_dim, c.rope_dims, neox));
      b.barrier();
      record(k.write_kv_row(b, *kv_step->write_format, pool, kv_step->write_offset, kv_step->write_slot, k_, v_));
    }
    b.barrier();
    Result<uint32_t> splits = cache.attend_pages(b, k, pool, q_, c.n_heads, scale, partial_o_, partial_ml_);
    record(splits.status());
    b.barrier();
    if (splits.ok()) record(k.merge_attention(b, partial_o_, partial_ml_, *splits, c.n_heads, c.head_dim, attn_, lse_));
    b.barrier();
    record(matvec(w.wo, attn_, attn_, x_, MatvecFusion::kAdd));
    b.barrier();
    record(matvec(w.gate, x_, w.ffn_norm, gate_, MatvecFusion::kNorm | MatvecFusion::kSilu));
    record(matvec(w.up, x_, w.ffn_norm, up_, MatvecFusion::kNorm));
    b.barrier();
    record(matvec(w.down, gate_, up_, x_, MatvecFusion::kMul | MatvecFusion::kAdd));
    b.barrier();
  }
  if (logits && s.ok()) {
    record(matvec(output_, x_, output_norm_, logits_, MatvecFusion::kNorm));
    b.barrier();
    b.copy(logits_, 0, logits_out_, 0, logits_.size());
  }
  if (!s.ok()) return s;
  step_counts_ = DeviceStepCounts{static_cast<int>(b.dispatches()), static_cast<int>(b.barriers())};
  if (Status submitted = context_->submit(b); !submitted.ok()) return submitted;
  if (logits) std::memcpy(logits, logits_out_.mapped(), logits_out_.size());
  return {};
}

Status VulkanModel::ensure_chunk_buffers(int rows) {
  if (chunk_.rows >= rows) return {};
  const ModelConfig& c = model_.config();
  const size_t n = static_cast<size_t>(rows);
  const size_t q_dim = static_cast<size_t>(c.n_heads) * c.head_dim, kv_dim = static_cast<size_t>(c.n_kv_heads) * c.head_dim;
  ChunkBuffers b;
  b.rows = rows;
  struct Want {
    Buffer* buffer;
    size_t bytes;
  };
  const Want wants[] = {{&b.x, n * c.n_embd * sizeof(float)},
                        {&b.xn, n * c.n_embd * sizeof(float)},
                        {&b.proj, n * c.n_embd * sizeof(float)},
                        {&b.q, n * q_dim * sizeof(float)},
                        {&b.attn, n * q_dim * sizeof(float)},
                        {&b.k, n * kv_dim * sizeof(float)},
                        {&b.v, n * kv_dim * sizeof(float)},
                        {&b.gate, n * c.n_ff * sizeof(float)},
                        {&b.up, n * c.n_ff * sizeof(float)},
                        {&b.rope, n * c.rope_dims * sizeof(float)},
                        {&b.logits, static_cast<size_t>(logit_rows_) * c.n_vocab * sizeof(float)}};
  for (const Want& w : wants) {
    Result<Buffer> buffer = device_buffer(w.bytes);
    if (!buffer.ok()) return Status::error("--device vulkan: prefill activations of " + std::to_string(rows) + " tokens: " + buffer.error());
    *w.buffer = std::move(*buffer);
  }
  b.rope_offset = align_up(n * c.n_embd * sizeof(float), 16);
  const size_t in_bytes = b.rope_offset + n * c.rope_dims * sizeof(float);
  Result<Buffer> in = context_->create_buffer(in_bytes, MemoryKind::HostVisible);
  if (!in.ok()) return in.status();
  b.in = std::move(*in);
  Result<Buffer> out = context_->create_buffer(b.logits.size(), MemoryKind::HostVisible);
  if (!out.ok()) return out.status();
  b.logits_out = std::move(*out);
  chunk_ = std::move(b);
  return {};
}

Status VulkanModel::record_logits(CommandBatch& b, int from, int count) {
  const ModelConfig& c = model_.config();
  const size_t row_bytes = static_cast<size_t>(c.n_embd) * sizeof(float);
  vulkan::Kernels& k = kernels_;
  if (Status s = k.rms_norm(b, BufferRange(chunk_.x, from * row_bytes, count * row_bytes), output_norm_, chunk_.xn,
                            count, c.n_embd, c.rms_eps);
      !s.ok()) {
    return s;
  }
  b.barrier();
  Status s = software_device_ ? k.matvec(b, output_.type, output_.buffer, chunk_.xn, chunk_.logits, output_.rows,
                                         output_.cols, count, tuning_)
                              : k.matmul(b, output_.type, output_.buffer, chunk_.xn, chunk_.logits, output_.rows,
                                         output_.cols, count);
  if (!s.ok()) return s;
  b.barrier();
  b.copy(chunk_.logits, 0, chunk_.logits_out, 0, static_cast<size_t>(count) * c.n_vocab * sizeof(float));
  return b.error();
}

Status VulkanModel::prefill(VulkanKvCache& cache, const int32_t* tokens, int n, int pos, int logits_from,
                            float* logits) {
  const ModelConfig& c = model_.config();
  if (Status s = ensure_chunk_buffers(n); !s.ok()) return s;
  ChunkBuffers& cb = chunk_;
  const int q_dim = c.n_heads * c.head_dim, kv_dim = c.n_kv_heads * c.head_dim;
  const float scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));

  // The chunk's inputs, written into mapped memory (the previous batch has finished with it): embedding rows,
  // RoPE rows and the cache's page-list entries of the pages the chunk writes.
  auto* in = static_cast<uint8_t*>(cb.in.mapped());
  for (int i = 0; i < n; ++i) {
    kernels::get_row(model_.token_embedding(), tokens[i], reinterpret_cast<float*>(in) + static_cast<size_t>(i) * c.n_embd);
  }
  rope_table(c, model_.rope_freq_factors(), n, pos, reinterpret_cast<float*>(in + cb.rope_offset));

  std::optional<CommandBatch> batch;  // re-made in place after each layer on a software device
  {
    Result<CommandBatch> begun = context_->begin();
    if (!begun.ok()) return begun.status();
    batch.emplace(std::move(*begun));
  }
  CommandBatch& b = *batch;
  vulkan::Kernels& k = kernels_;
  const size_t f = sizeof(float);
  b.copy(cb.in, 0, cb.x, 0, static_cast<size_t>(n) * c.n_embd * f);
  b.copy(cb.in, cb.rope_offset, cb.rope, 0, static_cast<size_t>(n) * c.rope_dims * f);
  // The chunk's pages allocated (and zeroed) in the cache's table and its page list uploaded; ends with a barrier.
  // A ladder's chunk: the page moves before it, its page lists (begin_ladder_chunk).
  const bool ladder = !cache.single_format();
  std::optional<BufferRange> page_list;  // the f16 cache's
  if (ladder) {
    if (Status s = cache.begin_ladder_chunk(b, k, pos, n, c.n_heads); !s.ok()) return s;
  } else {
    Result<BufferRange> list = cache.begin_chunk(b, pos, n);
    if (!list.ok()) return list.status();
    page_list = *list;
  }
  const size_t layer_bytes = cache.layer_bytes();
  const bool neox = c.rope_mode == RopeMode::kNeox;
  Status s;
  auto record = [&s](Status r) {
    if (s.ok() && !r.ok()) s = std::move(r);
  };
  auto matmul = [&](const DeviceMatrix& m, const Buffer& x, const Buffer& y) {
    return k.matmul(b, m.type, m.buffer, x, y, m.rows, m.cols, n);
  };
  for (int l = 0; l < c.n_layers && s.ok(); ++l) {
    const DeviceLayer& w = layers_[l];
    const BufferRange pool(cache.pool(), static_cast<size_t>(l) * layer_bytes, layer_bytes);
    record(k.rms_norm(b, cb.x, w.attn_norm, cb.xn, n, c.n_embd, c.rms_eps));
    b.barrier();
    record(matmul(w.wq, cb.xn, cb.q));
    record(matmul(w.wk, cb.xn, cb.k));
    record(matmul(w.wv, cb.xn, cb.v));
    b.barrier();
    if (w.bq.size() > 0) record(k.add(b, cb.q, w.bq, static_cast<int64_t>(n) * q_dim, q_dim));
    if (w.bk.size() > 0) record(k.add(b, cb.k, w.bk, static_cast<int64_t>(n) * kv_dim, kv_dim));
    if (w.bv.size() > 0) record(k.add(b, cb.v, w.bv, static_cast<int64_t>(n) * kv_dim, kv_dim));
    if (w.bq.size() > 0 || w.bk.size() > 0 || w.bv.size() > 0) b.barrier();
    record(k.rope(b, cb.q, cb.rope, n, c.n_heads, c.head_dim, c.rope_dims, neox));
    record(k.rope(b, cb.k, cb.rope, n, c.n_kv_heads, c.head_dim, c.rope_dims, neox));
    b.barrier();
    if (ladder) {  // rows written, pushed-out pages re-encoded, attention over every format merged
      record(cache.attend_ladder_chunk(b, k, pool, cb.k, cb.v, cb.q, c.n_heads, scale, cb.attn));
    } else {
      record(k.write_kv_rows_f16(b, page_format_, pool, *page_list, static_cast<uint32_t>(pos),
                                 static_cast<uint32_t>(n), cb.k, cb.v));
      b.barrier();
      // Causal attention: query row i over positions [0, pos + i].
      record(k.prefill_attention(b, page_format_, pool, *page_list, static_cast<uint32_t>(pos),
                                 static_cast<uint32_t>(n), cb.q, c.n_heads, scale, cb.attn));
      b.barrier();
    }
    record(matmul(w.wo, cb.attn, cb.proj));
    b.barrier();
    record(k.add(b, cb.x, cb.proj, static_cast<int64_t>(n) * c.n_embd, static_cast<int64_t>(n) * c.n_embd));
    b.barrier();
    record(k.rms_norm(b, cb.x, w.ffn_norm, cb.xn, n, c.n_embd, c.rms_eps));
    b.barrier();
    record(matmul(w.gate, cb.xn, cb.gate));
    record(matmul(w.up, cb.xn, cb.up));
    b.barrier();
    record(k.silu_mul(b, cb.gate, cb.up, cb.gate, static_cast<int64_t>(n) * c.n_ff));
    b.barrier();
    record(matmul(w.down, cb.gate, cb.proj));
    b.barrier();
    record(k.add(b, cb.x, cb.proj, static_cast<int64_t>(n) * c.n_embd, static_cast<int64_t>(n) * c.n_embd));
    b.barrier();
    if (software_device_ && l + 1 < c.n_layers && s.ok()) {
      if (Status submitted = context_->submit(b); !submitted.ok()) return submitted;
      Result<CommandBatch> next = context_->begin();
      if (!next.ok()) return next.status();
      batch.emplace(std::move(*next));  // the same storage: `b` names the new batch
    }
  }
  // Logits of rows [logits_from, n), logit_rows_ per batch: the first group in this batch, the others after it.
  const size_t vocab_bytes = static_cast<size_t>(c.n_vocab) * f;
  const int first_count = logits ? std::min(logit_rows_, n - logits_from) : 0;
  if (first_count > 0 && s.ok()) record(record_logits(b, logits_from, first_count));
  if (!s.ok()) return s;
  if (Status submitted = context_->submit(b); !submitted.ok()) return submitted;
  if (first_count == 0) return {};
  std::memcpy(logits, cb.logits_out.mapped(), first_count * vocab_bytes);
  for (int from = logits_from + first_count; from < n; from += logit_rows_) {
    const int count = std::min(logit_rows_, n - from);
    Result<CommandBatch> more = context_->begin();
    if (!more.ok()) return more.status();
    if (Status r = record_logits(*more, from, count); !r.ok()) return r;
    if (Status submitted = context_->submit(*more); !submitted.ok()) return submitted;
    std::memcpy(logits + static_cast<size_t>(from - logits_from) * c.n_vocab, cb.logits_out.mapped(),
                count * vocab_bytes);
  }
  return {};
}

}  // namespace

Result<std::unique_ptr<DeviceModel>> open_vulkan_model(const Model& model, const DeviceOptions& options,
                                                       const ProgressFn& progress) {
  if (Status s = check_supported(model.config()); !s.ok()) return s;
  vulkan::ContextOptions context_options;
  context_options.device_index = options.index;
  context_options.validation = options.validation;
  Result<std::unique_ptr<vulkan::Context>> context = vulkan::Context::create(context_options);
  if (!context.ok()) return Status::error("--device " + device_name(options) + ": " + context.error());
  auto vk = std::make_unique<VulkanModel>(model, std::move(*context));
  if (Status s = vk->init(progress); !s.ok()) return s;
  if (options.prefill_chunk < 1 || options.prefill_chunk > kMaxDeviceChunk) {
    return Status::error(fmt::format("--device vulkan: a prefill chunk of {} tokens (1..{})", options.prefill_chunk,
                                     kMaxDeviceChunk));
  }
  // The logits of a prefill chunk bind the residual stream from any row: a row's bytes must be a multiple of the
  // device's storage-offset alignment (true of every model shape and device seen; else prompts run token by token).
  const size_t align = std::max<size_t>(1, vk->context().info().min_storage_offset_alignment);
  const bool rows_aligned = static_cast<size_t>(model.config().n_embd) * sizeof(float) % align == 0;
  const int chunk = vk->context().info().is_cpu ? std::min(options.prefill_chunk, kSoftwareChunk) : options.prefill_chunk;
  vk->set_prefill_chunk(rows_aligned ? chunk : 1);
  return std::unique_ptr<DeviceModel>(std::move(vk));
}

}  // namespace kvtier
