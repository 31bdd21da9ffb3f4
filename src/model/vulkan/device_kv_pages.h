// The page table of the Vulkan KV cache under a precision ladder (kv/ladder.h): which device slot, in which
// format, holds each page of positions, and what a token step must re-encode. Host bookkeeping only; the
// Vulkan cache (vulkan_forward.cpp) records what it plans. Every layer has the same table (all layers hold the
// same positions and apply the same ladder), so one plan serves all layers and one page list per format serves
// every layer's attention.
//
// The rule is the CPU store's (kv/tiered_store.h): the first n_sinks positions stay f16 in a sink page; page i
// holds positions [n_sinks + 64 i, n_sinks + 64 (i + 1)); a full page moves to the rung of its newest token
// (kv::target_rung) once that token has left the page's rung; the moves planned with n positions cached are
// applied before the attention of the step that adds position n, as the CPU store applies them (rebalance after
// a step's attention, swapped in at the next append). The tail page is f16, or k16vY where the ladder starts
// quantized (kv::with_hot_rung: f16 keys, values at the first rung's width as they arrive), as on the CPU.
//
// Device memory: each layer's range of the pool is one region per format the ladder uses, a region of fixed
// slots of that format's page size. A bounded rung of T tokens never holds more than ceil(T / 64) full pages,
// so its region is sized for that (+2: the page moving in while the one leaving is still read, and the tail;
// the tail's format 3: the tail, the next tail allocated before the full one moves out, a promoted page; f16
// also the sink page);
// the last rung's region holds every page of the context. A page going down a rung moves to a slot of the
// smaller format and its old slot is freed: a ladder's cache takes the bytes of its formats, not max_tokens
// f16 pages.
//
// A prefill chunk of positions [pos, pos + n) follows the CPU store's batch rule (TieredKvStore::append and
// PagedKvCache::attend; docs/server.md "Batch invariance"): the moves planned with pos cached are applied before
// the chunk (as for a step); pages already off the hot ring do not move during the chunk; a page entering a full
// ring (TieredKvStore::ring_pages_for: the pages whose newest token is in the f16 rung, plus the tail) pushes the
// ring's oldest page out to the rung of its newest token at that moment, and the chunk's attention reads it
// there: it is re-encoded after the chunk's rows are written and before the chunk's attention. The moves planned
// with pos + n cached wait for the next step or chunk. Single steps track the ring the same way, so that a
// chunk after decode steps starts from the CPU's ring. Slots left during a chunk are freed at its end, as the
// chunk's layers still read them (those left by the moves before it at once: the chunk records their re-encodes
// before zeroing its new pages); regions other than the last rung's get ceil(chunk_tokens / 64) + 1 more slots
// for the pages pushed down during a chunk.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "kv/ladder.h"
#include "kv/page_format.h"
#include "kvtier/status.h"

namespace kvtier {

class DeviceKvPages {
 public:
  // One format's region of a layer's range: `capacity` slots of format.page_bytes from byte `offset`, and its
  // page list's first entry in the page-list buffer (a multiple of kListAlign entries).
  struct Region {
    kv::PageFormat format;
    uint32_t offset = 0;
    uint32_t capacity = 0;
    uint32_t list_base = 0;
    std::vector<uint32_t> free;  // free slots, the next to use at the back
  };
  // A page to re-encode in every layer: the slot at byte src (format regions[from]) into byte dst.
  struct Transcode {
    int from = 0, to = 0;
    uint32_t src = 0, dst = 0;
    uint32_t n_tokens = 0;
  };
  // What a step records before its layers: the re-encodes, the new page to zero (page_bytes 0: none), and
  // where the step's row goes (an f16 slot).
  struct StepPlan {
    std::vector<Transcode> transcodes;
    uint32_t zero_offset = 0, zero_bytes = 0;
    const kv::PageFormat* write_format = nullptr;  // f16, or the hot k16vY tail format
    uint32_t write_offset = 0, write_slot = 0;
  };
  // A page of the chunk's attention list: (byte offset, valid rows at the chunk's end, first position, 0).
  using ChunkEntry = std::array<uint32_t, 4>;
  // What a prefill chunk records (see above):
  struct ChunkPlan {
    // Before the chunk's layers: re-encodes (a truncated page back to f16, the moves planned with pos cached),
    // then the new pages to zero (byte offset, bytes), which may take slots those re-encodes read.
    std::vector<Transcode> before;
    std::vector<std::array<uint32_t, 2>> zero;
    // Where the chunk's rows go, all ring pages of the hot region (a chunk starts past the sinks): position t in row
    // (t - n_sinks) % 64 of the page at ring_offsets[(t - n_sinks) / 64 - first_ring_page].
    uint32_t first_ring_page = 0;
    std::vector<uint32_t> ring_offsets;
    // In each layer after the rows are written, before its attention: ring pages pushed out by the chunk.
    std::vector<Transcode> after_write;
    // The attention's page lists per region, after the chunk: position order.
    std::vector<std::vector<ChunkEntry>> lists;
  };
  static constexpr uint32_t kListAlign = 32;  // entries: 256 bytes, any device's storage-buffer offset alignment
  static constexpr uint32_t kRegionAlign = 256;

