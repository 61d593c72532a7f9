// BoundedExecutor: a fixed set of threads for RPC work that may block (a preflight reading a large
// input, a cancel waiting for its job to stop), so that gRPC's callback threads never block.
// At most `max_pending` tasks wait or run at once; beyond that TryPost refuses, and the RPC answers
// RESOURCE_EXHAUSTED instead of queueing without bound. Thread-safe.
#ifndef MODELSMITH_SERVER_BOUNDED_EXECUTOR_H_
#define MODELSMITH_SERVER_BOUNDED_EXECUTOR_H_

#include <atomic>
#include <cstddef>
#include <functional>

#include "boost/asio/thread_pool.hpp"

namespace modelsmith {

class BoundedExecutor {
 public:
  BoundedExecutor(size_t threads, size_t max_pending);
  // Runs what was posted, then joins the threads.
  ~BoundedExecutor();

  // Queues `task`; false (and `task` dropped) when `max_pending` tasks are already waiting or running.
  bool TryPost(std::function<void()> task);

  size_t pending() const { return pending_; }

 private:
  boost::asio::thread_pool pool_;
  const size_t max_pending_;
  std::atomic<size_t> pending_{0};
};

}  // namespace modelsmith

#endif  // MODELSMITH_SERVER_BOUNDED_EXECUTOR_H_
