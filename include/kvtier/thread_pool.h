// A fixed pool of worker threads for data-parallel kernels.
//
// run(fn) calls fn(thread_index, n_threads) once on every thread (the caller is
// thread 0) and returns when all have finished. Workers spin briefly between
// jobs before sleeping, because a decode step issues dozens of short jobs and a
// futex wake-up per job would cost more than the work.
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

  // Runs fn(thread_index, n_threads) on all threads; blocks until done.
  void run(const std::function<void(int, int)>& fn);

  // Splits [0, n) into contiguous ranges, one per thread: fn(begin, end, thread).
  void parallel_for(int64_t n, const std::function<void(int64_t, int64_t, int)>& fn);

  static int hardware_threads();

 private:
  void worker_loop(int index);

  int n_threads_;
  std::vector<std::thread> workers_;
  const std::function<void(int, int)>* job_ = nullptr;
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> pending_{0};
  std::atomic<bool> stop_{false};
  std::mutex mutex_;
  std::condition_variable wake_;
};

}  // namespace kvtier
