#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

#include "kvtier/ggml_types.h"
#include "kvtier/status.h"
#include "kvtier/thread_pool.h"

namespace kvtier {
namespace {

TEST(ThreadPool, RunCallsEveryThreadIndexOnce) {
  for (int n : {1, 2, 3, 5}) {
    ThreadPool pool(n);
    EXPECT_EQ(pool.size(), n);
    for (int rep = 0; rep < 200; ++rep) {
      std::vector<std::atomic<int>> hits(n);
      pool.run([&](int t, int nt) {
        EXPECT_EQ(nt, n);
        hits[t].fetch_add(1);
      });
      for (int t = 0; t < n; ++t) ASSERT_EQ(hits[t].load(), 1) << "threads " << n << " rep " << rep;
    }
  }
}

TEST(ThreadPool, ParallelForCoversTheRangeExactlyOnce) {
  ThreadPool pool(3);
  for (int64_t n : {0, 1, 2, 3, 7, 100, 1001}) {
    std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
    pool.parallel_for(n, [&](int64_t begin, int64_t end, int) {
      for (int64_t i = begin; i < end; ++i) hits[i].fetch_add(1);
    });
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(hits[i].load(), 1) << "n " << n << " i " << i;
  }
}

TEST(ThreadPool, ZeroMeansAllHardwareThreads) {
  ThreadPool pool(0);
  EXPECT_EQ(pool.size(), ThreadPool::hardware_threads());
}

// Background tasks run exactly once each and never on run()'s caller, while jobs keep running; a pool that
// fills every core runs them in its workers' gaps, a smaller one on a thread of its own.
TEST(ThreadPool, PostedTasksRunOnceOffTheCallerBesideJobs) {
  const int hw = ThreadPool::hardware_threads();
  for (int n : {1, 2, 3, hw}) {
    ThreadPool pool(n);
    EXPECT_EQ(pool.tasks_share_workers(), n > 1 && n >= hw) << "threads " << n;
    const std::thread::id caller = std::this_thread::get_id();
    constexpr int kTasks = 300;
    std::vector<std::atomic<int>> runs(kTasks);
    std::atomic<int> on_caller{0};
    std::mutex mu;
    std::condition_variable cv;
    int finished = 0;  // guarded by mu
    for (int i = 0; i < kTasks; ++i) {
      pool.post([&, i] {
        runs[i].fetch_add(1);
        if (std::this_thread::get_id() == caller) on_caller.fetch_add(1);
        std::lock_guard<std::mutex> lock(mu);
        ++finished;
        cv.notify_all();
      });
      std::vector<std::atomic<int>> hits(n);
      pool.run([&](int t, int) { hits[t].fetch_add(1); });
      for (int t = 0; t < n; ++t) ASSERT_EQ(hits[t].load(), 1) << "threads " << n << " task " << i;
    }
    {
      // A hang guard, not a timing requirement: the tasks need milliseconds.
      std::unique_lock<std::mutex> lock(mu);
      ASSERT_TRUE(cv.wait_for(lock, std::chrono::seconds(120), [&] { return finished == kTasks; }))
          << "threads " << n << ": " << finished << " of " << kTasks << " tasks ran";
    }
    for (int i = 0; i < kTasks; ++i) ASSERT_EQ(runs[i].load(), 1) << "threads " << n << " task " << i;
    EXPECT_EQ(on_caller.load(), 0) << "threads " << n;
  }
}

TEST(ThreadPool, DestructorRunsTasksStillQueued) {
  for (int n : {1, 2, ThreadPool::hardware_threads()}) {
    std::atomic<int> ran{0};
    {
      ThreadPool pool(n);
      for (int i = 0; i < 2000; ++i) pool.post([&] { ran.fetch_add(1); });
    }
    EXPECT_EQ(ran.load(), 2000) << "threads " << n;
  }
}

TEST(GgmlTypes, BlockGeometryMatchesGgml) {
  EXPECT_EQ(ggml_type_info(GgmlType::Q4_0).block_bytes, 18);
  EXPECT_EQ(ggml_type_info(GgmlType::Q8_0).block_bytes, 34);
  EXPECT_EQ(ggml_type_info(GgmlType::Q4_K).block_bytes, 144);
  EXPECT_EQ(ggml_type_info(GgmlType::Q6_K).block_bytes, 210);
  EXPECT_EQ(ggml_type_info(GgmlType::Q4_K).block_elems, 256);
  EXPECT_EQ(ggml_row_bytes(GgmlType::Q4_0, 64), 36u);
  EXPECT_EQ(ggml_type_info(4u), nullptr);  // removed Q4_2
  EXPECT_EQ(ggml_type_info(1000u), nullptr);
  EXPECT_STREQ(ggml_type_name(GgmlType::BF16), "BF16");
}

TEST(Status, ResultCarriesValueOrError) {
  Result<int> good(42);
  ASSERT_TRUE(good.ok());
  EXPECT_EQ(*good, 42);
  Result<int> bad(Status::error("broken field"));
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error(), "broken field");
  EXPECT_FALSE(bad.status().ok());
}

}  // namespace
}  // namespace kvtier
