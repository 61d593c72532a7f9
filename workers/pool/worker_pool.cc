#include "workers/pool/worker_pool.h"

#include <algorithm>

#include <boost/asio/post.hpp>

namespace modelsmith {

WorkerPool::WorkerPool(size_t workers, uint64_t memory_budget_bytes)
    : workers_(std::max<size_t>(1, workers)),
      budget_bytes_(memory_budget_bytes),
      threads_(std::max<size_t>(1, workers)) {}

WorkerPool::~WorkerPool() { Shutdown(); }

void WorkerPool::Submit(std::string id, uint64_t memory_bytes, std::function<void()> task) {
  std::lock_guard lock(mutex_);
  if (shut_down_) return;
  queue_.push_back({std::move(id), memory_bytes, std::move(task)});
  StartWhatFits();
}

bool WorkerPool::RemoveQueued(const std::string& id) {
  std::lock_guard lock(mutex_);
  auto it = std::find_if(queue_.begin(), queue_.end(), [&](const Pending& p) { return p.id == id; });
  if (it == queue_.end()) return false;
  queue_.erase(it);
  StartWhatFits();
  return true;
}

void WorkerPool::StartWhatFits() {
  while (!shut_down_ && !queue_.empty() && busy_ < workers_) {
    const Pending& head = queue_.front();
    const bool fits = reserved_bytes_ + head.memory_bytes <= budget_bytes_;
    if (!fits && busy_ > 0) return;  // wait for memory; an oversized task runs alone
    Pending next = std::move(queue_.front());
    queue_.pop_front();
    ++busy_;
    reserved_bytes_ += next.memory_bytes;
    boost::asio::post(threads_, [this, memory = next.memory_bytes, task = std::move(next.task)] {
      task();
      std::function<void()> on_slot_freed;
      {
        std::lock_guard lock(mutex_);
        --busy_;
        reserved_bytes_ -= memory;
        StartWhatFits();
        on_slot_freed = on_slot_freed_;
      }
      if (on_slot_freed) on_slot_freed();
    });
  }
}

void WorkerPool::Shutdown() {
  {
    std::lock_guard lock(mutex_);
    shut_down_ = true;
    queue_.clear();
  }
  threads_.join();
}

size_t WorkerPool::queued() const {
  std::lock_guard lock(mutex_);
  return queue_.size();
}

size_t WorkerPool::busy() const {
  std::lock_guard lock(mutex_);
  return busy_;
}

uint64_t WorkerPool::reserved_bytes() const {
  std::lock_guard lock(mutex_);
  return reserved_bytes_;
}

}  // namespace modelsmith
