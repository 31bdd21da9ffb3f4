// A fixed pool of worker threads for data-parallel kernels.
//
// run(fn) calls fn(index, n_threads) once for every index in [0, n_threads) and
// returns when all calls have finished. The indices are slots, not thread
// identities: each is claimed by whichever thread gets to it first (the caller
// takes part), so a worker that the OS has descheduled does not hold up the
// call, the caller simply runs its slot. Use the index to pick per-slot scratch
// or a partition of the work; never assume index 0 is the calling thread.
// Workers spin briefly between jobs before sleeping, because a decode step
// issues dozens of short jobs and a futex wake-up per job would cost more than
// the work.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace kvtier {

class ThreadPool {
 public:
  // n_threads <= 0 means all hardware threads.
  explicit ThreadPool(int n_threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return n_threads_; }

  // Runs fn(slot, n_threads) for every slot; blocks until all are done.
  void run(const std::function<void(int, int)>& fn);

  // Splits [0, n) into contiguous ranges, one per thread: fn(begin, end, thread).
  void parallel_for(int64_t n, const std::function<void(int64_t, int64_t, int)>& fn);

  static int hardware_threads();

 private:
  void worker_loop();
  // Claims and runs slots of the current job until none is left.
  void run_slots();

  int n_threads_;
  std::vector<std::thread> workers_;
  const std::function<void(int, int)>* job_ = nullptr;
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> next_slot_{0};   // next unclaimed slot of the current job
  std::atomic<int> slots_done_{0};  // finished slots of the current job
  std::atomic<bool> stop_{false};
  std::mutex mutex_;
  std::condition_variable wake_;
};

}  // namespace kvtier
