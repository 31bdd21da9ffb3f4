// The cold tier's page file (see kv/page_file.h).
#include "kv/page_file.h"

#include <fcntl.h>
#include <liburing.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>

namespace kvtier::kv {

namespace {
std::string errno_text(int err) { return std::strerror(err); }
double since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}
io_uring* as_ring(void* p) { return static_cast<io_uring*>(p); }
constexpr unsigned kQueueDepth = 64;
}  // namespace

Result<std::unique_ptr<PageFile>> PageFile::create(const std::string& dir) {
  struct stat st {};
  if (dir.empty()) return Status::error("--kv-spill: no directory given");
  if (::stat(dir.c_str(), &st) != 0) return Status::error("--kv-spill " + dir + ": " + errno_text(errno));
  if (!S_ISDIR(st.st_mode)) return Status::error("--kv-spill " + dir + ": not a directory");
  std::unique_ptr<PageFile> f(new PageFile());
  f->dir_ = dir;
  // Unnamed file first (nothing to clean up after a crash); O_DIRECT where the filesystem takes it.
  for (int direct : {O_DIRECT, 0}) {
    f->fd_ = ::open(dir.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC | direct, 0600);
    if (f->fd_ < 0 && (errno == EOPNOTSUPP || errno == EISDIR || errno == EINVAL)) {
      std::string path = dir + "/kvtier-pages-XXXXXX";
      f->fd_ = ::mkostemp(path.data(), O_CLOEXEC | direct);
      if (f->fd_ >= 0) ::unlink(path.c_str());
    }
    if (f->fd_ >= 0) {
      f->direct_ = direct != 0;
      break;
    }
    if (errno != EINVAL) break;  // EINVAL: O_DIRECT refused (tmpfs); try buffered
  }
  if (f->fd_ < 0) {
    return Status::error("--kv-spill " + dir + ": cannot create a file in this directory (" + errno_text(errno) +
                         "); the cold tier needs a directory on a writable disk filesystem");
  }
  auto* ring = new io_uring;
  if (io_uring_queue_init(kQueueDepth, ring, 0) == 0) {
    f->ring_ = ring;
    f->uring_ok_ = true;
    f->queue_depth_ = kQueueDepth;
  } else {
    delete ring;  // synchronous fallback
  }
  return f;
}

PageFile::~PageFile() {
  drain();
  if (uring_ok_) {
    io_uring_queue_exit(as_ring(ring_));
    delete as_ring(ring_);
  }
  if (fd_ >= 0) ::close(fd_);
}

PageFile::FreeList& PageFile::free_list(size_t slot_bytes, int stream) {
  for (FreeList& l : free_) {
    if (l.slot_bytes == slot_bytes && l.stream == stream) return l;
  }
  free_.push_back({slot_bytes, stream, {}});
  return free_.back();
}

Result<uint64_t> PageFile::allocate_slot(size_t slot_bytes, int stream) {
  FreeList& list = free_list(slot_bytes, stream);
  if (list.offsets.empty()) {
    // A new extent of about kFileExtentTarget, carved into slots of this size for this stream.
    const uint64_t slots = std::max<uint64_t>(1, kFileExtentTarget / slot_bytes);
    const uint64_t extent = (slots * slot_bytes + kFileExtentAlign - 1) / kFileExtentAlign * kFileExtentAlign;
    const uint64_t base = file_bytes_;
    if (int err = ::posix_fallocate(fd_, static_cast<off_t>(base), static_cast<off_t>(extent)); err != 0) {
      if (err != EOPNOTSUPP && err != EINVAL) {
        return Status::error("page file in " + dir_ + ": cannot grow to " + std::to_string(base + extent) +
                             " bytes: " + errno_text(err));
      }
    }
    file_bytes_ += extent;
    stats_.file_bytes = file_bytes_;
    const uint64_t n = extent / slot_bytes;
    for (uint64_t i = n; i-- > 0;) list.offsets.push_back(base + i * slot_bytes);  // lowest offset on top
  }
  const uint64_t offset = list.offsets.back();
  list.offsets.pop_back();
  ++stats_.live_slots;
  return offset;
}

void PageFile::free_slot(uint64_t offset, size_t slot_bytes, int stream) {
  free_list(slot_bytes, stream).offsets.push_back(offset);
  --stats_.live_slots;
}

