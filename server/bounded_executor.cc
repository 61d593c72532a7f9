#include "server/bounded_executor.h"

#include "boost/asio/post.hpp"

namespace modelsmith {

BoundedExecutor::BoundedExecutor(size_t threads, size_t max_pending) : pool_(threads), max_pending_(max_pending) {}

BoundedExecutor::~BoundedExecutor() { pool_.join(); }

bool BoundedExecutor::TryPost(std::function<void()> task) {
  if (++pending_ > max_pending_) {
    --pending_;
    return false;
  }
  boost::asio::post(pool_, [this, task = std::move(task)] {
    task();
    --pending_;
  });
  return true;
}

}  // namespace modelsmith
