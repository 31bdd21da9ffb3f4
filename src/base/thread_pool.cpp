#include "kvtier/thread_pool.h"

#include <algorithm>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define KVTIER_CPU_RELAX() _mm_pause()
#elif defined(__aarch64__)
#define KVTIER_CPU_RELAX() asm volatile("yield" ::: "memory")
#else
#define KVTIER_CPU_RELAX() ((void)0)
#endif

namespace kvtier {

namespace {
// Spin iterations before a worker goes to sleep (~tens of microseconds).
constexpr int kSpinIterations = 20000;
}  // namespace

int ThreadPool::hardware_threads() {
  unsigned n = std::thread::hardware_concurrency();
  return n == 0 ? 1 : static_cast<int>(n);
}

ThreadPool::ThreadPool(int n_threads) : n_threads_(n_threads <= 0 ? hardware_threads() : n_threads) {
  tasks_share_workers_ = n_threads_ > 1 && n_threads_ >= hardware_threads();
  next_slot_.store(n_threads_);  // no job yet: every slot taken
  for (int i = 1; i < n_threads_; ++i) workers_.emplace_back([this] { worker_loop(); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_.store(true);
    generation_.fetch_add(1);
  }
  wake_.notify_all();
  for (auto& t : workers_) t.join();
  if (task_thread_.joinable()) task_thread_.join();  // it runs what is queued before it returns
  while (run_one_task()) {
  }
}

void ThreadPool::post(std::function<void()> task) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    tasks_.push_back(std::move(task));
    queued_tasks_.fetch_add(1, std::memory_order_release);
    if (!tasks_share_workers_ && !task_thread_.joinable()) task_thread_ = std::thread([this] { task_loop(); });
  }
  wake_.notify_all();
}

bool ThreadPool::run_one_task() {
  std::function<void()> task;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (tasks_.empty()) return false;
    task = std::move(tasks_.front());
    tasks_.pop_front();
    queued_tasks_.fetch_sub(1, std::memory_order_relaxed);
  }
  task();
  return true;
}

void ThreadPool::task_loop() {
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(mutex_);
      wake_.wait(lock, [&] { return stop_.load() || !tasks_.empty(); });
      if (tasks_.empty()) return;  // stopping, nothing left
    }
    run_one_task();
  }
}

void ThreadPool::run_slots() {
  // A slot is claimed before job_ is read: the caller of the current job is
  // still waiting for that slot, so job_ is valid. A late worker whose claim
  // comes after the job finished gets a slot >= n_threads_ and does nothing;
  // one whose claim lands in the next job runs a slot of that job, rightly.
  for (int slot = next_slot_.fetch_add(1, std::memory_order_acq_rel); slot < n_threads_;
       slot = next_slot_.fetch_add(1, std::memory_order_acq_rel)) {
    (*job_)(slot, n_threads_);
    slots_done_.fetch_add(1, std::memory_order_acq_rel);
  }
}

void ThreadPool::worker_loop() {
  uint64_t seen = 0;
  for (;;) {
    int spins = 0;
    uint64_t gen;
    while ((gen = generation_.load(std::memory_order_acquire)) == seen) {
      // Between jobs: a queued background task first (see the header), then spin, then sleep.
      if (tasks_share_workers_ && queued_tasks_.load(std::memory_order_acquire) > 0 && run_one_task()) {
        spins = 0;
        continue;
      }
      if (++spins < kSpinIterations) {
        KVTIER_CPU_RELAX();
        continue;
      }
      std::unique_lock<std::mutex> lock(mutex_);
      wake_.wait(lock, [&] {
        return generation_.load(std::memory_order_acquire) != seen || (tasks_share_workers_ && !tasks_.empty());
      });
    }
    seen = gen;
    if (stop_.load()) return;
    run_slots();
  }
}

void ThreadPool::run(const std::function<void(int, int)>& fn) {
  if (n_threads_ == 1) {
    fn(0, 1);
    return;
  }
  job_ = &fn;
  slots_done_.store(0, std::memory_order_relaxed);
  next_slot_.store(0, std::memory_order_release);  // publishes job_ to claimers
  {
    // Taking the lock orders the publish against a worker that is about to sleep.
    std::lock_guard<std::mutex> lock(mutex_);
    generation_.fetch_add(1, std::memory_order_acq_rel);
  }
  wake_.notify_all();
  run_slots();
  while (slots_done_.load(std::memory_order_acquire) != n_threads_) KVTIER_CPU_RELAX();
}

void ThreadPool::parallel_for(int64_t n, const std::function<void(int64_t, int64_t, int)>& fn) {
  if (n <= 0) return;
  run([&](int t, int nt) {
    const int64_t per = (n + nt - 1) / nt;
    const int64_t begin = std::min<int64_t>(n, per * t);
    const int64_t end = std::min<int64_t>(n, begin + per);
    if (begin < end) fn(begin, end, t);
  });
}

}  // namespace kvtier