Status PageFile::write_batch(std::span<const Write> writes) {
  const auto start = std::chrono::steady_clock::now();
  std::string error;
  auto note = [&](const Write& w, int res) {
    if (!error.empty()) return;
    if (res < 0) {
      error = "page file in " + dir_ + ": write of " + std::to_string(w.bytes) + " bytes at offset " +
              std::to_string(w.offset) + " failed: " + errno_text(-res);
    } else if (static_cast<size_t>(res) != w.bytes) {
      error = "page file in " + dir_ + ": short write at offset " + std::to_string(w.offset) + " (" +
              std::to_string(res) + " of " + std::to_string(w.bytes) + " bytes; disk full?)";
    }
  };
  if (!uring_ok_) {
    for (const Write& w : writes) {
      const ssize_t n = ::pwrite(fd_, w.data, w.bytes, static_cast<off_t>(w.offset));
      note(w, n < 0 ? -errno : static_cast<int>(n));
    }
  } else {
    // Writes share the ring with reads that may be in flight: finish those first so completions match.
    drain();
    io_uring* ring = as_ring(ring_);
    size_t next = 0;
    while (next < writes.size()) {
      const size_t batch = std::min<size_t>(writes.size() - next, queue_depth_);
      for (size_t i = 0; i < batch; ++i) {
        io_uring_sqe* sqe = io_uring_get_sqe(ring);
        const Write& w = writes[next + i];
        io_uring_prep_write(sqe, fd_, w.data, static_cast<unsigned>(w.bytes), w.offset);
        io_uring_sqe_set_data64(sqe, next + i);
      }
      const int submitted = io_uring_submit_and_wait(ring, static_cast<unsigned>(batch));
      if (submitted < 0) return Status::error("page file: io_uring submit failed: " + errno_text(-submitted));
      for (size_t done = 0; done < batch; ++done) {
        io_uring_cqe* cqe = nullptr;
        const int r = io_uring_wait_cqe(ring, &cqe);
        if (r < 0) return Status::error("page file: io_uring wait failed: " + errno_text(-r));
        note(writes[io_uring_cqe_get_data64(cqe)], cqe->res);
        io_uring_cqe_seen(ring, cqe);
      }
      next += batch;
    }
  }
  for (const Write& w : writes) stats_.write_bytes += w.bytes;
  stats_.writes += writes.size();
  stats_.write_seconds += since(start);
  if (!error.empty()) return Status::error(error);
  return Status();
}

Status PageFile::submit_read(uint64_t ticket, uint64_t offset, size_t bytes, uint8_t* dst) {
  auto it = std::find_if(tickets_.begin(), tickets_.end(), [&](const TicketState& t) { return t.ticket == ticket; });
  if (it == tickets_.end()) {
    tickets_.push_back({ticket, 0, {}});
    it = tickets_.end() - 1;
  }
  ++stats_.reads;
  stats_.read_bytes += bytes;
  if (!uring_ok_) {
    const ssize_t n = ::pread(fd_, dst, bytes, static_cast<off_t>(offset));
    if (it->error.empty() && n != static_cast<ssize_t>(bytes)) {
      it->error = "page file in " + dir_ + ": read of " + std::to_string(bytes) + " bytes at offset " +
                  std::to_string(offset) + " failed: " + (n < 0 ? errno_text(errno) : "short read (file truncated?)");
    }
    return Status();
  }
  io_uring* ring = as_ring(ring_);
  while (in_flight_ >= queue_depth_) {
    if (Status s = reap(true); !s.ok()) return s;
  }
  io_uring_sqe* sqe = io_uring_get_sqe(ring);
  if (sqe == nullptr) {
    io_uring_submit(ring);
    sqe = io_uring_get_sqe(ring);
    if (sqe == nullptr) return Status::error("page file: io_uring queue full");
  }
  io_uring_prep_read(sqe, fd_, dst, static_cast<unsigned>(bytes), offset);
  io_uring_sqe_set_data64(sqe, ticket << 32 | (bytes & 0xFFFFFFFFu));
  ++it->pending;
  ++in_flight_;
  const int r = io_uring_submit(ring);
  if (r < 0) return Status::error("page file: io_uring submit failed: " + errno_text(-r));
  return Status();
}

// Collects completions: all that are ready, or at least one when block is set.
Status PageFile::reap(bool block) {
  io_uring* ring = as_ring(ring_);
  io_uring_cqe* cqe = nullptr;
  int r = block ? io_uring_wait_cqe(ring, &cqe) : io_uring_peek_cqe(ring, &cqe);
  while (r == 0 && cqe != nullptr) {
    const uint64_t data = io_uring_cqe_get_data64(cqe);
    const uint64_t ticket = data >> 32;
    const size_t bytes = data & 0xFFFFFFFFu;
    auto it = std::find_if(tickets_.begin(), tickets_.end(), [&](const TicketState& t) { return t.ticket == ticket; });
    if (it != tickets_.end()) {
      --it->pending;
      if (it->error.empty() && cqe->res != static_cast<int>(bytes)) {
        it->error = "page file in " + dir_ + ": read of " + std::to_string(bytes) + " bytes failed: " +
                    (cqe->res < 0 ? errno_text(-cqe->res) : "short read (file truncated?)");
      }
    }
    --in_flight_;
    io_uring_cqe_seen(ring, cqe);
    r = io_uring_peek_cqe(ring, &cqe);
  }
  if (r < 0 && r != -EAGAIN && r != -EINTR) return Status::error("page file: io_uring wait failed: " + errno_text(-r));
  return Status();
}

Status PageFile::wait(uint64_t ticket) {
  const auto start = std::chrono::steady_clock::now();
  auto find = [&] {
    return std::find_if(tickets_.begin(), tickets_.end(), [&](const TicketState& t) { return t.ticket == ticket; });
  };
  Status status;
  while (uring_ok_ && find() != tickets_.end() && find()->pending > 0) {
    if (Status s = reap(true); !s.ok()) {
      status = s;
      break;
    }
  }
  stats_.wait_seconds += since(start);
  auto it = find();
  if (it == tickets_.end()) return status;
  if (status.ok() && !it->error.empty()) status = Status::error(it->error);
  if (it->pending == 0) tickets_.erase(it);
  return status;
}

void PageFile::drain() {
  while (uring_ok_ && in_flight_ > 0) {
    if (!reap(true).ok()) break;
  }
}

void PageFile::forget(uint64_t ticket) {
  std::erase_if(tickets_, [&](const TicketState& t) { return t.ticket == ticket && t.pending == 0; });
}

}  // namespace kvtier::kv
