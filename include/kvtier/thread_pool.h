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
//
// post(task) queues background work (the KV cache's page re-encoding). When the
// pool's threads fill every core, a worker runs it in the gaps between jobs:
// a separate OS thread would instead be scheduled onto a core mid-job,
// preempting a worker that holds a slot while the caller spins until that
// worker gets its core back. A worker busy with a task claims no slot, so the
// caller (and any other worker) does the job without waiting for it. When a
// core is left free (or the pool has no workers) tasks run on a thread of
// their own.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
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

  // Queues task to run once on a pool thread other than run()'s caller (see above). Tasks must not call
  // run(). Tasks still queued when the pool is destroyed run in its destructor.
  void post(std::function<void()> task);
  // True when posted tasks run in the workers' gaps between jobs, false on a thread of their own.
  bool tasks_share_workers() const { return tasks_share_workers_; }

  static int hardware_threads();

 private:
  void worker_loop();
  void task_loop();  // the thread of its own
  // Claims and runs slots of the current job until none is left.
  void run_slots();
  // Runs one queued task if there is one; false if the queue was empty.
  bool run_one_task();

  int n_threads_;
  std::vector<std::thread> workers_;
  const std::function<void(int, int)>* job_ = nullptr;
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> next_slot_{0};   // next unclaimed slot of the current job
  std::atomic<int> slots_done_{0};  // finished slots of the current job
  std::atomic<bool> stop_{false};
  std::mutex mutex_;  // guards tasks_ and the sleeping side of wake_
  std::condition_variable wake_;
  bool tasks_share_workers_ = false;
  std::deque<std::function<void()>> tasks_;
  std::atomic<int> queued_tasks_{0};  // tasks_.size(), read without the lock by spinning workers
  std::thread task_thread_;           // started by the first post() when tasks do not share the workers
};

}  // namespace kvtier
