// The cold tier's page file: fixed-size page slots in one file in the spill directory, written and read
// with io_uring (liburing), O_DIRECT where the filesystem allows it.
//
// Layout: the file is a sequence of extents of about 1 MiB (a multiple of 64 KiB); every extent holds slots
// of one size (a page format's page_bytes rounded up to 4 KiB, so that O_DIRECT offsets, lengths and buffers
// stay block aligned) for one stream (the cache uses one stream per layer), like the RAM pool's slabs. A
// layer's pages, spilled oldest first, so lie in consecutive slots, and reading a run of them is one request. A slot holds one page byte for byte in the RAM page format (kv/page_format.h) followed by
// zero padding. Nothing else is in the file: the index (which slot holds which page, its xxHash, its
// summary) stays in RAM, so the file is scratch space.
//
// The file has no name (O_TMPFILE) where the filesystem supports it, and is unlinked at once otherwise: it
// disappears with the process however the process ends, and a crash leaves nothing behind.
//
// Reads are asynchronous: submit_read() queues a read and returns; wait() blocks until every read of a
// ticket has completed. Writes are submitted as a batch and waited for (write_batch). Without io_uring (a
// kernel or sandbox that refuses io_uring_setup) the same calls run synchronously with pread/pwrite.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "kvtier/status.h"

namespace kvtier::kv {

inline constexpr size_t kFileBlock = 4096;          // O_DIRECT alignment of offsets, lengths and buffers
inline constexpr size_t kFileExtentAlign = 64 * 1024;  // extents are multiples of this
inline constexpr size_t kFileExtentTarget = 1 << 20;   // and about this large

struct PageFileStats {
  uint64_t file_bytes = 0;      // extents allocated in the file
  uint64_t live_slots = 0;
  uint64_t writes = 0, write_bytes = 0;
  uint64_t reads = 0, read_bytes = 0;
  double write_seconds = 0;     // wall time inside write_batch
  double wait_seconds = 0;      // wall time blocked in wait() (the stall)
};

class PageFile {
 public:
  struct Write {
    uint64_t offset;
    const uint8_t* data;  // kFileBlock-aligned when the file is O_DIRECT
    size_t bytes;         // a slot size
  };

  // Creates the page file in `dir` (which must exist and be writable). Errors name the directory and why.
  static Result<std::unique_ptr<PageFile>> create(const std::string& dir);
  ~PageFile();
  PageFile(const PageFile&) = delete;
  PageFile& operator=(const PageFile&) = delete;

  bool direct() const { return direct_; }      // opened with O_DIRECT
  bool uring() const { return uring_ok_; }     // io_uring in use (else synchronous pread/pwrite)
  const std::string& dir() const { return dir_; }

  // Slot size for a page of page_bytes bytes.
  static size_t slot_bytes(size_t page_bytes) { return (page_bytes + kFileBlock - 1) / kFileBlock * kFileBlock; }

  // A free slot of slot_bytes (from slot_bytes()) in `stream`, lowest offset first; grows the file by one
  // extent (fallocate where supported, so that ENOSPC shows up here rather than as a short write later).
  Result<uint64_t> allocate_slot(size_t slot_bytes, int stream = 0);
  void free_slot(uint64_t offset, size_t slot_bytes, int stream = 0);

  // Writes every entry and waits for all of them. Errors (ENOSPC, EIO, short writes) name the offset.
  Status write_batch(std::span<const Write> writes);

  // Queues a read of `bytes` at `offset` into dst (kFileBlock-aligned) under `ticket` (any caller-chosen
  // number); wait(ticket) blocks until all reads of that ticket are done and reports the first error.
  Status submit_read(uint64_t ticket, uint64_t offset, size_t bytes, uint8_t* dst);
  Status wait(uint64_t ticket);
  // Waits for every outstanding read (before buffers are reused or the file shrinks); their results stay
  // with their tickets until wait() or forget().
  void drain();
  void forget(uint64_t ticket);  // drops a completed ticket whose data is not wanted

  const PageFileStats& stats() const { return stats_; }

  // For fault tests: the descriptor, so that a test can truncate or damage the file under a running cache.
  int fd_for_testing() const { return fd_; }

 private:
  PageFile() = default;
  Status reap(bool block);

  std::string dir_;
  int fd_ = -1;
  bool direct_ = false;
  bool uring_ok_ = false;
  void* ring_ = nullptr;  // struct io_uring*, opaque here
  unsigned queue_depth_ = 0;
  unsigned in_flight_ = 0;
  uint64_t file_bytes_ = 0;
  struct FreeList {
    size_t slot_bytes;
    int stream;
    std::vector<uint64_t> offsets;  // highest first, so that pop_back() hands out the lowest
  };
  FreeList& free_list(size_t slot_bytes, int stream);
  std::vector<FreeList> free_;  // per (slot size, stream)
  struct TicketState {
    uint64_t ticket;
    unsigned pending;
    std::string error;
  };
  std::vector<TicketState> tickets_;
  PageFileStats stats_;
};

}  // namespace kvtier::kv