  // Errors name what the device does not run: 3-bit codes, rotated keys, groups over 64.
  // chunk_tokens: the longest prefill chunk the cache will plan (plan_chunk), for the regions' slack.
  static Result<DeviceKvPages> create(const kv::LadderSpec& ladder, kv::KeyMode key_mode, int n_kv_heads,
                                      int head_dim, int group, int max_tokens, int chunk_tokens = 1);

  const std::vector<Region>& regions() const { return regions_; }
  const kv::LadderSpec& ladder() const { return ladder_; }
  size_t layer_bytes() const { return layer_bytes_; }
  uint32_t list_entries() const { return list_entries_; }  // the page-list buffer: [list_entries] uvec2
  bool single_format() const { return regions_.size() == 1; }

  // Plans the step that writes position pos (the cache holds pos positions) and updates the table as if it
  // ran: slots are allocated before any is freed, so no slot is both read and written in one step.
  Result<StepPlan> plan_step(int pos);
  int hot_region() const { return hot_region_; }  // the tail pages' region
  int n_sinks() const { return n_sinks_; }
  // Plans the chunk that writes positions [pos, pos + n) (the cache holds pos positions, pos >= n_sinks: the
  // sinks' rows go in steps) and updates the table as if it ran.
  Result<ChunkPlan> plan_chunk(int pos, int n);
  // The page lists after the step that writes position pos: lists[r] = (byte offset, valid rows) of each page
  // in regions()[r], with the row at pos counted.
  void page_lists(int pos, std::vector<std::vector<uint32_t>>* lists) const;
  // Drops positions >= n (pages past it go back to their regions; a partial page left quantized goes back to
  // f16 at the next step).
  void truncate(int n);
  // Live pages per region and their bytes (one layer).
  std::string describe_usage() const;
  size_t live_bytes() const;  // one layer

 private:
  struct Page {
    int region = -1;  // -1: not allocated
    uint32_t slot = 0;
    int rung = -1;    // ladder rung the page is on; -1: the hot tail, f16, not yet on a rung
  };
  // Plans position pos into the table: `moves`: the moves planned with pos cached (a step, a chunk's first
  // position); the ring page pushed out when a page enters a full ring goes to pushed_out. New pages to zero go
  // to `zero`, re-encodes to `transcodes`, freed pages to `leaving` (freed by the caller). Returns the page
  // written (its slot's row: *row).
  Result<Page*> plan_position(int pos, bool moves, std::vector<std::array<uint32_t, 2>>* zero,
                              std::vector<Transcode>* transcodes, std::vector<Transcode>* pushed_out,
                              std::vector<Page>* leaving, uint32_t* row);
  int region_of(kv::Precision p) const;
  Result<uint32_t> allocate(int region);
  uint32_t offset_of(const Page& p) const { return regions_[p.region].offset + p.slot * regions_[p.region].format.page_bytes; }

  kv::LadderSpec ladder_;
  int n_sinks_ = 0;
  int max_tokens_ = 0;
  std::vector<Region> regions_;  // [0] is f16
  int hot_region_ = 0;           // the tail page's: f16, or k16vY where the ladder starts quantized (kv::with_hot_rung)
  size_t layer_bytes_ = 0;
  uint32_t list_entries_ = 0;
  Page sink_;
  std::vector<Page> pages_;      // logical pages in position order
  int ring_pages_ = 1;           // the CPU store's hot ring (TieredKvStore::ring_pages_for)
  size_t ring_first_ = 0;        // pages_[ring_first_ ..] are on the ring (not yet pushed to a rung)
  int n_tokens_ = 0;
};

}  // namespace kvtier
