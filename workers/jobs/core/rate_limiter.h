// RateLimiter: paces a job's data movement to at most a given number of bytes per second, so
// that an operator can keep conversions from starving other users of a disk or network.
// Not thread-safe: one per copy loop.
#ifndef MODELSMITH_WORKERS_JOBS_CORE_RATE_LIMITER_H_
#define MODELSMITH_WORKERS_JOBS_CORE_RATE_LIMITER_H_

#include <chrono>
#include <cstdint>
#include <functional>

namespace modelsmith {

class RateLimiter {
 public:
  // 0 means unlimited.
  explicit RateLimiter(uint64_t bytes_per_second);

  // The size of the next piece to move, at most `wanted`: small enough under a limit that the
  // pause after it stays near 100 ms, so cancellation stays prompt.
  uint64_t PieceBytes(uint64_t wanted) const;

  // Records `bytes` moved and sleeps until the average rate is back under the limit, waking
  // every 50 ms to poll `should_stop` (returns early when it is true).
  void Account(uint64_t bytes, const std::function<bool()>& should_stop);

 private:
  const uint64_t bytes_per_second_;
  const std::chrono::steady_clock::time_point start_;
  uint64_t bytes_ = 0;
};

}  // namespace modelsmith

#endif  // MODELSMITH_WORKERS_JOBS_CORE_RATE_LIMITER_H_
