#include "workers/pool/worker_pool.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>

namespace modelsmith {
namespace {

// A task that runs until released, recording how many run at once.
class Gate {
 public:
  std::function<void()> Task() {
    return [this] {
      {
        std::unique_lock lock(mutex_);
        ++running_;
        peak_ = std::max(peak_, running_);
        changed_.notify_all();
        changed_.wait(lock, [&] { return open_; });
        --running_;
        ++finished_;
      }
      changed_.notify_all();
    };
  }
  void WaitRunning(int n) {
    std::unique_lock lock(mutex_);
    ASSERT_TRUE(changed_.wait_for(lock, std::chrono::seconds(10), [&] { return running_ == n; }));
  }
  void WaitFinished(int n) {
    std::unique_lock lock(mutex_);
    ASSERT_TRUE(changed_.wait_for(lock, std::chrono::seconds(10), [&] { return finished_ == n; }));
  }
  void Open() {
    std::lock_guard lock(mutex_);
    open_ = true;
    changed_.notify_all();
  }
  int peak() {
    std::lock_guard lock(mutex_);
    return peak_;
  }

 private:
  std::mutex mutex_;
  std::condition_variable changed_;
  int running_ = 0;
  int peak_ = 0;
  int finished_ = 0;
  bool open_ = false;
};

TEST(WorkerPool, RunsUpToWorkersAtOnce) {
  WorkerPool pool(2, 1000);
  Gate gate;
  for (int i = 0; i < 4; ++i) pool.Submit("t" + std::to_string(i), 1, gate.Task());
  gate.WaitRunning(2);
  EXPECT_EQ(pool.busy(), 2u);
  EXPECT_EQ(pool.queued(), 2u);
  gate.Open();
  gate.WaitFinished(4);
  EXPECT_EQ(gate.peak(), 2);
}

TEST(WorkerPool, AdmitsOnlyWhatFitsTheMemoryBudget) {
  WorkerPool pool(4, 100);
  Gate gate;
  pool.Submit("a", 60, gate.Task());
  pool.Submit("b", 60, gate.Task());  // 120 > 100: waits for a
  gate.WaitRunning(1);
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_EQ(pool.busy(), 1u);
  EXPECT_EQ(pool.reserved_bytes(), 60u);
  gate.Open();
  gate.WaitFinished(2);
  EXPECT_EQ(gate.peak(), 1);
  // The pool releases a task's reservation just after its body returns; wait (bounded) for it.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (pool.reserved_bytes() != 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  EXPECT_EQ(pool.reserved_bytes(), 0u);
}

TEST(WorkerPool, TaskLargerThanBudgetRunsAlone) {
  WorkerPool pool(4, 100);
  Gate gate;
  pool.Submit("huge", 500, gate.Task());
  pool.Submit("small", 10, gate.Task());  // queued behind the head, never overtakes it
  gate.WaitRunning(1);
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_EQ(pool.busy(), 1u);
  gate.Open();
  gate.WaitFinished(2);
  EXPECT_EQ(gate.peak(), 1);
}

TEST(WorkerPool, RemoveQueuedDropsOnlyUnstartedTasks) {
  WorkerPool pool(1, 100);
  Gate gate;
  std::atomic<bool> removed_ran{false};
  pool.Submit("running", 1, gate.Task());
  pool.Submit("queued", 1, [&] { removed_ran = true; });
  gate.WaitRunning(1);
  EXPECT_FALSE(pool.RemoveQueued("running"));
  EXPECT_TRUE(pool.RemoveQueued("queued"));
  EXPECT_FALSE(pool.RemoveQueued("queued"));
  gate.Open();
  gate.WaitFinished(1);
  pool.Shutdown();
  EXPECT_FALSE(removed_ran);
}

}  // namespace
}  // namespace modelsmith
