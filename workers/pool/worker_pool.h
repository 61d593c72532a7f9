// WorkerPool: N worker threads (a boost::asio::thread_pool) with admission by memory budget.
//
// Tasks start in submission order while a worker is free and the sum of the estimated memory of
// the running tasks, plus the next task's, fits the budget. A task whose estimate alone exceeds
// the budget starts when nothing else runs, rather than never. The head of the queue is never
// overtaken, so a large task cannot starve behind a stream of small ones.
#ifndef MODELSMITH_WORKERS_POOL_WORKER_POOL_H_
#define MODELSMITH_WORKERS_POOL_WORKER_POOL_H_

#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <string>

#include <boost/asio/thread_pool.hpp>

namespace modelsmith {

class WorkerPool {
 public:
  WorkerPool(size_t workers, uint64_t memory_budget_bytes);
  // Waits for running tasks; queued tasks are dropped. Call Shutdown first to be explicit.
  ~WorkerPool();

  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  // Queues `task` under `id` with its estimated peak memory. Thread-safe.
  void Submit(std::string id, uint64_t memory_bytes, std::function<void()> task);

  // Removes a task that has not started. Returns false if it is unknown or already started.
  bool RemoveQueued(const std::string& id);

  // Called (with no lock held, on the worker's thread) each time a task has returned and its
  // worker and memory are free again: a scheduler that feeds the pool as it empties. Set it before
  // submitting; it must not block.
  void SetOnSlotFreed(std::function<void()> callback) {
    std::lock_guard lock(mutex_);
    on_slot_freed_ = std::move(callback);
  }

  // Stops starting tasks, drops the queue, and waits for the running ones to return.
  void Shutdown();

  size_t workers() const { return workers_; }
  uint64_t budget_bytes() const { return budget_bytes_; }
  size_t queued() const;
  size_t busy() const;
  uint64_t reserved_bytes() const;

 private:
  struct Pending {
    std::string id;
    uint64_t memory_bytes;
    std::function<void()> task;
  };

  void StartWhatFits();  // REQUIRES: mutex_ held

  const size_t workers_;
  const uint64_t budget_bytes_;
  boost::asio::thread_pool threads_;
  mutable std::mutex mutex_;
  std::deque<Pending> queue_;
  size_t busy_ = 0;
  uint64_t reserved_bytes_ = 0;
  bool shut_down_ = false;
  std::function<void()> on_slot_freed_;
};

}  // namespace modelsmith

#endif  // MODELSMITH_WORKERS_POOL_WORKER_POOL_H_
